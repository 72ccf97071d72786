"""Seed-level comparison statistics: hand-computed tables, and the summary on synthetic runs."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from activeseg.metrics import wilcoxon_paired
from activeseg.report.runs import Run
from activeseg.report.summary import summarize
from activeseg.report.tables import csv_fields, main_table, notes, to_markdown, write_csv
from activeseg.statistics import (
    annotations_to_stable_target,
    aulc_log2,
    bootstrap_ci,
    disjoint_halves,
    efficiency,
    holm,
    paired_comparison,
    paired_t_p,
    power,
    seeds_needed,
    smooth3,
)

# log2 budgets 1, 2, 3 with scores 0.5, 0.6, 0.8: trapezoids 0.55 and 0.7 over a width of 2
N_R, Y_R = [2, 4, 8], [0.5, 0.6, 0.8]


@pytest.mark.parametrize("start, end, expected", [
    (2, 8, (0.55 + 0.7) / 2),
    (2, 4 * math.sqrt(2), (0.55 + 0.5 * (0.6 + 0.7) / 2) / 1.5),  # end at log2 2.5: y 0.7 interpolated
    (2 * math.sqrt(2), 8, (0.5 * (0.55 + 0.6) / 2 + 0.7) / 1.5),  # start at log2 1.5: y 0.55
    (4, 4, 0.6),  # an empty range: the curve's value there
])
def test_aulc_log2_by_hand(start, end, expected):
    assert aulc_log2(N_R, Y_R, start, end) == pytest.approx(expected)


def test_aulc_log2_edges():
    assert math.isnan(aulc_log2(N_R, Y_R, 2, 16))  # does not reach the end
    assert math.isnan(aulc_log2(N_R, Y_R, 1, 8))  # starts after the start
    assert aulc_log2([0, 2, 4, 8], [0.1, *Y_R], 2, 8) == pytest.approx(0.625)  # budget 0: not on a log axis
    assert aulc_log2([2, 4, 6, 8], [0.5, 0.6, float("nan"), 0.8], 2, 8) == pytest.approx(0.625)  # NaN dropped
    assert aulc_log2([8, 2, 4], [0.8, 0.5, 0.6], 2, 8) == pytest.approx(0.625)  # order of rounds
    with pytest.raises(ValueError, match="0 < start <= end"):
        aulc_log2(N_R, Y_R, 8, 2)
    with pytest.raises(ValueError, match="shape"):
        aulc_log2(N_R, Y_R[:2], 2, 8)


def test_holm_on_a_known_example():
    # sorted: 0.005·4 = 0.02, 0.01·3 = 0.03, 0.03·2 = 0.06, 0.04·1 = 0.04 -> max so far 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, None, 0.6]) == pytest.approx([1.0, None, 1.0])  # None: not in the family; capped at 1
    assert holm([0.02]) == [0.02] and holm([]) == []


def test_bootstrap_ci_contains_the_mean_and_is_reproducible():
    x = np.random.default_rng(3).normal(0.02, 0.01, size=12)
    lo, hi = bootstrap_ci(x, seed=7)
    assert lo < x.mean() < hi
    assert bootstrap_ci(x, seed=7) == (lo, hi)
    assert bootstrap_ci(x, seed=np.random.default_rng(7)) == (lo, hi)  # a Generator works as well
    assert bootstrap_ci(x, seed=8) != (lo, hi)
    half = stats.t.ppf(0.975, 11) * x.std(ddof=1) / np.sqrt(12)  # close to the t interval
    assert hi - lo == pytest.approx(2 * half, rel=0.25)
    assert bootstrap_ci([0.3, 0.3, 0.3]) == (0.3, 0.3)
    assert bootstrap_ci([0.3]) is None and bootstrap_ci([]) is None


def test_smoothed_target_ignores_a_single_noisy_crossing():
    np.testing.assert_allclose(smooth3([0.0, 0.3, 0.6, 0.3]), [0.15, 0.3, 0.4, 0.45])
    np.testing.assert_allclose(smooth3([0.4]), [0.4])
    n = [10, 20, 30, 40, 50, 60, 70]
    y = [0.5, 0.9, 0.5, 0.6, 0.8, 0.85, 0.9]  # crosses 0.74 at 20, then drops back
    # smoothed: 0.7, 0.633, 0.667, 0.633, 0.75, 0.85, 0.875
    assert annotations_to_stable_target(n, y, 0.74) == 50
    assert annotations_to_stable_target(n, y, 0.6) == 10
    assert annotations_to_stable_target(n, y, 0.95) is None
    assert annotations_to_stable_target([1, 2, 3], [0.9, float("nan"), 0.9], 0.9) == 1  # NaN round dropped


def test_power_formula():
    assert seeds_needed(0.02, 0.01) == 32  # (2.8·2)² = 31.36
    assert seeds_needed(0.01, 0.01) == 10  # 7.84, below the minimum of 10
    assert seeds_needed(0.05, 0.01) == 196  # exactly 14², not 197
    d = [0.01, 0.03, -0.01, 0.02]
    out = power(d, delta=0.01)
    sd = np.std(d, ddof=1)
    assert out["n_used"] == 4 and out["sd_diff"] == pytest.approx(sd)
    assert out["n_recommended"] == max(10, math.ceil((2.8 * sd / 0.01) ** 2))
    assert out["min_detectable"] == pytest.approx(2.8 * sd / 2)
    assert power([0.01])["sd_diff"] is None and power([0.01])["n_recommended"] is None
    with pytest.raises(ValueError, match="delta"):
        seeds_needed(0.01, 0)


def test_paired_tests_and_missing_pairs():
    a, b = [0.71, 0.69, 0.74, 0.70], [0.70, 0.70, 0.71, 0.69]
    assert paired_t_p(np.subtract(a, b)) == pytest.approx(stats.ttest_rel(a, b).pvalue)
    assert paired_t_p([0.0, 0.0]) == 1.0 and paired_t_p([0.1]) is None
    c = paired_comparison([0, 1, 2, 3, 4], [*a, None], [*b, 0.5])
    assert c["seeds"] == [0, 1, 2, 3] and c["pairs"] == 4
    assert c["mean_diff"] == pytest.approx(np.mean(np.subtract(a, b)))
    assert c["p_wilcoxon"] == pytest.approx(wilcoxon_paired(a, b))
    same = paired_comparison([0, 1, 2], [0.5, 0.6, 0.7], [0.5, 0.6, 0.7])
    assert same["p_wilcoxon"] == 1.0 and same["p_t"] == 1.0 and same["ci"] == [0.0, 0.0]
    one = paired_comparison([0], [0.5], [0.4])
    assert one["p_t"] is None and one["p_wilcoxon"] is None and one["ci"] is None
    assert json.dumps(c, allow_nan=False)


def test_disjoint_halves_and_efficiency():
    assert disjoint_halves([5, 1, 3, 2, 4]) == ([1, 2], [3, 4])  # an odd last seed is left out
    assert disjoint_halves([0, 1, 2]) is None
    e = efficiency([10, 20, None, 12], [5, 10, 8, None])  # seeds 0 and 1 both reached it
    assert e["ratio"] == pytest.approx(15 / 7.5) and e["both_reached"] == 2 and e["pairs"] == 4
    assert e["ci"] == pytest.approx([2.0, 2.0])  # both seeds have ratio 2
    none = efficiency([None, 10], [5, None])
    assert none["ratio"] is None and none["ci"] is None and none["both_reached"] == 0


def make_run(strategy: str, seed: int, scores, budgets=(8, 16, 32, 64), reference: float | None = 0.8) -> Run:
    records = [{"round": r, "strategy": strategy, "seed": seed, "n_annotations": n, "pool_size": 100,
                "val": {"dice": float(y)}, "test": {"dice": float(y)}}
               for r, (n, y) in enumerate(zip(budgets, scores, strict=True), start=1)]
    return Run(run_dir=Path(f"/tmp/none/{strategy}/seed_{seed}"), config={"strategy": strategy, "seed": seed},
               records=records, reference=None if reference is None else {"test_dice": reference})


def synthetic_runs(n_seeds: int = 8, shift: float = 0.05) -> list[Run]:
    rng = np.random.default_rng(0)
    base = np.array([0.5, 0.6, 0.7, 0.75])
    runs = []
    for seed in range(n_seeds):
        rand = base + rng.normal(0, 0.03) + rng.normal(0, 0.01, size=4)  # a seed effect and round noise
        runs.append(make_run("random", seed, rand))
        runs.append(make_run("bald", seed, rand + shift + rng.normal(0, 0.005, size=4)))
        runs.append(make_run("entropy", seed, rand + rng.normal(0, 0.005, size=4)))
    return runs


def test_summary_detects_a_shift_on_every_seed():
    runs = synthetic_runs()
    summary = summarize(runs)
    assert json.dumps(summary, allow_nan=False)
    end = summary["endpoint"]
    assert (end["start"], end["end"], end["end_is_default"]) == (8, 64, True)
    bald = summary["strategies"]["bald"]["comparison"]
    assert bald["pairs"] == 8 and bald["mean_diff"] == pytest.approx(0.05, abs=0.005)
    assert bald["p_t"] < 0.01 and bald["ci"][0] > 0
    assert bald["p_wilcoxon"] == pytest.approx(2 / 2 ** 8)  # all 8 differences positive: the exact minimum
    entropy = summary["strategies"]["entropy"]["comparison"]
    assert entropy["ci"][0] < 0 < entropy["ci"][1]
    assert summary["strategies"]["random"]["comparison"] is None
    assert end["holm_family"] == ["bald", "entropy"]
    assert [bald["p_holm"], entropy["p_holm"]] == pytest.approx(holm([bald["p_t"], entropy["p_t"]]))
    assert bald["sd_diff"] == pytest.approx(np.std(bald["diffs"], ddof=1))
    assert bald["n_recommended"] == 10 and bald["n_used"] == 8
    per_seed = {p["seed"]: p["aulc_log2"] for p in summary["strategies"]["random"]["per_seed"]}
    assert per_seed[0] == pytest.approx(aulc_log2([8, 16, 32, 64], [r["test"]["dice"] for r in runs[0].records], 8, 64))

    check = summary["checks"][0]
    assert check["name"] == "random vs random (check)" and check["halves"] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    expected = paired_comparison([0, 1, 2, 3], [per_seed[s] for s in (0, 1, 2, 3)],
                                 [per_seed[s] for s in (4, 5, 6, 7)])
    assert check["comparison"]["p_t"] == pytest.approx(expected["p_t"])
    assert "p_holm" not in check["comparison"]

    header, rows = main_table(summary)
    assert "Holm p" in header and "per-patch Wilcoxon, not independent" in header
    row = {r[0]: r for r in rows}
    assert row["random"][4] == "baseline" and row["bald"][5] == "<0.001"
    assert row["random vs random (check)"][7] == "excluded (check)"
    text = "\n".join(notes(summary))
    assert "from 8 to 64 annotations" in text and "σ_d" in text and "bald: 8 paired seeds" in text


def test_targets_use_the_smoothed_curve_and_report_not_reached():
    runs = [make_run("random", s, [0.5, 0.6, 0.7, 0.77]) for s in range(3)]
    runs += [make_run("bald", 0, [0.6, 0.77, 0.78, 0.8]), make_run("bald", 1, [0.6, 0.77, 0.78, 0.8]),
             make_run("bald", 2, [0.5, 0.55, 0.6, 0.65])]
    summary = summarize(runs)  # targets 0.76 (95%) and 0.72 (90%) of the reference 0.8
    assert [t["fraction"] for t in summary["targets"]] == [0.95, 0.90]
    primary = summary["targets"][0]
    assert primary["reference_mean"] == pytest.approx(0.8) and primary["reference_seeds"] == 3
    bald, rnd = summary["strategies"]["bald"], summary["strategies"]["random"]
    # random smooths to [0.55, 0.6, 0.69, 0.735]: never 0.76; at 0.72 from 64
    assert rnd["targets"][0]["reached"] == 0 and [p["targets"][1]["annotations"] for p in rnd["per_seed"]] == [64] * 3
    # bald seeds 0-1 smooth to [0.685, 0.717, 0.783, 0.79]: 0.76 from 32, 0.72 from 32
    assert [p["annotations_to_target"] for p in bald["per_seed"]] == [32, 32, None]
    assert bald["targets"][0]["efficiency"] == {"ratio": None, "ci": None, "both_reached": 0, "pairs": 3}
    eff = bald["targets"][1]["efficiency"]
    assert eff["ratio"] == pytest.approx(2.0) and eff["both_reached"] == 2 and eff["pairs"] == 3
    assert summary["checks"][0]["note"] == "needs ≥ 4 random seeds" and summary["checks"][0]["comparison"] is None
    md = to_markdown(summary)
    assert "not reached (0/3 pairs both reached)" in md and "2.00× [2.00, 2.00] (2/3 pairs both reached)" in md
    assert "ref 0.800 ± 0.000, n=3" in md


def test_explicit_endpoint_and_csv(tmp_path):
    runs = synthetic_runs(n_seeds=4)
    runs.append(make_run("bald", 9, [0.5, 0.6, 0.7], budgets=(8, 16, 32)))  # stops early, no random pair
    summary = summarize(runs)
    assert summary["endpoint"]["end"] == 32  # the largest budget every run reached
    with pytest.warns(UserWarning, match="bald seed 9 do"):
        summary = summarize(runs, aulc_end=64)
    assert summary["endpoint"]["end_is_default"] is False
    assert summary["strategies"]["bald"]["per_seed"][-1]["aulc_log2"] is None
    assert summary["strategies"]["bald"]["comparison"]["pairs"] == 4
    with pytest.raises(ValueError, match="aulc_end of at least 8"):
        summarize(runs, aulc_end=4)
    path = write_csv(summary, tmp_path / "s.csv")
    lines = path.read_text().strip().splitlines()
    assert lines[0].split(",") == csv_fields()
    assert [line.split(",")[0] for line in lines[1:]] == ["random", "bald", "entropy", "random vs random (check)"]


def test_classification_summary_names_accuracy_and_items():
    runs = []
    for seed in range(4):
        for strategy, shift in (("random", 0.0), ("bald", 0.02)):
            run = make_run(strategy, seed, [0.9 + shift, 0.93 + shift, 0.95 + shift, 0.96 + shift], reference=None)
            for rec in run.records:
                rec["test"] = rec["val"] = {"accuracy": rec["test"]["dice"]}
            runs.append(run)
    summary = summarize(runs, target=0.95)  # an absolute target: error 5%
    assert summary["metric"] == "accuracy" and summary["targets"] == [
        {"fraction": None, "target": 0.95, "reference_mean": None, "reference_sd": None, "reference_seeds": 0}]
    md = to_markdown(summary)
    assert "Dice" not in md and "per-item Wilcoxon, not independent" in md and "annotations to error 5.0%" in md
    assert summary["checks"][0]["comparison"]["pairs"] == 2  # seeds 0, 1 vs 2, 3
    assert summary["strategies"]["bald"]["comparison"]["mean_diff"] == pytest.approx(0.02)
