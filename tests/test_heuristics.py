"""Uncertainty maps: hand-computed tables, shapes and array kinds, and hypothesis properties."""

import math

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from activeseg.acquisition.heuristics import HEURISTICS, least_confidence, std, variation_ratio

LOG2 = math.log(2)

# One item each, probs [K, C]; expected value of every map, computed by hand.
TABLE = {
    "agree_uniform": (
        [[0.5, 0.5], [0.5, 0.5]],
        dict(
            max_entropy=LOG2,
            bald=0.0,
            member_entropy=2 * LOG2,
            variation_ratio=0.0,
            mean_std=0.0,
            least_confidence=0.5,
            margin=1.0,
            std=0.0,
            vote_entropy=0.0,
        ),
    ),
    "confident_disagree": (
        [[1.0, 0.0], [0.0, 1.0]],
        dict(
            max_entropy=LOG2,
            bald=LOG2,
            member_entropy=0.0,
            variation_ratio=0.5,
            mean_std=0.5,
            least_confidence=0.5,
            margin=1.0,
            std=0.5,
            vote_entropy=LOG2,
        ),
    ),
    "single_sample": (  # K = 1: no disagreement possible
        [[0.7, 0.3]],
        dict(
            max_entropy=-(0.7 * math.log(0.7) + 0.3 * math.log(0.3)),
            bald=0.0,
            member_entropy=-(0.7 * math.log(0.7) + 0.3 * math.log(0.3)),
            variation_ratio=0.0,
            mean_std=0.0,
            least_confidence=0.3,
            margin=0.6,
            std=0.0,
            vote_entropy=0.0,
        ),
    ),
    "class_certain": (  # every sample is sure of class 1: 0·log 0 must give exactly 0
        [[0.0, 1.0], [0.0, 1.0]],
        dict(
            max_entropy=0.0,
            bald=0.0,
            member_entropy=0.0,
            variation_ratio=0.0,
            mean_std=0.0,
            least_confidence=0.0,
            margin=0.0,
            std=0.0,
            vote_entropy=0.0,
        ),
    ),
    "votes_2_1_1": (  # K = 4 one-hot votes for classes 0, 0, 1, 2; p̄ = [.5, .25, .25]
        [[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
        dict(
            max_entropy=1.5 * LOG2,
            bald=1.5 * LOG2,
            member_entropy=0.0,
            variation_ratio=0.5,
            mean_std=(0.5 + 2 * math.sqrt(0.1875)) / 3,
            least_confidence=0.5,
            margin=0.75,
            std=0.5,  # C = 3: the spread of "any foreground" p1 + p2 = [0, 0, 1, 1]
            vote_entropy=1.5 * LOG2,
        ),
    ),
}
TABLE_ROWS = [(case, name, value) for case, (_, table) in TABLE.items() for name, value in table.items()]


def test_table_covers_every_heuristic():
    for _, expected in TABLE.values():
        assert set(expected) == set(HEURISTICS)


@pytest.mark.parametrize("case,name,expected", TABLE_ROWS)
def test_hand_computed_numpy(case, name, expected):
    probs_1_K_C = np.array([TABLE[case][0]])
    value = HEURISTICS[name](probs_1_K_C)
    assert isinstance(value, np.ndarray) and value.dtype == np.float64 and value.shape == (1,)
    assert value[0] == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("case,name,expected", TABLE_ROWS)
def test_hand_computed_torch(case, name, expected):
    probs_1_K_C = torch.tensor([TABLE[case][0]], dtype=torch.float32)
    value = HEURISTICS[name](probs_1_K_C)
    assert isinstance(value, torch.Tensor) and value.dtype == torch.float32 and value.shape == (1,)
    assert value.item() == pytest.approx(expected, abs=1e-6)


def test_zero_log_zero_is_exactly_zero():
    certain = np.array([TABLE["class_certain"][0]])
    for name in ("max_entropy", "bald", "member_entropy", "vote_entropy"):
        value = HEURISTICS[name](certain)[0]
        assert value == 0.0 and not math.copysign(1.0, value) < 0


def test_std_variance_option():
    probs = np.array([TABLE["confident_disagree"][0]])
    assert std(probs, variance=True)[0] == pytest.approx(0.25)
    assert std(probs, fg_class=0)[0] == pytest.approx(0.5)


def test_variation_ratio_counts_votes_not_mean_confidence():
    # Both samples vote class 0 with p = .6: no disagreement, though the mean is unconfident.
    probs = np.array([[[0.6, 0.4], [0.6, 0.4]]])
    assert variation_ratio(probs)[0] == 0.0
    assert least_confidence(probs)[0] == pytest.approx(0.4)


@pytest.mark.parametrize("spatial", [(), (5,), (4, 3), (2, 3, 4)])
@pytest.mark.parametrize("name", sorted(HEURISTICS))
def test_output_shape(name, spatial):
    probs = np.random.default_rng(0).dirichlet([1.0, 1.0, 1.0], size=(2, 3, *spatial))
    probs_N_K_C_S = np.moveaxis(probs, -1, 2)
    assert HEURISTICS[name](probs_N_K_C_S).shape == (2, *spatial)


@pytest.mark.parametrize("name", sorted(HEURISTICS))
def test_torch_float64_stays_float64(name):
    probs = torch.tensor([TABLE["votes_2_1_1"][0]], dtype=torch.float64)
    assert HEURISTICS[name](probs).dtype == torch.float64


@pytest.mark.parametrize("bad_shape", [(4,), (4, 2), (3, 2, 1, 5, 5)])
@pytest.mark.parametrize("name", sorted(HEURISTICS))
def test_bad_shapes_raise(name, bad_shape):
    with pytest.raises(ValueError):
        HEURISTICS[name](np.ones(bad_shape))


def test_std_foreground_out_of_range():
    with pytest.raises(ValueError, match="fg_class"):
        std(np.full((1, 2, 2), 0.5), fg_class=2)


# ---------------------------------------------------------------- properties


@st.composite
def probabilities(draw):
    """Random ``probs_N_K_C_*``: exact zeros, near one-hot and near uniform all occur."""
    n, k, c = draw(st.integers(1, 3)), draw(st.integers(1, 5)), draw(st.integers(2, 4))
    spatial = draw(st.sampled_from([(), (3,), (2, 3)]))
    raw = draw(hnp.arrays(np.float64, (n, k, c, *spatial), elements=st.floats(0.0, 1.0)))
    raw = raw ** draw(st.sampled_from([1.0, 4.0, 16.0]))
    total = raw.sum(axis=2, keepdims=True)
    return np.where(total > 0, raw / np.where(total > 0, total, 1.0), 1.0 / c)


PROPERTY = settings(max_examples=60, deadline=None)


@PROPERTY
@given(probabilities())
def test_entropy_and_bald_bounds(probs):
    log_c = math.log(probs.shape[2])
    entropy, mutual_info = HEURISTICS["max_entropy"](probs), HEURISTICS["bald"](probs)
    assert np.all(entropy <= log_c + 1e-9) and np.all(entropy >= 0)
    assert np.all(mutual_info >= -1e-6)
    assert np.all(mutual_info <= entropy + 1e-9)
    assert np.all(HEURISTICS["vote_entropy"](probs) <= log_c + 1e-9)


@PROPERTY
@given(probabilities())
def test_ratio_bounds(probs):
    top = 1.0 - 1.0 / probs.shape[2]
    for name in ("variation_ratio", "least_confidence"):
        values = HEURISTICS[name](probs)
        assert np.all(values >= -1e-12) and np.all(values <= top + 1e-9), name
    for name, upper in (("margin", 1.0), ("mean_std", 0.5), ("std", 0.5)):
        values = HEURISTICS[name](probs)
        assert np.all(values >= 0) and np.all(values <= upper + 1e-9), name


@PROPERTY
@given(probabilities(), st.randoms(use_true_random=False))
def test_maps_move_with_their_items(probs, random):
    perm = np.array(random.sample(range(probs.shape[0]), probs.shape[0]))
    for name, fn in HEURISTICS.items():
        np.testing.assert_array_equal(fn(probs[perm]), fn(probs)[perm], err_msg=name)


@PROPERTY
@given(probabilities())
def test_numpy_and_torch_agree(probs):
    for name, fn in HEURISTICS.items():
        from_numpy = fn(probs)
        # Same float64 values: identical argmax ties, so even the vote-based maps agree exactly.
        np.testing.assert_allclose(fn(torch.from_numpy(probs)).numpy(), from_numpy, atol=1e-12, err_msg=name)
        if name not in ("variation_ratio", "vote_entropy"):  # float32 rounding can flip an argmax tie
            from_float32 = fn(torch.from_numpy(probs).float()).numpy()
            np.testing.assert_allclose(from_float32, from_numpy, atol=1e-5, err_msg=name)


@PROPERTY
@given(probabilities())
def test_member_entropy_is_k_times_the_expected_entropy(probs):
    """Nath et al.'s Eq. 3 sums each sample's entropy: K · (H[p̄] - BALD), within [0, K log C]."""
    k, log_c = probs.shape[1], math.log(probs.shape[2])
    values = HEURISTICS["member_entropy"](probs)
    expected = k * (HEURISTICS["max_entropy"](probs) - HEURISTICS["bald"](probs))
    np.testing.assert_allclose(values, expected, atol=1e-9)
    assert np.all(values >= 0) and np.all(values <= k * log_c + 1e-9)
