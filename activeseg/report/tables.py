"""The summary as tables: cells shared by Markdown (``summary.md``), HTML and CSV (``summary.csv``)."""

from __future__ import annotations

import csv
from pathlib import Path

from activeseg.report.summary import PHASES

NONE = "—"
LABELS = {"dice": "Dice", "accuracy": "accuracy"}


def _label(summary: dict) -> str:
    return LABELS[summary.get("metric", "dice")]


def _mean_sd(mean: float | None, sd: float | None, n: int) -> str:
    if mean is None:
        return NONE
    return f"{mean:.3f} ± {sd:.3f}" if n > 1 and sd is not None else f"{mean:.3f}"


def _target(s: dict) -> str:
    """``"10.0 (2/2) [8, 12]"``: mean over the seeds that reached the target (reached/seeds with a
    reference) [each seed]; ``"n/a"`` when no seed has a reference."""
    if s["annotations_to_target_seeds"] == 0:
        return "n/a"
    per_seed = []
    for p in s["per_seed"]:
        if p["target"] is None:
            per_seed.append("n/a")
        else:
            n = p["annotations_to_target"]
            per_seed.append("not reached" if n is None else str(n))
    mean = s["annotations_to_target_mean"]
    head = "not reached" if mean is None else f"{mean:.1f}"
    counts = f"{s['annotations_to_target_reached']}/{s['annotations_to_target_seeds']}"
    return f"{head} ({counts}) [{', '.join(per_seed)}]"


def _p(p: float | None) -> str:
    if p is None:
        return NONE
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _seconds(x: float | None) -> str:
    if x is None:
        return NONE
    return f"{x:.2f}" if x >= 0.01 or x == 0 else f"{x:.2g}"


def target_name(summary: dict) -> str:
    """``"95% of full pool"``, ``"Dice 0.850"`` or ``"error 5.0%"`` (an absolute accuracy target)."""
    target = summary.get("target")
    if target is None:
        return f"{summary['target_fraction']:.0%} of full pool"
    if summary.get("metric") == "accuracy":
        return f"error {100 * (1 - target):.1f}%"
    return f"{_label(summary)} {target:.3f}"


def main_table(summary: dict) -> tuple[list[str], list[list[str]]]:
    """Header and one row per strategy: seeds, final test Dice, AULC, annotations to target, p."""
    metric, label = summary.get("metric", "dice"), _label(summary)
    header = ["strategy", "seeds", f"final test {label}", f"AULC (test {label})",
              f"annotations to {target_name(summary)}", "p vs random"]
    rows = []
    for name, s in summary["strategies"].items():
        n = len(s["seeds"])
        rows.append([name, str(n), _mean_sd(s[f"final_test_{metric}_mean"], s[f"final_test_{metric}_sd"], n),
                     _mean_sd(s["aulc_mean"], s["aulc_sd"], n), _target(s), _p(s["wilcoxon_p_vs_random"])])
    return header, rows


def best_val_table(summary: dict) -> tuple[list[str], list[list[str]]]:
    """The paper-style table (Nath et al. 2020, Tables 1-2): per strategy the best validation score over
    rounds, the test score at that round, the data used then, the Wilcoxon p-value against random at
    the best-validation rounds (``*``: p < 0.05) and the labelling efficiency against random."""
    metric, label = summary.get("metric", "dice"), _label(summary)
    header = ["strategy", f"best val {label}", f"its test {label}", "% data used", "p vs random (best val)",
              "efficiency vs random"]
    rows = []
    for name, s in summary["strategies"].items():
        n = len(s["seeds"])
        p = s["wilcoxon_p_best_val_vs_random"]
        pct = s["pct_data_at_best_val_mean"]
        ratio = s["efficiency_vs_random_mean"]
        rows.append([
            name,
            _mean_sd(s[f"best_val_{metric}_mean"], s[f"best_val_{metric}_sd"], n),
            _mean_sd(s[f"test_{metric}_at_best_val_mean"], s[f"test_{metric}_at_best_val_sd"], n)
            + ("*" if p is not None and p < 0.05 else ""),
            NONE if pct is None else f"{pct:.1f} %",
            _p(p),
            NONE if ratio is None else f"{ratio:.2f}× ({s['efficiency_vs_random_seeds']} seed(s))",
        ])
    return header, rows


def timing_table(summary: dict) -> tuple[list[str], list[list[str]]]:
    """Header and one row per strategy: mean seconds per round of each phase."""
    header = ["strategy", *(f"{phase} s" for phase in PHASES)]
    rows = [[name, *(_seconds(s["seconds_per_round"][phase]) for phase in PHASES)]
            for name, s in summary["strategies"].items()]
    return header, rows


def notes(summary: dict) -> list[str]:
    """Sentences that say how the main table's columns were computed."""
    pct = f"{summary['target_fraction']:.0%}"
    metric, label = summary.get("metric", "dice"), _label(summary)
    ref = summary["reference"]
    if summary.get("target") is not None:
        target = (f"Annotations to {target_name(summary)}: the annotations at the first round whose test {label} "
                  "reaches it; shown as the mean over the seeds that reached it (reached/seeds) [each seed].")
    elif ref is None:
        target = (f"Annotations to {pct} of full pool: n/a, the full-pool reference was not computed "
                  "(run `activeseg simulate` without `--no-reference`).")
    else:
        target = (f"Annotations to {pct} of full pool: the annotations at the first round whose test {label} "
                  f"reaches {pct} of that seed's full-pool reference (mean reference test {label} "
                  f"{ref[f'test_{metric}_mean']:.3f} over {len(ref['per_seed'])} seed(s)); shown as the mean "
                  "over the seeds that reached it (reached/seeds with a reference) [each seed].")
    return [
        f"Final test {label} and AULC (area under the test-{label} learning curve divided by its annotation "
        "range): mean ± sd over seeds.",
        target,
        f"p vs random: two-sided Wilcoxon signed-rank test on the final round's per-item test {label}, paired "
        "by seed and test item; — when there is no random run to compare with (or the ledgers hold no "
        "per-item scores).",
    ]


def to_markdown(summary: dict) -> str:
    """``summary.md``: the main table, notes, and a second table of seconds per round."""
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
        "At the best-validation round (the paper-style table of Nath et al. 2020: the round with the "
        f"best mean validation {_label(summary)} per run, its test score, annotations / (initial + pool) "
        "then; * marks p < 0.05 in the Wilcoxon test of per-item test scores at those rounds against "
        "random; efficiency: random's annotations to the target divided by the strategy's):",
        "",
    ]
    header, rows = best_val_table(summary)
    lines += [" | ".join(header), " | ".join(["---"] * len(header)), *(" | ".join(row) for row in rows), "",
              "Mean seconds per round (score and select: rounds that selected items only):", ""]
    # Pipe tables without outer pipes (valid GFM), so lines starting with "| " are the main table's rows.
    header, rows = timing_table(summary)
    lines += [" | ".join(header), " | ".join(["---"] * len(header)), *(" | ".join(row) for row in rows), ""]
    return "\n".join(lines)


def csv_fields(metric: str = "dice") -> list[str]:
    """The columns of ``summary.csv`` (the score columns are named after the task's metric)."""
    return [
        "strategy", "seeds", f"final_test_{metric}_mean", f"final_test_{metric}_sd", "aulc_mean", "aulc_sd",
        "annotations_to_target_mean", "annotations_to_target_reached", "annotations_to_target_seeds",
        "wilcoxon_p_vs_random", *(f"{phase}_seconds_per_round" for phase in PHASES),
    ]


def write_csv(summary: dict, path: str | Path) -> Path:
    """``summary.csv``: one row per strategy (random first), empty cells for missing values."""
    path = Path(path)
    fields = csv_fields(summary.get("metric", "dice"))
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(fields)
        for name, s in summary["strategies"].items():
            values = {**s, "strategy": name, "seeds": len(s["seeds"]),
                      **{f"{phase}_seconds_per_round": s["seconds_per_round"][phase] for phase in PHASES}}
            writer.writerow(["" if values[f] is None else values[f] for f in fields])
    return path
