"""Scoring: export to the Cityscapes results format, the official evaluator (run step by step, with distances and a
bootstrap interval), the oracle ceilings, label helpers, reports and figures."""
__all__ = ["bootstrap", "cs_eval", "cs_match", "distances", "export", "labels", "oracle", "report", "visualize"]
