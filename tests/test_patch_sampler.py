"""The training patch sampler: exactly the asked share of patches centred on foreground, boxes inside."""

import numpy as np
import pytest

from activeseg.data.patch_sampler import sample_patches


def _volumes():
    a = np.zeros((20, 30, 40), np.uint8)
    a[5:8, 10:14, 20:25] = 1  # a small structure: 60 of 24,000 voxels
    a[15:, :, :] = 255  # an unlabelled slab
    b = np.zeros((10, 10, 10), np.uint8)  # background only
    return [a, b]


def test_half_the_patches_are_centred_on_foreground_and_inside_their_volume():
    labels = _volumes()
    patches = sample_patches(labels, (8, 8, 8), 40, np.random.default_rng(0))
    assert len(patches) == 40
    for v, box in patches:
        shape = labels[v].shape
        assert all(0 <= s.start < s.stop <= side and s.stop - s.start == min(8, side)
                   for s, side in zip(box, shape, strict=True))
        assert (labels[v][box] != 255).any()
    fg = sum((labels[v][box] == 1).any() for v, box in patches)
    assert fg >= 20  # the 20 foreground-centred patches all hold foreground (1:1, Nath et al.)
    again = sample_patches(labels, (8, 8, 8), 40, np.random.default_rng(0))
    assert again == patches


def test_the_share_is_exact_and_unlabelled_voxels_are_never_centres():
    labels = _volumes()
    rng = np.random.default_rng(1)
    for fraction, want in ((0.5, 25), (0.2, 10), (1.0, 50)):
        patches = sample_patches(labels, (1, 1, 1), 50, rng, fg_fraction=fraction)  # 1-voxel patches: the centres
        values = [int(labels[v][box][0, 0, 0]) for v, box in patches]
        assert values.count(1) == want and 255 not in values
    with pytest.raises(ValueError, match="no labelled foreground voxel"):
        sample_patches([np.zeros((4, 4), np.uint8)], (2, 2), 4, rng)
    assert len(sample_patches([np.zeros((4, 4), np.uint8)], (2, 2), 4, rng, fg_fraction=0.0)) == 4
    with pytest.raises(ValueError, match="fg_fraction"):
        sample_patches(labels, (2, 2, 2), 4, rng, fg_fraction=1.5)
