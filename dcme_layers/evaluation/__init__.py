"""Scoring: export to the Cityscapes results format, the official evaluator, the oracle ceilings, label helpers,
reports and figures."""
__all__ = ["cs_eval", "export", "labels", "oracle", "report", "visualize"]
