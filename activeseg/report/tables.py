"""The summary as tables: cells shared by Markdown (``summary.md``), HTML and CSV (``summary.csv``).

The headline (:func:`main_table`) compares strategies seed by seed: AULC on a log2-budget axis paired
with random's, with a bootstrap CI, paired t and Wilcoxon p, Holm-adjusted p, and the random-vs-random
check rows; :func:`notes` states the endpoint, seeds and power under it.
"""

from __future__ import annotations

import csv
from pathlib import Path

from activeseg.report.summary import PHASES

NONE = "—"
LABELS = {"dice": "Dice", "accuracy": "accuracy"}
UNITS = {"dice": ("patch", "patches"), "accuracy": ("item", "items")}  # what the per-item Wilcoxon test pairs


def _label(summary: dict) -> str:
    return LABELS[summary.get("metric", "dice")]


def _mean_sd(mean: float | None, sd: float | None, n: int) -> str:
    if mean is None:
        return NONE
    return f"{mean:.3f} ± {sd:.3f}" if n > 1 and sd is not None else f"{mean:.3f}"


def _p(p: float | None) -> str:
    if p is None:
        return NONE
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _seconds(x: float | None) -> str:
    if x is None:
        return NONE
    return f"{x:.2f}" if x >= 0.01 or x == 0 else f"{x:.2g}"


def _diff(c: dict | None, n_seeds: int | None = None) -> str:
    """``"+0.012 [+0.004, +0.020]"``: the mean paired AULC difference and its bootstrap CI."""
    if c is None:
        return NONE
    if c["mean_diff"] is None:
        return "no paired seeds"
    ci = c["ci"]
    cell = f"{c['mean_diff']:+.3f} " + ("(1 pair: no CI)" if ci is None else f"[{ci[0]:+.3f}, {ci[1]:+.3f}]")
    return cell if n_seeds is None or c["pairs"] == n_seeds else f"{cell} ({c['pairs']} pairs)"


def _efficiency(e: dict | None) -> str:
    """``"1.50× [1.20, 1.90] (2/3 pairs)"``; ``"not reached (0/3 pairs)"`` when no pair both reached it."""
    if e is None:
        return NONE
    if e["pairs"] == 0:
        return "n/a"
    counts = f"({e['both_reached']}/{e['pairs']} pairs both reached)"
    if e["ratio"] is None:
        return f"not reached {counts}"
    ci = "" if e["ci"] is None else f" [{e['ci'][0]:.2f}, {e['ci'][1]:.2f}]"
    return f"{e['ratio']:.2f}×{ci} {counts}"


def _target(s: dict, t: int = 0, each_seed: bool = True) -> str:
    """``"10.0 (2/2) [8, 12]"``: mean over the seeds that reached target ``t`` (reached/seeds with a
    target) [each seed, with ``each_seed``]; ``"n/a"`` when no seed has a reference."""
    row = s["targets"][t]
    if row["seeds"] == 0:
        return "n/a"
    head = "not reached" if row["annotations_mean"] is None else f"{row['annotations_mean']:.1f}"
    head = f"{head} ({row['reached']}/{row['seeds']})"
    if not each_seed:
        return f"{head[:-1]} reached)"
    per_seed = []
    for p in s["per_seed"]:
        seed_t = p["targets"][t]
        n = seed_t["annotations"]
        per_seed.append("n/a" if seed_t["target"] is None else "not reached" if n is None else str(n))
    return f"{head} [{', '.join(per_seed)}]"


def budget_name(summary: dict) -> str:
    """What the report's budgets count: ``annotations``, ``clicks`` or ``labelled pixels``."""
    from activeseg.report.summary import BUDGETS

    return BUDGETS[(summary.get("endpoint") or {}).get("budget", "n_annotations")]


def target_name(summary: dict, t: int = 0) -> str:
    """``"95% of full pool"``, ``"Dice 0.850"`` or ``"error 5.0%"`` (an absolute accuracy target)."""
    spec = summary["targets"][t] if "targets" in summary else {"fraction": summary["target_fraction"],
                                                                 "target": summary.get("target")}
    if spec["fraction"] is not None:
        return f"{spec['fraction']:.0%} of full pool"
    if summary.get("metric") == "accuracy":
        return f"error {100 * (1 - spec['target']):.1f}%"
    return f"{_label(summary)} {spec['target']:.3f}"


def reference_cell(summary: dict, t: int = 0) -> str:
    """``"ref 0.850 ± 0.071, n=2"``: the full-pool reference that target ``t`` is a fraction of."""
    spec = summary["targets"][t]
    if spec["fraction"] is None:
        return "absolute"
    if spec["reference_mean"] is None:
        return "no reference"
    return f"ref {_mean_sd(spec['reference_mean'], spec['reference_sd'], spec['reference_seeds'])}, " \
           f"n={spec['reference_seeds']}"


def main_table(summary: dict) -> tuple[list[str], list[list[str]]]:
    """Header and one row per strategy, then one random-vs-random check row per random baseline."""
    metric, label = summary.get("metric", "dice"), _label(summary)
    header = ["strategy", "seeds", f"final test {label}", f"AULC log2 (test {label})", "Δ AULC vs random [95% CI]",
              "paired t p", "Wilcoxon p (seeds)", "Holm p", f"{budget_name(summary)} to {target_name(summary)} "
              f"({reference_cell(summary)})", "efficiency vs random [95% CI]",
              f"per-{UNITS[metric][0]} Wilcoxon, not independent"]
    rows, baselines = [], {check["baseline"] for check in summary.get("checks", [])}
    for name, s in summary["strategies"].items():
        n, c = len(s["seeds"]), s["comparison"]
        diff = "baseline" if name in baselines else _diff(c, n)
        rows.append([name, str(n), _mean_sd(s[f"final_test_{metric}_mean"], s[f"final_test_{metric}_sd"], n),
                     _mean_sd(s["aulc_log2_mean"], s["aulc_log2_sd"], n), diff,
                     _p(c and c["p_t"]), _p(c and c["p_wilcoxon"]), _p(c and c["p_holm"]), _target(s, 0, False),
                     _efficiency(s["targets"][0]["efficiency"]), _p(s["wilcoxon_p_vs_random"])])
    for check in summary.get("checks", []):
        c = check["comparison"]
        seeds = str(len(check["seeds"])) if c is None else f"{c['pairs']} vs {c['pairs']}"
        rows.append([check["name"], seeds, NONE, NONE, check["note"] if c is None else _diff(c),
                     _p(c and c["p_t"]), _p(c and c["p_wilcoxon"]), "excluded (check)", NONE, NONE, NONE])
    return header, rows


def targets_table(summary: dict) -> tuple[list[str], list[list[str]]]:
    """Every target (primary and secondary) × strategy: annotations to it and the efficiency vs random."""
    header = ["strategy", "target", "full-pool reference", f"{budget_name(summary)} (reached/seeds) [each seed]",
              "efficiency vs random [95% CI]"]
    rows = [[name, target_name(summary, t), reference_cell(summary, t), _target(s, t),
             _efficiency(s["targets"][t]["efficiency"])]
            for t in range(len(summary["targets"])) for name, s in summary["strategies"].items()]
    return header, rows


def best_val_table(summary: dict) -> tuple[list[str], list[list[str]]]:
    """A secondary, paper-style table (Nath et al. 2020, Tables 1-2): per strategy the best validation
    score over rounds, the test score at that round, the data used then, and the per-item Wilcoxon
    p-value against random at the best-validation rounds (``*``: p < 0.05; items are not independent)."""
    metric, label = summary.get("metric", "dice"), _label(summary)
    header = ["strategy", f"best val {label}", f"its test {label}", "% data used",
              f"per-{UNITS[metric][0]} Wilcoxon at best val, not independent"]
    rows = []
    for name, s in summary["strategies"].items():
        n, p, pct = len(s["seeds"]), s["wilcoxon_p_best_val_vs_random"], s["pct_data_at_best_val_mean"]
        rows.append([
            name,
            _mean_sd(s[f"best_val_{metric}_mean"], s[f"best_val_{metric}_sd"], n),
            _mean_sd(s[f"test_{metric}_at_best_val_mean"], s[f"test_{metric}_at_best_val_sd"], n)
            + ("*" if p is not None and p < 0.05 else ""),
            NONE if pct is None else f"{pct:.1f} %",
            _p(p),
        ])
    return header, rows


def timing_table(summary: dict) -> tuple[list[str], list[list[str]]]:
    """Header and one row per strategy: mean seconds per round of each phase."""
    header = ["strategy", *(f"{phase} s" for phase in PHASES)]
    rows = [[name, *(_seconds(s["seconds_per_round"][phase]) for phase in PHASES)]
            for name, s in summary["strategies"].items()]
    return header, rows


def _power_note(name: str, c: dict) -> str:
    if c["sd_diff"] is None:
        return f"{name}: {c['pairs']} paired seed(s); σ_d needs at least 2."
    return (f"{name}: {c['pairs']} paired seeds, σ_d = {c['sd_diff']:.4f}; seeds needed for δ = {c['delta']:g}: "
            f"{c['n_recommended']}; smallest detectable difference with {c['pairs']} seeds: "
            f"{c['min_detectable']:.4f}.")


def notes(summary: dict) -> list[str]:
    """Sentences that say how the main table's columns were computed, and the power of the comparison."""
    label, (unit, units) = _label(summary), UNITS[summary.get("metric", "dice")]
    end, spent = summary.get("endpoint") or {}, budget_name(summary)
    if end.get("start") is None:
        endpoint = f"Primary endpoint AULC log2: n/a (no range of {spent} that every run covers)."
    else:
        source = ("the largest budget every run of this report reached" if end["end_is_default"]
                  else "given in advance")
        endpoint = (f"Primary endpoint, fixed in advance: each seed's AULC of test {label} on a log2({spent}) "
                    f"axis from {end['start']:g} to {end['end']:g} {spent} (end: {source}), divided by "
                    f"log2({end['end']:g}/{end['start']:g}): the curve's mean height; runs not covering that range "
                    "are left out of the pairs.")
    out = [
        f"Final test {label} and AULC log2: mean ± sd over seeds.",
        endpoint,
        "Δ AULC vs random: strategy − random per seed (paired by seed: the same initial set and split), mean over "
        f"seeds with a {end.get('level', 0.95):.0%} percentile bootstrap CI ({end.get('n_resamples', 10000):,} "
        "resamples of seeds, fixed seed); paired t-test and Wilcoxon signed-rank test over seeds; Holm p: the "
        f"paired t p adjusted by Holm-Bonferroni over the {len(end.get('holm_family', []))} comparison(s) "
        "of this report (check rows excluded).",
        "random vs random (check): random's seeds sorted and split into two disjoint halves (first vs second, "
        "paired in order), tested the same way; a small p there means the test is not to be trusted on these "
        "runs.",
    ]
    out += [_power_note(name, s["comparison"]) for name, s in summary["strategies"].items() if s["comparison"]]
    out.append("Seeds needed: max(10, ⌈(2.8·σ_d/δ)²⌉) for a two-sided α = 0.05 at power 0.8, σ_d the sd of the "
               "per-seed AULC differences; smallest detectable difference 2.8·σ_d/√n.")
    targets = [f"{target_name(summary, t)} ({reference_cell(summary, t)})" for t in range(len(summary["targets"]))]
    out.append(
        f"{spent.capitalize()} to a target ({'; '.join(targets)}): the first budget after which the seed's test "
        f"{label} curve, smoothed by a centred 3-point moving average, stays at or above it (a fraction of that seed's "
        "full-pool reference); mean over the seeds that reached it (reached/seeds with a target; each seed in "
        "the table of every target). "
        f"Efficiency vs random: random's mean {spent} / the strategy's over the seeds where both reached "
        "it, with a bootstrap CI over those seeds.")
    if summary["targets"][0]["fraction"] is not None and summary["reference"] is None:
        out.append("The full-pool reference was not computed, so the targets are n/a "
                   "(run `activeseg simulate` without `--no-reference`).")
    out.append(f"per-{unit} Wilcoxon, not independent: the final round's per-{unit} test {label} paired by seed "
               f"and {unit}, pooled over seeds; the {units} of one network are not independent (two random "
               "seeds differ at p ≈ 1e-9 this way), so it is shown for continuity, not for decisions.")
    return out


def _pipe(header: list[str], rows: list[list[str]]) -> list[str]:
    """A pipe table without outer pipes (valid GFM), so lines starting with "| " are the main table's rows."""
    return [" | ".join(header), " | ".join(["---"] * len(header)), *(" | ".join(row) for row in rows), ""]


def to_markdown(summary: dict) -> str:
    """``summary.md``: the headline table and its notes, then targets, best validation and seconds tables."""
    header, rows = main_table(summary)
    runs = summary["runs"]
    seeds = ", ".join(map(str, sorted({r["seed"] for r in runs})))
    lines = [
        "# activeseg report", "",
        f"{len(runs)} run(s): strategies {', '.join(summary['strategies'])}; seeds {seeds}.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(row) + " |" for row in rows),
        "",
        *(f"- {note}" for note in notes(summary)),
        "",
        f"{budget_name(summary).capitalize()} to every target:", "", *_pipe(*targets_table(summary)),
        "Secondary: at the best-validation round (the paper-style table of Nath et al. 2020: the round with the "
        f"best mean validation {_label(summary)} per run, its test score, annotations / (initial + pool) "
        "then; * marks p < 0.05 in the per-item Wilcoxon test at those rounds against random):",
        "", *_pipe(*best_val_table(summary)),
        "Mean seconds per round (score and select: rounds that selected items only):", "",
        *_pipe(*timing_table(summary)),
    ]
    return "\n".join(lines)


def csv_fields(metric: str = "dice") -> list[str]:
    """The columns of ``summary.csv`` (the score columns are named after the task's metric)."""
    return [
        "strategy", "seeds", f"final_test_{metric}_mean", f"final_test_{metric}_sd", "aulc_log2_mean", "aulc_log2_sd",
        "aulc_diff_vs_random", "aulc_diff_ci_low", "aulc_diff_ci_high", "pairs", "p_t", "p_wilcoxon_seeds",
        "p_holm", "sd_diff", "n_recommended", "min_detectable", "annotations_to_target_mean",
        "annotations_to_target_reached", "annotations_to_target_seeds", "efficiency_vs_random",
        "efficiency_ci_low", "efficiency_ci_high", "efficiency_vs_random_seeds", "wilcoxon_p_per_item_not_independent",
        "aulc_mean", "aulc_sd", *(f"{phase}_seconds_per_round" for phase in PHASES),
    ]


def _comparison_values(c: dict | None) -> dict:
    if c is None:
        return {}
    ci = c["ci"] or [None, None]
    return {"aulc_diff_vs_random": c["mean_diff"], "aulc_diff_ci_low": ci[0], "aulc_diff_ci_high": ci[1],
            "pairs": c["pairs"], "p_t": c["p_t"], "p_wilcoxon_seeds": c["p_wilcoxon"], "p_holm": c.get("p_holm"),
            "sd_diff": c["sd_diff"], "n_recommended": c["n_recommended"], "min_detectable": c["min_detectable"]}


def write_csv(summary: dict, path: str | Path) -> Path:
    """``summary.csv``: the main table's rows, one per strategy (random first), then the check rows;
    empty cells for missing values."""
    path = Path(path)
    fields = csv_fields(summary.get("metric", "dice"))
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(fields)
        for name, s in summary["strategies"].items():
            eff = s["targets"][0]["efficiency"] or {}
            ci = eff.get("ci") or [None, None]
            values = {**s, "strategy": name, "seeds": len(s["seeds"]), **_comparison_values(s["comparison"]),
                      "efficiency_vs_random": eff.get("ratio"), "efficiency_ci_low": ci[0],
                      "efficiency_ci_high": ci[1], "wilcoxon_p_per_item_not_independent": s["wilcoxon_p_vs_random"],
                      **{f"{phase}_seconds_per_round": s["seconds_per_round"][phase] for phase in PHASES}}
            writer.writerow(["" if values.get(f) is None else values[f] for f in fields])
        for check in summary.get("checks", []):
            values = {"strategy": check["name"], "seeds": len(check["seeds"]),
                      **_comparison_values(check["comparison"])}
            writer.writerow(["" if values.get(f) is None else values[f] for f in fields])
    return path
