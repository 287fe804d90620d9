"""cityscapesscripts' instance evaluator (2.3.0) one step at a time: its args, ground-truth instances, per-frame
matching and AP, called as its ``evaluateImgLists`` calls them.

Adaptations: a per-run ``args`` object (no ``gtInstances.json`` cache, no ``matches.json`` in the working
directory); ground-truth distances from disparity and camera files (``distances``) with ``distanceAvailable`` set;
a (distance, class, overlap) cell that hits cityscapesscripts issue #89 (IndexError when a class's only predictions
lie on void and no ground truth is matched) is scored 0.0, the AP it has by definition. numpy stays at 2.2
(requirements.txt), which the evaluator's ``np.in1d`` needs.
"""
import contextlib
import io
import os
import warnings
from copy import copy

import numpy as np

from dcme_layers.data import cityscapes
from dcme_layers.data.cityscapes import INSTANCE_LABEL_IDS
from dcme_layers.evaluation.distances import instance_distances, side_files
from dcme_layers.util.errors import EvaluationError
from dcme_layers.util.files import png_size

__all__ = ["evaluator", "no_exit", "quiet_warnings", "evaluator_args", "instances_dict", "match_frame",
           "evaluate_matches", "average_precision"]


def evaluator():
    """cityscapesscripts' evaluator module (imported on first use)."""
    from cityscapesscripts.evaluation import evalInstanceLevelSemanticLabeling as ev
    return ev


@contextlib.contextmanager
def no_exit(what):
    """cityscapesscripts reports bad input by printing 'ERROR: ...' and calling sys.exit: turn that into an
    EvaluationError naming ``what``."""
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf):
            yield
    except SystemExit:
        msg = " ".join(buf.getvalue().split()) or "cityscapesscripts exited"
        raise EvaluationError(f"{what}: {msg}") from None


@contextlib.contextmanager
def quiet_warnings():
    """No RuntimeWarning or DeprecationWarning (the evaluator's np.in1d, deprecated in numpy 2.2) inside."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        yield


def evaluator_args(pred_dir, distance=False, region_scale=1.0):
    """The evaluator's args for scoring the predictions under ``pred_dir``.

    Arguments:
        pred_dir: folder every predicted mask lies in (the evaluator refuses masks outside it).
        distance: score AP100m and AP50m too (the ground truth then needs ``instances_dict(distance=True)``).
        region_scale: factor on the evaluator's least ground-truth region size (100 pixels at 1024x2048), for
            ground truth subsampled to another size: its area ratio (1 at full resolution).
    Returns:
        The evaluator's ``CArgs``.
    """
    ev = evaluator()
    args = ev.CArgs()
    args.__dict__.update(copy(vars(ev.args)))
    args.minRegionSizes = np.asarray(args.minRegionSizes) * region_scale
    args.predictionPath = os.path.abspath(pred_dir)
    args.predictionWalk = None
    args.quiet = True
    args.JSONOutput = False
    args.colorized = False
    args.csv = False
    args.distanceAvailable = bool(distance)
    ev.setInstanceLabels(args)
    return args


def instances_dict(gt_file, distance=False):
    """The evaluator's instances dict of one instanceIds PNG (its ``instances2dict``).

    Arguments:
        gt_file: the instanceIds PNG; distance: fill medDist and distConf from its disparity and camera files.
    Returns:
        {class name: [{"instID", "labelID", "pixelCount", "medDist", "distConf"}]}.
    """
    from cityscapesscripts.evaluation.instances2dict import instances2dict

    with no_exit(gt_file):
        gt = instances2dict([str(gt_file)], False)[os.path.abspath(gt_file)]
    if distance:
        dist = instance_distances(cityscapes.read_instance_ids(gt_file), *side_files(gt_file))
        for insts in gt.values():
            for inst in insts:
                inst["medDist"], inst["distConf"] = dist[inst["instID"]]
    return gt


def match_frame(pred_txt, gt_file, gt_instances, args):
    """One frame's matches by the evaluator's ``assignGt2Preds``, after checking the prediction's masks.

    Arguments:
        pred_txt: the frame's ``<frame>_pred.txt`` (masks of the ground truth's size).
        gt_file: its instanceIds PNG; gt_instances: ``instances_dict(gt_file)``; args: ``evaluator_args``.
    Returns:
        (absolute gt path, {"groundTruth", "prediction"}), an item of the matches ``evaluate_matches`` takes.
    """
    pred, gt = str(pred_txt), str(gt_file)
    ev = evaluator()
    with no_exit(pred):
        gt_image = ev.readGTImage(gt, args)
        pred_info = ev.readPredInfo(pred, args)
    shape = (gt_image.size[1], gt_image.size[0])
    for mask in pred_info:
        if not os.path.isfile(mask):
            raise EvaluationError(f"{pred}: mask {mask} does not exist")
        got = png_size(mask)
        if got != shape:
            raise EvaluationError(f"{mask}: mask must be a {shape[1]}x{shape[0]} PNG like its ground truth {gt}"
                                  f"{', got not a PNG' if got is None else f', got {got[1]}x{got[0]}'}")
        if pred_info[mask]["labelID"] not in INSTANCE_LABEL_IDS:
            raise EvaluationError(f"{pred}: label id {pred_info[mask]['labelID']} is not an instance class")
        if not np.isfinite(pred_info[mask]["conf"]):
            raise EvaluationError(f"{pred}: non-finite confidence for {mask}")
    cur = ev.filterGtInstances(gt_instances, args)
    with no_exit(pred), quiet_warnings():
        g, p = ev.assignGt2Preds(cur, gt_image, pred_info, args)
    return os.path.abspath(gt), {"groundTruth": g, "prediction": p}


def evaluate_matches(matches, args):
    """The evaluator's evaluateMatches: AP (distances, classes, overlaps); a cell hit by upstream issue #89 is 0.0."""
    ev = evaluator()
    try:
        return ev.evaluateMatches(matches, args)
    except IndexError:
        pass
    n_dist = len(args.distanceThs) if args.distanceAvailable else 1
    ap = np.zeros((n_dist, len(args.instLabels), len(args.overlaps)))
    for d in range(n_dist):
        for li, label in enumerate(args.instLabels):
            for oi, overlap in enumerate(args.overlaps):
                a = copy(args)
                a.instLabels = [label]
                a.overlaps = np.array([overlap])
                if args.distanceAvailable:
                    a.minRegionSizes = args.minRegionSizes[d:d + 1]
                    a.distanceThs = args.distanceThs[d:d + 1]
                    a.distanceConfs = args.distanceConfs[d:d + 1]
                try:
                    ap[d, li, oi] = ev.evaluateMatches(matches, a)[0, 0, 0]
                except IndexError:
                    ap[d, li, oi] = 0.0
    return ap


def average_precision(matches, args):
    """AP and AP50% (fractions) of per-frame matches by the evaluator's ``evaluateMatches`` and
    ``computeAverages`` (NaN when no frame has ground truth of any class)."""
    with np.errstate(all="ignore"), quiet_warnings():
        avg = evaluator().computeAverages(evaluate_matches(matches, args), args)
    return float(avg["allAp"]), float(avg["allAp50%"])
