"""Image mutual information against a direct joint-histogram formula, and the Nath et al. score."""

import time

import numpy as np
import pytest

from activeseg.acquisition.mutual_info import entropy_mi_score, mi_matrix, minmax, quantize, same_images


def direct_mi(a, b, bins):
    """MI from numpy's histogram2d on the min-max scaled images, summed over non-empty cells."""
    def scale(x):
        x = x.ravel().astype(float)
        return (x - x.min()) / (x.max() - x.min()) if x.max() > x.min() else np.zeros_like(x)

    joint, _, _ = np.histogram2d(scale(a), scale(b), bins=bins, range=[[0, 1], [0, 1]])
    p = joint / joint.sum()
    pa, pb = p.sum(1, keepdims=True), p.sum(0, keepdims=True)
    nz = p > 0
    return float((p[nz] * np.log(p[nz] / (pa @ pb)[nz])).sum())


def test_mi_matches_the_direct_formula():
    rng = np.random.default_rng(0)
    pool = rng.random((5, 1, 12, 12))
    train = np.concatenate([rng.random((3, 1, 12, 12)), pool[:1] ** 2])  # the last is a function of pool 0
    for bins in (4, 8, 32):
        got = mi_matrix(pool, train, bins=bins, block=2)
        want = np.array([[direct_mi(a, b, bins) for b in train] for a in pool])
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def test_mi_by_hand_and_its_properties():
    a = np.array([[0.0, 0.0, 1.0, 1.0]])
    # identical two-level images: MI = H = log 2; a shuffled copy with independent halves: 0
    assert mi_matrix(a, a, bins=2)[0, 0] == pytest.approx(np.log(2))
    assert mi_matrix(a, np.array([[0.0, 1.0, 0.0, 1.0]]), bins=2)[0, 0] == pytest.approx(0.0, abs=1e-12)
    assert mi_matrix(a, np.array([[1.0, 1.0, 0.0, 0.0]]), bins=2)[0, 0] == pytest.approx(np.log(2))  # inverted
    const = np.zeros((1, 4))
    assert mi_matrix(a, const, bins=2)[0, 0] == 0.0  # a constant image shares no information
    rng = np.random.default_rng(1)
    x = rng.random((4, 64))
    m = mi_matrix(x, x, bins=8)
    np.testing.assert_allclose(m, m.T, atol=1e-12)  # symmetric
    assert (m >= -1e-12).all() and np.all(np.diag(m) >= m.max(1) - 1e-12)  # self-MI is the largest
    assert quantize(np.array([[0.0, 0.5, 1.0]]), 4).tolist() == [[0, 2, 3]]
    with pytest.raises(ValueError, match="same size"):
        mi_matrix(np.zeros((1, 4)), np.zeros((1, 5)))


def test_small_images_need_fewer_bins():
    rng = np.random.default_rng(2)
    a, b = rng.random((50, 16, 16)), rng.random((50, 16, 16))
    mi8 = np.diag(mi_matrix(a, b, bins=8)).mean()
    mi32 = np.diag(mi_matrix(a, b, bins=32)).mean()
    assert mi8 == pytest.approx(0.10, abs=0.03) and mi32 == pytest.approx(1.45, abs=0.1)  # ALGORITHMS.md


def test_a_thousand_by_two_hundred_matrix_is_quick_enough_to_use():
    rng = np.random.default_rng(3)
    t0 = time.perf_counter()
    m = mi_matrix(rng.random((1000, 32, 32)), rng.random((200, 32, 32)), bins=32)
    assert m.shape == (1000, 200) and np.isfinite(m).all()
    print(f"1000 × 200 MI of 32×32 images: {time.perf_counter() - t0:.1f} s")  # informative, not asserted


def test_entropy_mi_score():
    h = np.array([0.2, 0.4, 0.6])
    mi = np.array([[1.0, 3.0], [0.0, 0.0], [5.0, 5.0]])  # means 2, 0, 5
    np.testing.assert_allclose(entropy_mi_score(h, mi), [0.0 - 0.4, 0.5 - 0.0, 1.0 - 1.0])
    np.testing.assert_allclose(entropy_mi_score(h, mi, alpha=2.0), [0.0 - 0.2, 1.0 - 0.0, 2.0 - 0.5])
    assert minmax([3, 3]).tolist() == [0.0, 0.0]
    with pytest.raises(ValueError, match="alpha"):
        entropy_mi_score(h, mi, alpha=0)


def test_entropy_mi_strategy_avoids_images_like_the_labelled_ones():
    from activeseg.acquisition import get_strategy

    rng = np.random.default_rng(4)
    labelled = rng.random((2, 1, 8, 8))
    pool = np.concatenate([labelled[:1] * 2.0, rng.random((3, 1, 8, 8))])  # item 0: a rescaled labelled image
    strategy = get_strategy("entropy_mi", bins=8)
    scores = np.array([0.6, 0.55, 0.55, 0.5])  # item 0 is the most uncertain, but a copy of what is labelled
    picks = strategy.select(scores, 1, rng, extras={"images": pool, "train_images": labelled})
    assert picks[0] != 0
    assert get_strategy("max_entropy").select(scores, 1, rng)[0] == 0  # entropy alone takes the copy


def test_self_pairs_are_left_out_of_the_mean_mi():
    h = np.array([0.2, 0.4, 0.6])
    mi = np.array([[1.0, 3.0], [0.0, 4.0], [5.0, 5.0]])
    itself = np.array([[False, True], [False, False], [True, True]])  # row 2: nothing left, mean 0
    # means without the excluded pairs: 1, 2, 0 -> minmax 0.5, 1, 0
    np.testing.assert_allclose(entropy_mi_score(h, mi, exclude_N_M=itself), [0.0 - 0.5, 0.5 - 1.0, 1.0 - 0.0])
    a = np.arange(8.0).reshape(2, 1, 2, 2)
    np.testing.assert_array_equal(same_images(np.stack([a[1], a[0] * 2, a[0]]), a),
                                  [[False, True], [False, False], [True, False]])


def test_no_delete_can_re_pick_a_labelled_hard_item():
    """A labelled item that stays a candidate (NoDelete) is compared with the other labelled images only:
    its MI with itself (the largest possible) no longer hides it. Pool items 1 and 2 are rescaled copies
    of labelled images (the same content, so they should stay unwanted); item 0 is labelled item 0 itself."""
    from activeseg.acquisition import get_strategy

    rng = np.random.default_rng(5)
    x, b1, b2, other = rng.random((4, 1, 16, 16))
    labelled = np.stack([x, b1, b2])
    pool = np.stack([x, 2 * b1, 2 * b2, other])
    scores = np.array([0.55, 0.6, 0.6, 0.4])
    extras = {"images": pool, "train_images": labelled}
    assert get_strategy("entropy_mi", bins=8).select(scores, 1, rng, extras=extras)[0] == 0
    with_self = entropy_mi_score(scores, mi_matrix(pool, labelled, bins=8))  # the row mean with the self-pair
    assert np.argmax(with_self) != 0 and with_self[0] < with_self.max() - 0.1  # ... never re-picked it
