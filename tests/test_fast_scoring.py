"""Fast, streaming pool scoring: fused maps, precision and layout options, the file loader."""

import numpy as np
import pytest
import torch
from PIL import Image

from activeseg.acquisition import HEURISTICS, get_strategy
from activeseg.acquisition.heuristics import fused_maps
from activeseg.data.dataset import normalize_percentile, tile
from activeseg.data.folder import DatasetError
from activeseg.data.loader import TilePool, iter_batches, pool_loader
from activeseg.models import UNet
from activeseg.scoring import score_and_summarize, score_pool
from activeseg.uncertainty import MCDropout
from activeseg.uncertainty.dropout import FastDropout as _Dropout
from activeseg.uncertainty.dropout import keep_mask
from activeseg.uncertainty.estimators import resolve_precision


def _unet():
    torch.manual_seed(0)
    model = UNet(depth=2, base_filters=4, dropout=0.3)
    model.train()
    with torch.no_grad():  # non-trivial batch-norm statistics
        for _ in range(3):
            model(torch.rand(4, 1, 32, 32) * 2)
    return model.eval()


def _probs(shape, seed=0):
    x = torch.from_numpy(np.random.default_rng(seed).random(shape)) ** 4  # some confident, some not
    return (x / x.sum(2, keepdim=True)).numpy()


@pytest.mark.parametrize("shape", [(5, 7, 3), (3, 6, 2, 4, 5)])
def test_fused_maps_equal_each_map_alone(shape):
    probs = _probs(shape)
    probs[0, :, :] = probs[0, :1]  # an item where all K samples agree
    maps = fused_maps(probs, tuple(HEURISTICS))
    assert list(maps) == list(HEURISTICS)
    for name, fn in HEURISTICS.items():
        np.testing.assert_allclose(maps[name], fn(probs), rtol=1e-9, atol=1e-12, err_msg=name)
    # torch in, torch out, and only the maps asked for
    t = fused_maps(torch.from_numpy(probs).float(), ("bald", "std"))
    assert set(t) == {"bald", "std"} and isinstance(t["bald"], torch.Tensor)
    torch.testing.assert_close(t["std"], HEURISTICS["std"](torch.from_numpy(probs).float()))


def test_fused_maps_reject_unknown_names():
    with pytest.raises(ValueError, match="unknown map"):
        fused_maps(_probs((2, 3, 2)), ("bald", "entropy"))


def test_streaming_scores_equal_scoring_the_whole_pool_at_once():
    model, images = _unet(), np.random.default_rng(1).random((11, 1, 32, 32), dtype=np.float32)
    for consistent in (False, True):
        est = MCDropout(k=5, batch_size=3, seed=2, consistent=consistent)
        all_probs = torch.cat(list(est.batches(model, images)))  # the non-streaming way: [N, K, C, H, W]
        for name in ("bald", "max_entropy", "std_edt"):
            strategy = get_strategy(name)
            streamed = score_pool(model, images, strategy, estimator=est, device="cpu")
            np.testing.assert_allclose(streamed, strategy.score(all_probs), rtol=1e-6, atol=1e-9)


def test_channels_last_changes_only_the_layout():
    model, images = _unet(), torch.rand(6, 1, 32, 32)
    nhwc = torch.cat(list(MCDropout(k=4, seed=3, consistent=True).batches(model, images)))
    nchw = torch.cat(list(MCDropout(k=4, seed=3, consistent=True, channels_last=False).batches(model, images)))
    torch.testing.assert_close(nhwc, nchw, rtol=1e-5, atol=1e-6)
    assert all(p.is_contiguous() for p in model.parameters())  # the model's own layout is restored


def test_bfloat16_scoring_stays_close_to_float32_on_the_same_masks():
    model, images = _unet(), torch.rand(8, 1, 32, 32)
    est = dict(k=6, seed=4, consistent=True)
    low = torch.cat(list(MCDropout(precision="bfloat16", **est).batches(model, images)))
    ref = torch.cat(list(MCDropout(precision="float32", **est).batches(model, images)))
    assert low.dtype == torch.float32
    assert (low - ref).abs().max() < 0.05
    torch.testing.assert_close(low.sum(2), torch.ones_like(low.sum(2)))


@pytest.mark.parametrize("p", [0.1, 0.2, 0.5, 0.9])
def test_keep_mask_is_bernoulli_in_the_input_layout(p):
    torch.manual_seed(0)
    x = torch.randn(64, 16, 32, 32).contiguous(memory_format=torch.channels_last)
    keep, scale = keep_mask(x, p)
    assert keep.dtype == torch.bool and keep.shape == x.shape and keep.stride() == x.stride()
    n = keep.numel()
    dropped = 1 - keep.float().mean().item()
    assert abs(dropped - p) < 5 * (p * (1 - p) / n) ** 0.5  # within 5 standard errors of p
    assert scale == pytest.approx(1 / (1 - p), rel=1e-4)
    # the four 16-bit slices of each 64-bit draw are independent: neighbours in memory are uncorrelated
    flat = keep.permute(0, 2, 3, 1).reshape(-1, 4).float()
    corr = np.corrcoef(flat.T.numpy())
    assert np.abs(corr[np.triu_indices(4, 1)]).max() < 0.01
    # odd sizes and non-dense inputs; a seed repeats the draw
    torch.manual_seed(1)
    a, _ = keep_mask(torch.zeros(13, 7)[:, ::2], p)
    torch.manual_seed(1)
    b, _ = keep_mask(torch.zeros(13, 4), p)
    assert a.shape == (13, 4) and torch.equal(a, b)


def test_masked_activations_stay_unbiased():
    torch.manual_seed(0)
    layer = _Dropout(0.3).train()
    x = torch.full((200_000,), 2.0)
    assert layer(x).mean().item() == pytest.approx(2.0, rel=0.01)
    assert layer.eval()(x) is x


def test_precision_names():
    assert resolve_precision("float32", "cpu") == torch.float32
    assert resolve_precision("bfloat16", "cpu") == torch.bfloat16
    assert resolve_precision("auto", "cpu") in (torch.bfloat16, torch.float32)
    assert resolve_precision("auto", "cuda") == torch.float16
    with pytest.raises(ValueError, match="precision 'half'"):
        resolve_precision("half", "cpu")
    with pytest.raises(ValueError, match="consistent masks"):
        next(MCDropout(compile=True, consistent=True).batches(_unet(), torch.rand(1, 1, 32, 32)))


def _write_pool(folder, sizes, rgb=False):
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate(sizes):
        if rgb:
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / f"im{i}.png")
        else:
            import tifffile

            tifffile.imwrite(folder / f"im{i}.tif", rng.integers(0, 2**16, (h, w), dtype=np.uint16))
    return folder


def test_tile_pool_cuts_like_the_training_tiler(tmp_path):
    import tifffile

    folder = _write_pool(tmp_path / "pool", [(70, 100), (20, 40), (64, 64)])
    pool = TilePool(folder, patch_size=32)
    expected = []
    for path in sorted(folder.iterdir()):
        img = normalize_percentile(tifffile.imread(path))
        expected += [t for _, t in tile(img, 32)]
    assert len(pool) == len(expected) == 6 + 1 + 4  # 20×40 is padded to one 32×32 tile
    for j, t in enumerate(expected):
        np.testing.assert_array_equal(pool[j].numpy(), t[None])
    assert pool.index[:3] == [(0, 0, 0), (0, 0, 1), (0, 0, 2)]


def test_scoring_from_files_through_workers_equals_scoring_the_array(tmp_path):
    folder = _write_pool(tmp_path / "pool", [(64, 96)] * 3)
    pool = TilePool(folder, patch_size=32)
    array = np.stack([pool[j].numpy() for j in range(len(pool))])
    model, est = _unet(), MCDropout(k=4, batch_size=5, seed=1, consistent=True)
    strategy = get_strategy("max_entropy")
    ref = score_pool(model, array, strategy, estimator=est, device="cpu")
    assert len(ref) == 18 and ref.std() > 0
    for workers in (0, 2):
        got = score_pool(model, pool_loader(pool, batch_size=5, workers=workers), strategy, estimator=est,
                         device="cpu")
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-7)
    scores, _, _ = score_and_summarize(model, pool_loader(pool, batch_size=4, workers=0), strategy, est)
    np.testing.assert_allclose(scores, ref, rtol=1e-5, atol=1e-7)


def test_tile_pool_errors(tmp_path):
    with pytest.raises(DatasetError, match="no images"):
        TilePool([], patch_size=32)
    mixed = _write_pool(tmp_path / "sizes", [(32, 32), (40, 32)])
    with pytest.raises(DatasetError, match="one image size"):
        TilePool(mixed)
    assert len(TilePool(mixed, patch_size=16)) == 4 + 4
    gray = _write_pool(tmp_path / "gray", [(32, 32)])
    _write_pool(tmp_path / "rgb", [(32, 32)], rgb=True)
    (tmp_path / "rgb" / "im0.png").rename(gray / "rgb.png")
    with pytest.raises(DatasetError, match="mixes grayscale and RGB"):
        TilePool(gray, patch_size=16)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(DatasetError, match="bad.png: cannot be read"):
        TilePool([bad])
    with pytest.raises(ValueError, match="workers=-1"):
        pool_loader(TilePool(mixed, patch_size=16), workers=-1)


def test_the_pool_loader_pins_batches_only_where_cuda_is(tmp_path, monkeypatch):
    pool = TilePool(_write_pool(tmp_path / "p", [(32, 32)]), patch_size=16)
    assert pool_loader(pool, workers=0).pin_memory == torch.cuda.is_available()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pool_loader(pool, workers=0).pin_memory and not pool_loader(pool, workers=0, pin_memory=False).pin_memory


def test_iter_batches_slices_arrays_and_passes_loaders_through():
    arr = np.arange(10)
    assert [b.tolist() for b in iter_batches(arr, 4)] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    batches = [torch.zeros(2), torch.ones(3)]
    assert list(iter_batches(iter(batches), 4)) == batches
