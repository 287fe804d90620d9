"""Reports of evaluation results: ``report.md`` (the layout of the paper's Tables 1-3, and AP per class) and
``report.json``."""
import json
from pathlib import Path

from dcme_layers.evaluation.cs_eval import CLASS_NAMES, METRICS
from dcme_layers.util.files import atomic_write

__all__ = ["format_tables", "format_confusion", "write_report"]


def _pct(x):
    return "N/A" if x is None else f"{100 * x:.1f}"


def _cell(r, metric):
    """A metric in percent, with its bootstrap interval [lo, hi] where the result has one."""
    span = r.get("interval", {}).get(metric)
    return _pct(r[metric]) + (f" [{_pct(span[0])}, {_pct(span[1])}]" if span else "")


def format_tables(results):
    """Markdown of a list of evaluate() results: the overall table (rows = configurations, columns = AP, AP50%,
    AP100m, AP50m, like the paper's Tables 1-3, with the bootstrap interval where there is one) and the per-class
    AP table, values in percent."""
    head = "| Method | " + " | ".join(METRICS) + " |"
    lines = [head, "|" + "---|" * (len(METRICS) + 1)]
    for r in results:
        lines.append(f"| {r['name']} | " + " | ".join(_cell(r, m) for m in METRICS) + " |")
    lines += ["", "| Method (AP per class) | " + " | ".join(CLASS_NAMES) + " |",
              "|" + "---|" * (len(CLASS_NAMES) + 1)]
    for r in results:
        lines.append(f"| {r['name']} | " + " | ".join(_pct(r["classes"][c]["AP"]) for c in CLASS_NAMES) + " |")
    return "\n".join(lines)


def format_confusion(m):
    """Markdown of a confusion_matrix, with each row's share classified right."""
    rows = list(CLASS_NAMES) + ["none"]
    lines = ["| majority ground truth \\ GoogLeNet | " + " | ".join(CLASS_NAMES) + " | right |",
             "|" + "---|" * (len(CLASS_NAMES) + 2)]
    for k, name in enumerate(rows):
        n = m[k].sum()
        right = f"{100 * m[k, k] / n:.0f}%" if k < len(CLASS_NAMES) and n else "-"
        lines.append(f"| {name} ({n}) | " + " | ".join(str(v) for v in m[k]) + f" | {right} |")
    return "\n".join(lines)


def write_report(results, out_dir, title="DCME instance segmentation on Cityscapes", notes=(), sections=()):
    """Write ``report.md`` and ``report.json`` (atomically) for one evaluate() result or a list of them.

    Markdown: title, the overall table and the per-class table (percent; N/A where no disparity/camera data or
    no ground truth of a class), then ``notes`` lines, then ``sections`` ((heading, markdown) pairs: the confusion
    matrix, the figures). JSON: {"title", "results": [...], "notes"} with fractions.
    Returns (markdown path, json path).
    """
    if isinstance(results, dict):
        results = [results]
    results = list(results)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    md = [f"# {title}", "", format_tables(results), ""]
    frames = sorted({r["frames"] for r in results})
    md.append(f"Frames evaluated: {', '.join(map(str, frames))}. Metrics from cityscapesscripts' instance "
              f"evaluator, in percent. AP100m/AP50m: N/A where the split has no disparity/camera files.")
    boot = next((r["interval"] for r in results if r.get("interval")), None)
    if boot:
        md.append(f"[lo, hi]: {100 * boot['level']:.0f}% interval, percentile bootstrap over frames ("
                  f"{boot['resamples']} draws of the frames with replacement, each scored by the evaluator's "
                  f"evaluateMatches on the per-frame matches).")
    md += [""] + [f"- {n}" for n in notes]
    for heading, text in sections:
        md += ["", f"## {heading}", "", text]
    md_path, json_path = out_dir / "report.md", out_dir / "report.json"
    atomic_write(md_path, lambda t: t.write_text("\n".join(md).rstrip() + "\n"))
    doc = {"title": title, "results": results, "notes": list(notes)}
    atomic_write(json_path, lambda t: t.write_text(json.dumps(doc, indent=2) + "\n"))
    return md_path, json_path


