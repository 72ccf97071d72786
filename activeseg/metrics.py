"""Per-item segmentation and classification metrics, and the statistics used to compare strategies.

Everything here is plain numpy/scipy on arrays; plotting lives in :mod:`activeseg.report`.

Empty-denominator policy (one rule per metric, applied per item):

* **Dice** and **IoU** are 1 when both the prediction and the ground truth are empty (a perfect
  "nothing here"), and follow the formula otherwise, so they are 0 when the ground truth is empty
  but the prediction is not (and vice versa).
* **Sensitivity** (recall of foreground) is 1 when the ground truth has no foreground.
* **Specificity** (recall of background) is 1 when the ground truth has no background.

No metric is ever NaN, so means over items need no special casing.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import stats

METRIC_NAMES = ("dice", "iou", "sensitivity", "specificity")


def _safe_ratio(num_N: np.ndarray, den_N: np.ndarray, empty_value: float) -> np.ndarray:
    """Return ``num / den`` per item, with ``empty_value`` where ``den == 0``."""
    out_N = np.full(num_N.shape, empty_value, dtype=np.float64)
    nonzero_N = den_N > 0
    out_N[nonzero_N] = num_N[nonzero_N] / den_N[nonzero_N]
    return out_N


def segmentation_metrics(pred_N_S: np.ndarray, target_N_S: np.ndarray) -> dict[str, np.ndarray]:
    """Binary segmentation metrics, one value per item.

    Args:
        pred_N_S: predicted masks, boolean or 0/1, shape ``[N, *spatial]``.
        target_N_S: ground-truth masks of the same shape.

    Returns:
        ``{"dice", "iou", "sensitivity", "specificity"}`` each a float64 array of shape ``[N]``.
        See the module docstring for the values used when a denominator is empty.

    Raises:
        ValueError: if the shapes differ or the arrays have no item axis.
    """
    pred_N_S = np.asarray(pred_N_S)
    target_N_S = np.asarray(target_N_S)
    if pred_N_S.shape != target_N_S.shape:
        raise ValueError(
            f"prediction has shape {pred_N_S.shape} but target has shape {target_N_S.shape}; "
            "both must be [N, *spatial]"
        )
    if pred_N_S.ndim < 1:
        raise ValueError("masks must have shape [N, *spatial]; got a scalar")
    n = pred_N_S.shape[0]
    pred_N_P = pred_N_S.reshape(n, -1).astype(bool)
    target_N_P = target_N_S.reshape(n, -1).astype(bool)

    tp_N = np.sum(pred_N_P & target_N_P, axis=1).astype(np.float64)
    fp_N = np.sum(pred_N_P & ~target_N_P, axis=1).astype(np.float64)
    fn_N = np.sum(~pred_N_P & target_N_P, axis=1).astype(np.float64)
    tn_N = np.sum(~pred_N_P & ~target_N_P, axis=1).astype(np.float64)

    return {
        "dice": _safe_ratio(2 * tp_N, 2 * tp_N + fp_N + fn_N, 1.0),
        "iou": _safe_ratio(tp_N, tp_N + fp_N + fn_N, 1.0),
        "sensitivity": _safe_ratio(tp_N, tp_N + fn_N, 1.0),
        "specificity": _safe_ratio(tn_N, tn_N + fp_N, 1.0),
    }


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
