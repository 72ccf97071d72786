"""Batch and diversity selectors against hand-computed cases."""

import numpy as np
import pytest

from activeseg.acquisition.batch import (
    _draw_labels,
    _joint_entropy,
    _logmeanexp,
    _pixel_logliks,
    batchbald,
    batchbald_pixels,
    gradient_embedding,
    information_density,
    k_center_greedy,
    kmeans_pp,
    max_cover,
    stochastic_batch,
)
from activeseg.acquisition.heuristics import bald
from activeseg.acquisition.strategies import get_strategy


def line(*xs):
    return np.array(xs, dtype=float)[:, None]


# ---------------------------------------------------------------- k-center greedy


def test_k_center_on_a_line():
    pool = line(0, 1, 2, 10, 11)
    # labelled at 0: farthest is 11; then distances to {0, 11}: 1, 2, 1 → 2; then 1 and 10 tie at 1 → index 1
    assert k_center_greedy(pool, 3, labeled_M_D=line(0)).tolist() == [4, 2, 1]
    # nothing labelled: start at index 0, then the farthest from 0 (11), then 2 (distance 2 beats 1s)
    assert k_center_greedy(pool, 3).tolist() == [0, 4, 2]
    assert k_center_greedy(pool, 10).tolist() == [0, 4, 2, 1, 3]  # all, each once
    assert k_center_greedy(pool, 3, labeled_M_D=line(0), block=2).tolist() == [4, 2, 1]


def test_k_center_checks_dimensions():
    with pytest.raises(ValueError, match="labelled descriptors have 2 dimensions, the pool's 1"):
        k_center_greedy(line(0, 1), 1, labeled_M_D=np.zeros((1, 2)))
    with pytest.raises(ValueError, match="NaN"):
        k_center_greedy(line(0, np.nan), 1)


# ---------------------------------------------------------------- max cover


def test_max_cover_prefers_covering_over_duplicates():
    e1, e2, e3 = np.eye(3)
    feats = np.stack([e1, e1, e1, e2, e2, e3])
    scores = np.array([0.9, 0.8, 0.1, 0.7, 0.2, 0.3])
    # candidates 0, 1, 3: item 0 covers the three e1s (gain 3, tie with 1: higher score wins),
    # then item 1 adds nothing and item 3 covers both e2s: F = 5, the optimum over the candidates
    assert max_cover(scores, feats, k=2, candidates=3).tolist() == [0, 3]
    # with 4 candidates (adds item 5): 0, 3, then 5 (gain 1) before the duplicate 1 (gain 0)
    assert max_cover(scores, feats, k=3, candidates=4).tolist() == [0, 3, 5]
    assert max_cover(scores, feats, k=2, candidates=3, block=2).tolist() == [0, 3]
    with pytest.raises(ValueError, match="candidates=1 < k=2"):
        max_cover(scores, feats, k=2, candidates=1)


# ---------------------------------------------------------------- information density


def test_information_density_by_hand():
    e1, e2 = np.eye(2)
    feats = np.stack([e1, e1, e2, -e1])  # -e1 has similarity -1 with e1: clipped to 0
    scores = np.array([1.0, 0.5, 1.0, 1.0])
    # mean clipped cosine: e1 rows (1 + 1 + 0 + 0) / 4, e2 row 1/4, -e1 row 1/4
    np.testing.assert_allclose(information_density(scores, feats), [0.5, 0.25, 0.25, 0.25])
    np.testing.assert_allclose(information_density(scores, feats, beta=2.0, block=3), [0.25, 0.125, 0.0625, 0.0625])
    np.testing.assert_allclose(information_density(scores, feats, beta=0.0), scores)
    with pytest.raises(ValueError, match="non-negative"):
        information_density(-scores, feats)


def test_blocked_density_matches_the_full_matrix():
    rng = np.random.default_rng(0)
    feats, scores = rng.normal(size=(300, 8)), rng.random(300)
    x = feats / np.linalg.norm(feats, axis=1, keepdims=True)
    full = scores * np.clip(x @ x.T, 0, None).mean(1)
    np.testing.assert_allclose(information_density(scores, feats, block=64), full, rtol=1e-12)


# ---------------------------------------------------------------- BatchBALD


def _committee(*p1_per_sample):
    """probs [N, K, 2] from each item's p(y=1 | ω_k)."""
    p1 = np.array(p1_per_sample, dtype=float)
    return np.stack([1 - p1, p1], axis=-1)


def test_batchbald_picks_the_second_of_two_identical_items_last():
    a = [0.99, 0.01, 0.99, 0.01]
    b = [0.95, 0.95, 0.05, 0.05]
    probs = _committee(a, a, b)
    assert np.argsort(-bald(probs)).tolist() == [0, 1, 2]  # top-k BALD takes both copies first
    assert batchbald(probs, 3, np.random.default_rng(0)).tolist() == [0, 2, 1]


def test_batchbald_of_one_item_is_bald():
    rng = np.random.default_rng(1)
    probs = rng.dirichlet(np.ones(3), size=(40, 8))
    assert batchbald(probs, 1, rng)[0] == int(np.argmax(bald(probs)))


def test_sampled_joint_entropy_approaches_the_exact_value():
    rng = np.random.default_rng(2)
    p = rng.dirichlet(np.ones(3), size=(4, 6))  # a batch of 3 items + 1 candidate, K = 6, C = 3
    exact_K_M = np.ones((6, 1))
    for b in range(3):
        exact_K_M = (exact_K_M[:, :, None] * p[b][:, None, :]).reshape(6, -1)  # 27 configurations
    exact = _joint_entropy(exact_K_M, p[3:], sampled=False)[0]
    omega_M = rng.integers(6, size=200_000)
    sampled_K_M = np.ones((6, len(omega_M)))
    for b in range(3):
        sampled_K_M *= p[b][:, _draw_labels(p[b], omega_M, rng)]
    assert _joint_entropy(sampled_K_M, p[3:], sampled=True)[0] == pytest.approx(exact, rel=0.01)


def test_batchbald_switches_to_sampling_and_stays_sensible():
    rng = np.random.default_rng(3)
    probs = rng.dirichlet(np.ones(4) * 0.5, size=(30, 10))
    probs = np.concatenate([probs, probs[:1]])  # item 30 duplicates item 0
    exact = batchbald(probs, 5, np.random.default_rng(0), num_samples=10**6)
    sampled = batchbald(probs, 5, np.random.default_rng(0), num_samples=64)  # 4^3 > 64: sampled from pick 4
    assert len(set(sampled.tolist())) == 5 and exact[:3].tolist() == sampled[:3].tolist()
    assert not {0, 30} <= set(exact.tolist())  # never both copies
    top8 = set(np.argsort(-bald(probs), kind="stable")[:8].tolist())
    assert set(batchbald(probs, 5, np.random.default_rng(0), candidates=8).tolist()) <= top8


def _pixels(*samples):
    """``[K, 2, P]`` binary pixel probabilities from K lists of foreground probabilities."""
    fg = np.asarray(samples, dtype=np.float64)
    return np.stack([1 - fg, fg], axis=1)


def test_batchbald_per_pixel_sees_where_the_classes_are_not_only_their_area():
    # image 0: two samples put the foreground on the left half, two on the right: the same area every time
    moved = _pixels([0.99, 0.99, 0.01, 0.01], [0.99, 0.99, 0.01, 0.01], [0.01, 0.01, 0.99, 0.99],
                    [0.01, 0.01, 0.99, 0.99])
    # image 1: every pixel a little more foreground in two samples than in the other two: the area varies
    grown = _pixels([0.6] * 4, [0.6] * 4, [0.4] * 4, [0.4] * 4)
    probs = np.stack([moved, grown])  # [N=2, K=4, C=2, P=4]
    assert batchbald_pixels(probs, 1, np.random.default_rng(0))[0] == 0
    assert batchbald(probs.mean(-1), 1, np.random.default_rng(0))[0] == 1  # the per-image mean sees no change in 0
    seg = np.broadcast_to(probs[..., None], (*probs.shape, 1))  # [N, K, C, H=4, W=1] maps
    for labels, first in (("pixels", 0), ("mean", 1)):
        st = get_strategy("batchbald", labels=labels, pixels=4)
        summary = st.summarize(seg)
        assert summary.shape == ((2, 4, 2, 4) if labels == "pixels" else (2, 4, 2))
        assert st.select(np.zeros(2), 1, np.random.default_rng(0), {"probs": summary})[0] == first


def test_batchbald_per_pixel_skips_a_copy_for_an_image_that_splits_the_samples_differently():
    a = _pixels([0.99] * 3, [0.99] * 3, [0.01] * 3, [0.01] * 3)  # splits the samples {0, 1} | {2, 3}
    c = _pixels([0.97] * 3, [0.03] * 3, [0.97] * 3, [0.03] * 3)  # splits them {0, 2} | {1, 3}, a little less sure
    probs = np.stack([a, a, c])
    assert np.argsort(-bald(probs).sum(-1)).tolist()[:2] == [0, 1]  # top-k BALD takes both copies
    first, second = batchbald_pixels(probs, 2, np.random.default_rng(0)).tolist()
    assert first in (0, 1) and second == 2  # the copies tie up to the draws' noise
    # the batch's information: one split names a pair of samples (log 2); both splits name the sample, log K
    trace: list[float] = []
    batchbald_pixels(probs, 2, np.random.default_rng(0), num_samples=20_000, trace=trace)
    assert trace[0] == pytest.approx(np.log(2), abs=0.03) and trace[1] == pytest.approx(np.log(4), abs=0.05)
    # never above log K, whatever the draws: each draw's term is in [0, log K]
    rng = np.random.default_rng(6)
    noisy = rng.dirichlet(np.ones(3) * 0.3, size=(40, 4, 256)).transpose(0, 1, 3, 2)  # 40 images, K = 4, P = 256
    trace = []
    picks = batchbald_pixels(noisy, 8, np.random.default_rng(0), num_samples=200, trace=trace).tolist()
    assert all(0.0 <= t <= np.log(4) + 1e-9 for t in trace)
    assert trace[0] > 0.99 * np.log(4)  # 256 such pixels name the sample: one image takes the whole log K
    by_bald = [int(i) for i in np.argsort(-bald(noisy).sum(-1), kind="stable") if i != picks[0]]
    assert picks[1:] == by_bald[:7]  # every later candidate ties at log K: the rest of the batch is top BALD


def test_pixel_joint_entropy_estimate_matches_enumeration():
    rng = np.random.default_rng(4)
    p = rng.dirichlet(np.ones(2), size=(2, 3, 2)).transpose(0, 1, 3, 2)  # 2 images, K = 3, C = 2, P = 2
    configs = np.array(np.meshgrid(*[[0, 1]] * 4, indexing="ij")).reshape(4, -1).T  # 16 labelings of 4 pixels
    flat = p.transpose(1, 0, 3, 2).reshape(3, 4, 2)  # [K, image-pixel, C]
    joint = np.array([np.prod(flat[:, np.arange(4), y], axis=1).mean() for y in configs])
    exact = -(joint * np.log(joint)).sum()
    omega_M = rng.integers(3, size=100_000)
    loglik = _pixel_logliks(p, omega_M, rng).astype(np.float64).sum(0)  # both images drawn under the same ω_m
    assert -_logmeanexp(loglik, 0).mean() == pytest.approx(exact, rel=0.01)


def test_batchbald_per_pixel_within_memory_keeps_the_top_bald_images():
    rng = np.random.default_rng(5)
    probs = rng.dirichlet(np.ones(3) * 0.5, size=(20, 6, 16)).transpose(0, 1, 3, 2)
    top5 = set(np.argsort(-bald(probs).sum(-1), kind="stable")[:5].tolist())
    picks = batchbald_pixels(probs, 3, np.random.default_rng(0), num_samples=100, memory=5 * 6 * 100 * 4)
    assert len(set(picks.tolist())) == 3 and set(picks.tolist()) <= top5
    with pytest.raises(ValueError, match=r"\[N, K, C, P\]"):
        batchbald_pixels(probs[..., 0], 3, np.random.default_rng(0))
    with pytest.raises(ValueError, match="labels must be one of pixels, mean"):
        get_strategy("batchbald", labels="area")


# ---------------------------------------------------------------- BADGE


def test_gradient_embedding_by_hand():
    emb = gradient_embedding([[0.7, 0.3]], [[2.0, 1.0]])
    np.testing.assert_allclose(emb, [[-0.6, -0.3, 0.6, 0.3]])  # (p - onehot(0)) ⊗ h


def test_kmeans_pp_starts_at_the_largest_norm_and_spreads():
    rng = np.random.default_rng(0)
    cluster_a = rng.normal(0, 0.01, size=(20, 2)) + [5, 0]
    cluster_b = rng.normal(0, 0.01, size=(20, 2)) + [0, 3]
    emb = np.concatenate([cluster_b, cluster_a])  # the largest norms are in cluster a (indices 20..39)
    picks = kmeans_pp(emb, 2, np.random.default_rng(1))
    assert picks[0] == int(np.argmax(np.linalg.norm(emb, axis=1))) and picks[1] < 20
    again = kmeans_pp(emb, 6, np.random.default_rng(1))
    assert again.tolist() == kmeans_pp(emb, 6, np.random.default_rng(1)).tolist() and len(set(again)) == 6
    assert sorted(kmeans_pp(np.zeros((3, 2)), 5, rng).tolist()) == [0, 1, 2]  # all identical: no D² mass


# ---------------------------------------------------------------- stochastic batches


@pytest.mark.parametrize("mode, scores, p_first", [("power", [3.0, 1.0], 0.75),
                                                   ("softmax", [np.log(3.0), 0.0], 0.75),
                                                   ("rank", [5.0, 1.0], 2 / 3)])
def test_stochastic_batch_probabilities(mode, scores, p_first):
    rng = np.random.default_rng(0)
    first = [stochastic_batch(scores, 1, rng, mode=mode)[0] == 0 for _ in range(6000)]
    assert np.mean(first) == pytest.approx(p_first, abs=0.02)


def test_stochastic_batch_contract():
    scores = np.random.default_rng(0).random(50)
    picks = stochastic_batch(scores, 10, np.random.default_rng(1))
    assert len(set(picks.tolist())) == 10
    assert picks.tolist() == stochastic_batch(scores, 10, np.random.default_rng(1)).tolist()  # seeded
    cold = stochastic_batch(scores, 5, np.random.default_rng(1), mode="softmax", temperature=1e-6)
    assert cold.tolist() == np.argsort(-scores)[:5].tolist()  # T → 0: top-k
    with pytest.raises(ValueError, match="non-negative"):
        stochastic_batch(-scores, 2, np.random.default_rng(0))
    with pytest.raises(ValueError, match="unknown mode 'gumbel'"):
        stochastic_batch(scores, 2, np.random.default_rng(0), mode="gumbel")
    with pytest.raises(TypeError, match="numpy.random.Generator"):
        stochastic_batch(scores, 2, 0)
