"""The batch and diversity strategies inside the loop, on real nuclei patches and real MNIST digits."""

import numpy as np
import pytest
import torch

from activeseg.config import SimConfig
from activeseg.descriptors import deterministic_outputs
from activeseg.loop import run_simulation
from activeseg.models import build_model

BATCH = ["max_cover", "coreset", "density_weighted", "batchbald", "badge", "power_bald", "entropy_mi"]
SEG = dict(depth=2, base_filters=4, steps=6, batch_size=4, eval_every=3, initial=4, query=3, rounds=2, max_pool=20,
           mc_samples=3, patch_size=32, heatmaps=0, device="cpu", reference=False)
CLS = dict(dataset="mnist", initial=20, balanced_initial=True, val_size=30, query=5, rounds=2, steps=20, batch_size=32,
           eval_every=10, mc_samples=4, score_subset=60, augment=False, heatmaps=0, device="cpu", save_per_item=False)


@pytest.fixture(scope="module")
def small_mnist(mnist):
    return mnist.subset(np.concatenate([np.arange(300), mnist.official_test[:100]]))


@pytest.mark.parametrize("name", BATCH)
def test_batch_strategy_runs_segmentation(nuclei32, tmp_path, name):
    records = run_simulation(SimConfig(strategy=name, **SEG), nuclei32, tmp_path, progress=False)
    picked = [s["dataset_idx"] for s in records[0]["selected"]]
    assert len(set(picked)) == 3 and records[1]["n_annotations"] == 7
    if name in ("batchbald", "badge"):  # the samplers: the same seed gives the same picks
        again = run_simulation(SimConfig(strategy=name, **SEG), nuclei32, tmp_path / "b", progress=False)
        assert again[0]["selected"] == records[0]["selected"]


@pytest.mark.parametrize("name", BATCH)
def test_batch_strategy_runs_classification(small_mnist, tmp_path, name):
    records = run_simulation(SimConfig(strategy=name, **CLS), small_mnist, tmp_path, progress=False)
    picked = [s["dataset_idx"] for s in records[0]["selected"]]
    assert len(set(picked)) == 5 and records[1]["n_annotations"] == 25


def test_config_settings_reach_the_strategy(nuclei32, tmp_path):
    cfg = SimConfig(strategy="bald", sampling="rank", temperature=0.5, **SEG)
    assert run_simulation(cfg, nuclei32, tmp_path, progress=False)[0]["selected"]
    with pytest.raises(ValueError, match="strategy 'coreset' has no setting 'sampling'"):
        run_simulation(cfg.replace(strategy="coreset"), nuclei32, tmp_path / "bad", progress=False)


def test_descriptors_are_the_spatial_mean_of_the_deepest_features():
    torch.manual_seed(0)
    unet = build_model("unet", in_channels=1, num_classes=2, depth=2, base_filters=4)
    x = np.random.default_rng(0).random((3, 1, 16, 16), dtype=np.float32)
    out = deterministic_outputs(unet, x, ("descriptors", "embedding"), batch_size=2)
    unet.eval()
    with torch.no_grad():
        h = torch.from_numpy(x)
        for block, pool in zip(unet.down, [unet.pool] * 2, strict=True):
            h = pool(block(h))
        deep = unet.bottom(h)
    np.testing.assert_allclose(out["descriptors"], deep.mean((2, 3)).numpy(), rtol=1e-5, atol=1e-6)
    assert out["embedding"].shape == (3, 2 * 4)  # C × F: the mean over pixels of (p - onehot) ⊗ h
    with pytest.raises(ValueError, match="has no descriptor_layer"):
        deterministic_outputs(torch.nn.Sequential(torch.nn.Flatten()), x, ("descriptors",))
