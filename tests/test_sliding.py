"""Sliding-window inference: Gaussian weights, exact blending, agreement with whole-volume prediction."""

import numpy as np
import pytest
import torch

from activeseg.models import UNet
from activeseg.scoring import sliding_maps
from activeseg.sliding import gaussian_importance, sliding_window, window_starts
from activeseg.uncertainty.estimators import Deterministic, MCDropout


def test_gaussian_importance_is_centred_symmetric_and_never_zero():
    w = gaussian_importance((9, 16))
    assert w.shape == (9, 16) and w.max() == pytest.approx(1.0)
    np.testing.assert_allclose(w, w[::-1, ::-1])
    assert w[4, 7] == w[4, 8] == w.max() and w.min() > 0
    sigma = 0.125 * 16  # σ = 1/8 of the side (nnU-Net)
    assert w[4, 0] / w[4, 7] == pytest.approx(np.exp(-0.5 * ((7.5 ** 2 - 0.5 ** 2) / sigma ** 2)), rel=1e-6)


def test_window_starts_cover_every_axis_with_the_last_window_flush():
    assert window_starts((10, 7), (4, 7), (3, 3)) == [(0, 0), (3, 0), (6, 0)]
    with pytest.raises(ValueError, match="one entry per spatial axis"):
        window_starts((10, 7), (4,), (3, 3))


@pytest.mark.parametrize("shape, window, stride", [((1, 13, 17), (8, 8), (5, 3)),
                                                   ((2, 9, 10, 11), (4, 6, 5), (3, 2, 5)),
                                                   ((1, 5, 30), (8, 8), (4, 4))])
def test_blending_a_pointwise_function_gives_it_back_exactly(shape, window, stride):
    vol = np.random.default_rng(0).random(shape).astype(np.float32)
    calls = []

    def predict(windows):
        calls.append(len(windows))
        return 2 * windows + 1, windows.sum(1)

    doubled, summed = sliding_window(vol, window, stride, predict, batch=3)
    np.testing.assert_allclose(doubled, 2 * vol + 1, rtol=1e-6)  # the weights at every voxel sum to 1
    np.testing.assert_allclose(summed, vol.sum(0), rtol=1e-6)
    assert max(calls) <= 3  # at most `batch` windows per call: memory bounded
    with pytest.raises(ValueError, match="stride"):
        sliding_window(vol, window, (0,) * len(window), predict)


def test_sliding_prediction_agrees_with_the_whole_volume_for_a_model_that_fits():
    torch.manual_seed(0)
    net = UNet(1, 3, depth=2, base_filters=4, spatial_dims=3).eval()
    vol = np.random.default_rng(1).random((1, 16, 24, 24)).astype(np.float32)
    whole = next(Deterministic(batch_size=1).batches(net, vol[None]))[0, 0].numpy()  # [C, D, H, W]
    mean, umap = sliding_maps(net, vol, "max_entropy", Deterministic(batch_size=2), (16, 16, 16), (8, 8, 8))
    assert mean.shape == whole.shape and umap.shape == vol.shape[1:]
    np.testing.assert_allclose(mean.sum(0), 1.0, rtol=1e-5)  # a blend of distributions is one
    assert np.abs(mean - whole).mean() < 0.02  # window borders differ a little; the Gaussian damps them
    assert (mean.argmax(0) == whole.argmax(0)).mean() > 0.95


def test_mc_dropout_maps_of_a_volume_are_accumulated_per_window():
    torch.manual_seed(0)
    net = UNet(1, 2, depth=1, base_filters=4, spatial_dims=3, dropout=0.3)
    vol = np.random.default_rng(2).random((1, 8, 12, 20)).astype(np.float32)
    mean, umap = sliding_maps(net, vol, "bald", MCDropout(k=4, batch_size=2, seed=0), (8, 8, 8), (4, 4, 6), batch=2)
    again = sliding_maps(net, vol, "bald", MCDropout(k=4, batch_size=2, seed=0), (8, 8, 8), (4, 4, 6), batch=2)
    np.testing.assert_array_equal(umap, again[1])  # seeded masks: repeatable
    assert mean.shape == (2, 8, 12, 20) and umap.shape == (8, 12, 20) and (umap >= 0).all() and umap.max() > 0


def test_volume_heatmaps_are_three_orthogonal_slices_through_the_most_uncertain_voxel(tmp_path):
    from PIL import Image

    from activeseg.report.heatmaps import save_item_overlay

    vol = np.random.default_rng(3).random((1, 6, 8, 10)).astype(np.float32)
    probs = np.stack([1 - vol[0], vol[0]])
    unc = np.zeros((6, 8, 10))
    unc[2, 5, 7] = 1.0
    first = save_item_overlay(tmp_path / "item.png", vol, probs, unc, title="a volume")
    written = sorted(p.name for p in tmp_path.glob("*.png"))
    assert written == ["item_axial.png", "item_coronal.png", "item_sagittal.png"] and first.name == "item_axial.png"
    assert all(Image.open(tmp_path / name).size[0] > 100 for name in written)
