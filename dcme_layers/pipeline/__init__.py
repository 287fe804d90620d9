"""End-to-end jobs over a split: infer, decode, classify and score (``evaluate``, its per-frame step in
``decode_classify``, its report's prose and figures in ``evaluate_report``), and the threshold search (``tuning``:
the grid in ``tuning_grid``, the scoring in ``tuning_search``, the table and heat map in ``tuning_outputs``)."""
__all__ = ["decode_classify", "evaluate", "evaluate_report", "tuning", "tuning_grid", "tuning_outputs",
           "tuning_search"]
