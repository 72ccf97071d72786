"""The report package on fake run directories: ledger I/O, discovery, figures and the summary."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from activeseg.metrics import area_under_curve, best_round, efficiency_ratio, wilcoxon_paired
from activeseg.records import append_record, read_ledger, write_ledger
from activeseg.report import build_report, find_runs, plot_learning_curves, save_overlay
from activeseg.report.curves import curve_matrix
from activeseg.statistics import aulc_log2

N_ANNOTATIONS = [4, 8, 12]
REFERENCE = {0: 0.8, 1: 0.9}  # targets: 0.76 and 0.855
TEST_DICE = {
    ("bald", 0): [0.6, 0.77, 0.8],  # reaches 0.76 at 8
    ("bald", 1): [0.7, 0.8, 0.86],  # reaches 0.855 at 12
    ("random", 0): [0.5, 0.6, 0.7],  # never reaches 0.76
    ("random", 1): [0.6, 0.86, 0.88],  # reaches 0.855 at 8
}


def per_item(strategy, seed):
    base = np.linspace(0.4, 0.9, 6) + 0.01 * seed
    return base + (np.array([0.05, 0.02, 0.08, 0.01, 0.04, 0.03]) if strategy == "bald" else 0.0)


def write_run(root: Path, strategy: str, seed: int, reference: bool = True) -> Path:
    run_dir = root / strategy / f"seed_{seed}"
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps(
        {"strategy": strategy, "seed": seed, "dataset": "not_installed_here", "rounds": 3, "query": 4}))
    if reference:
        (run_dir / "reference.json").write_text(json.dumps(
            {"val_dice": 0.8, "test_dice": REFERENCE[seed], "n_annotations": 40}))
    for r, (n, dice) in enumerate(zip(N_ANNOTATIONS, TEST_DICE[strategy, seed], strict=True), start=1):
        items = per_item(strategy, seed) if r == 3 else np.full(6, dice)
        means = {"dice": np.float64(dice), "iou": dice / 2, "sensitivity": 0.9, "specificity": 0.99}
        append_record(run_dir / "ledger.jsonl", {
            "round": r, "strategy": strategy, "seed": seed, "n_annotations": n, "train_size": n, "pool_size": 40,
            "val": means, "test": means,
            "test_per_item": {"dice": items, "iou": items / 2, "sensitivity": items, "specificity": items},
            "selected": [] if r == 3 else [
                {"dataset_idx": np.int64(12 + r), "item_id": f"it{r}", "score": 0.3}
            ],
            "seconds": {"train": 3.1, "evaluate": 0.2, "score": 1.0, "select": 0.001},
            "best_step": 150,
        })
    return run_dir


@pytest.fixture
def runs_root(tmp_path):
    root = tmp_path / "runs"
    for strategy in ("random", "bald"):
        for seed in (0, 1):
            write_run(root, strategy, seed)
    rng = np.random.default_rng(0)
    save_overlay(
        root / "bald" / "seed_0" / "heatmaps" / "round_1" / "stardist_r0_c1.png",
        rng.random((32, 32)), rng.random((32, 32)), rng.random((32, 32)),
        title="round 1", mask_H_W=rng.random((32, 32)) > 0.5,
    )
    return root


def test_find_runs_accepts_run_strategy_and_parent_dirs(runs_root):
    assert len(find_runs([runs_root / "bald" / "seed_0"])) == 1
    assert len(find_runs([str(runs_root / "bald")])) == 2
    runs = find_runs([runs_root])
    assert len(runs) == 4
    assert {(r.strategy, r.seed) for r in runs} == {(s, k) for s in ("random", "bald") for k in (0, 1)}
    assert runs[0].reference["n_annotations"] == 40 and len(runs[0].records) == 3
    assert len(find_runs([runs_root / "bald", runs_root])) == 4  # no duplicates


def test_find_runs_without_ledger_says_what_was_expected(tmp_path):
    (tmp_path / "x").mkdir()
    with pytest.raises(FileNotFoundError, match="no ledger.jsonl found; pass the --out directory"):
        find_runs([tmp_path / "x"])
    with pytest.raises(FileNotFoundError, match="no such directory"):
        find_runs([tmp_path / "missing"])


def test_curve_matrix_aligns_rounds_with_nan(runs_root):
    runs = find_runs([runs_root / "bald"])
    short = runs[1]
    short.records = short.records[:2]
    n_ann_R, values_S_R = curve_matrix(runs)
    np.testing.assert_allclose(n_ann_R, N_ANNOTATIONS)
    assert values_S_R.shape == (2, 3) and np.isnan(values_S_R[1, 2])
    assert values_S_R[0, 2] == pytest.approx(0.8)
    out = plot_learning_curves(runs, runs_root.parent / "fig" / "curve.png")
    assert Image.open(out).size[0] > 300


def test_save_overlay_rgb_without_mask_and_shape_error(tmp_path):
    rng = np.random.default_rng(1)
    out = save_overlay(tmp_path / "o.png", rng.random((16, 20, 3)), np.zeros((16, 20)), rng.random((16, 20)))
    with Image.open(out) as img:
        assert img.size[0] > 200 and img.size[1] > 100
    with pytest.raises(ValueError, match="uncertainty_H_W has shape"):
        save_overlay(tmp_path / "p.png", np.zeros((16, 20)), np.zeros((16, 20)), np.zeros((20, 16)))


def test_build_report(runs_root, tmp_path):
    out = tmp_path / "report"
    summary = build_report([str(runs_root)], out)
    for name in ("learning_curve.png", "summary.md", "summary.csv", "summary.json", "index.html"):
        assert (out / name).is_file(), name
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["learning_curve.png", "summary.md", "summary.csv", "summary.json", "index.html"])
    with Image.open(out / "learning_curve.png") as img:
        img.load()
        assert img.size[0] > 300 and img.size[1] > 200

    assert json.loads((out / "summary.json").read_text()) == summary
    bald, rnd = summary["strategies"]["bald"], summary["strategies"]["random"]
    # reached where the 3-point smoothed curve stays above the target: bald seed 0 smooths to
    # [0.685, 0.723, 0.785] (target 0.76: 12), seed 1 to [0.75, 0.787, 0.83] (0.855: never)
    assert [p["annotations_to_target"] for p in bald["per_seed"]] == [12, None]
    assert bald["annotations_to_target_mean"] == pytest.approx(12.0)
    assert bald["annotations_to_target_reached"] == 1
    assert [p["annotations_to_target"] for p in rnd["per_seed"]] == [None, 12]
    assert rnd["annotations_to_target_mean"] == pytest.approx(12.0)
    assert rnd["annotations_to_target_reached"] == 1
    assert [p["targets"][1]["annotations"] for p in bald["per_seed"]] == [8, 12]  # 90%: 0.72 and 0.81
    assert bald["targets"][1]["annotations_mean"] == pytest.approx(10.0)
    assert bald["final_test_dice_mean"] == pytest.approx(0.83)
    assert bald["final_test_dice_sd"] == pytest.approx(np.std([0.8, 0.86], ddof=1))
    assert bald["per_seed"][0]["aulc"] == pytest.approx(0.735)
    assert summary["reference"]["test_dice_mean"] == pytest.approx(0.85)
    expected_p = wilcoxon_paired(
        np.concatenate([per_item("bald", 0), per_item("bald", 1)]),
        np.concatenate([per_item("random", 0), per_item("random", 1)]),
    )
    assert bald["wilcoxon_p_vs_random"] == pytest.approx(expected_p)
    assert rnd["wilcoxon_p_vs_random"] is None

    md = (out / "summary.md").read_text()
    rows = [line for line in md.splitlines() if line.startswith("| ") and "strategy" not in line]
    assert len(rows) == 3  # random, bald, the random-vs-random check
    assert any(r.startswith("| bald ") and "12.0 (1/2 reached)" in r for r in rows)
    assert any(r.startswith("| random ") and "12.0 (1/2 reached)" in r and "—" in r for r in rows)
    assert "bald | 95% of full pool | ref 0.850 ± 0.071, n=2 | 12.0 (1/2) [12, not reached]" in md
    assert "random | 95% of full pool | ref 0.850 ± 0.071, n=2 | 12.0 (1/2) [not reached, 12] | —" in md
    assert rows[2].startswith("| random vs random (check) ") and "needs ≥ 4 random seeds" in rows[2]
    assert "bald | 90% of full pool | ref 0.850 ± 0.071, n=2 | 10.0 (2/2) [8, 12]" in md
    csv_lines = (out / "summary.csv").read_text().strip().splitlines()
    assert len(csv_lines) == 4 and csv_lines[1].startswith("random,2,")
    assert csv_lines[3].startswith("random vs random (check),2,")

    page = (out / "index.html").read_text()
    assert page.count("data:image/png;base64,") == 2  # the curve + one heatmap
    assert "stardist_r0_c1" in page


def test_build_report_without_reference_or_random(tmp_path):
    root = tmp_path / "runs"
    write_run(root, "bald", 0, reference=False)
    summary = build_report([root / "bald" / "seed_0"], tmp_path / "report")
    bald = summary["strategies"]["bald"]
    assert bald["annotations_to_target_mean"] is None and bald["wilcoxon_p_vs_random"] is None
    assert bald["final_test_dice_sd"] == 0.0
    md = (tmp_path / "report" / "summary.md").read_text()
    assert "reference was not computed" in md
    row = next(line for line in md.splitlines() if line.startswith("| bald "))
    assert row.split(" | ")[4] == "—" and row.split(" | ")[8] == "n/a" and row.rstrip(" |").endswith("—")


def test_no_delete_runs_get_a_training_set_size_curve(tmp_path):
    root = tmp_path / "runs"
    run_dir = write_run(root, "bald", 0)
    records = read_ledger(run_dir / "ledger.jsonl")
    for rec, size in zip(records, (4, 9, 14), strict=True):  # repeats: more training items than annotations
        rec["train_size"] = size
    write_ledger(run_dir / "ledger.jsonl", records)
    runs = find_runs([root])
    x_R, _ = curve_matrix(runs, x="train_size")
    np.testing.assert_allclose(x_R, [4, 9, 14])
    np.testing.assert_allclose(curve_matrix(runs)[0], N_ANNOTATIONS)
    with pytest.raises(ValueError, match="x='steps' is not one of n_annotations, train_size"):
        curve_matrix(runs, x="steps")
    build_report([root], tmp_path / "report")
    assert (tmp_path / "report" / "learning_curve_train_size.png").is_file()
    assert (tmp_path / "report" / "index.html").read_text().count("<img") == 2  # both curves, no heatmaps
    write_run(tmp_path / "plain", "bald", 0)
    build_report([tmp_path / "plain"], tmp_path / "report2")
    assert not (tmp_path / "report2" / "learning_curve_train_size.png").exists()
    assert (tmp_path / "report2" / "index.html").read_text().count("<img") == 1


def test_sweep_groups_are_compared_within_their_group(tmp_path):
    root = tmp_path / "sweep"
    for group in ("query=4", "query=8"):
        for strategy in ("random", "bald"):
            write_run(root / group, strategy, 0)
    runs = find_runs([root])
    assert sorted(r.name for r in runs) == ["bald [query=4]", "bald [query=8]", "random [query=4]", "random [query=8]"]
    assert {r.group for r in runs} == {"query=4", "query=8"}
    summary = build_report([root], tmp_path / "report")
    assert list(summary["strategies"]) == ["random [query=4]", "bald [query=4]", "random [query=8]", "bald [query=8]"]
    for group in ("query=4", "query=8"):
        assert summary["strategies"][f"bald [{group}]"]["wilcoxon_pairs"] == 6  # paired with its own group's random
        assert summary["strategies"][f"random [{group}]"]["wilcoxon_p_vs_random"] is None
    assert find_runs([root / "query=4" / "bald"])[0].name == "bald [query=4]"
    assert find_runs([tmp_path / "sweep" / "query=4" / "bald" / "seed_0"])[0].group == "query=4"


def test_best_round_and_efficiency_ratio():
    assert best_round([0.5, 0.7, 0.7, float("nan"), None, 0.6]) == 1  # first of the ties; NaN/None skipped
    assert best_round([None, float("nan")]) is None
    assert efficiency_ratio(12, 8) == 1.5
    assert efficiency_ratio(None, 8) is None and efficiency_ratio(12, None) is None


def test_best_validation_table(runs_root, tmp_path):
    """The paper-style numbers: each run's best-validation round, its test score, % data then, the
    per-item Wilcoxon test at those rounds, AULC across seeds, and efficiency against random."""
    ledger = runs_root / "bald" / "seed_0" / "ledger.jsonl"
    records = read_ledger(ledger)
    for rec, val in zip(records, (0.9, 0.5, 0.5), strict=True):  # bald seed 0 peaks on validation at round 1
        rec["val"] = {**rec["val"], "dice": val}
    write_ledger(ledger, records)
    summary = build_report([runs_root], tmp_path / "report")
    bald, rnd = summary["strategies"]["bald"], summary["strategies"]["random"]
    assert [p["best_val_round"] for p in bald["per_seed"]] == [1, 3]
    assert [p["test_dice_at_best_val"] for p in bald["per_seed"]] == [0.6, 0.86]
    assert [p["pct_data_at_best_val"] for p in bald["per_seed"]] == [10.0, 30.0]
    assert bald["best_val_dice_mean"] == pytest.approx((0.9 + 0.86) / 2)
    assert bald["test_dice_at_best_val_mean"] == pytest.approx(0.73)
    assert bald["pct_data_at_best_val_mean"] == pytest.approx(20.0)
    expected = wilcoxon_paired(np.concatenate([np.full(6, 0.6), per_item("bald", 1)]),
                               np.concatenate([per_item("random", 0), per_item("random", 1)]))
    assert bald["wilcoxon_p_best_val_vs_random"] == pytest.approx(expected)
    aulc = {k: aulc_log2(N_ANNOTATIONS, v, 4, 12) for k, v in TEST_DICE.items()}
    assert [p["aulc_log2"] for p in bald["per_seed"]] == pytest.approx([aulc["bald", 0], aulc["bald", 1]])
    assert bald["comparison"]["p_wilcoxon"] == pytest.approx(wilcoxon_paired(
        [aulc["bald", 0], aulc["bald", 1]], [aulc["random", 0], aulc["random", 1]]))
    assert area_under_curve(N_ANNOTATIONS, TEST_DICE["bald", 0]) == pytest.approx(bald["per_seed"][0]["aulc"])
    # 95%: no seed where both reached it (bald seed 0 only, random seed 1 only); 90%: seed 1, 12 and 12
    assert bald["efficiency_vs_random_mean"] is None and bald["efficiency_vs_random_seeds"] == 0
    assert bald["targets"][1]["efficiency"]["ratio"] == pytest.approx(1.0)
    assert rnd["wilcoxon_p_best_val_vs_random"] is None and rnd["efficiency_vs_random_mean"] is None
    md = (tmp_path / "report" / "summary.md").read_text()
    row = next(line for line in md.splitlines() if line.startswith("bald | 0.880"))
    assert "20.0 %" in row and "×" not in row  # efficiency is in the headline, with its CI
    assert "At the best-validation round" in (tmp_path / "report" / "index.html").read_text()


def test_absolute_target_and_error_rate(runs_root, tmp_path):
    summary = build_report([runs_root], tmp_path / "report", target=0.78)
    bald, rnd = summary["strategies"]["bald"], summary["strategies"]["random"]
    assert summary["target"] == 0.78
    assert [p["annotations_to_target"] for p in bald["per_seed"]] == [12, 8]
    # "not reached" stays None; random seed 1 smooths to [0.73, 0.78 - 1 ulp, 0.87]: reached at 12
    assert [p["annotations_to_target"] for p in rnd["per_seed"]] == [None, 12]
    assert bald["efficiency_vs_random_mean"] == pytest.approx(12 / 8) and bald["efficiency_vs_random_seeds"] == 1
    md = (tmp_path / "report" / "summary.md").read_text()
    assert "annotations to Dice 0.780" in md and "10.0 (2/2) [12, 8]" in md and "[not reached, 12]" in md

    from activeseg.cli import main
    assert main(["report", str(runs_root), "--out", str(tmp_path / "r2"), "--target", "0.9", "--quiet"]) == 0
    assert json.loads((tmp_path / "r2" / "summary.json").read_text())["strategies"]["bald"][
        "annotations_to_target_reached"] == 0
    assert main(["report", str(runs_root), "--out", str(tmp_path / "r3"), "--target", "0.9",
                 "--target-error", "0.05", "--quiet"]) == 2


def test_multiclass_runs_get_a_panel_per_class_source_and_instance_score(tmp_path):
    from activeseg.report.curves import detail_metrics

    for seed in (0, 1):
        run_dir = tmp_path / "runs" / "random" / f"seed_{seed}"
        run_dir.mkdir(parents=True)
        (run_dir / "config.json").write_text(json.dumps({"strategy": "random", "seed": seed, "rounds": 2}))
        for r, n in enumerate((2, 4), start=1):
            test = {"dice": 0.5 + 0.1 * r, "miou": 0.6, "dice_interior": 0.7, "dice_boundary": 0.4,
                    "instance_f1": 0.5, "aji": 0.45, "dice@cells3d": 0.6, "dice@stardist": 0.7}
            append_record(run_dir / "ledger.jsonl", {
                "round": r, "strategy": "random", "seed": seed, "n_annotations": n, "train_size": n,
                "pool_size": 40, "val": test, "test": test, "selected": [],
                "seconds": {"train": 1.0, "evaluate": 0.1, "score": 0.0, "select": 0.0}, "best_step": 10})
    runs = find_runs(tmp_path / "runs")
    assert detail_metrics(runs) == ["dice_boundary", "dice_interior", "miou", "instance_f1", "aji",
                                    "dice@cells3d", "dice@stardist"]
    build_report(tmp_path / "runs", tmp_path / "report")
    assert (tmp_path / "report" / "learning_curves_detail.png").stat().st_size > 0
    assert (tmp_path / "report" / "index.html").read_text().count('alt="learning curves"') == 2  # both embedded


def test_a_three_class_heatmap_draws_the_class_map(tmp_path):
    from activeseg.report.heatmaps import class_colours

    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(3), size=(16, 20)).transpose(2, 0, 1)
    mask = rng.integers(0, 3, (16, 20)).astype(np.uint8)
    mask[0, 0] = 255
    out = save_overlay(tmp_path / "c.png", rng.random((16, 20)), probs, rng.random((16, 20)), mask_H_W=mask,
                       class_names=("background", "interior", "boundary"))
    assert out.stat().st_size > 0
    rgba = class_colours(np.array([[0, 1, 2]]))
    assert rgba[0, 0, 3] == 0 and rgba[0, 1, 3] > 0 and not np.allclose(rgba[0, 1, :3], rgba[0, 2, :3])
