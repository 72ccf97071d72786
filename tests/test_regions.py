"""Region queries: window scores from summed-area tables, non-maximum suppression, click costs."""

import numpy as np
import pytest

from activeseg.acquisition.regions import (
    Region,
    box_sums,
    candidate_windows,
    click_cost,
    nms,
    region_scores,
    select_regions,
    window_grid,
    window_sums,
)


def test_window_sums_equal_the_brute_force_sums():
    maps = np.random.default_rng(0).random((2, 9, 7))
    sums, ys, xs = window_sums(maps, 4, 2)
    assert ys.tolist() == [0, 2, 4, 5] and xs.tolist() == [0, 2, 3]  # the last window flush with the edge
    brute = np.array([[[maps[n, y:y + 4, x:x + 4].sum() for x in xs] for y in ys] for n in range(2)])
    assert np.allclose(sums, brute)
    assert window_grid(10, 4, 4).tolist() == [0, 4, 6]
    with pytest.raises(ValueError, match="does not fit"):
        window_grid(3, 4, 1)


def test_nms_keeps_the_best_disjoint_windows():
    m = np.zeros((1, 8, 8))
    m[0, :4, :4] = 1.0  # a hot block: window (0, 0) sums 16
    m[0, 4:, 4:] = 0.4  # a cooler one: window (4, 4) sums 6.4
    scores, ys, xs = region_scores(m, 4, 2)
    assert scores.max() == 1.0 and scores.min() == 0.0
    disjoint = select_regions(scores, ys, xs, 4, k=2)
    assert disjoint == [Region(0, 0, 0, 4, 4), Region(0, 4, 4, 4, 4)]
    # allowing overlap up to IoU 1/2: the half-overlapping window (0, 2), which sums 8 > 6.4, comes second
    overlapping = select_regions(scores, ys, xs, 4, k=2, iou_max=0.5)
    assert overlapping == [Region(0, 0, 0, 4, 4), Region(0, 0, 2, 4, 4)]
    assert overlapping[0].iou(overlapping[1]) == pytest.approx(8 / 24)


def test_labelled_pixels_count_as_zero_or_exclude_their_windows():
    m = np.ones((2, 4, 4))
    done = np.zeros((2, 4, 4), bool)
    done[0, 0, 0] = True
    zero, ys, xs = region_scores(m, 4, 4, done, labelled="zero")
    assert zero[:, 0, 0].tolist() == [0.0, 1.0]  # 15 against 16, min-max normalised
    excluded, ys, xs = region_scores(m, 4, 4, done, labelled="exclude")
    assert excluded[0, 0, 0] == -np.inf
    assert select_regions(excluded, ys, xs, 4, k=5) == [Region(1, 0, 0, 4, 4)]  # image 0 is never picked again
    with pytest.raises(ValueError, match="labelled must be one of zero, exclude"):
        region_scores(m, 4, 4, done, labelled="skip")


def test_click_cost_of_hand_drawn_masks():
    square = np.zeros((12, 12), int)
    square[2:7, 2:7] = 1
    assert click_cost(square) == 4 + 1
    two = square.copy()
    two[8:11, 8:11] = 2  # a second component, of another class
    assert click_cost(two) == 2 * (4 + 1)
    triangle = np.zeros((12, 12), int)
    for i in range(8):
        triangle[2 + i, 2 : 3 + i] = 1
    assert click_cost(triangle) == 3 + 1
    ring = np.zeros((12, 12), int)
    ring[2:10, 2:10] = 1
    ring[4:8, 4:8] = 0
    assert click_cost(ring) == 4 + 1  # the hole is not outlined
    assert click_cost(np.pad([[1]], 3)) == 3 + 1  # a one-pixel nucleus still takes a triangle
    assert click_cost(np.zeros((5, 5), int)) == 0 and click_cost(np.full((5, 5), 255)) == 0
    assert click_cost(square, Region(0, 0, 0, 5, 5)) == 4 + 1  # only the 3 × 3 corner inside the box
    wiggly = np.zeros((20, 20), int)
    wiggly[5:15, 5:15] = 1
    wiggly[5:15:2, 15] = 1  # teeth one pixel deep on the right edge
    assert click_cost(wiggly, tolerance=1.0) < click_cost(wiggly, tolerance=0.25)


def test_a_volume_is_outlined_slice_by_slice():
    square = np.zeros((12, 12), int)
    square[2:7, 2:7] = 1
    volume = np.stack([square, np.zeros_like(square), square, square])
    assert click_cost(volume) == 3 * (4 + 1)
    with pytest.raises(ValueError, match="2-D label maps or"):
        click_cost(np.zeros((2, 2, 2, 2), int))


def test_cubes_of_volumes_sum_pick_and_cost_like_their_voxels():
    rng = np.random.default_rng(1)
    vol = rng.random((6, 7, 5))
    starts = np.array([[0, 0, 0], [2, 3, 1], [3, 4, 2]])
    assert np.allclose(box_sums(vol, starts, [3, 3, 3]), [vol[z:z + 3, y:y + 3, x:x + 3].sum() for z, y, x in starts])
    done = np.zeros((6, 7, 5), bool)
    done[:3, :3, :3] = True  # the corner cube is labelled
    windows, allowed = candidate_windows([(6, 7, 5)], 3, 0, [done])
    assert windows.z is not None and len(windows) == 4 * 5 * 3  # starts 0,1,2,3 / 0,1,2,3,4 / 0,1,2 at stride 1
    corner = [w for w in range(len(windows)) if windows.region(w).starts == (0, 0, 0)]
    assert not allowed[corner].any() and allowed.sum() == len(windows) - 27  # each window touching the corner
    _, zero = candidate_windows([(6, 7, 5)], 3, 0, [done], mode="zero")
    assert zero.sum() == len(windows) - 1  # only the fully labelled cube is barred
    hot = np.zeros((6, 7, 5))
    hot[3:, 4:, 2:] = 1.0
    picks = [windows.region(w) for w in nms(windows, np.where(allowed, windows.sums([hot]), -np.inf), 3)]
    assert picks[0] == Region(0, 4, 2, 3, 3, 3, 3) and all(a.iou(b) == 0 for a in picks for b in picks if a != b)
    assert Region(0, 0, 0, 2, 2, 0, 2).iou(Region(0, 1, 1, 2, 2, 1, 2)) == pytest.approx(1 / 15)
    assert Region.from_box(0, picks[0].box()) == picks[0] and picks[0].box() == [3, 4, 2, 3, 3, 3]
    with pytest.raises(ValueError, match="all of one kind"):
        candidate_windows([(6, 7, 5), (8, 8)], 3)
    labels = np.zeros((6, 7, 5), np.uint8)
    labels[1:5, 1:4, 1:4] = 1  # a block: outlined on each of the slices its cube crosses
    box = Region(0, 0, 0, 4, 4, 2, 3)
    assert click_cost(labels, box) == click_cost(labels[2:5, :4, :4]) == 3 * (4 + 1)
    with pytest.raises(ValueError, match="needs a \\[D, H, W\\] label volume"):
        click_cost(labels[0], box)


def test_cost_features_of_a_volume_are_its_slices_features():
    from activeseg.acquisition.cost import cost_maps

    rng = np.random.default_rng(2)
    image, probs, unc = rng.random((1, 4, 8, 8)), rng.random((3, 4, 8, 8)), rng.random((4, 8, 8))
    feats = cost_maps(image, probs, unc)
    assert feats.shape == (5, 4, 8, 8)
    for z in range(4):
        assert np.array_equal(feats[:, z], cost_maps(image[:, z], probs[:, z], unc[z]))
