"""The engine: one round from typed settings, no I/O, randomness only from the seeds passed in."""

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from activeseg.acquisition import batch
from activeseg.config import SimConfig
from activeseg.data.dataset import ImageDataset, pad_to_multiple
from activeseg.descriptors import deterministic_outputs
from activeseg.engine import Engine, make_strategy, round_seed

CFG = SimConfig(steps=6, batch_size=4, eval_every=3, mc_samples=3, members=2, depth=2, base_filters=4,
                patch_size=32, heatmaps=0, device="cpu")


@pytest.fixture(scope="module")
def squares() -> ImageDataset:
    """Bright squares on noise, 32×32: enough for a model to learn something in a few steps."""
    rng = np.random.default_rng(0)
    n = 16
    images = rng.normal(0.2, 0.05, (n, 1, 32, 32)).astype(np.float32)
    targets = np.zeros((n, 32, 32), np.uint8)
    for i in range(n):
        r, c = rng.integers(0, 20, 2)
        images[i, 0, r : r + 10, c : c + 10] += 0.6
        targets[i, r : r + 10, c : c + 10] = 1
    return ImageDataset(images, targets, [f"sq_r{i}_c0" for i in range(n)], np.arange(n))


@pytest.fixture(scope="module")
def trained(squares):
    engine = Engine(CFG)
    model, _ = engine.fit(squares, np.arange(8), np.arange(8, 10), seed=3)
    return engine, model


def test_settings_are_checked_before_any_training():
    with pytest.raises(ValueError, match="unknown strategy 'nope'"):
        Engine(CFG.replace(strategy="nope"))
    with pytest.raises(ValueError, match=r"unknown uncertainty method \(--estimator\) 'bagging'"):
        Engine(CFG.replace(estimator="bagging"))
    with pytest.raises(ValueError, match="precision 'half'"):
        Engine(CFG.replace(score_precision="half"))
    with pytest.raises(ValueError, match="--test-mc-samples is for MC dropout"):
        Engine(CFG.replace(estimator="ensemble", test_mc_samples=4))


def test_make_strategy_passes_changed_flat_keys_and_the_strategy_table():
    assert make_strategy(CFG.replace(strategy="density_weighted", beta=2.0)).beta == 2.0
    assert make_strategy(CFG.replace(strategy="density_weighted")).beta == 1.0
    assert make_strategy(CFG.replace(strategy="random", reduction="sum")).name == "random"  # ignored for random
    assert make_strategy(CFG.replace(strategy="bald", strategy_options={"q": 0.3, "reduction": "topq_mean"})).q == 0.3
    assert make_strategy(CFG.replace(strategy="entropy_mi", mi_bins=8)).bins == 8
    with pytest.raises(ValueError, match=r"strategy 'coreset' has no setting 'beta'; valid settings: base$"):
        make_strategy(CFG.replace(strategy="coreset", beta=3.0))
    with pytest.raises(ValueError, match=r"strategy 'bald' has no setting 'pixels'"):
        make_strategy(CFG.replace(strategy_options={"pixels": 4}))


def test_fit_is_repeatable_leaves_the_global_rng_alone_and_is_thread_safe(squares):
    engine = Engine(CFG.replace(estimator="ensemble"))
    before = torch.random.get_rng_state()
    serial = [engine.fit(squares, np.arange(8), np.arange(8, 10), seed=s)[0].state_dict() for s in (1, 2)]
    assert torch.equal(before, torch.random.get_rng_state())
    with ThreadPoolExecutor(2) as pool:  # two rounds at once, as a server's threads would run them
        threaded = list(pool.map(lambda s: engine.fit(squares, np.arange(8), np.arange(8, 10), seed=s)[0]
                                 .state_dict(), (1, 2)))
    for a, b in zip(serial, threaded, strict=True):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(serial[0]["members.0.head.weight"], serial[1]["members.0.head.weight"])


@pytest.mark.parametrize("name", ["bald", "random", "coreset", "density_weighted", "badge", "batchbald",
                                  "entropy_mi", "max_cover", "power_bald"])
def test_propose_picks_k_distinct_candidates_repeatably(squares, trained, name):
    _, model = trained
    engine = Engine(CFG.replace(strategy=name, strategy_options={"bins": 8} if name == "entropy_mi" else {}))
    cands, labelled = squares.images[8:], squares.images[:8]
    before = torch.random.get_rng_state()
    sel = engine.propose(model, cands, labelled, 3, seed=round_seed(0, 1))
    assert torch.equal(before, torch.random.get_rng_state())
    assert len(sel.indices) == 3 == len(set(sel.indices.tolist())) and sel.scores.shape == (8,)
    again = engine.propose(model, cands, labelled, 3, seed=round_seed(0, 1))
    np.testing.assert_array_equal(sel.indices, again.indices)
    np.testing.assert_array_equal(sel.scores, again.scores)


def test_propose_gives_a_batch_selector_what_it_declares(squares, trained):
    """coreset through the engine = k-center greedy on the model's descriptors, computed here by hand."""
    _, model = trained
    engine = Engine(CFG.replace(strategy="coreset"))
    cands, labelled = squares.images[8:], squares.images[:8]
    sel = engine.propose(model, cands, labelled, 4, seed=5)
    desc = deterministic_outputs(model, cands, ("descriptors",))["descriptors"]
    known = deterministic_outputs(model, labelled, ("descriptors",))["descriptors"]
    np.testing.assert_array_equal(sel.indices, batch.k_center_greedy(desc, 4, labeled_M_D=known))
    assert not sel.scores.any()  # coreset needs no uncertainty scores: no MC passes were made


def test_whole_images_of_any_size_are_padded_and_cropped(squares, trained):
    engine, model = trained
    big = np.pad(squares.images[8, 0], ((0, 6), (0, 3)), mode="reflect")[None]  # 38×35: not a multiple of 4
    images = [big, squares.images[9]]
    sel = engine.propose(model, images, squares.images[:8], 2, seed=7, measures=("bald", "max_entropy"))
    probs = next(engine.estimator(7).batches(model, pad_to_multiple(big, 4)[None]))[..., :38, :35]
    assert sel.scores[0] == pytest.approx(float(engine.strategy.score(probs)[0]), rel=1e-6)
    assert set(sel.measures) == {"bald", "max_entropy"} and all(len(v) == 2 for v in sel.measures.values())
    probs, maps = engine.maps(model, images, seed=7)
    assert probs[0].shape == (2, 38, 35) and maps[0].shape == (38, 35) and maps[1].shape == (32, 32)
    with pytest.raises(ValueError, match="needs them all of one size"):
        Engine(CFG.replace(strategy="entropy_mi")).propose(model, images, squares.images[:8], 1, seed=0)


def test_propose_regions_takes_the_geometry_from_the_config_and_scores_images_of_any_size(squares, trained):
    _, model = trained
    engine = Engine(CFG.replace(strategy="cereals", region_size=16, region_stride=8))
    assert (engine.strategy.size, engine.strategy.stride) == (16, 8)
    table = Engine(CFG.replace(strategy="cereals", region_size=16, strategy_options={"size": 8})).strategy
    assert table.size == 8  # the [strategy] table wins over the flat key
    images = [squares.images[8], np.pad(squares.images[9, 0], ((0, 6), (0, 3)), mode="reflect")[None]]
    done = [np.zeros((32, 32), bool), np.zeros((38, 35), bool)]
    done[0][:16, :16] = True
    sel = engine.propose_regions(model, images, done, 4, seed=7)
    again = engine.propose_regions(model, images, done, 4, seed=7)
    assert sel.pick.regions == again.pick.regions and len(sel.pick.regions) == 4 and sel.cost_source == "proxy"
    assert all(not done[r.item][r.slices()].any() for r in sel.pick.regions)
    samples = (np.random.default_rng(0).random((12, 5)), np.arange(12.0))
    fitted = engine.propose_regions(model, images, done, 4, seed=7, cost_samples=samples)
    assert fitted.cost_source == "ridge on 12 labelled regions"
    with pytest.raises(ValueError, match="picks regions of images"):
        engine.propose(model, squares.images[8:], squares.images[:8], 2, seed=7)
    with pytest.raises(ValueError, match="picks whole items"):
        Engine(CFG).propose_regions(model, images, done, 2, seed=7)


class Threshold(torch.nn.Module):
    """Foreground where the image is brighter than 0.5: a model whose predictions are known."""

    def forward(self, x):
        return torch.cat([0.5 - x, x - 0.5], 1) * 20


def test_volume_evaluation_scores_each_sources_items_together(squares, monkeypatch):
    import activeseg.train as train_mod
    from activeseg.metrics import pooled_metrics

    idx = np.arange(8, 16)
    images = squares.images.copy()
    images[idx[::2], 0, :4] = 0.9  # false foreground in half the items: the pooled and per-item Dice differ
    two = ImageDataset(images, squares.targets, [f"{'a' if i < 12 else 'b'}_{i}" for i in range(16)], np.arange(16))
    model = Threshold()
    volume = Engine(CFG.replace(eval_over="volume"))
    per_item, summary = volume.evaluate(model, two, idx, seed=0)
    items_per_item, items = Engine(CFG).evaluate(model, two, idx, seed=0)
    np.testing.assert_array_equal(per_item["dice"], items_per_item["dice"])  # per item: the same either way
    pred, target = (images[idx, 0] > 0.5).astype(int), squares.targets[idx]
    own = {s: pooled_metrics(pred[sel], target[sel], 2)[0] for s, sel in (("a", slice(0, 4)), ("b", slice(4, 8)))}
    assert summary["dice@a"] == pytest.approx(own["a"]["dice"]) and summary["miou@b"] == pytest.approx(own["b"]["miou"])
    assert summary["dice"] == pytest.approx((own["a"]["dice"] + own["b"]["dice"]) / 2)
    assert items["dice"] == pytest.approx((per_item["dice"][:4].mean() + per_item["dice"][4:].mean()) / 2)
    assert abs(summary["dice"] - items["dice"]) > 0.01
    one = volume.evaluate(model, squares, idx, seed=0)[1]  # one source: all the items as one region
    assert one["dice"] == pytest.approx(pooled_metrics(squares.images[idx, 0] > 0.5, target, 2)[0]["dice"])
    # training validates the same way
    seen = []
    evaluate = train_mod.evaluate
    monkeypatch.setattr(train_mod, "evaluate", lambda *a, **k: seen.append(k["over"]) or evaluate(*a, **k))
    volume.fit(squares, np.arange(8), idx, seed=3)
    assert seen and set(seen) == {"volume"}
    with pytest.raises(ValueError, match="eval_over 'tiles' is not one of items, volume"):
        Engine(CFG.replace(eval_over="tiles")).evaluate(model, squares, idx, seed=0)
