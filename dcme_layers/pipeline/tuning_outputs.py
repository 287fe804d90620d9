"""The tuner's outputs: table.csv / table.md (every setting's AP and AP50%), best.json, best.txt and heatmap.png
(AP over DT x VT at the best ET)."""
import json
from pathlib import Path

import numpy as np

from dcme_layers.core.thresholds import parse_thresholds
from dcme_layers.pipeline.tuning_grid import setting_key
from dcme_layers.util.files import atomic_write

__all__ = ["format_table", "write_heatmap", "write_outputs"]


def format_table(settings, results, best, paper_key):
    """(CSV text in grid order, Markdown table best first) of every setting's AP and AP50% in %."""
    csv = ["DT,VT,ET,AP,AP50%"] + [f"{th.dt:g},{th.vt},{th.et:g},{100 * results[setting_key(th)][0]:.2f},"
                                   f"{100 * results[setting_key(th)][1]:.2f}" for th in settings]
    order = sorted(settings, key=lambda th: -np.nan_to_num(results[setting_key(th)][0], nan=-1.0))
    md = ["| DT | VT | ET | AP | AP50% | |", "|---|---|---|---|---|---|"]
    for th in order:
        ap, ap50 = results[setting_key(th)]
        mark = " ".join(m for m, k in (("best", best), ("paper", paper_key)) if k == setting_key(th))
        md.append(f"| {th.dt:g} | {th.vt} | {th.et:g} | {100 * ap:.1f} | {100 * ap50:.1f} | {mark} |")
    return "\n".join(csv) + "\n", "\n".join(md) + "\n"


def write_heatmap(path, settings, results, best, paper_key, title):
    """A PNG of AP (%) over DT (rows) x VT (columns) at the best setting's ET, values in the cells, the best
    setting and the paper's (when in the grid, at any ET) outlined."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    b = parse_thresholds(best)
    dts = sorted({th.dt for th in settings})
    vts = sorted({th.vt for th in settings})
    ap = np.full((len(dts), len(vts)), np.nan)
    for th in settings:
        if th.et == b.et:
            ap[dts.index(th.dt), vts.index(th.vt)] = 100 * results[setting_key(th)][0]
    fig, ax = plt.subplots(figsize=(max(6.4, 1.2 * len(vts) + 2.8), 0.8 * len(dts) + 2.0))
    im = ax.imshow(ap, cmap="viridis", origin="lower", aspect="auto")
    fig.colorbar(im, ax=ax, label="AP (%)")
    for (r, c), v in np.ndenumerate(ap):
        if np.isfinite(v):  # dark text on the light (high) half of viridis
            ax.text(c, r, f"{v:.1f}", ha="center", va="center", fontsize=10,
                    color="black" if im.norm(v) > 0.5 else "white")
    ax.set_xticks(range(len(vts)), [str(v) for v in vts])
    ax.set_yticks(range(len(dts)), [f"{d:g}" for d in dts])
    ax.set(xlabel="VT (votes)", ylabel="DT (pixels)")
    marks = [(best, "best", "red", "-")]
    p = parse_thresholds(paper_key)
    if p.dt in dts and p.vt in vts:
        at = "" if p.et == b.et or paper_key not in results else f" (ET {p.et:g}: {100 * results[paper_key][0]:.1f})"
        marks.append((paper_key, f"paper{at}", "white", "--"))
    for key, label, color, style in marks:
        th = parse_thresholds(key)
        r, c = dts.index(th.dt), vts.index(th.vt)
        ax.add_patch(Rectangle((c - 0.47, r - 0.47), 0.94, 0.94, fill=False, edgecolor=color, linewidth=2.5,
                               linestyle=style))
        ax.text(c, r - 0.3, label, ha="center", va="center", fontsize=7, color="white", fontweight="bold",
                bbox=dict(facecolor=color if color != "white" else "black", alpha=0.7, linewidth=0, pad=1))
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    atomic_write(Path(path), lambda t: fig.savefig(t, dpi=100, format="png"))
    plt.close(fig)


def write_outputs(folder, settings, results, summary, paper_key):
    """table.csv, table.md, best.json, best.txt and heatmap.png into ``folder``."""
    folder = Path(folder)
    best, (h, w) = summary["thresholds"], summary["size"]
    csv, md = format_table(settings, results, best, paper_key)
    t = summary["timing"]
    head = (f"# Decoding thresholds on {summary['split']} ({summary['frames']} frames, maps at {h}x{w})\n\n"
            f"Maps: {summary['source']}; classes: {summary['classes']}; AP by cityscapesscripts at {h}x{w} "
            f"(ground truth subsampled to it). Best: **{best}** (AP {100 * summary['AP']:.1f})"
            + (f", at full resolution AP {100 * summary['full_resolution']['AP']:.1f}"
               if summary["full_resolution"] else "")
            + f"; the paper's SegNet setting scaled to {h}x{w}: {paper_key}.\n\n"
            f"{t['settings']} settings searched in this run (and the best one scored at full resolution when "
            f"asked) in {t['wall']:.0f} s with {t['workers']} workers "
            f"(summed over them: decoding {t['decode']:.1f} s, scoring {t['score']:.1f} s).\n\n"
            f"![AP over DT x VT](heatmap.png)\n\n")
    atomic_write(folder / "table.csv", lambda p: p.write_text(csv))
    atomic_write(folder / "table.md", lambda p: p.write_text(head + md))
    atomic_write(folder / "best.json", lambda p: p.write_text(json.dumps(summary, indent=1) + "\n"))
    atomic_write(folder / "best.txt", lambda p: p.write_text(best + "\n"))
    et = parse_thresholds(best).et
    write_heatmap(folder / "heatmap.png", settings, results, best, paper_key,
                  f"AP (%) over DT x VT at ET = {et:g} (the best ET)\n{summary['source']}, {summary['split']}, "
                  f"{summary['frames']} frames at {h}x{w}, {summary['classes']} classes")
