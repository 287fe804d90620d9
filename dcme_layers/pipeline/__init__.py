"""End-to-end jobs over a split: infer, decode, classify and score (``evaluate``), and the threshold search
(``tuning``)."""
__all__ = ["decode_classify", "evaluate", "evaluate_report", "tuning"]
