"""Hand-computed tables and edge cases for activeseg.metrics."""


import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from activeseg.metrics import (
    annotations_to_target,
    area_under_curve,
    auc_one_vs_rest,
    classification_metrics,
    mean_band,
    mean_metrics,
    segmentation_metrics,
    wilcoxon_paired,
)

# (case, pred, target, dice, iou, sensitivity, specificity), one item of 4 pixels each.
TABLE = [
    ("half overlap", [1, 1, 0, 0], [1, 0, 1, 0], 0.5, 1 / 3, 0.5, 0.5),
    ("one false positive", [1, 1, 1, 0], [1, 1, 0, 0], 0.8, 2 / 3, 1.0, 0.5),
    ("both empty", [0, 0, 0, 0], [0, 0, 0, 0], 1.0, 1.0, 1.0, 1.0),
    ("empty GT, non-empty pred", [1, 0, 0, 0], [0, 0, 0, 0], 0.0, 0.0, 1.0, 0.75),
    ("empty pred, non-empty GT", [0, 0, 0, 0], [1, 1, 0, 0], 0.0, 0.0, 0.0, 1.0),
    ("GT all foreground", [1, 1, 0, 0], [1, 1, 1, 1], 2 / 3, 0.5, 0.5, 1.0),
    ("both full", [1, 1, 1, 1], [1, 1, 1, 1], 1.0, 1.0, 1.0, 1.0),
    ("disjoint", [1, 0, 0, 0], [0, 1, 0, 0], 0.0, 0.0, 0.0, 2 / 3),
]


@pytest.mark.parametrize("case,pred,target,dice,iou,sens,spec", TABLE, ids=[row[0] for row in TABLE])
def test_metric_table(case, pred, target, dice, iou, sens, spec):
    out = segmentation_metrics(np.array([pred]), np.array([target]))
    assert set(out) == {"dice", "iou", "miou", "sensitivity", "specificity"}
    for name, expected in [("dice", dice), ("iou", iou), ("sensitivity", sens), ("specificity", spec)]:
        assert out[name].dtype == np.float64
        assert out[name].shape == (1,)
        assert out[name][0] == pytest.approx(expected), name


def test_batched_2d_matches_rows():
    pred_N_H_W = np.array([row[1] for row in TABLE], dtype=bool).reshape(len(TABLE), 2, 2)
    target_N_H_W = np.array([row[2] for row in TABLE], dtype=bool).reshape(len(TABLE), 2, 2)
    out = segmentation_metrics(pred_N_H_W, target_N_H_W)
    np.testing.assert_allclose(out["dice"], [row[3] for row in TABLE])
    np.testing.assert_allclose(out["iou"], [row[4] for row in TABLE])
    np.testing.assert_allclose(out["sensitivity"], [row[5] for row in TABLE])
    np.testing.assert_allclose(out["specificity"], [row[6] for row in TABLE])


def test_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"\(2, 4, 4\).*\(2, 4, 5\)"):
        segmentation_metrics(np.zeros((2, 4, 4)), np.zeros((2, 4, 5)))


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.booleans()), min_size=1, max_size=30))
def test_metrics_bounded_and_dice_iou_consistent(pairs):
    pred = np.array([[p for p, _ in pairs]])
    target = np.array([[t for _, t in pairs]])
    out = segmentation_metrics(pred, target)
    for values in out.values():
        assert 0.0 <= values[0] <= 1.0
    iou = out["iou"][0]
    assert out["dice"][0] == pytest.approx(2 * iou / (1 + iou))


def test_mean_metrics():
    means = mean_metrics({"dice": np.array([0.5, 1.0]), "iou": [0.2, 0.4, 0.6]})
    assert means == pytest.approx({"dice": 0.75, "iou": 0.4})
    assert all(isinstance(v, float) for v in means.values())
    assert math.isnan(mean_metrics({"dice": []})["dice"])


@pytest.mark.parametrize(
    "values,target,higher,expected",
    [
        ([0.5, 0.7, 0.9], 0.7, True, 8),  # reached exactly at round 2
        ([0.5, 0.7, 0.9], 0.95, True, None),  # never reached
        ([0.5, 0.7, 0.9], 0.4, True, 4),  # reached at the first round
        ([0.3, 0.12, 0.04], 0.05, False, 12),  # error: lower is better
        ([float("nan"), 0.8, 0.9], 0.5, True, 8),  # a missing value is skipped
    ],
)
def test_annotations_to_target(values, target, higher, expected):
    assert annotations_to_target([4, 8, 12], values, target, higher_is_better=higher) == expected


def test_annotations_to_target_length_mismatch():
    with pytest.raises(ValueError, match="one value per round"):
        annotations_to_target([4, 8], [0.1], 0.5)


def test_mean_band_hand_computed_t_interval():
    curves_S_R = np.array([[0.5, 0.6], [0.7, 0.8], [0.6, np.nan]])
    mean_R, lo_R, hi_R = mean_band(curves_S_R, level=0.9)
    # column 0: n=3, mean 0.6, sd 0.1, t(0.95, df=2) = 2.919986
    # column 1: n=2, mean 0.7, sd sqrt(0.02), t(0.95, df=1) = 6.313752
    half_R = np.array([2.919986 * 0.1 / math.sqrt(3), 6.313752 * math.sqrt(0.02) / math.sqrt(2)])
    np.testing.assert_allclose(mean_R, [0.6, 0.7])
    np.testing.assert_allclose(lo_R, mean_R - half_R, rtol=1e-6)
    np.testing.assert_allclose(hi_R, mean_R + half_R, rtol=1e-6)


def test_mean_band_one_seed_collapses_and_empty_column_is_nan():
    mean_R, lo_R, hi_R = mean_band(np.array([[0.3, np.nan]]))
    assert mean_R[0] == lo_R[0] == hi_R[0] == 0.3
    assert np.isnan(mean_R[1]) and np.isnan(lo_R[1]) and np.isnan(hi_R[1])


def test_area_under_curve():
    assert area_under_curve([0, 10, 20], [0.0, 1.0, 1.0]) == pytest.approx(0.75)
    assert area_under_curve([20, 0, 10], [1.0, 0.0, 1.0]) == pytest.approx(0.75)  # order-free
    assert area_under_curve([4, 8, 12], [0.6, 0.77, 0.8]) == pytest.approx(0.735)
    assert area_under_curve([5], [0.4]) == pytest.approx(0.4)
    assert area_under_curve([0, 10, 20], [0.5, np.nan, 0.5]) == pytest.approx(0.5)


def test_wilcoxon_matches_scipy():
    rng = np.random.default_rng(0)
    a = rng.random(20)
    b = a + rng.normal(0.05, 0.1, size=20)
    assert wilcoxon_paired(a, b) == pytest.approx(stats.wilcoxon(a, b, alternative="two-sided").pvalue)


def test_wilcoxon_all_equal_and_length_mismatch():
    assert wilcoxon_paired([0.5, 0.6, 0.7], [0.5, 0.6, 0.7]) == 1.0
    with pytest.raises(ValueError, match="same length"):
        wilcoxon_paired([0.1, 0.2], [0.1])


def test_classification_metrics_by_hand():
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4], [0.5, 0.1, 0.4]])
    labels = np.array([0, 1, 0, 2])
    per_item, summary = classification_metrics(probs, labels)
    np.testing.assert_array_equal(per_item["accuracy"], [1, 1, 0, 0])
    assert summary["accuracy"] == 0.5 and summary["error"] == 0.5
    # class 0: members score 0.7, 0.3 vs non-members 0.1, 0.5 -> pairs won 2 + 1 of 4 = 0.75;
    # class 1: 0.8 beats 0.2, 0.3, 0.1 -> 1.0; class 2: 0.4 vs 0.1, 0.1, 0.4 -> (2 + 0.5) / 3.
    assert summary["auc"] == pytest.approx((0.75 + 1.0 + 2.5 / 3) / 3)


def test_auc_matches_mann_whitney():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(4), size=200)
    labels = rng.integers(0, 4, 200)
    expected = np.mean([
        stats.mannwhitneyu(probs[labels == c, c], probs[labels != c, c]).statistic
        / ((labels == c).sum() * (labels != c).sum())
        for c in range(4)
    ])
    assert auc_one_vs_rest(probs, labels) == pytest.approx(expected)
    assert np.isnan(auc_one_vs_rest(probs[:3], np.zeros(3, int)))  # one class only


# -- multi-class maps and the ignore value ------------------------------------------------------------
# target / prediction, 3 classes, one 2×4 item; 255 = not labelled:
#   target  0 1 1 2      pred  0 1 2 2
#           0 0 255 2          1 0 1 2
# class 0: tp 2 (px 0, 5), fn 0, fp 1 (px 4)            -> dice 4/5,  iou 2/3
# class 1: tp 1 (px 1), fn 1 (px 2 → 2), fp 1 (px 4)    -> dice 2/4,  iou 1/3
# class 2: tp 2 (px 3, 7), fn 0, fp 1 (px 2)            -> dice 4/5,  iou 2/3
MC_TARGET = np.array([[[0, 1, 1, 2], [0, 0, 255, 2]]])
MC_PRED = np.array([[[0, 1, 2, 2], [1, 0, 1, 2]]])


def test_multiclass_metrics_by_hand():
    out = segmentation_metrics(MC_PRED, MC_TARGET, num_classes=3, class_names=("bg", "interior", "boundary"))
    assert out["dice_interior"][0] == pytest.approx(0.5)
    assert out["dice_boundary"][0] == pytest.approx(0.8)
    assert out["iou_interior"][0] == pytest.approx(1 / 3)
    assert out["iou_boundary"][0] == pytest.approx(2 / 3)
    assert out["dice"][0] == pytest.approx((0.5 + 0.8) / 2)  # mean over the foreground classes
    assert out["iou"][0] == pytest.approx((1 / 3 + 2 / 3) / 2)
    assert out["miou"][0] == pytest.approx((2 / 3 + 1 / 3 + 2 / 3) / 3)
    # any foreground vs background: fg pixels 1, 2, 3, 7 (pixel 6 ignored), all called foreground;
    # background pixels 0, 4, 5: pixel 4 called foreground
    assert out["sensitivity"][0] == pytest.approx(1.0)
    assert out["specificity"][0] == pytest.approx(2 / 3)


def test_multiclass_names_default_and_class_absent_from_both():
    target = np.zeros((1, 2, 2), np.uint8)
    out = segmentation_metrics(target, target, num_classes=3)
    assert out["dice_c1"][0] == 1.0 and out["dice_c2"][0] == 1.0  # absent from both: 1


def test_ignored_pixels_count_nowhere():
    target = np.array([[[1, 255], [0, 0]]])
    pred = np.array([[[1, 0], [0, 0]]])
    other = np.array([[[1, 1], [0, 0]]])
    assert segmentation_metrics(pred, target)["dice"][0] == 1.0
    assert segmentation_metrics(other, target)["dice"][0] == 1.0  # what is predicted on 255 is not scored


def test_binary_class_maps_equal_boolean_masks():
    rng = np.random.default_rng(0)
    target, pred = rng.integers(0, 2, (5, 8, 8)), rng.integers(0, 2, (5, 8, 8))
    a = segmentation_metrics(pred, target)
    b = segmentation_metrics(pred > 0, target > 0)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])


def test_a_value_that_is_no_class_is_an_error():
    with pytest.raises(ValueError, match="value 3, not a class 0..2"):
        segmentation_metrics(np.zeros((1, 2, 2)), np.full((1, 2, 2), 3), num_classes=3)


def test_by_source_weights_sources_equally():
    from activeseg.metrics import by_source

    equal, own = by_source({"dice": np.array([1.0, 1.0, 1.0, 0.0])}, ["a", "a", "a", "b"])
    assert own == {"a": {"dice": 1.0}, "b": {"dice": 0.0}}
    assert equal["dice"] == 0.5  # not 0.75, the mean over items


def test_pooled_metrics_score_the_tiles_of_a_region_as_one():
    from activeseg.metrics import pooled_metrics

    # three 1×4 tiles of one region: two hold nothing (each tile's Dice is 1 there), one holds a 4-pixel structure
    # of which the model finds 2 and adds 2 false pixels in an empty tile
    target = np.array([[[0, 0, 0, 0]], [[0, 0, 0, 0]], [[1, 1, 1, 1]]])
    pred = np.array([[[0, 0, 0, 0]], [[1, 1, 0, 0]], [[1, 1, 0, 0]]])
    assert segmentation_metrics(pred, target)["dice"].tolist() == [1.0, 0.0, 2 * 2 / (2 * 2 + 0 + 2)]
    pooled, own = pooled_metrics(pred, target, 2)
    assert pooled["dice"] == own["0"]["dice"] == 2 * 2 / (2 * 2 + 2 + 2)  # tp 2, fp 2, fn 2 over the region
    assert pooled["iou"] == 2 / 6 and pooled["sensitivity"] == 0.5 and pooled["specificity"] == 6 / 8


def test_pooled_metrics_per_group_weigh_groups_equally_and_skip_the_ignore_value():
    from activeseg.metrics import pooled_metrics

    target = np.array([[1, 1], [1, 255], [1, 0]])
    pred = np.array([[1, 1], [1, 0], [0, 0]])
    pooled, own = pooled_metrics(pred, target, 2, groups_N=["a", "a", "b"])
    assert own["a"]["dice"] == 1.0  # the pixel under 255 counts nowhere
    assert own["b"]["dice"] == 0.0
    assert pooled["dice"] == 0.5
