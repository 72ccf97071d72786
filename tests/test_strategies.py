"""Selectors, the registry, a known-ranking fixture, and one contract suite every strategy runs."""

import dataclasses
import math

import numpy as np
import pytest
import torch

from activeseg.acquisition import (
    STRATEGIES,
    Strategy,
    get_strategy,
    random_k,
    top_k,
)

ALL_NAMES = sorted(STRATEGIES)
# strategies that pick whole items; the region strategies have their own contract (tests/test_region_loop.py)
ITEM_NAMES = [name for name in ALL_NAMES if getattr(get_strategy(name), "unit", "image") == "image"]
SPATIAL_ONLY = ("foreground_mean", "distance_weighted")  # reductions that need pixels
# deterministic top-k rankings of a score (no sampling, nothing but the scores needed)
RANKING_NAMES = [
    name for name in ITEM_NAMES
    if get_strategy(name).needs_model and not get_strategy(name).needs and getattr(get_strategy(name), "sampling",
                                                                                      "top_k") == "top_k"
]


def extras_for(strategy, probs) -> dict:
    """What a strategy's ``needs`` asks the loop for, made up for N items (as the loop would pass)."""
    n = len(probs)
    rng = np.random.default_rng(11)
    made = {
        "descriptors": rng.random((n, 5)),
        "labeled_descriptors": rng.random((3, 5)),
        "embedding": rng.normal(size=(n, 6)),
        "images": rng.random((n, 1, 4, 4)),
        "train_images": rng.random((3, 1, 4, 4)),
    }
    if "probs" in strategy.needs:
        made["probs"] = strategy.summarize(probs)
    return {k: v for k, v in made.items() if k in strategy.needs}


def random_probs(shape_N_K_S: tuple, num_classes: int = 3, seed: int = 0) -> np.ndarray:
    """Dirichlet probabilities ``[N, K, C, *spatial]``."""
    probs = np.random.default_rng(seed).dirichlet(np.full(num_classes, 0.7), size=shape_N_K_S)
    return np.moveaxis(probs, -1, 2)


SHAPES = {
    "classification": (7, 4),  # [N, K] -> probs [N, K, C]
    "segmentation": (7, 4, 6, 5),  # [N, K, H, W]
    "volume": (7, 3, 3, 4, 4),  # [N, K, D, H, W]
}

# ---------------------------------------------------------------- selectors


def test_top_k_ranks_highest_first_and_keeps_ties_in_index_order():
    np.testing.assert_array_equal(top_k(np.array([0.1, 0.5, 0.5, 0.2]), 3), [1, 2, 3])
    np.testing.assert_array_equal(top_k(np.zeros(6), 4), [0, 1, 2, 3])
    np.testing.assert_array_equal(top_k([-np.inf, 1.0, np.inf], 3), [2, 1, 0])


def test_top_k_more_than_available_returns_all_ranked():
    picks = top_k(np.array([0.3, 0.9, 0.1]), 10)
    assert picks.dtype == np.int64
    np.testing.assert_array_equal(picks, [1, 0, 2])


def test_top_k_accepts_torch():
    np.testing.assert_array_equal(top_k(torch.tensor([0.2, 0.8]), 1), [1])


def test_top_k_errors():
    with pytest.raises(ValueError, match="2 of 4 scores are NaN"):
        top_k(np.array([0.1, np.nan, 0.3, np.nan]), 2)
    with pytest.raises(ValueError, match="at least 1"):
        top_k(np.ones(3), 0)
    with pytest.raises(ValueError, match="one-dimensional"):
        top_k(np.ones((2, 2)), 1)


def test_random_k():
    picks = random_k(10, 4, np.random.default_rng(3))
    assert picks.dtype == np.int64 and len(set(picks.tolist())) == 4 and picks.max() < 10
    np.testing.assert_array_equal(picks, random_k(10, 4, np.random.default_rng(3)))
    assert sorted(random_k(5, 99, np.random.default_rng(0)).tolist()) == [0, 1, 2, 3, 4]
    assert random_k(0, 2, np.random.default_rng(0)).shape == (0,)
    with pytest.raises(ValueError):
        random_k(5, 0, np.random.default_rng(0))
    with pytest.raises(TypeError, match="default_rng"):
        random_k(5, 2, np.random.RandomState(0))


# ---------------------------------------------------------------- registry


def test_registry_defaults():
    for name in (
        "max_entropy",
        "bald",
        "variation_ratio",
        "mean_std",
        "least_confidence",
        "margin",
        "vote_entropy",
    ):
        strategy = get_strategy(name)
        assert (strategy.name, strategy.heuristic, strategy.reduction) == (name, name, "mean")
    assert (get_strategy("std").heuristic, get_strategy("std").reduction) == ("std", "sum")
    std_edt = get_strategy("std_edt")
    assert (std_edt.heuristic, std_edt.reduction, std_edt.variance) == ("std", "distance_weighted", False)
    assert get_strategy("random").needs_model is False


def test_overrides():
    strategy = get_strategy("bald", reduction="sum", q=0.2)
    assert (strategy.reduction, strategy.q) == ("sum", 0.2)
    probs = random_probs(SHAPES["segmentation"])
    np.testing.assert_allclose(strategy.score(probs), get_strategy("bald").score(probs) * 30)
    assert get_strategy("std_edt", variance=True).variance is True


def test_registry_errors():
    with pytest.raises(ValueError, match="valid strategies: .*bald.*random"):
        get_strategy("entropy")
    with pytest.raises(ValueError, match="no setting 'tau'.*valid settings: reduction"):
        get_strategy("bald", tau=2.0)
    with pytest.raises(ValueError, match="no setting 'reduction'.*valid settings: base"):
        get_strategy("coreset", reduction="sum")
    with pytest.raises(ValueError, match="heuristic is fixed"):
        get_strategy("bald", heuristic="max_entropy")
    with pytest.raises(ValueError, match="valid settings: none"):
        get_strategy("random", reduction="sum")
    with pytest.raises(ValueError, match="valid reductions"):
        get_strategy("bald", reduction="median")
    with pytest.raises(ValueError, match="only applies to the 'std'"):
        get_strategy("bald", variance=True)


# ---------------------------------------------------------------- known ranking

# Three items, K = 2 samples, C = 3 classes, at indices 0, 1, 2:
#   0 "unsure":   both samples say [1/3, 1/3, 1/3]      -> entropy log 3 = 1.0986, BALD 0
#   1 "disagree": [1, 0, 0] and [0, 1, 0]               -> entropy log 2 = 0.6931, BALD log 2
#   2 "mild":     [.6, .2, .2] and [.2, .6, .2]         -> entropy 1.0549,         BALD 0.1046
KNOWN_PROBS_3_2_3 = np.array(
    [
        [[1 / 3, 1 / 3, 1 / 3], [1 / 3, 1 / 3, 1 / 3]],
        [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]],
        [[0.6, 0.2, 0.2], [0.2, 0.6, 0.2]],
    ]
)


@pytest.mark.parametrize("spatial", [(), (2, 2)])
def test_bald_and_entropy_rank_differently(spatial):
    probs = KNOWN_PROBS_3_2_3.reshape(*KNOWN_PROBS_3_2_3.shape, *(1,) * len(spatial))
    probs = np.broadcast_to(probs, (*KNOWN_PROBS_3_2_3.shape, *spatial))
    bald_scores = get_strategy("bald").score(probs)
    entropy_scores = get_strategy("max_entropy").score(probs)
    np.testing.assert_allclose(bald_scores, [0.0, math.log(2), 0.10464962875290951], atol=1e-12)
    np.testing.assert_allclose(entropy_scores, [math.log(3), math.log(2), 1.0549201679861442], atol=1e-12)
    rng = np.random.default_rng(0)
    np.testing.assert_array_equal(get_strategy("bald").select(bald_scores, 3, rng), [1, 2, 0])
    np.testing.assert_array_equal(get_strategy("max_entropy").select(entropy_scores, 3, rng), [0, 2, 1])


# ---------------------------------------------------------------- contract suite


FAST = {"vaal": {"steps": 3, "batch_size": 8, "width": 4}}  # the contract, not the training, is under test here


@pytest.fixture(params=ITEM_NAMES)
def strategy(request) -> Strategy:
    return get_strategy(request.param, **FAST.get(request.param, {}))


def test_follows_the_protocol(strategy):
    assert isinstance(strategy, Strategy)
    assert isinstance(strategy.name, str) and isinstance(strategy.needs_model, bool)
    with pytest.raises(dataclasses.FrozenInstanceError):
        strategy.name = "other"


@pytest.mark.parametrize("layout", sorted(SHAPES))
def test_score_map_select_on_every_layout(strategy, layout):
    shape_N_K_S = SHAPES[layout]
    probs = random_probs(shape_N_K_S)
    if layout == "classification" and getattr(strategy, "reduction", None) in SPATIAL_ONLY:
        with pytest.raises(ValueError, match="needs a spatial map"):  # segmentation-only, and says so
            strategy.score(probs)
        return
    scores = strategy.score(probs)
    assert isinstance(scores, np.ndarray) and scores.dtype == np.float64
    assert scores.shape == (shape_N_K_S[0],) and np.all(np.isfinite(scores))
    assert strategy.map(probs).shape == (shape_N_K_S[0], *shape_N_K_S[2:])
    picks = strategy.select(scores, 3, np.random.default_rng(0), extras=extras_for(strategy, probs))
    assert picks.shape == (3,) and len(set(picks.tolist())) == 3
    assert picks.min() >= 0 and picks.max() < shape_N_K_S[0]


def test_torch_probs_give_the_same_scores(strategy):
    probs = random_probs(SHAPES["segmentation"])
    from_torch = strategy.score(torch.from_numpy(probs))
    np.testing.assert_allclose(from_torch, strategy.score(probs), rtol=1e-12, atol=1e-12)
    assert isinstance(strategy.map(torch.from_numpy(probs)), torch.Tensor)


def test_same_seed_same_picks(strategy):
    probs = random_probs(SHAPES["segmentation"])
    scores, extras = strategy.score(probs), extras_for(strategy, probs)
    first = strategy.select(scores, 4, np.random.default_rng(42), extras=extras)
    np.testing.assert_array_equal(first, strategy.select(scores, 4, np.random.default_rng(42), extras=extras))


@pytest.mark.parametrize("k", [7, 8, 100])
def test_k_at_least_pool_size_returns_everything(strategy, k):
    probs = random_probs(SHAPES["segmentation"])
    picks = strategy.select(strategy.score(probs), k, np.random.default_rng(0), extras=extras_for(strategy, probs))
    assert sorted(picks.tolist()) == list(range(7))


def test_bad_k_raises(strategy):
    with pytest.raises(ValueError):
        strategy.select(np.zeros(5), 0, np.random.default_rng(0), extras=extras_for(strategy, random_probs((5, 2))))


def test_batch_strategies_say_what_is_missing():
    with pytest.raises(ValueError, match=r"needs \['descriptors'\] in extras"):
        get_strategy("max_cover").select(np.ones(4), 2, np.random.default_rng(0))


def test_stochastic_sampling_depends_on_the_seed_only():
    strategy = get_strategy("power_bald")
    scores = strategy.score(random_probs((40, 4)))
    picks = [strategy.select(scores, 5, np.random.default_rng(seed)).tolist() for seed in (0, 0, 1)]
    assert picks[0] == picks[1] != picks[2]
    assert get_strategy("bald", sampling="rank", temperature=0.5).select(scores, 5, np.random.default_rng(0)).size == 5
    with pytest.raises(ValueError, match="unknown sampling 'gumbel'"):
        get_strategy("bald", sampling="gumbel")


def test_scores_are_per_item_so_batches_can_stream(strategy):
    probs = random_probs(SHAPES["segmentation"], seed=5)
    whole = strategy.score(probs)
    np.testing.assert_allclose(np.concatenate([strategy.score(probs[:3]), strategy.score(probs[3:])]), whole)
    perm = np.random.default_rng(1).permutation(len(probs))
    np.testing.assert_allclose(strategy.score(probs[perm]), whole[perm])


@pytest.mark.parametrize("name", RANKING_NAMES)
def test_ranking_tie_break_and_nan(name):
    strategy = get_strategy(name)
    np.testing.assert_array_equal(strategy.select(np.ones(6), 3, np.random.default_rng(0)), [0, 1, 2])
    with pytest.raises(ValueError, match="NaN"):
        strategy.select(np.array([0.2, np.nan, 0.1]), 1, np.random.default_rng(0))


@pytest.mark.parametrize("name", RANKING_NAMES)
def test_ranking_is_not_random(name):
    strategy = get_strategy(name)
    scores = strategy.score(random_probs(SHAPES["segmentation"]))
    picks = [strategy.select(scores, 3, np.random.default_rng(seed)).tolist() for seed in range(3)]
    assert picks[0] == picks[1] == picks[2]


def test_nath_entropy_mi_scores_with_eq3_and_entropy_mi_with_the_entropy_of_the_mean():
    probs = np.random.default_rng(0).dirichlet(np.ones(2), size=(3, 4, 5, 5)).transpose(0, 1, 4, 2, 3)
    assert np.allclose(get_strategy("nath_entropy_mi").score(probs), get_strategy("nath_entropy").score(probs))
    assert np.allclose(get_strategy("entropy_mi").score(probs), get_strategy("max_entropy").score(probs))
