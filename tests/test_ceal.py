"""CEAL: the oracle's query mix, the decaying threshold, pseudo-labels that train one round and never count."""

import numpy as np
import pytest
from run_util import initial_idx, without_timing

from activeseg.acquisition import get_strategy
from activeseg.config import SimConfig
from activeseg.engine import Engine
from activeseg.loop import run_simulation

TINY = dict(depth=2, base_filters=4, steps=6, batch_size=4, eval_every=3, initial=4, query=3, rounds=3,
            max_pool=24, mc_samples=3, score_batch_size=16, heatmaps=0, device="cpu")


def test_threshold_decays_linearly_per_round_and_stops_at_zero():
    ceal = get_strategy("ceal")
    assert (ceal.delta0, ceal.decay) == (0.005, 0.00033)  # Wang et al.'s defaults
    assert ceal.pseudo_threshold(1) == 0.005 and ceal.pseudo_threshold(3) == pytest.approx(0.005 - 2 * 0.00033)
    assert ceal.pseudo_threshold(100) == 0.0
    with pytest.raises(ValueError, match="fractions of the query"):
        get_strategy("ceal", missed=0.6, random=0.6)
    with pytest.raises(ValueError, match="uncertainty strategy"):
        get_strategy("ceal", base="coreset")


def test_the_oracle_gets_the_most_uncertain_then_the_missed_then_random_ones():
    scores = np.array([0.9, 0.1, 0.8, 0.2, 0.3, 0.7, 0.0, 0.05])
    area = np.array([0.5, 0.4, 0.5, 0.0, 0.5, 0.5, 0.01, 0.5])  # predicted foreground per candidate
    probs = np.stack([1 - area, area], axis=1)[:, None, :].repeat(2, axis=1)  # [N, K, C] class areas
    plain = get_strategy("ceal")
    assert plain.needs == () and plain.select(scores, 3, np.random.default_rng(0)).tolist() == [0, 2, 5]
    mixed = get_strategy("ceal", missed=0.25, random=0.25)
    picks = mixed.select(scores, 4, np.random.default_rng(0), {"probs": probs})
    assert picks[:2].tolist() == [0, 2] and picks[2] == 3  # 2 uncertain, then the emptiest prediction
    assert picks[3] not in (0, 2, 3) and len(set(picks.tolist())) == 4
    again = mixed.select(scores, 4, np.random.default_rng(0), {"probs": probs})
    assert again.tolist() == picks.tolist()
    with pytest.raises(ValueError, match="needs \\['probs'\\]"):
        mixed.select(scores, 4, np.random.default_rng(0))


def test_pseudo_labels_are_the_confident_argmax(nuclei64):
    engine = Engine(SimConfig(strategy="ceal", **TINY))
    model, _ = engine.fit(nuclei64, np.arange(4), np.arange(4, 6), seed=1)
    images = nuclei64.images[10:14]
    probs = next(engine.estimator(5).batches(model, images))
    mean = probs.mean(1).numpy()
    entropy = -(mean * np.log(np.clip(mean, 1e-12, 1))).sum(1)
    threshold = float(np.quantile(entropy, 0.5))  # a barely trained model: half its pixels count as confident
    labels = np.stack(engine.pseudo_labels(model, images, seed=5, threshold=threshold))
    confident = entropy < threshold
    assert 0 < confident.sum() < confident.size
    np.testing.assert_array_equal(labels[confident], mean.argmax(1)[confident])
    assert (labels[~confident] == 255).all()


def test_ceal_pseudo_labels_train_one_round_never_count_and_resume(nuclei64, tmp_path, monkeypatch):
    # thresholds above log 2 (binary nuclei): every pixel of a barely trained model counts as confident
    cfg = SimConfig(strategy="ceal", strategy_options={"delta0": 0.7, "decay": 0.005}, **TINY)
    sizes = []
    fit = Engine.fit

    def counting_fit(self, dataset, train_idx, *args, **kwargs):
        sizes.append(len(train_idx))
        return fit(self, dataset, train_idx, *args, **kwargs)

    monkeypatch.setattr(Engine, "fit", counting_fit)
    records = run_simulation(cfg, nuclei64, tmp_path / "full", progress=False)
    assert [r["n_annotations"] for r in records] == [4, 7, 10] and [r["train_size"] for r in records] == [4, 7, 10]
    assert records[1]["cost"] == records[0]["cost"] + sum(s["cost"] for s in records[0]["selected"])
    made = [r["pseudo"] for r in records[:2]]
    assert [m["threshold"] for m in made] == [0.7, 0.695] and "pseudo" not in records[2]  # the last round picks none
    assert all(m["items"] > 0 and 0 <= m["accuracy"] <= 1 for m in made)
    assert sizes == [4, 7 + made[0]["items"], 10 + made[1]["items"]]  # each round adds the previous one's
    with np.load(tmp_path / "full" / "pseudo" / "round_02.npz") as f:
        idx, labels = f["dataset_idx"], f["labels"]
    picked_or_known = {s["dataset_idx"] for s in records[0]["selected"]} | set(initial_idx(tmp_path / "full"))
    assert len(idx) == made[0]["items"] and not picked_or_known & set(idx.tolist())
    assert labels.shape == (len(idx), 64, 64) and ((labels != 255).sum() == made[0]["pixels"])
    run_simulation(cfg, nuclei64, tmp_path / "cut", progress=False, until_round=2)
    resumed = run_simulation(cfg, nuclei64, tmp_path / "cut", resume=True, progress=False)
    assert without_timing(resumed) == without_timing(records)
