"""VAAL: networks that fit any input size, a query that is the argmin of D, and a run through the loop."""

import numpy as np
import pytest
import torch

from activeseg.acquisition import get_strategy
from activeseg.acquisition.vaal import discriminate
from activeseg.config import SimConfig
from activeseg.loop import run_simulation
from activeseg.models.vaal import VAE, Discriminator


@pytest.mark.parametrize("channels, size", [(1, (28, 28)), (3, (32, 32)), (1, (37, 50)), (1, (4, 4))])
def test_the_vae_adapts_to_the_input_size_and_channels(channels, size):
    vae = VAE(channels, size, latent=32, width=8)
    x = torch.randn(3, channels, *size)
    recon, mu, logvar = vae(x, torch.Generator().manual_seed(0))
    assert recon.shape == x.shape and mu.shape == logvar.shape == (3, 32)
    assert vae.bottom[1] <= 4 and vae.bottom[2] <= 4  # halved until the side is at most 4
    assert Discriminator(32)(mu).shape == (3,)


def _blobs(n, bright, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 0.1, (n, 1, 16, 16)).astype(np.float32)
    x[:, :, 4:12, 4:12] += np.where(np.asarray(bright)[:, None, None, None], 1.0, -1.0)
    return x


def test_the_query_is_the_argmin_of_d_and_finds_what_the_labelled_set_lacks():
    labelled = _blobs(16, [True] * 16, 0)  # the labelled set: bright squares only
    kinds = np.arange(20) % 2 == 0  # candidates: half bright, half dark
    candidates = _blobs(20, kinds, 1)
    vaal = get_strategy("vaal", steps=150, batch_size=16, width=8)
    before = torch.random.get_rng_state()
    picks = vaal.select(np.zeros(20), 5, np.random.default_rng(3), {"images": candidates, "train_images": labelled})
    assert torch.equal(before, torch.random.get_rng_state())
    seed = int(np.random.default_rng(3).integers(2**31))
    d = discriminate(labelled, candidates, seed, steps=150, batch_size=16, width=8)
    np.testing.assert_array_equal(picks, np.argsort(d, kind="stable")[:5])  # the lowest D(μ), lowest first
    assert d[~kinds].mean() < d[kinds].mean()  # dark squares look unlabelled
    assert not kinds[picks].any()  # so they are asked for
    with pytest.raises(ValueError, match="needs \\['train_images'\\]"):
        vaal.select(np.zeros(20), 5, np.random.default_rng(3), {"images": candidates})
    with pytest.raises(ValueError, match="labelled and unlabelled images"):
        discriminate(labelled[:0], candidates, 0, steps=1)


def test_vaal_runs_in_the_loop_without_mc_passes(nuclei64, tmp_path):
    cfg = SimConfig(strategy="vaal", strategy_options={"steps": 4, "batch_size": 4, "width": 4}, depth=2,
                    base_filters=4, steps=6, batch_size=4, initial=4, query=3, rounds=2, max_pool=12, mc_samples=3,
                    heatmaps=0, device="cpu")
    records = run_simulation(cfg, nuclei64, tmp_path, progress=False)
    assert [r["n_annotations"] for r in records] == [4, 7]
    assert len({s["dataset_idx"] for s in records[0]["selected"]}) == 3
    assert all(s["score"] == 0.0 for s in records[0]["selected"])  # no uncertainty score was computed
