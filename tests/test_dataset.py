"""activeseg.data.dataset: the one tiler (any spatial rank), padding, and the spatial rank as data."""

import numpy as np
import pytest
import torch

from activeseg.config import SimConfig
from activeseg.data.augment import augment_batch
from activeseg.data.dataset import (
    ImageDataset,
    cut_tile,
    pad_to_multiple,
    tile,
    tile_grid,
    tile_images,
    tile_name,
    tile_pairs,
)
from activeseg.engine import Engine


def test_tile_cuts_row_major_drops_edges_and_pads_short_sides():
    a = np.arange(70 * 65).reshape(70, 65)
    tiles = tile(a, 32)
    assert [pos for pos, _ in tiles] == [(0, 0), (0, 1), (1, 0), (1, 1)]  # 6 rows / 1 column dropped
    np.testing.assert_array_equal(tiles[3][1], a[32:64, 32:64])
    (pos, small), = tile(np.ones((20, 40)), 32)  # a side shorter than a tile: zero-padded to one tile
    assert pos == (0, 0) and small.shape == (32, 32) and small[20:].sum() == 0 and small[:20].sum() == 20 * 32
    assert tile_grid((70, 65), 32) == (2, 2) and tile_grid((20, 40), 32) == (1, 1)


def test_tile_in_3d_and_channel_last_arrays():
    vol = np.arange(4 * 8 * 8).reshape(4, 8, 8)
    tiles = tile(vol, 4, spatial_dims=3)
    assert len(tiles) == 1 * 2 * 2 and tiles[-1][0] == (0, 1, 1)
    np.testing.assert_array_equal(tiles[-1][1], vol[0:4, 4:8, 4:8])
    rgb = np.zeros((8, 8, 3))
    assert all(t.shape == (4, 4, 3) for _, t in tile(rgb, 4))  # trailing axes are carried along
    np.testing.assert_array_equal(cut_tile(vol, (0, 1, 0), 4), vol[:, 4:8, 0:4])
    assert tile_name((2, 5)) == "r2_c5" and tile_name((1, 2, 5)) == "z1_r2_c5"


def test_tile_pairs_and_tile_images_keep_image_and_mask_together():
    rng = np.random.default_rng(0)
    img = rng.random((2, 16, 24)).astype(np.float32)  # [C, H, W]
    mask = (img[0] > 0.5).astype(np.uint8)
    pairs = tile_pairs(img, mask, 8)
    assert len(pairs) == 6 and all(t.shape == (2, 8, 8) and m.shape == (8, 8) for _, t, m in pairs)
    for _, t, m in pairs:
        np.testing.assert_array_equal(m, (t[0] > 0.5).astype(np.uint8))
    ds = tile_images(["a", "b"], [img, img[:, :8, :8]], [mask, mask[:8, :8]], 8,
                     groups=[7, lambda r, c: 100 + r])
    assert len(ds) == 7 and ds.item_ids[:2] == ["a_r0_c0", "a_r0_c1"] and ds.item_ids[-1] == "b_r0_c0"
    assert ds.groups.tolist() == [7] * 6 + [100] and ds.spatial_dims == 2


def test_pad_to_multiple_reflects_and_crops_back():
    img = np.arange(2 * 5 * 6, dtype=np.float32).reshape(2, 5, 6)
    out = pad_to_multiple(img, 4)
    assert out.shape == (2, 8, 8)
    np.testing.assert_array_equal(out[:, :5, :6], img)
    np.testing.assert_array_equal(out[:, 5, :6], img[:, 3, :6])  # reflected, the edge not repeated
    exact = img[:, :4, :4]
    assert pad_to_multiple(exact, 4) is exact  # nothing to pad: the same array
    assert pad_to_multiple(np.ones((1, 2, 2)), 8).shape == (1, 8, 8)  # a pad longer than the side: edge mode


def test_the_spatial_rank_is_read_from_the_data():
    vol = ImageDataset(np.zeros((3, 1, 8, 8, 8), np.float32), np.zeros((3, 8, 8, 8), np.uint8),
                       ["v_0", "v_1", "v_2"], np.arange(3))
    assert vol.spatial_dims == 3 and vol.task == "segmentation"
    net = Engine(SimConfig(depth=2, base_filters=4)).new_network(vol, 0)  # the data's rank picks a 3-D U-Net
    assert net.spatial_dims == 3 and net(torch.zeros(1, 1, 8, 8, 8)).shape == (1, 2, 8, 8, 8)
    images, masks = augment_batch(torch.zeros(1, 1, 8, 8, 8), torch.zeros(1, 8, 8, 8), torch.Generator())
    assert images.shape == (1, 1, 8, 8, 8) and masks.shape == (1, 8, 8, 8)
    with pytest.raises(ValueError, match="4 spatial"):
        augment_batch(torch.zeros(1, 1, 4, 4, 4, 4), None, torch.Generator())
    with pytest.raises(ValueError, match=r"targets must be \[N\] class labels or \[N, \*spatial\]"):
        ImageDataset(np.zeros((3, 1, 8, 8, 8), np.float32), np.zeros((3, 8, 8), np.uint8), ["a", "b", "c"],
                     np.arange(3))
