"""The notes, sections and figures of ``evaluate_model``'s report (report.md beside the tables)."""
from dcme_layers.core.encoding import vector_map
from dcme_layers.data import cityscapes
from dcme_layers.evaluation.cs_eval import CLASS_NAMES
from dcme_layers.evaluation.report import format_confusion
from dcme_layers.evaluation.visualize import instance_figure, write_figure

__all__ = ["intro_notes", "timing_note", "confusion_section", "figures_section", "write_figures"]


def intro_notes(model, split, options, source, weights, frames, size, classifier):
    """The report's first notes: the maps' source and resolution, where the classes come from, the instance cap.

    Arguments:
        options: the EvalOptions; source: ("predictions" or "weights", path); frames: how many; size: (H, W) of
        the maps; classifier: a Classifier or None.
    """
    o = options
    return [f"Model {model}, {source[0]} {o.predictions or weights}; {frames} frames of {split} at "
            f"{size[0]}x{size[1]}, masks upsampled ({o.upsample}) to the ground truth's resolution.",
            "Confidence = GoogLeNet probability x decoding score; ground-truth classes: the majority "
            "ground-truth class under each decoded instance, which drops instances on background."
            if classifier else
            "Classes: majority ground-truth class under each decoded instance (no classifier).",
            f"At most the {o.max_instances} best-scored decoded instances of a frame are kept."]


def timing_note(predictor, seconds):
    """The time per frame of each step of one export (a FramePredictor that predicted frames, and the export's
    ``seconds``)."""
    n, spent, classes = predictor.count, predictor.seconds, predictor.classes
    what = "GoogLeNet" if classes else "ground-truth"
    rest = seconds - spent["decode"] - spent["truth"] - spent["classify"]
    return (f"Time per frame with {what} classes ({n} frames exported in this run): decode "
            f"{1e3 * spent['decode'] / n:.0f} ms, classify {1e3 * spent['classify'] / n:.0f} ms, "
            f"export {1e3 * rest / n:.0f} ms (and {1e3 * spent['truth'] / n:.0f} ms reading the "
            f"ground truth{' for the confusion matrix' if classes else ''}).")


def confusion_section(m):
    """(heading, markdown) of the classifier's confusion matrix ``m`` (labels.confusion_matrix)."""
    return ("GoogLeNet's classes of the decoded instances",
            "Each decoded instance's majority ground-truth class (rows; none: no ground-truth instance under it) "
            "against GoogLeNet's class (columns), over the split.\n\n" + format_confusion(m))


def figures_section(links, classifier):
    """(heading, markdown) linking the figures (``write_figures``' links)."""
    return ("Figures", f"The first {len(links)} frames: decoded instances with "
            f"{'GoogLeNet' if classifier else 'ground-truth'} classes and their confidence | the ground truth, "
            f"with |V| of each below.\n\n" + "\n\n".join(links))


def write_figures(out, frames, drawn, names):
    """``out``/figures/<frame>.png (visualize.instance_figure) of the frames ``names``.

    Arguments:
        frames: the split's cityscapes.Frame list; drawn: {frame name: FramePrediction} of at least ``names``.
    Returns:
        The report's Markdown links to the figures, in order.
    """
    class_name = dict(zip(cityscapes.INSTANCE_LABEL_IDS, CLASS_NAMES))
    by_name = {f.name: f for f in frames}
    links = []
    for name in names:
        p = drawn[name]
        captions = [f"{class_name[int(c)]} {s:.2f}" for c, s in zip(p.label_ids, p.scores)]
        figure = instance_figure(cityscapes.read_image(by_name[name].image), p.labels, captions, p.gt_ids, p.vmap,
                                 vector_map(p.inst))
        write_figure(out / "figures" / f"{name}.png", figure)
        links.append(f"![{name}](figures/{name}.png)")
    return links
