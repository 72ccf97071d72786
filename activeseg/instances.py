"""Instance-level metrics for nuclei segmentation: instances from a class map, matching, F1 and AJI.

The nuclei task has three classes: 0 background, 1 nucleus interior, 2 nucleus boundary (a thin band at
every instance's edge, also between touching nuclei). Instances are recovered from a class map (predicted
or ground truth) by :func:`instances_from_classes`, then compared instance by instance.

Conventions (one rule each, applied per item):

* **Connectivity** is face connectivity everywhere (4 in 2-D, 6 in 3-D), so a one-pixel boundary line
  already separates two nuclei; the same code serves any spatial rank.
* **Empty policy**: instance F1 and AJI are 1.0 when both the prediction and the ground truth have no
  instance, and 0.0 when exactly one of them is empty (the formulas give 0 there). Never NaN.
* **Matching**: one-to-one by the Hungarian algorithm maximising the summed IoU, keeping pairs with
  ``IoU >= iou_threshold`` (IoU exactly at the threshold is a match).

References:
    Kumar et al., "A Dataset and a Technique for Generalized Nuclear Segmentation for Computational
    Pathology", IEEE TMI 36(7), 2017. https://doi.org/10.1109/TMI.2017.2677499
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.optimize import linear_sum_assignment

METHODS = ("components",)


def instances_from_classes(
    class_map_S: np.ndarray,
    interior: int = 1,
    boundary: int | None = 2,
    method: str = "components",
    min_size: int = 4,
) -> np.ndarray:
    """Instance label image from a class map of one item.

    ``"components"``: seeds are the face-connected components of the interior class. Boundary pixels are
    then given to the nearest seed *within the foreground* (interior ∪ boundary) by iterative constrained
    dilation: each pass gives every still unlabelled boundary pixel the label of a labelled face neighbour
    (the largest label on a tie), until a pass changes nothing. This is a breadth-first flood, so each
    boundary pixel gets the seed at the smallest city-block geodesic distance through foreground pixels.
    Boundary pixels no seed can reach (a nucleus too small to have interior) form instances of their own,
    one per face-connected component. Finally instances with fewer than ``min_size`` pixels are dropped.

    Args:
        class_map_S: integer class map, shape ``[*spatial]`` (2-D or 3-D). Any value other than
            ``interior`` and ``boundary`` (background, ``ignore_index``) counts as background.
        interior: class of nucleus interiors (the foreground class of a binary map).
        boundary: class of nucleus boundaries; ``None`` for a binary map (C=2) without one.
        method: how instances are formed; one of :data:`METHODS`.
        min_size: smallest instance kept, in pixels (voxels).

    Returns:
        int32 labels of shape ``[*spatial]``, 0 background, instances numbered 1..M.

    Raises:
        ValueError: for an unknown ``method`` or a negative ``min_size``.
    """
    if method not in METHODS:
        raise ValueError(f"unknown instance method {method!r}; valid: {', '.join(METHODS)}")
    if min_size < 0:
        raise ValueError(f"min_size must be >= 0, got {min_size}")
    class_map_S = np.asarray(class_map_S)
    structure = ndimage.generate_binary_structure(class_map_S.ndim, 1)
    labels_S, n_seeds = ndimage.label(class_map_S == interior, structure=structure)
    labels_S = labels_S.astype(np.int32)
    if boundary is not None:
        todo_S = class_map_S == boundary
        while n_seeds > 0:
            grown_S = ndimage.grey_dilation(labels_S, footprint=structure, mode="constant", cval=0)
            step_S = todo_S & (grown_S > 0)
            if not step_S.any():
                break
            labels_S[step_S] = grown_S[step_S]
            todo_S &= ~step_S
        orphans_S, _ = ndimage.label(todo_S, structure=structure)
        labels_S[todo_S] = orphans_S[todo_S] + n_seeds
    sizes = np.bincount(labels_S.ravel())
    keep = sizes >= min_size
    keep[0] = False
    new_ids = np.zeros(sizes.shape[0], dtype=np.int32)
    new_ids[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
    return new_ids[labels_S]


def _dense_ids(labels_S: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted non-zero label values, and the labels renumbered 1..M (0 stays background)."""
    ids_M = np.unique(labels_S)
    ids_M = ids_M[ids_M != 0]
    dense_S = np.where(labels_S != 0, np.searchsorted(ids_M, labels_S) + 1, 0)
    return ids_M, dense_S


def _overlaps(pred_labels: np.ndarray, true_labels: np.ndarray):
    """Instance ids, intersections ``[P, T]`` and sizes ``[P]``, ``[T]`` from one joint histogram."""
    pred_labels, true_labels = np.asarray(pred_labels), np.asarray(true_labels)
    if pred_labels.shape != true_labels.shape:
        raise ValueError(
            f"predicted labels have shape {pred_labels.shape} but true labels have shape "
            f"{true_labels.shape}; both must be the same [*spatial] label image"
        )
    pred_ids_P, pred_S = _dense_ids(pred_labels)
    true_ids_T, true_S = _dense_ids(true_labels)
    n_p, n_t = pred_ids_P.size + 1, true_ids_T.size + 1
    joint = np.bincount((pred_S * n_t + true_S).ravel(), minlength=n_p * n_t).reshape(n_p, n_t)
    return pred_ids_P, true_ids_T, joint[1:, 1:], joint[1:].sum(axis=1), joint[:, 1:].sum(axis=0)


@dataclass(frozen=True)
class InstanceMatch:
    """Result of :func:`match_instances`; ``pairs_M_2`` holds (pred label, true label) values."""

    tp: int
    fp: int
    fn: int
    pairs_M_2: np.ndarray
    iou_M: np.ndarray

    @property
    def f1(self) -> float:
        """``2TP / (2TP + FP + FN)``; 1.0 when both sides have no instance."""
        den = 2 * self.tp + self.fp + self.fn
        return 1.0 if den == 0 else 2 * self.tp / den


def match_instances(pred_labels: np.ndarray, true_labels: np.ndarray, iou_threshold: float = 0.5) -> InstanceMatch:
    """One-to-one matching of predicted to true instances by IoU.

    The IoU of every (pred, true) pair comes from one joint histogram of label pairs. The Hungarian
    algorithm picks the one-to-one assignment with the largest summed IoU; assigned pairs with
    ``IoU >= iou_threshold`` are true positives, the other predictions false positives, the other
    true instances false negatives. Labels need not be consecutive; 0 is background.

    Args:
        pred_labels: predicted instance labels, shape ``[*spatial]``.
        true_labels: ground-truth instance labels, same shape.
        iou_threshold: smallest IoU that counts as a match.

    Returns:
        An :class:`InstanceMatch` with counts, the matched label pairs ``[M, 2]`` and their IoU ``[M]``.
    """
    pred_ids_P, true_ids_T, inter_P_T, size_P, size_T = _overlaps(pred_labels, true_labels)
    iou_P_T = inter_P_T / np.maximum(size_P[:, None] + size_T[None, :] - inter_P_T, 1)
    rows, cols = linear_sum_assignment(iou_P_T, maximize=True)
    ok = iou_P_T[rows, cols] >= iou_threshold
    rows, cols = rows[ok], cols[ok]
    tp = int(rows.size)
    return InstanceMatch(
        tp=tp,
        fp=int(pred_ids_P.size) - tp,
        fn=int(true_ids_T.size) - tp,
        pairs_M_2=np.stack([pred_ids_P[rows], true_ids_T[cols]], axis=1).reshape(-1, 2),
        iou_M=iou_P_T[rows, cols],
    )


def instance_f1(pred_labels: np.ndarray, true_labels: np.ndarray, iou_threshold: float = 0.5) -> float:
    """Instance F1 ``2TP / (2TP + FP + FN)`` of :func:`match_instances`; 1.0 if both are empty."""
    return match_instances(pred_labels, true_labels, iou_threshold).f1


def aji(pred_labels: np.ndarray, true_labels: np.ndarray) -> float:
    """Aggregated Jaccard Index (Kumar et al. 2017).

    For each true instance G, the predicted S of largest IoU with G among those overlapping it (ties:
    the smallest label) adds ``|G ∩ S|`` to the numerator and ``|G ∪ S|`` to the denominator; a G that no
    prediction overlaps adds ``|G|`` to the denominator. A prediction may serve several G. Every
    prediction never chosen adds its size to the denominator. 1.0 when both images have no instance.

    Args:
        pred_labels: predicted instance labels, shape ``[*spatial]``.
        true_labels: ground-truth instance labels, same shape.

    Returns:
        AJI in [0, 1].

    References:
        Kumar et al., IEEE TMI 2017, https://doi.org/10.1109/TMI.2017.2677499
    """
    _, _, inter_P_T, size_P, size_T = _overlaps(pred_labels, true_labels)
    if size_P.size == 0 and size_T.size == 0:
        return 1.0
    if size_P.size == 0:
        return 0.0
    union_P_T = size_P[:, None] + size_T[None, :] - inter_P_T
    best_T = np.argmax(inter_P_T / np.maximum(union_P_T, 1), axis=0)
    cols_T = np.arange(size_T.size)
    hit_T = inter_P_T[best_T, cols_T] > 0
    num = inter_P_T[best_T, cols_T][hit_T].sum()
    used_P = np.zeros(size_P.size, dtype=bool)
    used_P[best_T[hit_T]] = True
    den = union_P_T[best_T, cols_T][hit_T].sum() + size_T[~hit_T].sum() + size_P[~used_P].sum()
    return float(num / den)


def _drop_ignored(pred_S: np.ndarray, true_S: np.ndarray, ignored_S: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Apply the ignore rule of :func:`instance_metrics` to one item's label images."""
    touching_S = ndimage.binary_dilation(ignored_S, structure=np.ones((3,) * ignored_S.ndim, dtype=bool))
    removed_T = np.zeros(int(true_S.max()) + 1, dtype=bool)
    removed_T[np.unique(true_S[touching_S & (true_S > 0)])] = True
    n_p = int(pred_S.max()) + 1
    size_P = np.bincount(pred_S.ravel(), minlength=n_p)
    in_ignored_P = np.bincount(pred_S[ignored_S], minlength=n_p)
    on_true = (pred_S > 0) & (true_S > 0)
    on_kept_P = np.bincount(pred_S[on_true & ~removed_T[true_S]], minlength=n_p) > 0
    on_removed_P = np.bincount(pred_S[on_true & removed_T[true_S]], minlength=n_p) > 0
    drop_P = (2 * in_ignored_P > size_P) | (on_removed_P & ~on_kept_P)
    drop_P[0] = True
    pred_S = np.where(drop_P[pred_S] | ignored_S, 0, pred_S)
    return pred_S, np.where(removed_T[true_S], 0, true_S)


def instance_metrics(
    pred_class_N_S: np.ndarray,
    true_class_N_S: np.ndarray,
    interior: int = 1,
    boundary: int | None = 2,
    ignore_index: int | None = 255,
    iou_threshold: float = 0.5,
    min_size: int = 4,
) -> dict[str, np.ndarray]:
    """Instance F1 and AJI per item, from predicted and ground-truth class maps.

    Instances come from :func:`instances_from_classes` (``min_size`` applies to predictions only; every
    ground-truth instance is kept). Ignore rule, per item, where the ground truth is ``ignore_index``:

    1. a ground-truth instance with a pixel in, or next to (full ``3^d`` neighbourhood), an ignored pixel
       is removed (a nucleus cut by the guard band);
    2. a predicted instance is dropped if more than half of its pixels are ignored, or if it overlaps
       at least one removed ground-truth instance and no kept one;
    3. ignored pixels are cleared from the remaining predicted instances, so they never count.

    Args:
        pred_class_N_S: predicted class maps, shape ``[N, *spatial]`` (2-D or 3-D items).
        true_class_N_S: ground-truth class maps, same shape, ``ignore_index`` where not labelled.
        interior: class of nucleus interiors.
        boundary: class of nucleus boundaries; ``None`` for a binary task.
        ignore_index: "not labelled" value of the ground truth; ``None`` when every pixel is labelled.
        iou_threshold: smallest IoU that counts as a match for the F1.
        min_size: smallest predicted instance kept, in pixels.

    Returns:
        ``{"instance_f1", "aji"}``, each a float64 array of shape ``[N]``.

    Raises:
        ValueError: if the shapes differ or the arrays have no spatial axis.
    """
    pred_class_N_S, true_class_N_S = np.asarray(pred_class_N_S), np.asarray(true_class_N_S)
    if pred_class_N_S.shape != true_class_N_S.shape or pred_class_N_S.ndim < 2:
        raise ValueError(
            f"prediction has shape {pred_class_N_S.shape} and ground truth {true_class_N_S.shape}; "
            "both must be the same [N, *spatial]"
        )
    n = pred_class_N_S.shape[0]
    out = {"instance_f1": np.zeros(n), "aji": np.zeros(n)}
    for i in range(n):
        pred_S = instances_from_classes(pred_class_N_S[i], interior, boundary, min_size=min_size)
        true_S = instances_from_classes(true_class_N_S[i], interior, boundary, min_size=1)
        if ignore_index is not None:
            ignored_S = true_class_N_S[i] == ignore_index
            if ignored_S.any():
                pred_S, true_S = _drop_ignored(pred_S, true_S, ignored_S)
        out["instance_f1"][i] = instance_f1(pred_S, true_S, iou_threshold)
        out["aji"][i] = aji(pred_S, true_S)
    return out
