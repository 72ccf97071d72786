"""Region queries end to end: partial labels in the pool, the cost model, region strategies in the loop."""

import json

import numpy as np
import pytest
import torch
from run_util import initial_idx, without_timing

from activeseg.acquisition import STRATEGIES, Strategy, get_strategy
from activeseg.acquisition.cost import COST_FEATURES, CostFit, cost_maps, fit_cost, predict_cost
from activeseg.acquisition.regions import Region, candidate_windows, click_cost
from activeseg.config import SimConfig
from activeseg.data import Pool
from activeseg.loop import run_simulation
from activeseg.losses import loss_fn
from activeseg.records import read_ledger

TINY = dict(depth=2, base_filters=4, steps=6, batch_size=4, eval_every=3, initial=4, query=3, rounds=3,
            max_pool=24, mc_samples=3, score_batch_size=16, heatmaps=0, device="cpu", region_size=32)


def test_pool_keeps_partial_labels_and_masks_the_rest():
    pool = Pool(np.array([10, 11, 12]))
    pool.label(np.array([0]), 1)
    assert pool.label_region(1, (slice(0, 2), slice(0, 2)), 2, (4, 4)) == 4
    assert pool.label_region(1, (slice(1, 3), slice(1, 3)), 3, (4, 4)) == 3  # overlaps one labelled pixel
    assert pool.labeled_round.tolist() == [1, 2, 0] and pool.train_count.tolist() == [1, 1, 0]
    assert pool.n_annotations == 1 + 2 and pool.labelled_pixels((4, 4)) == 16 + 7
    assert pool.labelled_mask(1, (4, 4)).sum() == 7 and pool.labelled_mask(0, (4, 4)).all()
    assert not pool.labelled_mask(2, (4, 4)).any()
    assert pool.region_candidates().tolist() == [1, 2]
    targets = np.arange(13 * 16).reshape(13, 4, 4) % 3
    masked = pool.training_targets(targets, 255)
    assert masked.shape == (2, 4, 4)
    assert np.array_equal(masked[0], targets[10])
    inside = pool.labelled_mask(1, (4, 4))
    assert np.array_equal(masked[1][inside], targets[11][inside]) and (masked[1][~inside] == 255).all()
    with pytest.raises(ValueError, match="labelled already"):
        pool.label_region(1, (slice(0, 2), slice(0, 2)), 4, (4, 4))
    with pytest.raises(ValueError, match="labelled whole already"):
        pool.label_region(0, (slice(0, 2), slice(0, 2)), 4, (4, 4))
    with pytest.raises(ValueError, match="partly labelled"):
        pool.label(np.array([1]), 4)
    pool.label_region(1, (slice(0, 4), slice(0, 4)), 4, (4, 4))  # the rest: complete now
    assert 1 not in pool.partial and pool.region_candidates().tolist() == [2]


def test_partial_label_loss_equals_the_full_loss_and_ignores_unlabelled_pixels():
    logits = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    targets = np.random.default_rng(0).integers(0, 3, (3, 8, 8))
    pool = Pool(np.array([0, 1]))
    pool.label_region(0, (slice(0, 8), slice(0, 8)), 1, (8, 8))  # every pixel: complete
    pool.label_region(1, (slice(0, 4), slice(0, 8)), 1, (8, 8))  # the top half
    masked = torch.from_numpy(pool.training_targets(targets, 255))
    full = torch.from_numpy(targets[:2])
    weights = torch.ones(3)
    assert torch.allclose(loss_fn("dice+wce", logits[:1], masked[:1], weights),
                          loss_fn("dice+wce", logits[:1], full[:1], weights))
    changed = targets.copy()
    changed[1, 4:] = (changed[1, 4:] + 1) % 3  # the unlabelled bottom half of item 1 differs
    again = torch.from_numpy(pool.training_targets(changed, 255))
    assert torch.equal(again, masked)
    assert not torch.allclose(loss_fn("dice+wce", logits, masked, weights),
                              loss_fn("dice+wce", logits, full, weights))


def test_cost_maps_count_outlines_and_components():
    probs = np.zeros((2, 10, 10))
    probs[0] = 1.0
    probs[:, 2:5, 2:5] = [[[0.0]], [[1.0]]]  # a 3 × 3 nucleus
    probs[:, 7:9, 6:9] = [[[0.0]], [[1.0]]]  # a 2 × 3 one
    maps = cost_maps(np.zeros((1, 10, 10)), probs, np.ones((10, 10)))
    assert maps.shape == (len(COST_FEATURES), 10, 10)
    assert maps[0].sum() == 8 + 6  # boundary pixels: all but the centre of the 3 × 3, all of the 2 × 3
    assert maps[1].sum() == 2 and maps[1][3, 3] == 1  # one count per component, at its centroid
    assert maps[2].sum() == 9 + 6 and maps[4].sum() == 100


def test_cost_model_learns_a_linear_cost_and_falls_back_to_the_proxy():
    rng = np.random.default_rng(0)
    x = rng.random((40, len(COST_FEATURES))) * 10
    y = 2.0 * x[:, 0] + 5.0 * x[:, 1] + 3.0
    assert fit_cost(x[:5], y[:5]).coef is None  # too few: the proxy
    assert fit_cost(x[:5], y[:5]).source == "proxy"
    proxy = predict_cost(CostFit(), x)
    assert np.allclose(proxy, x[:, 1] + x[:, 0] / 4)
    fit = fit_cost(x, y, ridge=1e-6)
    assert np.allclose(predict_cost(fit, x), y, atol=1e-3)
    with pytest.raises(ValueError, match="one cost per labelled region"):
        fit_cost(x, y[:3])


def test_cereals_prefers_the_cheaper_of_two_equally_informative_windows():
    maps = [np.ones((8, 24))]  # three 8 × 8 windows: the left two about equally uncertain ...
    maps[0][0, 0] = 1.001  # ... the left one by a hair
    maps[0][:, 16:] = 0.5  # the right one much less
    feats = np.zeros((len(COST_FEATURES), 8, 24))
    feats[1, 2, 2] = 5  # five predicted components on the left: expensive
    feats[1, 2, 12] = 1  # one in the middle: cheap; none on the right
    plain = get_strategy("entropy_regions", size=8, stride=8)
    cereals = get_strategy("cereals", size=8, stride=8)
    rng = np.random.default_rng(0)
    assert plain.pick(maps, 1, rng).regions == [Region(0, 0, 0, 8, 8)]
    pick = cereals.pick(maps, 1, rng, features=[feats])
    assert pick.regions == [Region(0, 0, 8, 8, 8)] and pick.predicted_cost.tolist() == [1.0]  # the proxy
    assert pick.scores[0] == pytest.approx((1 - 0.2) * pick.informativeness[0])
    with pytest.raises(ValueError, match="cost feature maps"):
        cereals.pick(maps, 1, rng)
    with pytest.raises(TypeError, match="picks regions"):
        cereals.select(np.zeros(3), 1, rng)
    with pytest.raises(ValueError, match="map strategy"):
        get_strategy("cereals", base="batchbald")


def test_random_regions_never_pick_labelled_pixels():
    done = [np.zeros((16, 16), bool), np.ones((16, 16), bool)]
    done[0][:8, :8] = True
    on_grid = get_strategy("random_regions", size=8, stride=8)
    pick = on_grid.pick([np.zeros((16, 16))] * 2, 10, np.random.default_rng(0), labelled=done)
    assert sorted((r.y, r.x) for r in pick.regions) == [(0, 8), (8, 0), (8, 8)]  # image 1 is done
    strategy = get_strategy("random_regions", size=8, stride=4)
    for seed in range(5):  # finer grid: off-grid picks may block a quarter, never overlap labels or each other
        pick = strategy.pick([np.zeros((16, 16))] * 2, 10, np.random.default_rng(seed), labelled=done)
        assert 2 <= len(pick.regions) <= 3
        assert all(r.item == 0 and not done[0][r.slices()].any() for r in pick.regions)
        assert all(a.iou(b) == 0 for a in pick.regions for b in pick.regions if a != b)
    windows, excluded = candidate_windows([(16, 16)] * 2, 8, 4, done, "exclude")
    _, zero = candidate_windows([(16, 16)] * 2, 8, 4, done, "zero")
    half = [w for w in range(len(windows)) if windows.region(w) == Region(0, 4, 4, 8, 8)]
    assert not excluded[half].any() and zero[half].all()  # a quarter labelled: barred only by "exclude"
    assert not zero[windows.item == 1].any() and not zero[(windows.item == 0) & (windows.y == 0) & (windows.x == 0)]


def test_cereals_in_the_loop_prices_regions_and_resumes_their_labels(nuclei64, tmp_path):
    cfg = SimConfig(strategy="cereals", **TINY)
    records = run_simulation(cfg, nuclei64, tmp_path / "full", progress=False)
    assert [r["n_annotations"] for r in records] == [4, 7, 10] and [r["n_regions"] for r in records] == [0, 3, 6]
    assert [r["train_size"] for r in records] == [4, 7, 10]  # 4 whole patches, then one item per new image
    initial = sum(click_cost(nuclei64.targets[d]) for d in initial_idx(tmp_path / "full"))
    assert records[0]["cost"] == initial and records[0]["labelled_pixels"] == 4 * 64 * 64
    boxes = {}
    for before, after in zip(records, records[1:], strict=False):
        assert after["cost"] == before["cost"] + sum(s["cost"] for s in before["selected"])
        assert after["labelled_pixels"] == before["labelled_pixels"] + sum(s["pixels"] for s in before["selected"])
        for s in before["selected"]:
            y, x, h, w = s["box"]
            assert (h, w) == (32, 32) and s["pixels"] == 32 * 32  # disjoint from everything labelled before
            assert s["cost"] == click_cost(nuclei64.targets[s["dataset_idx"]], Region(0, y, x, h, w))
            assert {"predicted_cost", "features", "cost_model", "informativeness"} <= set(s)
            mask = boxes.setdefault(s["dataset_idx"], np.zeros((64, 64), bool))
            assert not mask[y:y + h, x:x + w].any()
            mask[y:y + h, x:x + w] = True
    # stopped after round 2, resumed: the label masks are rebuilt from the ledger's boxes exactly
    run_simulation(cfg, nuclei64, tmp_path / "cut", progress=False, until_round=2)
    resumed = run_simulation(cfg, nuclei64, tmp_path / "cut", resume=True, progress=False)
    assert without_timing(resumed) == without_timing(records)
    assert without_timing(read_ledger(tmp_path / "cut" / "ledger.jsonl")) == without_timing(records)


def test_whole_image_runs_record_their_click_cost_and_regions_refuse_no_delete(nuclei64, tmp_path):
    records = run_simulation(SimConfig(strategy="random", **{**TINY, "rounds": 2}), nuclei64, tmp_path / "r",
                             progress=False)
    picked = records[0]["selected"]
    assert all(s["cost"] == click_cost(nuclei64.targets[s["dataset_idx"]]) for s in picked)
    assert records[1]["cost"] == records[0]["cost"] + sum(s["cost"] for s in picked)
    assert records[1]["labelled_pixels"] == 7 * 64 * 64 and records[1]["n_regions"] == 0
    with pytest.raises(ValueError, match="no --no-delete"):
        run_simulation(SimConfig(strategy="random_regions", no_delete=True, **TINY), nuclei64, tmp_path / "n",
                       progress=False)




REGION_NAMES = [n for n in sorted(STRATEGIES) if getattr(get_strategy(n), "unit", "image") == "region"]


@pytest.mark.parametrize("name", REGION_NAMES)
def test_every_region_strategy_keeps_the_region_contract(name):
    strategy = get_strategy(name, size=4, stride=2)
    assert isinstance(strategy, Strategy) and strategy.unit == "region"
    rng = np.random.default_rng(3)
    maps = [rng.random((8, 8)), rng.random((6, 10)), rng.random((3, 5))]  # sizes differ; one under the window
    done = [np.zeros(m.shape, bool) for m in maps]
    done[0][:4, :4] = True
    feats = [rng.random((len(COST_FEATURES), *m.shape)) for m in maps]
    a = strategy.pick(maps, 4, np.random.default_rng(0), done, feats)
    b = strategy.pick(maps, 4, np.random.default_rng(0), done, feats)
    assert a.regions == b.regions and len(a.regions) == 4  # same rng, same picks; exactly k when there are
    assert np.all(np.diff(a.scores) <= 0)  # best first
    for r in a.regions:
        assert not done[r.item][r.slices()].any() and r.h == r.w == min(4, *maps[r.item].shape)
        assert all(r.iou(o) == 0 for o in a.regions if o != r)
    everything = strategy.pick(maps, 1000, np.random.default_rng(0), done, feats)  # k past the windows: all free
    assert len(everything.regions) == len({(r.item, r.y, r.x) for r in everything.regions}) >= 4
    covered = [np.zeros(m.shape, bool) for m in maps]
    for r in everything.regions:
        covered[r.item][r.slices()] = True
    assert covered[2].sum() == 9  # the small image: windows of its shorter side (3 × 3), one fits disjointly


def test_reports_count_the_budget_in_clicks_or_pixels(nuclei64, tmp_path):
    from activeseg.report import build_report
    from activeseg.report.runs import find_runs
    from activeseg.report.summary import summarize
    from activeseg.report.tables import to_markdown

    cfg = SimConfig(**{**TINY, "rounds": 2, "reference": False})
    for name in ("random", "entropy_regions"):
        for seed in (0, 1):
            run_simulation(cfg.replace(strategy=name, seed=seed), nuclei64, tmp_path / name / f"seed_{seed}",
                           progress=False)
    summary = build_report([tmp_path], tmp_path / "report")
    assert (tmp_path / "report" / "learning_curve_cost.png").is_file()
    assert (tmp_path / "report" / "learning_curve_pixels.png").is_file()
    assert (tmp_path / "report" / "learning_curves_detail_cost.png").is_file()  # per class, source, instance
    assert not (tmp_path / "report" / "learning_curve_train_size.png").exists()  # regions are not NoDelete repeats
    assert summary["endpoint"]["budget"] == "n_annotations"
    runs = find_runs([tmp_path])
    with pytest.warns(UserWarning, match="clicks do not overlap"):
        by_cost = summarize(runs, target=0.01, budget="cost")
    assert by_cost["endpoint"]["budget"] == "cost"
    for name, s in by_cost["strategies"].items():
        for p in s["per_seed"]:
            run = next(r for r in runs if r.strategy == name and r.seed == p["seed"])
            assert p["final_budget"] == run.records[-1]["cost"]
            assert p["annotations_to_target"] == run.records[0]["cost"]  # a target every round reaches
    text = to_markdown(by_cost)
    assert "clicks to Dice 0.010" in text and "Clicks to a target" in text and "random's mean clicks" in text
    assert by_cost["endpoint"]["start"] is None  # two rounds: the seeds' click ranges do not overlap here
    assert "n/a (no range of clicks that every run covers)" in text
    assert summarize(runs, target=0.01, budget="labelled_pixels")["endpoint"]["start"] == 4 * 64 * 64
    with pytest.raises(ValueError, match="budget 'clicks' is not one of"):
        summarize(runs, budget="clicks")
    from activeseg.cli import main

    assert main(["report", str(tmp_path / "random"), str(tmp_path / "entropy_regions"), "--out",
                 str(tmp_path / "by_pixels"), "--budget", "labelled_pixels", "--target", "0.01", "--quiet"]) == 0
    saved = json.loads((tmp_path / "by_pixels" / "summary.json").read_text())
    assert saved["endpoint"]["budget"] == "labelled_pixels" and saved["endpoint"]["start"] == 4 * 64 * 64
