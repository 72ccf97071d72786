"""Per-item segmentation and classification metrics, and the statistics used to compare strategies.

Everything here is plain numpy/scipy on arrays; plotting lives in :mod:`activeseg.report`.

Empty-denominator policy (one rule per metric, applied per item):

* **Dice** and **IoU** are 1 when both the prediction and the ground truth are empty (a perfect
  "nothing here"), and follow the formula otherwise, so they are 0 when the ground truth is empty
  but the prediction is not (and vice versa).
* **Sensitivity** (recall of foreground) is 1 when the ground truth has no foreground.
* **Specificity** (recall of background) is 1 when the ground truth has no background.

No metric is ever NaN, so means over items need no special casing. Pixels whose ground truth is the
ignore value (255: "not labelled", e.g. nuclei cut by a test region's guard band) count nowhere.

Multi-class maps: Dice and IoU per class, their mean over the foreground classes (``dice``, ``iou``) and
the mean IoU over all classes (``miou``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import stats

METRIC_NAMES = ("dice", "iou", "miou", "sensitivity", "specificity")
IGNORE_INDEX = 255  # the "not labelled" mask value (activeseg.data.dataset.IGNORE_INDEX)


def _safe_ratio(num_N: np.ndarray, den_N: np.ndarray, empty_value: float) -> np.ndarray:
    """Return ``num / den`` per item, with ``empty_value`` where ``den == 0``."""
    out_N = np.full(num_N.shape, empty_value, dtype=np.float64)
    nonzero_N = den_N > 0
    out_N[nonzero_N] = num_N[nonzero_N] / den_N[nonzero_N]
    return out_N


def confusion_per_item(pred_N_S: np.ndarray, target_N_S: np.ndarray, num_classes: int,
                       ignore_index: int | None = IGNORE_INDEX) -> np.ndarray:
    """``[N, C, C]`` pixel counts (true class, predicted class) of each item, pixels whose target is
    ``ignore_index`` left out.

    Raises:
        ValueError: if the shapes differ, or a target (or prediction) holds a value that is neither a class
            ``0..C-1`` nor ``ignore_index``.
    """
    pred_N_S, target_N_S = np.asarray(pred_N_S), np.asarray(target_N_S)
    if pred_N_S.shape != target_N_S.shape:
        raise ValueError(
            f"prediction has shape {pred_N_S.shape} but target has shape {target_N_S.shape}; "
            "both must be [N, *spatial]"
        )
    if pred_N_S.ndim < 1:
        raise ValueError("masks must have shape [N, *spatial]; got a scalar")
    n = pred_N_S.shape[0]
    target_N_P = target_N_S.reshape(n, -1).astype(np.int64)
    pred_N_P = pred_N_S.reshape(n, -1).astype(np.int64)
    valid_N_P = np.ones(target_N_P.shape, bool) if ignore_index is None else target_N_P != ignore_index
    for name, values in (("target", target_N_P[valid_N_P]), ("prediction", pred_N_P[valid_N_P])):
        if values.size and (values.min() < 0 or values.max() >= num_classes):
            bad = values[(values < 0) | (values >= num_classes)][0]
            raise ValueError(f"{name} holds the value {bad}, not a class 0..{num_classes - 1}"
                             + ("" if ignore_index is None else f" or the ignore value {ignore_index}"))
    item_N_P = np.broadcast_to(np.arange(n)[:, None], target_N_P.shape)
    flat = (item_N_P * num_classes + target_N_P) * num_classes + pred_N_P
    counts = np.bincount(flat[valid_N_P], minlength=n * num_classes * num_classes)
    return counts.reshape(n, num_classes, num_classes).astype(np.float64)


def segmentation_metrics(pred_N_S: np.ndarray, target_N_S: np.ndarray, num_classes: int = 2,
                         ignore_index: int | None = IGNORE_INDEX,
                         class_names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Segmentation metrics of class maps, one value per item.

    ``dice`` and ``iou`` are the means over the foreground classes 1..C-1 (for a binary task: the
    foreground's), ``miou`` the mean IoU over all C classes, ``sensitivity`` / ``specificity`` those of
    "any foreground" (class ≥ 1) against background. With C > 2 every foreground class also gets
    ``dice_<name>`` and ``iou_<name>`` (names from ``class_names``, else ``c1``, ``c2``, ...). A class
    absent from both the prediction and the ground truth of an item scores 1 there (module docstring).

    Args:
        pred_N_S: predicted class maps (or boolean foreground masks), shape ``[N, *spatial]``.
        target_N_S: ground-truth class maps of the same shape; pixels equal to ``ignore_index`` are left
            out of every count.
        num_classes: C.
        ignore_index: the "not labelled" value, or None.
        class_names: C names, background first (per-class keys).

    Returns:
        ``{"dice", "iou", "miou", "sensitivity", "specificity", ...}`` float64 arrays of shape ``[N]``.

    Raises:
        ValueError: if the shapes differ, the arrays have no item axis, or a value is not a class.
    """
    conf_N_C_C = confusion_per_item(pred_N_S, target_N_S, num_classes, ignore_index)
    tp_N_C = np.diagonal(conf_N_C_C, axis1=1, axis2=2)
    fn_N_C = conf_N_C_C.sum(2) - tp_N_C
    fp_N_C = conf_N_C_C.sum(1) - tp_N_C
    dice_N_C = _safe_ratio(2 * tp_N_C, 2 * tp_N_C + fp_N_C + fn_N_C, 1.0)
    iou_N_C = _safe_ratio(tp_N_C, tp_N_C + fp_N_C + fn_N_C, 1.0)
    tn_fg = conf_N_C_C[:, 0, 0]  # background called background
    tp_fg = conf_N_C_C[:, 1:, 1:].sum((1, 2))  # foreground called any foreground
    fn_fg = conf_N_C_C[:, 1:, 0].sum(1)
    fp_fg = conf_N_C_C[:, 0, 1:].sum(1)
    out = {
        "dice": dice_N_C[:, 1:].mean(1),
        "iou": iou_N_C[:, 1:].mean(1),
        "miou": iou_N_C.mean(1),
        "sensitivity": _safe_ratio(tp_fg, tp_fg + fn_fg, 1.0),
        "specificity": _safe_ratio(tn_fg, tn_fg + fp_fg, 1.0),
    }
    if num_classes > 2:
        names = list(class_names) if class_names is not None else [f"c{c}" for c in range(num_classes)]
        for c in range(1, num_classes):
            out[f"dice_{names[c]}"] = dice_N_C[:, c]
            out[f"iou_{names[c]}"] = iou_N_C[:, c]
    return out


def pooled_metrics(pred_N_S: np.ndarray, target_N_S: np.ndarray, num_classes: int, groups_N=None,
                   ignore_index: int | None = IGNORE_INDEX,
                   class_names: Sequence[str] | None = None) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """The segmentation metrics of the items taken together: every group of items (all of them, or each
    source when ``groups_N`` names one per item) scored as one region made of all its pixels, e.g. the Dice
    of a held-out slab cut into tiles, as one volume's Dice is reported, rather than the mean of its tiles'
    Dice (a tile without a structure scores 1 for it whatever the model knows).

    Returns:
        (``{metric: mean over groups}``, ``{group: {metric: value}}``), the metrics of
        :func:`segmentation_metrics`.
    """
    pred_N_S, target_N_S = np.asarray(pred_N_S), np.asarray(target_N_S)
    groups_N = np.zeros(len(pred_N_S), int) if groups_N is None else np.asarray(list(groups_N))
    own = {}
    for g in sorted(set(groups_N.tolist())):
        sel = groups_N == g
        one = segmentation_metrics(pred_N_S[sel].reshape(1, -1), target_N_S[sel].reshape(1, -1), num_classes,
                                   ignore_index, class_names)
        own[str(g)] = {k: float(v[0]) for k, v in one.items()}
    keys = next(iter(own.values()), {}).keys()
    return {k: float(np.mean([v[k] for v in own.values()])) for k in keys}, own


def by_source(per_item: dict[str, np.ndarray], sources: Sequence[str]) -> tuple[dict[str, float], dict[str, dict]]:
    """Means of per-item metrics with every source weighted equally, and each source's own means.

    Args:
        per_item: ``{metric: [N]}``.
        sources: the source of each item (``N`` names).

    Returns:
        (``{metric: mean over sources of the source means}``, ``{source: {metric: mean}}``).
    """
    sources_N = np.asarray(list(sources))
    own = {str(src): mean_metrics({k: np.asarray(v)[sources_N == src] for k, v in per_item.items()})
           for src in sorted(set(sources_N.tolist()))}
    if not own:
        return mean_metrics(per_item), {}
    equal = {k: float(np.nanmean([own[src][k] for src in own])) if any(np.isfinite(own[src][k]) for src in own)
             else float("nan") for k in per_item}
    return equal, own


def auc_one_vs_rest(probs_N_C: np.ndarray, labels_N: np.ndarray) -> float:
    """Macro one-vs-rest ROC AUC: per class, the Mann-Whitney probability that a random member scores
    higher than a random non-member (ties count half), averaged over classes with both present.

    Returns NaN when no class has both members and non-members.
    """
    probs_N_C = np.asarray(probs_N_C, dtype=np.float64)
    labels_N = np.asarray(labels_N)
    aucs = []
    for c in range(probs_N_C.shape[1]):
        member_N = labels_N == c
        n_pos, n_neg = int(member_N.sum()), int((~member_N).sum())
        if n_pos == 0 or n_neg == 0:
            continue
        ranks_N = stats.rankdata(probs_N_C[:, c])  # average ranks: ties count half
        aucs.append((ranks_N[member_N].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
    return float(np.mean(aucs)) if aucs else float("nan")


def classification_metrics(probs_N_C: np.ndarray, labels_N: np.ndarray) -> tuple[dict[str, np.ndarray], dict]:
    """Per-item accuracy of the argmax, and the summary: accuracy, error (1 - accuracy), macro AUC.

    Args:
        probs_N_C: class probabilities.
        labels_N: true classes.

    Returns:
        (``{"accuracy": [N]}`` of 0/1, ``{"accuracy", "error", "auc"}``); an empty set gives NaN.
    """
    labels_N = np.asarray(labels_N)
    if len(probs_N_C) != len(labels_N):
        raise ValueError(f"{len(probs_N_C)} predictions for {len(labels_N)} labels")
    correct_N = (np.asarray(probs_N_C).argmax(1) == labels_N).astype(np.float64)
    accuracy = float(correct_N.mean()) if len(correct_N) else float("nan")
    summary = {"accuracy": accuracy, "error": 1.0 - accuracy, "auc": auc_one_vs_rest(probs_N_C, labels_N)}
    return {"accuracy": correct_N}, summary


def mean_metrics(per_item: dict[str, np.ndarray | Sequence[float]]) -> dict[str, float]:
    """Average each per-item metric over items (NaNs ignored); an empty list gives NaN."""
    out = {}
    for name, values in per_item.items():
        values_N = np.asarray(values, dtype=np.float64)
        out[name] = float(np.nanmean(values_N)) if np.any(~np.isnan(values_N)) else float("nan")
    return out


def annotations_to_target(
    n_annotations: Sequence[int],
    values: Sequence[float],
    target: float,
    higher_is_better: bool = True,
) -> int | None:
    """Annotations spent at the first round whose metric reaches ``target``.

    Args:
        n_annotations: annotations used at each round, shape ``[R]``.
        values: the metric at each round, shape ``[R]``.
        target: the value to reach (inclusive).
        higher_is_better: ``True`` for Dice-like metrics (reach means ``>=``), ``False`` for
            errors (reach means ``<=``).

    Returns:
        ``n_annotations`` of the first round that reaches the target, or ``None`` if none does.
    """
    if len(n_annotations) != len(values):
        raise ValueError(
            f"n_annotations has {len(n_annotations)} entries but values has {len(values)}; "
            "pass one value per round"
        )
    for n, value in zip(n_annotations, values, strict=True):
        if value is None or np.isnan(value):
            continue
        if (value >= target) if higher_is_better else (value <= target):
            return int(n)
    return None


def best_round(values: Sequence[float | None]) -> int | None:
    """Index of the highest value (the first on ties; None and NaN skipped), or None if there is none:
    the best-validation round that Nath et al. (2020) report a method by."""
    best, best_value = None, -np.inf
    for i, value in enumerate(values):
        if value is not None and not np.isnan(value) and value > best_value:
            best, best_value = i, value
    return best


def efficiency_ratio(baseline_annotations: float | None, annotations: float | None) -> float | None:
    """Labelling efficiency against a baseline: ``baseline_annotations / annotations`` to reach the same
    target (2.0: half the labels random needs); None when either never reached it."""
    if baseline_annotations is None or annotations is None or annotations <= 0:
        return None
    return float(baseline_annotations) / float(annotations)


def mean_band(curves_S_R: np.ndarray, level: float = 0.9) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean over seeds with a Student-t confidence interval, per round.

    Each column (round) uses only its non-NaN seeds. With one seed the band collapses to the mean;
    with none, all three outputs are NaN.

    Args:
        curves_S_R: one curve per seed, shape ``[S, R]``; NaN where a seed has no value.
        level: two-sided confidence level of the interval.

    Returns:
        ``(mean_R, lo_R, hi_R)``.
    """
    curves_S_R = np.atleast_2d(np.asarray(curves_S_R, dtype=np.float64))
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    valid_S_R = ~np.isnan(curves_S_R)
    n_R = valid_S_R.sum(axis=0)
    filled_S_R = np.where(valid_S_R, curves_S_R, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_R = filled_S_R.sum(axis=0) / n_R
        sq_dev_S_R = np.where(valid_S_R, (curves_S_R - mean_R) ** 2, 0.0)
        sd_R = np.sqrt(sq_dev_S_R.sum(axis=0) / (n_R - 1))
        t_R = stats.t.ppf(0.5 + level / 2, np.maximum(n_R - 1, 1))
        half_R = np.where(n_R > 1, t_R * sd_R / np.sqrt(n_R), 0.0)
    mean_R = np.where(n_R > 0, mean_R, np.nan)
    return mean_R, mean_R - half_R, mean_R + half_R


def area_under_curve(x: Sequence[float], y: Sequence[float]) -> float:
    """Trapezoidal area under ``y(x)`` divided by the x-range (a mean height).

    Points with a NaN ``y`` are dropped; points are sorted by ``x``. A single point gives its ``y``;
    no points give NaN.
    """
    x_R = np.asarray(x, dtype=np.float64)
    y_R = np.asarray(y, dtype=np.float64)
    if x_R.shape != y_R.shape:
        raise ValueError(f"x has shape {x_R.shape} but y has shape {y_R.shape}")
    keep_R = ~(np.isnan(x_R) | np.isnan(y_R))
    x_R, y_R = x_R[keep_R], y_R[keep_R]
    if x_R.size == 0:
        return float("nan")
    order = np.argsort(x_R, kind="stable")
    x_R, y_R = x_R[order], y_R[order]
    span = x_R[-1] - x_R[0]
    if span == 0:
        return float(np.mean(y_R))
    return float(np.sum((x_R[1:] - x_R[:-1]) * (y_R[1:] + y_R[:-1]) / 2) / span)


def wilcoxon_paired(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided Wilcoxon signed-rank p-value for paired samples ``a`` and ``b``.

    Returns 1.0 when every difference is zero (no evidence of a difference).

    References:
        Wilcoxon, "Individual comparisons by ranking methods", 1945. https://doi.org/10.2307/3001968
    """
    a_N = np.asarray(a, dtype=np.float64)
    b_N = np.asarray(b, dtype=np.float64)
    if a_N.shape != b_N.shape:
        raise ValueError(
            f"paired samples must have the same length: a has {a_N.shape} and b has {b_N.shape}"
        )
    if a_N.size == 0 or np.all(a_N - b_N == 0):
        return 1.0
    return float(stats.wilcoxon(a_N, b_N, alternative="two-sided").pvalue)
