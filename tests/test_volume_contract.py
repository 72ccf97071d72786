"""Every registered strategy on 3-D patches through the engine: it picks, or says clearly why volumes are not
its kind of input."""

import numpy as np
import pytest

from activeseg.acquisition import STRATEGIES, get_strategy
from activeseg.config import SimConfig
from activeseg.data.dataset import ImageDataset
from activeseg.engine import Engine

NOT_3D = {"vaal": "3-D volumes are not supported by vaal"}


@pytest.fixture(scope="module")
def volumes():
    rng = np.random.default_rng(0)
    images = rng.random((12, 1, 8, 8, 8)).astype(np.float32)
    return ImageDataset(images, (images[:, 0] > 0.6).astype(np.uint8), [f"v_{i}" for i in range(12)], np.arange(12))


def test_every_strategy_is_accounted_for():
    assert set(NOT_3D) <= set(STRATEGIES)


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_every_strategy_picks_3d_patches_or_refuses_clearly(volumes, name, one_torch_thread):
    options = {"steps": 2, "width": 4} if name == "vaal" else {}
    engine = Engine(SimConfig(strategy=name, strategy_options=options, depth=1, base_filters=2, steps=2,
                              batch_size=2, mc_samples=2, device="cpu", region_size=4))
    model, _ = engine.fit(volumes, np.arange(4), np.arange(4, 6), seed=1)
    cands, labelled = volumes.images[6:], volumes.images[:4]
    region = getattr(get_strategy(name), "unit", "image") == "region"
    if name in NOT_3D:
        with pytest.raises(ValueError, match=NOT_3D[name]):
            if region:
                engine.propose_regions(model, cands, None, 2, seed=3)
            else:
                engine.propose(model, cands, labelled, 2, seed=3)
        return
    if region:  # cubes of 4³ inside the 8³ volumes, disjoint, never one already labelled
        done = [np.zeros((8, 8, 8), bool) for _ in cands]
        done[0][:4, :4, :4] = True
        picks = engine.propose_regions(model, cands, done, 3, seed=3).pick.regions
        again = engine.propose_regions(model, cands, done, 3, seed=3).pick.regions
        assert len(picks) == 3 and picks == again and all(r.sides == (4, 4, 4) for r in picks)
        assert not any(done[r.item][r.slices()].any() for r in picks)
        assert all(a.iou(b) == 0 for a in picks for b in picks if a != b)
        return
    sel = engine.propose(model, cands, labelled, 2, seed=3)
    again = engine.propose(model, cands, labelled, 2, seed=3)
    assert len(set(sel.indices.tolist())) == 2 and sel.indices.tolist() == again.indices.tolist()
