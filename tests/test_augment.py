"""Augmentation of images and masks together, seeded by the generator only."""


import numpy as np
import pytest
import torch

from activeseg.data.augment import augment_batch

# ---------------------------------------------------------------- augmentation


def aug_inputs(b=4, c=1, size=16, classes=2, seed=0):
    rng = np.random.default_rng(seed)
    images = torch.from_numpy(rng.random((b, c, size, size), dtype=np.float32))
    masks = torch.from_numpy(rng.integers(0, classes, (b, size, size)))
    return images, masks


@pytest.mark.parametrize("mask_dtype", [torch.int64, torch.uint8])
@pytest.mark.parametrize("classes", [2, 3])
def test_augment_keeps_shapes_dtypes_and_classes(mask_dtype, classes):
    images, masks = aug_inputs(b=6, c=3, classes=classes)
    masks = masks.to(mask_dtype)
    out_i, out_m = augment_batch(images, masks, torch.Generator().manual_seed(0))
    assert out_i.shape == images.shape and out_i.dtype == images.dtype
    assert out_m.shape == masks.shape and out_m.dtype == mask_dtype
    assert set(out_m.unique().tolist()) <= set(range(classes))
    assert not torch.equal(out_i, images) and not torch.equal(out_m, masks)
    # Reflection padding and bilinear resampling stay inside the input range.
    assert out_i.min() >= images.min() - 1e-6 and out_i.max() <= images.max() + 1e-6


def test_augment_is_seeded_by_the_generator_only():
    images, masks = aug_inputs()
    torch.manual_seed(1)
    a = augment_batch(images, masks, torch.Generator().manual_seed(5))
    torch.manual_seed(2)
    state = torch.get_rng_state()
    b = augment_batch(images, masks, torch.Generator().manual_seed(5))
    assert torch.equal(torch.get_rng_state(), state), "augmentation used the global RNG"
    c = augment_batch(images, masks, torch.Generator().manual_seed(6))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


NO_AFFINE = {"max_rotation_deg": 0, "max_shift": 0, "zoom": (1, 1)}


def test_augment_identity_parameters():
    images, masks = aug_inputs()
    out_i, out_m = augment_batch(images, masks, torch.Generator().manual_seed(0), **NO_AFFINE, flip=False)
    torch.testing.assert_close(out_i, images, rtol=0, atol=1e-5)
    assert torch.equal(out_m, masks)


def test_augment_flip_only_gives_exact_flips():
    images, masks = aug_inputs(b=16)
    out_i, out_m = augment_batch(images, masks, torch.Generator().manual_seed(0), **NO_AFFINE, flip=True)
    kinds = []
    for i in range(len(images)):
        for dims in [(), (-1,), (-2,), (-2, -1)]:
            flipped_m = masks[i].flip(dims) if dims else masks[i]
            flipped_i = images[i].flip(dims) if dims else images[i]
            if torch.equal(out_m[i], flipped_m) and torch.allclose(out_i[i], flipped_i, atol=1e-5):
                kinds.append(dims)
                break
        else:
            pytest.fail(f"item {i} is not a flip of its input")
    assert len(set(kinds)) >= 3  # the flips are random per item


def test_augment_moves_image_and_mask_together():
    """Augmenting an image equal to its mask: the resampled image still matches the mask."""
    rng = np.random.default_rng(0)
    masks = np.zeros((8, 32, 32), np.int64)
    for m in masks:  # blobs, so nearest vs bilinear differ only on edges
        for _ in range(3):
            r, c = rng.integers(4, 28, 2)
            m[r - 4 : r + 4, c - 4 : c + 4] = 1
    masks_t = torch.from_numpy(masks)
    out_i, out_m = augment_batch(masks_t[:, None].float(), masks_t, torch.Generator().manual_seed(3))
    agree = ((out_i[:, 0] > 0.5) == (out_m == 1)).float().mean().item()
    assert agree > 0.97
    assert not torch.equal(out_m, masks_t)




def test_dihedral_moves_masks_with_images_exactly_and_is_seeded():
    from activeseg.data.augment import dihedral_batch

    x = torch.rand(6, 1, 8, 8)
    y = (x[:, 0] > 0.5).long()
    a, ma = dihedral_batch(x, y, torch.Generator().manual_seed(3), gamma=(1.0, 1.0))
    b, mb = dihedral_batch(x, y, torch.Generator().manual_seed(3), gamma=(1.0, 1.0))
    assert torch.equal(a, b) and torch.equal(ma, mb)
    assert torch.equal(ma, (a[:, 0] > 0.5).long())  # no resampling: the mask is the image's, moved alike
    for i in range(6):  # each item is one of the 8 flips / rotations of itself
        views = [torch.rot90(x[i, 0], k, (0, 1)) for k in range(4)]
        views += [v.flip(-1) for v in views]
        assert any(torch.equal(a[i, 0], v) for v in views)
    g, _ = dihedral_batch(x, None, torch.Generator().manual_seed(0))
    assert g.min() >= 0 and g.max() <= 1  # gamma keeps [0, 1]
    odd, _ = dihedral_batch(torch.rand(2, 1, 4, 6), None, torch.Generator().manual_seed(0))
    assert odd.shape == (2, 1, 4, 6)  # a non-square batch is only flipped


def test_dihedral_moves_volumes_and_their_masks_together_and_2d_draws_stay_the_same():
    import torch

    from activeseg.data.augment import dihedral_batch

    g = torch.Generator().manual_seed(0)
    vol = torch.rand(6, 1, 4, 5, 5, generator=g)
    mask = (vol[:, 0] > 0.5).long() + 1
    out, moved = dihedral_batch(vol, mask, torch.Generator().manual_seed(3))
    assert out.shape == vol.shape and moved.shape == mask.shape
    # each mask moved exactly as its image (the gamma keeps the voxels' order): class 2 is still where the
    # image is above 0.5 before the gamma, i.e. every class-2 voxel is brighter than every class-1 voxel
    for i in range(6):
        assert out[i, 0][moved[i] == 2].min() > out[i, 0][moved[i] == 1].max()
    assert not torch.equal(out, vol)
    # 2-D batches consume exactly 4 draws per item, as before volumes were supported
    a, b = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    dihedral_batch(torch.rand(3, 1, 8, 8), None, a)
    torch.rand(3, 4, generator=b)
    assert torch.equal(a.get_state(), b.get_state())
    with pytest.raises(ValueError, match="4 spatial"):
        dihedral_batch(torch.rand(1, 1, 2, 2, 2, 2), None, a)


def test_affine_rotates_volumes_in_plane_and_keeps_masks_on_their_voxels():
    from activeseg.data.augment import augment_batch

    vol = torch.zeros(4, 1, 6, 16, 16)
    vol[:, :, :, 6:10, 6:10] = 1.0  # a bar through every slice, centred in the plane
    mask = (vol[:, 0] > 0.5).long()
    out, moved = augment_batch(vol, mask, torch.Generator().manual_seed(0), max_shift=0.0)
    assert out.shape == vol.shape and moved.shape == mask.shape and moved.dtype == mask.dtype
    # an in-plane rotation about the volume's axis keeps the bar in every slice, the same in each
    assert torch.equal(moved, moved[:, :1].expand_as(moved))
    assert ((out[:, 0] > 0.5).long() == moved).float().mean() > 0.95  # the mask follows the image
    a, b = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    augment_batch(torch.rand(3, 1, 8, 8), None, a)
    for _ in range(6):  # angle, zoom, two shifts, two flips: 2-D draws as before volumes were supported
        torch.rand(3, generator=b)
    assert torch.equal(a.get_state(), b.get_state())
