"""Map-to-score reductions: hand-computed values, distance weighting edge cases, properties."""

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from activeseg.acquisition.reductions import REDUCTIONS, distance_weights, reduce_map

MAP_2_2_2 = np.array([[[1.0, 2.0], [3.0, 4.0]], [[0.0, 0.0], [0.0, 8.0]]])


def probs_from_foreground(fg_N_S: np.ndarray) -> np.ndarray:
    """``[N, K=1, C=2, *spatial]`` probabilities whose foreground channel is ``fg_N_S``."""
    fg = np.asarray(fg_N_S, dtype=np.float64)
    return np.stack([1.0 - fg, fg], axis=1)[:, None]


@pytest.mark.parametrize(
    "how,kwargs,expected",
    [
        ("sum", {}, [10.0, 8.0]),
        ("mean", {}, [2.5, 2.0]),
        ("max", {}, [4.0, 8.0]),
        ("topq_mean", {"q": 0.5}, [3.5, 4.0]),
        ("topq_mean", {"q": 0.1}, [4.0, 8.0]),  # ceil(0.4) = 1 pixel
        ("topq_mean", {"q": 1.0}, [2.5, 2.0]),
    ],
)
def test_plain_reductions(how, kwargs, expected):
    scores = reduce_map(MAP_2_2_2, how, **kwargs)
    assert scores.dtype == np.float64
    np.testing.assert_allclose(scores, expected)


def test_topq_counts_pixels_without_float_drift():
    map_1_30 = np.arange(30.0)[None]
    # 0.1 * 30 is 3.0000000000000004 in floating point; the mean must still be over 3 pixels.
    assert reduce_map(map_1_30, "topq_mean", q=0.1)[0] == pytest.approx(28.0)


def test_torch_map_and_probs_accepted():
    fg = np.array([[[0.9, 0.2], [0.5, 0.1]]])
    map_t = torch.tensor(MAP_2_2_2[:1], dtype=torch.float32)
    probs_t = torch.tensor(probs_from_foreground(fg), dtype=torch.float32)
    for how in REDUCTIONS:
        scores = reduce_map(map_t, how, probs_t)
        assert isinstance(scores, np.ndarray) and scores.dtype == np.float64
        np.testing.assert_allclose(scores, reduce_map(MAP_2_2_2[:1], how, probs_from_foreground(fg)))


def test_foreground_mean():
    fg = np.array([[[0.9, 0.2], [0.5, 0.1]], [[0.1, 0.2], [0.3, 0.4]]])
    scores = reduce_map(MAP_2_2_2, "foreground_mean", probs_from_foreground(fg))
    # item 0: pixels (0,0) and (1,0) are foreground (0.5 counts): (1 + 3) / 2; item 1: none -> 0.
    np.testing.assert_array_equal(scores, [2.0, 0.0])
    assert reduce_map(MAP_2_2_2, "foreground_mean", probs_from_foreground(fg), threshold=0.95)[0] == 0.0


def test_foreground_class_is_configurable():
    fg = np.array([[[0.9, 0.2], [0.5, 0.1]]])
    probs = probs_from_foreground(fg)  # class 0 holds 1 - fg
    # class-0 pixels >= .5: (0,1), (1,0), (1,1) -> (2 + 3 + 4) / 3
    assert reduce_map(MAP_2_2_2[:1], "foreground_mean", probs, fg_class=0)[0] == pytest.approx(3.0)


def test_distance_weights_single_pixel():
    mask = np.zeros((3, 3), bool)
    mask[1, 1] = True
    expected = np.zeros((3, 3))
    expected[1, 1] = 1.0
    np.testing.assert_array_equal(distance_weights(mask), expected)


def test_distance_weights_block():
    mask = np.zeros((5, 5), bool)
    mask[1:4, 1:4] = True
    # edt: 2 at the centre, 1 on the block's ring, 0 outside; min-max scaled by 2.
    expected = np.zeros((5, 5))
    expected[1:4, 1:4] = 0.5
    expected[2, 2] = 1.0
    np.testing.assert_array_equal(distance_weights(mask), expected)


def test_distance_weights_all_foreground_measures_to_the_border():
    # Without the background padding there is no zero pixel to measure distance to.
    weights = distance_weights(np.ones((3, 3), bool))
    expected = np.zeros((3, 3))
    expected[1, 1] = 1.0  # edt 1 on the border, 2 at the centre
    np.testing.assert_array_equal(weights, expected)


def test_distance_weights_empty_mask_is_ones():
    np.testing.assert_array_equal(distance_weights(np.zeros((4, 3), bool)), np.ones((4, 3)))


def test_distance_weights_3d():
    weights = distance_weights(np.ones((3, 3, 3), bool))
    expected = np.zeros((3, 3, 3))
    expected[1, 1, 1] = 1.0
    np.testing.assert_array_equal(weights, expected)
    mask = np.zeros((5, 5, 5), bool)
    mask[1:4, 1:4, 1:4] = True
    assert distance_weights(mask)[2, 2, 2] == 1.0 and distance_weights(mask)[1, 1, 1] == 0.5


def test_distance_weighted_scores():
    fg = np.zeros((3, 5, 5))
    fg[0, 1:4, 1:4] = 1.0  # 3x3 block: centre weight 1, ring 0.5
    fg[1] = 1.0  # all foreground 5x5: edt 3 at the centre, 1 on the border
    # fg[2] empty: weights all ones -> plain sum
    map_3_5_5 = np.ones((3, 5, 5))
    scores = reduce_map(map_3_5_5, "distance_weighted", probs_from_foreground(fg))
    ring_weights = 8 * 0.5 + 1 * 1.0  # item 1: 8 pixels at edt 2 -> 0.5, centre at 3 -> 1
    np.testing.assert_allclose(scores, [1.0 + 8 * 0.5, ring_weights, 25.0])


def test_distance_weighted_3d_volume():
    fg = np.ones((1, 3, 3, 3))
    map_1_3_3_3 = np.arange(27.0).reshape(1, 3, 3, 3)
    assert reduce_map(map_1_3_3_3, "distance_weighted", probs_from_foreground(fg))[0] == 13.0


@pytest.mark.parametrize("how", ["sum", "mean", "max", "topq_mean"])
def test_classification_map_reduces_to_itself(how):
    scores_N = np.array([0.3, 0.1, 0.7])
    np.testing.assert_array_equal(reduce_map(scores_N, how), scores_N)
    np.testing.assert_array_equal(reduce_map(torch.tensor(scores_N), how), scores_N)


@pytest.mark.parametrize("how", ["foreground_mean", "distance_weighted"])
def test_classification_map_rejects_spatial_reductions(how):
    probs = np.full((3, 2, 2), 0.5)
    with pytest.raises(ValueError, match="spatial"):
        reduce_map(np.zeros(3), how, probs)


def test_errors():
    with pytest.raises(ValueError, match="valid reductions: sum, mean, max"):
        reduce_map(MAP_2_2_2, "median")
    with pytest.raises(ValueError, match="needs probs"):
        reduce_map(MAP_2_2_2, "foreground_mean")
    with pytest.raises(ValueError, match="does not match"):
        reduce_map(MAP_2_2_2, "distance_weighted", probs_from_foreground(np.zeros((2, 3, 3))))
    with pytest.raises(ValueError, match="q must be"):
        reduce_map(MAP_2_2_2, "topq_mean", q=0.0)


@settings(max_examples=40, deadline=None)
@given(
    hnp.arrays(
        np.float64,
        st.tuples(st.integers(1, 3), st.integers(1, 5), st.integers(1, 5)),
        elements=st.floats(0.0, 1.0, allow_subnormal=False),  # 5e-324 / 2 underflows to 0
    ),
    st.floats(0.01, 1.0),
)
def test_reductions_are_consistent(map_N_H_W, q):
    num_pixels = map_N_H_W[0].size
    total, mean = reduce_map(map_N_H_W, "sum"), reduce_map(map_N_H_W, "mean")
    top, peak = reduce_map(map_N_H_W, "topq_mean", q=q), reduce_map(map_N_H_W, "max")
    np.testing.assert_allclose(mean * num_pixels, total)
    assert np.all(peak >= top - 1e-12) and np.all(top >= mean - 1e-12)
    probs = probs_from_foreground(map_N_H_W)  # use the map itself as the foreground probability
    assert np.all(reduce_map(map_N_H_W, "distance_weighted", probs) <= total + 1e-9)
    assert np.all(reduce_map(map_N_H_W, "foreground_mean", probs) <= peak + 1e-12)
