"""The numbers that compare strategies: the final test score, area under the learning curve,
annotations to a target, a paired test against random, and time per phase. Plain dicts, JSON-safe
(None, never NaN).

The score is the task's primary metric: Dice for segmentation runs, accuracy for classification runs
(keys such as ``final_test_dice_mean`` / ``final_test_accuracy_mean`` name it).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from activeseg.metrics import annotations_to_target, area_under_curve, best_round, efficiency_ratio, wilcoxon_paired
from activeseg.report.runs import Run, group_by_strategy, references_by_seed

PHASES = ("train", "evaluate", "score", "select")
BASELINE = "random"
METRICS = ("dice", "accuracy")  # what a segmentation / classification ledger records per round


def run_metric(run: Run) -> str:
    """``dice`` for a segmentation run, ``accuracy`` for a classification run (from its first record)."""
    test = run.records[0]["test"]
    for metric in METRICS:
        if metric in test:
            return metric
    raise ValueError(f"{run.run_dir}: the ledger's test scores {sorted(test)} have neither Dice nor accuracy")


def _num(x) -> float | None:
    """A finite float, or None for None/NaN/inf."""
    return None if x is None or not np.isfinite(x) else float(x)


def _mean_sd(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (ddof=1; 0.0 for one value) of the non-None values."""
    finite = np.array([v for v in values if v is not None and np.isfinite(v)], dtype=np.float64)
    if finite.size == 0:
        return None, None
    sd = float(np.std(finite, ddof=1)) if finite.size > 1 else 0.0
    return float(np.mean(finite)), sd


def _rounds(run: Run) -> list[dict]:
    return sorted(run.records, key=lambda rec: rec["round"])


def seed_summary(run: Run, target_fraction: float = 0.95, metric: str = "dice", target: float | None = None) -> dict:
    """One seed's final test ``metric``, AULC and annotations to ``target_fraction`` of its reference
    (or to the absolute score ``target`` when given)."""
    records = _rounds(run)
    n_annotations_R = [rec["n_annotations"] for rec in records]
    score_R = [np.nan if rec["test"][metric] is None else rec["test"][metric] for rec in records]
    ref = _num((run.reference or {}).get(f"test_{metric}"))
    if target is None:
        target = None if ref is None else target_fraction * ref
    best = records[best_round([rec["val"][metric] for rec in records])]
    pool_size = best.get("pool_size")
    return {
        "seed": run.seed,
        "rounds": len(records),
        "final_n_annotations": int(n_annotations_R[-1]),
        f"final_test_{metric}": _num(score_R[-1]),
        "aulc": _num(area_under_curve(n_annotations_R, score_R)),
        f"reference_test_{metric}": ref,
        "target": target,
        "annotations_to_target": (
            None if target is None else annotations_to_target(n_annotations_R, score_R, target)
        ),
        "best_val_round": int(best["round"]),
        f"best_val_{metric}": _num(best["val"][metric]),
        f"test_{metric}_at_best_val": _num(best["test"][metric]),
        "n_annotations_at_best_val": int(best["n_annotations"]),
        "pct_data_at_best_val": None if not pool_size else 100.0 * best["n_annotations"] / pool_size,
    }


def _test_per_item(run: Run, metric: str, at: str = "final") -> np.ndarray | None:
    """Per-item test ``metric`` of the final round, or of the best-validation round (``at="best_val"``)."""
    records = _rounds(run)
    rec = records[-1] if at == "final" else records[best_round([r["val"][metric] for r in records])]
    values = (rec.get("test_per_item") or {}).get(metric)
    return None if values is None else np.asarray(values, dtype=np.float64)


def wilcoxon_vs(group: Sequence[Run], baseline: Sequence[Run], metric: str = "dice",
                at: str = "final") -> tuple[float | None, int]:
    """Wilcoxon p-value of per-item test ``metric`` at the final (or each run's best-validation,
    ``at="best_val"``) round, paired by (seed, test item).

    Only seeds present in both groups count. Returns ``(p, n_pairs)``; p is None without pairs.
    """
    base_by_seed = {run.seed: run for run in baseline}
    a, b = [], []
    for run in group:
        base = base_by_seed.get(run.seed)
        if base is None:
            continue
        x, y = _test_per_item(run, metric, at), _test_per_item(base, metric, at)
        if x is None or y is None:
            continue
        if x.shape != y.shape:
            warnings.warn(
                f"{run.label} and {base.label} were tested on different numbers of items "
                f"({x.size} vs {y.size}); seed {run.seed} is left out of the paired test",
                stacklevel=2,
            )
            continue
        last, last_base = _rounds(run)[-1]["round"], _rounds(base)[-1]["round"]
        if at == "final" and last != last_base:
            warnings.warn(
                f"{run.label} ends at round {last} but {base.label} at {last_base}; "
                "the paired test compares unequal budgets",
                stacklevel=2,
            )
        a.append(x)
        b.append(y)
    if not a:
        return None, 0
    a_P, b_P = np.concatenate(a), np.concatenate(b)
    return _num(wilcoxon_paired(a_P, b_P)), int(a_P.size)


def seconds_per_round(group: Sequence[Run]) -> dict[str, float | None]:
    """Mean seconds per round of each phase; score and select only over rounds that selected items."""
    out = {}
    for phase in PHASES:
        values = [
            rec["seconds"][phase]
            for run in group
            for rec in run.records
            if phase in (rec.get("seconds") or {}) and (phase in ("train", "evaluate") or rec.get("selected"))
        ]
        out[phase] = _num(np.mean(values)) if values else None
    return out


def strategy_summary(
    group: Sequence[Run], baseline: Sequence[Run] | None, target_fraction: float = 0.95, metric: str = "dice",
    target: float | None = None,
) -> dict:
    """Per-seed numbers of one strategy and their mean/sd over seeds."""
    per_seed = [seed_summary(run, target_fraction, metric, target) for run in group]
    final_mean, final_sd = _mean_sd([p[f"final_test_{metric}"] for p in per_seed])
    aulc_mean, aulc_sd = _mean_sd([p["aulc"] for p in per_seed])
    with_target = [p for p in per_seed if p["target"] is not None]
    reached = [p["annotations_to_target"] for p in with_target if p["annotations_to_target"] is not None]
    p_value, n_pairs = (None, 0) if baseline is None else wilcoxon_vs(group, baseline, metric)
    p_best, _ = (None, 0) if baseline is None else wilcoxon_vs(group, baseline, metric, at="best_val")
    best_val = _mean_sd([p[f"best_val_{metric}"] for p in per_seed])
    at_best = _mean_sd([p[f"test_{metric}_at_best_val"] for p in per_seed])
    pct = _mean_sd([p["pct_data_at_best_val"] for p in per_seed])
    ratios, p_seeds = [], None
    if baseline is not None:
        base_by_seed = {p["seed"]: p for p in (seed_summary(r, target_fraction, metric, target) for r in baseline)}
        paired = [(p, base_by_seed[p["seed"]]) for p in per_seed if p["seed"] in base_by_seed]
        ratios = [r for p, b in paired
                  if (r := efficiency_ratio(b["annotations_to_target"], p["annotations_to_target"])) is not None]
        if paired:
            p_seeds = _num(wilcoxon_paired([p["aulc"] for p, _ in paired], [b["aulc"] for _, b in paired]))
    return {
        "seeds": [p["seed"] for p in per_seed],
        "per_seed": per_seed,
        f"final_test_{metric}_mean": final_mean,
        f"final_test_{metric}_sd": final_sd,
        "aulc_mean": aulc_mean,
        "aulc_sd": aulc_sd,
        "annotations_to_target_mean": _mean_sd(reached)[0],
        "annotations_to_target_reached": len(reached),
        "annotations_to_target_seeds": len(with_target),
        "wilcoxon_p_vs_random": p_value,
        "wilcoxon_pairs": n_pairs,
        f"best_val_{metric}_mean": best_val[0],
        f"best_val_{metric}_sd": best_val[1],
        f"test_{metric}_at_best_val_mean": at_best[0],
        f"test_{metric}_at_best_val_sd": at_best[1],
        "pct_data_at_best_val_mean": pct[0],
        "wilcoxon_p_best_val_vs_random": p_best,
        "wilcoxon_p_seeds_aulc_vs_random": p_seeds,
        "efficiency_vs_random_mean": _mean_sd(ratios)[0],
        "efficiency_vs_random_seeds": len(ratios),
        "seconds_per_round": seconds_per_round(group),
    }


def reference_summary(runs: Sequence[Run], metric: str = "dice") -> dict | None:
    """The full-pool reference per seed and its mean, or None when no run has one."""
    refs = references_by_seed(runs)
    if not refs:
        return None
    test, val = f"test_{metric}", f"val_{metric}"
    per_seed = [
        {"seed": seed, test: _num(ref.get(test)), val: _num(ref.get(val)), "n_annotations": ref.get("n_annotations")}
        for seed, ref in refs.items()
    ]
    test_mean, test_sd = _mean_sd([p[test] for p in per_seed])
    return {f"{test}_mean": test_mean, f"{test}_sd": test_sd,
            f"{val}_mean": _mean_sd([p[val] for p in per_seed])[0], "per_seed": per_seed}


def summarize(runs: Sequence[Run], target_fraction: float = 0.95, target: float | None = None) -> dict:
    """Compare the strategies of ``runs``; ``random`` (when present) is the baseline of the paired test.

    Args:
        runs: runs from :func:`activeseg.report.find_runs`; runs without a finished round are left out.
            All of one task: Dice compares segmentation runs, accuracy classification runs.
        target_fraction: annotations-to-target counts the annotations needed to reach this fraction
            of each seed's full-pool reference test score...
        target: ...or this absolute test score (Dice, or accuracy: 0.95 is an error rate of 5%).

    Returns:
        ``{"metric", "target_fraction", "reference", "strategies": {name: {...}}, "runs": [...]}``,
        JSON-safe.
    """
    finished = []
    for run in runs:
        if run.records:
            finished.append(run)
        else:
            warnings.warn(
                f"{run.run_dir} has no finished round yet; it is left out of the report", stacklevel=2
            )
    if not finished:
        raise ValueError("no run has a finished round yet; wait for `activeseg simulate` to finish one")
    metrics = {str(run.run_dir): run_metric(run) for run in finished}
    if len(set(metrics.values())) > 1:
        seg = next(d for d, m in metrics.items() if m == "dice")
        cls = next(d for d, m in metrics.items() if m == "accuracy")
        raise ValueError(
            f"cannot compare segmentation runs ({seg}) with classification runs ({cls}) in one report; "
            "run `activeseg report` on each task's folders separately"
        )
    metric = next(iter(metrics.values()))
    groups = group_by_strategy(finished)

    def baseline_of(name: str, group: list[Run]) -> list[Run] | None:
        """Random runs of the same sweep group (None for random itself)."""
        base = BASELINE if not group[0].group else f"{BASELINE} [{group[0].group}]"
        return None if name == base else groups.get(base)

    return {
        "metric": metric,
        "target_fraction": target_fraction,
        "target": target,
        "reference": reference_summary(finished, metric),
        "strategies": {
            name: strategy_summary(group, baseline_of(name, group), target_fraction, metric, target)
            for name, group in groups.items()
        },
        "runs": [
            {"strategy": run.strategy, "group": run.group, "seed": run.seed, "rounds": len(run.records),
             "run_dir": str(run.run_dir.resolve())}
            for group in groups.values() for run in group
        ],
    }
