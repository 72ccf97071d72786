"""Hand-computed cases for activeseg.instances: instances from class maps, matching, F1, AJI."""

import numpy as np
import pytest
from scipy import ndimage

from activeseg.instances import aji, instance_f1, instance_metrics, instances_from_classes, match_instances


def classes_from_instances(labels: np.ndarray, width: int = 2) -> np.ndarray:
    """Class map (0 background, 1 interior, 2 boundary band of ``width`` pixels) of an instance image."""
    structure = ndimage.generate_binary_structure(labels.ndim, 1)
    out = np.zeros(labels.shape, dtype=np.int64)
    for value in np.unique(labels[labels > 0]):
        mask = labels == value
        inner = ndimage.binary_erosion(mask, structure=structure, iterations=width)
        out[mask] = 2
        out[inner] = 1
    return out


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """True when two label images are equal up to a renumbering of the instances."""
    pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1)
    return (a == 0).tolist() == (b == 0).tolist() and len(set(pairs[0])) == len(set(pairs[1])) == pairs.shape[1]


def rect(shape, *boxes):
    """Label image with instance i+1 filling the i-th (row0, row1, col0, col1) box, ends inclusive."""
    out = np.zeros(shape, dtype=np.int64)
    for i, (r0, r1, c0, c1) in enumerate(boxes):
        out[r0 : r1 + 1, c0 : c1 + 1] = i + 1
    return out


# ---- instances from class maps -------------------------------------------------------------------


def test_touching_squares_separated_by_boundary_band_give_two_instances():
    band = [0] + [2] * 12 + [0]
    core = [0, 2, 2, 1, 1, 2, 2, 2, 2, 1, 1, 2, 2, 0]
    classes = np.array([[0] * 14, band, band, core, core, band, band, [0] * 14])
    labels = instances_from_classes(classes)
    assert labels.dtype == np.int32
    assert labels.max() == 2
    expected = rect((8, 14), (1, 6, 1, 6), (1, 6, 7, 12))
    assert same_partition(labels, expected)


def test_binary_map_without_boundary_class():
    classes = rect((5, 9), (0, 2, 0, 2), (0, 2, 5, 8)).clip(0, 1)
    assert instances_from_classes(classes, interior=1, boundary=None).max() == 2
    classes[1, 3:5] = 1  # a bridge merges them
    assert instances_from_classes(classes, boundary=None).max() == 1


def test_face_connectivity_diagonal_pixels_are_separate():
    classes = np.array([[1, 0], [0, 1]])
    assert instances_from_classes(classes, min_size=1).max() == 2


def test_min_size_drops_small_and_boundary_only_nucleus_is_kept():
    classes = np.zeros((6, 12), dtype=np.int64)
    classes[0, 0] = 1  # 1-pixel speck
    classes[2:4, 2:4] = 2  # a nucleus too small for interior: 4 boundary pixels
    classes[0:5, 6:11] = classes_from_instances(np.ones((5, 5), dtype=np.int64))
    labels = instances_from_classes(classes, min_size=4)
    assert labels.max() == 2 and labels[0, 0] == 0
    assert labels[2, 2] > 0 and labels[2, 2] != labels[0, 6]
    assert (labels[0:5, 6:11] == labels[2, 8]).all()
    assert instances_from_classes(classes, min_size=1).max() == 3


def test_ignore_value_counts_as_background_and_unknown_method_is_rejected():
    assert instances_from_classes(np.full((3, 3), 255)).max() == 0
    with pytest.raises(ValueError, match="valid: components"):
        instances_from_classes(np.zeros((3, 3)), method="watershd")


# ---- matching, F1 and AJI on label images (hand-computed) ---------------------------------------


def test_merge_of_two_nuclei():
    true = np.array([[1, 1, 1, 2, 2]])
    pred = np.array([[1, 1, 1, 1, 1]])
    # IoU(merged, A) = 3/5 >= 0.5, IoU(merged, B) = 2/5: one TP, B missed.
    m = match_instances(pred, true)
    assert (m.tp, m.fp, m.fn) == (1, 0, 1)
    assert m.pairs_M_2.tolist() == [[1, 1]] and m.iou_M.tolist() == [0.6]
    assert instance_f1(pred, true) == pytest.approx(2 / 3)
    # A: 3 / 5, B: 2 / 5 (the merged instance serves both): AJI = (3 + 2) / (5 + 5).
    assert aji(pred, true) == pytest.approx(0.5)


def test_split_of_one_nucleus_is_matched_once_even_at_a_low_threshold():
    true = np.array([[1, 1, 1, 1, 0]])
    pred = np.array([[1, 1, 2, 2, 0]])
    m = match_instances(pred, true, iou_threshold=0.3)
    assert (m.tp, m.fp, m.fn) == (1, 1, 0)
    # IoU tie 2/4 vs 2/4 -> the smaller label: C = 2, U = 4 + |unused pred 2| = 6.
    assert aji(pred, true) == pytest.approx(2 / 6)


def test_one_missed_and_one_false_nucleus():
    true = rect((4, 12), (0, 1, 0, 1), (0, 0, 4, 6))  # A: 4 px, B: 3 px
    pred = rect((4, 12), (0, 1, 0, 1), (3, 3, 9, 10))  # A exactly, C: 2 px false
    m = match_instances(pred, true)
    assert (m.tp, m.fp, m.fn) == (1, 1, 1)
    assert instance_f1(pred, true) == pytest.approx(2 / 4)
    assert aji(pred, true) == pytest.approx(4 / (4 + 3 + 2))


@pytest.mark.parametrize(
    "pred_row,threshold,tp",
    [
        ([1, 1, 0, 0, 0], 0.5, 1),  # IoU 2/4 = 0.5 exactly: a match
        ([1, 1, 0, 0, 0], 0.51, 0),
        ([1, 1, 0, 0, 1], 0.5, 0),  # IoU 2/5 (pred spills outside the nucleus)
        ([1, 1, 1, 0, 0], 0.75, 1),  # IoU 3/4
    ],
)
def test_iou_threshold_is_inclusive(pred_row, threshold, tp):
    true = np.array([[1, 1, 1, 1, 0]])
    assert match_instances(np.array([pred_row]), true, threshold).tp == tp


def test_empty_policies():
    empty, one = np.zeros((3, 3), dtype=int), np.zeros((3, 3), dtype=int)
    one[1, 1] = 1
    assert instance_f1(empty, empty) == 1.0 and aji(empty, empty) == 1.0
    assert instance_f1(one, empty) == 0.0 and aji(one, empty) == 0.0
    assert instance_f1(empty, one) == 0.0 and aji(empty, one) == 0.0
    m = match_instances(empty, empty)
    assert (m.tp, m.fp, m.fn) == (0, 0, 0) and m.pairs_M_2.shape == (0, 2)
    out = instance_metrics(np.zeros((2, 4, 4), dtype=int), np.zeros((2, 4, 4), dtype=int))
    assert out["instance_f1"].tolist() == [1.0, 1.0] and out["aji"].tolist() == [1.0, 1.0]


@pytest.mark.parametrize("seed", range(5))
def test_label_order_invariance_and_brute_force_iou(seed):
    rng = np.random.default_rng(seed)
    true = ndimage.label(rng.random((12, 12)) < 0.45)[0]
    pred = ndimage.label(rng.random((12, 12)) < 0.45)[0]
    perm_t = np.concatenate([[0], rng.permutation(np.arange(1, true.max() + 1)) * 7 + 3])
    perm_p = np.concatenate([[0], rng.permutation(np.arange(1, pred.max() + 1)) * 5 + 11])
    m, m2 = match_instances(pred, true, 0.3), match_instances(perm_p[pred], perm_t[true], 0.3)
    assert (m.tp, m.fp, m.fn) == (m2.tp, m2.fp, m2.fn)
    assert np.sort(m.iou_M).tolist() == pytest.approx(np.sort(m2.iou_M).tolist())
    assert aji(pred, true) == pytest.approx(aji(perm_p[pred], perm_t[true]))
    for (p, t), iou in zip(m.pairs_M_2, m.iou_M, strict=True):  # each pair's IoU, pixel by pixel
        a, b = pred == p, true == t
        assert iou == pytest.approx((a & b).sum() / (a | b).sum())
    assert instance_f1(pred, true) == pytest.approx(instance_f1(true, pred))  # F1 is symmetric


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="same"):
        aji(np.zeros((3, 3), dtype=int), np.zeros((3, 4), dtype=int))
    with pytest.raises(ValueError, match=r"\[N, \*spatial\]"):
        instance_metrics(np.zeros((1, 3, 3)), np.zeros((1, 3, 4)))


# ---- per-item metrics from class maps ------------------------------------------------------------


def test_perfect_prediction_and_items_are_independent():
    gt = classes_from_instances(rect((12, 14), (0, 5, 0, 5), (0, 5, 6, 11), (7, 11, 2, 8)))
    merged = (gt > 0).astype(int)  # all interior: the two touching squares merge
    out = instance_metrics(np.stack([gt, merged]), np.stack([gt, gt]))
    assert out["instance_f1"][0] == 1.0 and out["aji"][0] == 1.0
    # merged: IoU(M, each square) = 36/72 = 0.5 -> 1 TP; third nucleus matched; one FN.
    assert out["instance_f1"][1] == pytest.approx(4 / 5)
    assert out["aji"][1] == pytest.approx((36 + 36 + 35) / (72 + 72 + 35))


def test_ignored_nuclei_are_excluded():
    shape = (12, 18)
    truth = rect(shape, (1, 5, 1, 5), (1, 5, 7, 11), (1, 5, 12, 16))  # C is cut by the guard band
    gt = classes_from_instances(truth)
    gt[:, 14:] = 255
    false_in_band = rect(shape, (7, 10, 14, 17))  # entirely in the ignored band: dropped
    pred = classes_from_instances(truth) + classes_from_instances(false_in_band)
    out = instance_metrics(pred[None], gt[None])
    assert out["instance_f1"][0] == 1.0 and out["aji"][0] == 1.0
    # Only the visible part of C predicted: it overlaps only the removed C, so it is dropped too.
    visible_c = classes_from_instances(rect(shape, (1, 5, 1, 5), (1, 5, 7, 11), (1, 5, 12, 13)))
    assert instance_metrics(visible_c[None], gt[None])["instance_f1"][0] == 1.0
    # Without the ignore rule, C's remnant and the false nucleus count against the prediction.
    assert instance_metrics(pred[None], gt[None], ignore_index=None)["instance_f1"][0] < 1.0


def test_ignored_pixels_do_not_count_in_kept_predictions():
    shape = (7, 18)
    gt = classes_from_instances(rect(shape, (1, 5, 1, 5), (1, 5, 7, 11)))
    gt[:, 14:] = 255
    # B predicted too wide: 45 px, of which cols 14-15 (10 px) are ignored (22% <= 50%, kept).
    pred = classes_from_instances(rect(shape, (1, 5, 1, 5), (1, 5, 7, 15)))
    out = instance_metrics(pred[None], gt[None])
    assert out["instance_f1"][0] == 1.0  # IoU(B', B) = 25 / 35
    assert out["aji"][0] == pytest.approx((25 + 25) / (25 + 35))


def test_three_dimensional_volumes():
    truth = np.zeros((6, 6, 12), dtype=np.int64)
    truth[:, :, :6], truth[:, :, 6:] = 1, 2  # two touching 6x6x6 cubes
    gt = classes_from_instances(truth)
    assert same_partition(instances_from_classes(gt), truth)
    merged = (truth > 0).astype(int)
    out = instance_metrics(np.stack([gt, merged]), np.stack([gt, gt]))
    assert out["instance_f1"].tolist() == pytest.approx([1.0, 2 / 3])  # IoU 216/432 = 0.5 matches
    assert out["aji"].tolist() == pytest.approx([1.0, 0.5])
