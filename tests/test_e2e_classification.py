"""Classification end to end on real MNIST: the loop, the CLI, the report, the Gal et al. preset and benchmark."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import load_benchmark, small_mnist

from activeseg.config import SimConfig
from activeseg.data import load_dataset
from activeseg.loop import run_simulation
from activeseg.models import GalCNN
from activeseg.records import read_ledger
from activeseg.uncertainty import MCDropout

# Per-digit counts of the original MNIST files (LeCun & Cortes).
TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]



# ---------------------------------------------------------------- end to end


TINY = dict(dataset="mnist", initial=20, balanced_initial=True, val_size=50, query=10, rounds=3, steps=40,
            batch_size=32, eval_every=20, mc_samples=5, score_subset=120, augment=False, heatmaps=0,
            device="cpu")


def test_three_rounds_on_real_mnist(mnist, tmp_path):
    data = small_mnist(mnist)
    cfg = SimConfig(strategy="variation_ratio", **TINY)
    records = run_simulation(cfg, data, tmp_path, progress=False)
    assert [r["n_annotations"] for r in records] == [20, 30, 40]
    for r in records:
        assert set(r["test"]) == {"accuracy", "error", "auc"}
        assert r["test"]["error"] == pytest.approx(1 - r["test"]["accuracy"])
        assert len(r["test_per_item"]["accuracy"]) == 300
        assert 0.5 < r["test"]["auc"] <= 1.0
    assert records[-1]["test"]["accuracy"] > 0.3  # well above chance (0.1) from 40 labels
    picked = [s["dataset_idx"] for r in records for s in r["selected"]]
    assert len(set(picked)) == 20 and set(picked) < set(range(400))  # from the pool, never the test set
    assert read_ledger(tmp_path / "ledger.jsonl") == records
    assert not (tmp_path / "heatmaps").exists()
    # same seed, same picks (the subset of scored pool items and the dropout masks are seeded)
    again = run_simulation(cfg.replace(rounds=2), data, tmp_path / "again", progress=False)
    assert again[0]["selected"] == records[0]["selected"]


def test_task_mismatch_is_a_clear_error(mnist, tmp_path):
    with pytest.raises(ValueError, match="is a classification dataset; use --task classification"):
        run_simulation(SimConfig(**{**TINY, "task": "segmentation"}), small_mnist(mnist), tmp_path)
    with pytest.raises(ValueError, match="model 'unet' does not do classification; use --model gal_cnn"):
        run_simulation(SimConfig(**{**TINY, "model": "unet"}), small_mnist(mnist), tmp_path / "b")


def test_cli_simulate_mnist(tmp_path):
    args = ["simulate", "--dataset", "mnist", "--task", "classification", "--strategy", "bald,random",
            "--rounds", "2", "--initial", "20", "--balanced-initial", "--val-size", "100", "--query", "10",
            "--steps", "20", "--batch-size", "32", "--eval-every", "10", "--score-subset", "200",
            "--mc-samples", "4", "--max-pool", "500", "--no-augment", "--no-reference", "--quiet",
            "--out", str(tmp_path)]
    proc = subprocess.run([sys.executable, "-m", "activeseg.cli", *args], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    for strategy in ("bald", "random"):
        records = read_ledger(tmp_path / strategy / "seed_0" / "ledger.jsonl")
        assert [r["n_annotations"] for r in records] == [20, 30]
        assert len(records[0]["test_per_item"]["accuracy"]) == 10000


def test_report_compares_classification_runs_by_accuracy(mnist, tmp_path):
    from activeseg.report import build_report

    data = small_mnist(mnist)
    for strategy in ("random", "bald"):
        run_simulation(SimConfig(strategy=strategy, **{**TINY, "rounds": 2}), data, tmp_path / "runs" / strategy)
    summary = build_report([tmp_path / "runs"], tmp_path / "report")
    assert summary["metric"] == "accuracy" and set(summary["strategies"]) == {"random", "bald"}
    bald = summary["strategies"]["bald"]
    finals = [read_ledger(tmp_path / "runs" / "bald" / "ledger.jsonl")[-1]["test"]["accuracy"]]
    assert bald["final_test_accuracy_mean"] == pytest.approx(finals[0])
    assert bald["wilcoxon_pairs"] == 300  # per-item test accuracy paired with random's
    md = (tmp_path / "report" / "summary.md").read_text()
    assert "final test accuracy" in md and "Dice" not in md
    assert (tmp_path / "report" / "learning_curve.png").stat().st_size > 0
    assert "final_test_accuracy_mean" in (tmp_path / "report" / "summary.csv").read_text().splitlines()[0]


def test_report_will_not_mix_tasks(mnist, tmp_path):
    from activeseg.report import build_report

    run_simulation(SimConfig(strategy="random", **{**TINY, "rounds": 1}), small_mnist(mnist), tmp_path / "cls")
    nuclei = load_dataset("nuclei", patch_size=32, quiet=True)
    seg = dict(depth=2, base_filters=4, steps=4, batch_size=4, eval_every=2, initial=4, query=2, rounds=1,
               mc_samples=2, max_pool=12, heatmaps=0, device="cpu", reference=False)
    run_simulation(SimConfig(strategy="bald", **seg), nuclei, tmp_path / "seg", progress=False)
    with pytest.raises(ValueError, match="cannot compare segmentation runs .* with classification runs"):
        build_report([tmp_path / "cls", tmp_path / "seg"], tmp_path / "report")


# ---------------------------------------------------------------- the Gal et al. preset and benchmark


def test_gal_preset_runs_on_real_mnist(mnist, tmp_path):
    from pathlib import Path

    from activeseg.config import load_config

    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "gal_mnist.toml")
    assert (cfg.initial, cfg.query, cfg.rounds, cfg.val_size, cfg.score_subset) == (20, 10, 101, 100, 2000)
    assert cfg.balanced_initial and cfg.consistent_masks and not cfg.augment
    assert cfg.train_config().steps_for(20) == 50 and cfg.train_config().steps_for(1020) == 399
    # the preset, shrunk to seconds: 3 rounds, a 300-item pool, 100 items scored per round
    small = cfg.replace(rounds=3, score_subset=100, steps=60, min_steps=20, val_size=50, device="cpu")
    records = run_simulation(small, small_mnist(mnist), tmp_path, progress=False)
    assert [r["n_annotations"] for r in records] == [20, 30, 40]
    assert "test_per_item" not in records[0]  # the preset keeps the ledger small
    assert records[0]["best_step"] <= 20 and records[-1]["best_step"] <= 20  # 25 epochs of 40 < min_steps


def test_gal_benchmark_counts_acquisitions_to_the_error_targets():
    bench = load_benchmark("gal_mnist")

    def recs(errors):
        return [{"n_annotations": 20 + 10 * i, "test": {"error": e}} for i, e in enumerate(errors)]

    done = bench.seed_results(recs([0.3, 0.12, 0.09, 0.06, 0.049]), initial=20, rounds=5)
    assert (done["to_10pct"], done["to_5pct"], done["error_at_1000"], done["complete"]) == (20, 40, None, True)
    never = bench.seed_results(recs([0.3, 0.2, 0.11]), initial=20, rounds=3)
    assert never["to_10pct"] is None and never["to_5pct"] is None  # finished without reaching: null
    running = bench.seed_results(recs([0.3, 0.2]), initial=20, rounds=101)
    assert running["to_10pct"] == "pending" and running["error_at_1000"] == "pending" and not running["complete"]
    at_1000 = bench.seed_results([{"n_annotations": 1020, "test": {"error": 0.01834}}], initial=20, rounds=1)
    assert at_1000["error_at_1000"] == 1.83 and at_1000["to_5pct"] == 1000
    assert bench._cell([120, 130, 140]) == "130 ± 10"
    assert bench._cell([120, None, "pending"]) == "120 (1/3 seeds); 1 never reached; 1 pending"
    assert bench._cell([]) == "not run"


def test_mc_dropout_test_predictions(mnist, tmp_path):
    from activeseg.train import evaluate, predict

    data = small_mnist(mnist)
    torch.manual_seed(0)
    model = GalCNN()
    est = MCDropout(k=6, batch_size=16, seed=3, consistent=True)
    probs = predict(model, data.images[:40], estimator=est)
    by_hand = torch.cat(list(est.batches(model, data.images[:40]))).mean(1).numpy()
    np.testing.assert_allclose(probs, by_hand, rtol=1e-6)
    assert not np.allclose(probs, predict(model, data.images[:40]))  # not the weight-scaled network
    _, summary = evaluate(model, data.images[:40], data.targets[:40], estimator=est)
    assert summary["accuracy"] == pytest.approx(np.mean(probs.argmax(1) == data.targets[:40]))
    cfg = SimConfig(strategy="random", **{**TINY, "rounds": 1})
    plain = run_simulation(cfg, data, tmp_path / "plain", progress=False)[0]
    mc = run_simulation(cfg.replace(test_mc_samples=8), data, tmp_path / "mc", progress=False)[0]
    assert mc["best_step"] == plain["best_step"]  # same training; only the test-time prediction differs
    assert mc["test"] != plain["test"] and 0.0 <= mc["test"]["error"] <= 1.0


def test_gal_benchmark_reads_the_mean_curve_as_the_paper_reads_averaged_curves():
    from types import SimpleNamespace

    bench = load_benchmark("gal_mnist")

    def run(errors):
        return SimpleNamespace(records=[{"n_annotations": 20 + 10 * i, "test": {"error": e}}
                                        for i, e in enumerate(errors)])

    # the seeds cross 10% at 10 and 20 acquisitions (averaged: 15); their mean curve (0.3, 0.145, 0.125, 0.06) at 30
    runs = [run([0.3, 0.09, 0.2, 0.08]), run([0.3, 0.2, 0.05, 0.04])]
    per_seed = [bench.seed_results(r.records, initial=20, rounds=4)["to_10pct"] for r in runs]
    assert per_seed == [10, 20]
    assert bench.mean_curve_crossings(runs, initial=20) == {"to_10pct": 30, "to_5pct": None, "rounds": 4}
    assert bench.mean_curve_crossings([run([0.3, 0.09]), run([0.3])], initial=20)["rounds"] == 1  # common rounds


def test_survey_adopts_only_the_runs_that_its_own_ledgers_agree_with(tmp_path):
    import json
    from pathlib import Path

    survey = load_benchmark("survey_frameworks")

    def write(folder: Path, rows: list[dict]):
        folder.mkdir(parents=True)
        (folder / "ledger.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        (folder / "config.json").write_text("{}")

    rounds = [{"round": r, "test": {"error": 0.5 - r / 10}, "seconds": {"train": 1.0}} for r in range(1, 4)]
    for seed in range(4):
        write(tmp_path / "gal" / "random" / f"seed_{seed}", rounds)
    write(tmp_path / "out" / "random" / "seed_1", [{**rounds[0], "seconds": {"train": 9.0}}])  # same, other time
    write(tmp_path / "out" / "random" / "seed_2", [{**rounds[0], "test": {"error": 0.3}}])  # not the same run
    write(tmp_path / "out" / "random" / "seed_3", rounds)  # already as long
    adopted = survey.adopt_runs(tmp_path / "gal", tmp_path / "out", ["random", "bald"], 4)
    assert adopted == [str(tmp_path / "out" / "random" / f"seed_{s}") for s in (0, 1)]
    assert read_ledger(tmp_path / "out" / "random" / "seed_1" / "ledger.jsonl") == rounds
    assert len(read_ledger(tmp_path / "out" / "random" / "seed_2" / "ledger.jsonl")) == 1
