"""The numbers that compare strategies: the final test score, area under the learning curve,
annotations to targets, the seed-paired comparison with random, and time per phase. Plain dicts,
JSON-safe (None, never NaN).

The unit of a comparison is the seed (:mod:`activeseg.statistics`): each strategy's per-seed AULC on a
log2-budget axis is paired with random's of the same seed. The per-item Wilcoxon test
(:func:`wilcoxon_vs`, pooling (seed, test item) pairs, which are not independent) is kept as a secondary
number only.

The score is the task's primary metric: Dice for segmentation runs, accuracy for classification runs
(keys such as ``final_test_dice_mean`` / ``final_test_accuracy_mean`` name it).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from activeseg import statistics as st
from activeseg.metrics import area_under_curve, best_round, wilcoxon_paired
from activeseg.report.runs import Run, group_by_strategy, references_by_seed

PHASES = ("train", "evaluate", "score", "select")
BASELINE = "random"
METRICS = ("dice", "accuracy")  # what a segmentation / classification ledger records per round
EXTRA_FRACTIONS = (0.90,)  # secondary targets, beside the primary target_fraction
DELTA = 0.01  # the AULC difference the seeds-needed calculation is for
LEVEL = 0.95  # every CI's coverage


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


def _rounds(run: Run) -> list[dict]:
    return sorted(run.records, key=lambda rec: rec["round"])


def target_specs(target_fraction: float = 0.95, target: float | None = None,
                 extra_fractions: Sequence[float] = EXTRA_FRACTIONS) -> list[dict]:
    """The report's targets, the first the primary: ``{"fraction", "target"}``, one of them None (the
    absolute ``target`` alone, or ``target_fraction`` and then ``extra_fractions`` of the reference)."""
    if target is not None:
        return [{"fraction": None, "target": float(target)}]
    fractions = dict.fromkeys([float(target_fraction), *map(float, extra_fractions)])
    return [{"fraction": f, "target": None} for f in fractions]


BUDGETS = {"n_annotations": "annotations", "cost": "clicks", "labelled_pixels": "labelled pixels"}
"""What a budget can count (the records' key -> its name in tables)."""


def _budget(rec: dict, budget: str, run: Run) -> float:
    if budget not in rec:
        raise ValueError(f"{run.run_dir}: round {rec['round']} records no {budget!r} (runs before 2026-12-07 and "
                         "classification runs record annotations only); use budget='n_annotations'")
    return rec[budget]


def seed_summary(run: Run, target_fraction: float = 0.95, metric: str = "dice", target: float | None = None,
                 aulc_range: tuple[float, float] | None = None,
                 extra_fractions: Sequence[float] = EXTRA_FRACTIONS, budget: str = "n_annotations") -> dict:
    """One seed's final test ``metric``, AULC (linear and, over ``aulc_range``, log2) and the budget to
    each target (:func:`target_specs`; a fraction of the seed's own full-pool reference, or absolute),
    reached where the smoothed curve stays above it (:func:`annotations_to_stable_target`). ``budget``: the
    records' key the budget is read from (``BUDGETS``: annotations, clicks or labelled pixels)."""
    records = _rounds(run)
    n_annotations_R = [_budget(rec, budget, run) for rec in records]
    score_R = [np.nan if rec["test"][metric] is None else rec["test"][metric] for rec in records]
    ref = _num((run.reference or {}).get(f"test_{metric}"))
    targets = []
    for spec in target_specs(target_fraction, target, extra_fractions):
        value = spec["target"] if spec["fraction"] is None else None if ref is None else spec["fraction"] * ref
        reach = None if value is None else st.annotations_to_stable_target(n_annotations_R, score_R, value)
        targets.append({"target": value, "annotations": reach})
    best = records[best_round([rec["val"][metric] for rec in records])]
    pool_size = best.get("pool_size")
    return {
        "seed": run.seed,
        "rounds": len(records),
        "final_n_annotations": int(records[-1]["n_annotations"]),
        "final_budget": _num(n_annotations_R[-1]),
        f"final_test_{metric}": _num(score_R[-1]),
        "aulc": _num(area_under_curve(n_annotations_R, score_R)),
        "aulc_log2": None if aulc_range is None else _num(st.aulc_log2(n_annotations_R, score_R, *aulc_range)),
        f"reference_test_{metric}": ref,
        "target": targets[0]["target"],
        "annotations_to_target": targets[0]["annotations"],
        "targets": targets,
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
            warnings.warn(f"{run.label} and {base.label} were tested on different numbers of items "
                          f"({x.size} vs {y.size}); seed {run.seed} is left out of the paired test", stacklevel=2)
            continue
        last, last_base = _rounds(run)[-1]["round"], _rounds(base)[-1]["round"]
        if at == "final" and last != last_base:
            warnings.warn(f"{run.label} ends at round {last} but {base.label} at {last_base}; "
                          "the paired test compares unequal budgets", stacklevel=2)
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


def _target_rows(per_seed: list[dict], base: dict[int, dict] | None, specs: list[dict], n_resamples: int,
                 seed: int) -> list[dict]:
    """Per target: seeds with a target, seeds that reached it, their mean annotations, and the efficiency
    against random (None without a baseline) over the seeds paired with it."""
    rows = []
    for t, spec in enumerate(specs):
        with_target = [p for p in per_seed if p["targets"][t]["target"] is not None]
        reached = [p["targets"][t]["annotations"] for p in with_target if p["targets"][t]["annotations"] is not None]
        eff = None
        if base is not None:
            paired = [(base[p["seed"]]["targets"][t], p["targets"][t]) for p in with_target if p["seed"] in base]
            paired = [(b["annotations"], a["annotations"]) for b, a in paired if b["target"] is not None]
            eff = st.efficiency([b for b, _ in paired], [a for _, a in paired], n_resamples, seed=seed)
        rows.append({**spec, "seeds": len(with_target), "reached": len(reached),
                     "annotations_mean": st.mean_sd(reached)[0], "efficiency": eff})
    return rows


def strategy_summary(
    group: Sequence[Run], baseline: Sequence[Run] | None, target_fraction: float = 0.95, metric: str = "dice",
    target: float | None = None, *, aulc_range: tuple[float, float] | None = None,
    extra_fractions: Sequence[float] = EXTRA_FRACTIONS, delta: float = DELTA, n_resamples: int = st.N_RESAMPLES,
    seed: int = 0, budget: str = "n_annotations",
) -> dict:
    """Per-seed numbers of one strategy, their mean/sd over seeds, and (with a ``baseline``) the
    seed-paired comparison of AULC(log2) (:func:`activeseg.statistics.paired_comparison`; ``p_holm`` is
    filled in by :func:`summarize`) and the efficiency at each target."""
    args = (target_fraction, metric, target, aulc_range, extra_fractions, budget)
    per_seed = [seed_summary(run, *args) for run in group]
    base = None if baseline is None else {p["seed"]: p for p in (seed_summary(r, *args) for r in baseline)}
    comparison = None
    if base is not None:
        common = [p for p in per_seed if p["seed"] in base]
        comparison = st.paired_comparison([p["seed"] for p in common], [p["aulc_log2"] for p in common],
                                          [base[p["seed"]]["aulc_log2"] for p in common], delta, n_resamples,
                                          seed=seed)
        comparison["p_holm"] = None
    targets = _target_rows(per_seed, base, target_specs(target_fraction, target, extra_fractions), n_resamples, seed)
    primary, eff = targets[0], targets[0]["efficiency"] or {}
    p_value, n_pairs = (None, 0) if baseline is None else wilcoxon_vs(group, baseline, metric)
    p_best, _ = (None, 0) if baseline is None else wilcoxon_vs(group, baseline, metric, at="best_val")
    out = {"seeds": [p["seed"] for p in per_seed], "per_seed": per_seed}
    for key in (f"final_test_{metric}", "aulc", "aulc_log2", f"best_val_{metric}", f"test_{metric}_at_best_val"):
        out[f"{key}_mean"], out[f"{key}_sd"] = st.mean_sd([p[key] for p in per_seed])
    return {
        **out,
        "comparison": comparison,
        "targets": targets,
        "annotations_to_target_mean": primary["annotations_mean"],
        "annotations_to_target_reached": primary["reached"],
        "annotations_to_target_seeds": primary["seeds"],
        "efficiency_vs_random_mean": eff.get("ratio"),
        "efficiency_vs_random_ci": eff.get("ci"),
        "efficiency_vs_random_seeds": eff.get("both_reached", 0),
        "wilcoxon_p_vs_random": p_value,
        "wilcoxon_pairs": n_pairs,
        "pct_data_at_best_val_mean": st.mean_sd([p["pct_data_at_best_val"] for p in per_seed])[0],
        "wilcoxon_p_best_val_vs_random": p_best,
        "seconds_per_round": seconds_per_round(group),
    }


def random_check(group: Sequence[Run], metric: str = "dice", aulc_range: tuple[float, float] | None = None,
                 delta: float = DELTA, n_resamples: int = st.N_RESAMPLES, seed: int = 0,
                 budget: str = "n_annotations") -> dict:
    """The false-positive check: random's sorted seeds split into two disjoint halves
    (:func:`activeseg.statistics.disjoint_halves`), compared like a strategy with random; ``comparison``
    None and a ``note`` with fewer than 4 seeds."""
    aulc = {run.seed: seed_summary(run, metric=metric, aulc_range=aulc_range, budget=budget)["aulc_log2"]
            for run in group}
    halves = st.disjoint_halves(list(aulc))
    name = group[0].name
    row = {"name": f"{name} vs {name} (check)", "baseline": name, "seeds": sorted(aulc),
           "halves": None if halves is None else [list(h) for h in halves], "comparison": None, "note": None}
    if halves is None:
        row["note"] = f"needs ≥ {st.MIN_CHECK_SEEDS} random seeds"
    else:
        first, second = halves
        row["comparison"] = st.paired_comparison(first, [aulc[s] for s in first], [aulc[s] for s in second],
                                                 delta, n_resamples, seed=seed)
    return row


def aulc_budgets(runs: Sequence[Run], aulc_end: float | None = None,
                 aulc_start: float | None = None, budget: str = "n_annotations") -> tuple[float, float] | None:
    """The AULC(log2) range: ``aulc_start`` (default: the largest first positive budget of any run: the same
    for every run when the budget counts annotations, since their initial sets are equal in size; with clicks
    or pixels, so that every run covers it) to
    ``aulc_end`` (default: the largest budget every run reached, so every run covers it); None when no run
    has a positive budget."""
    budgets = [[b for b in (_budget(rec, budget, run) for rec in run.records) if b > 0] for run in runs]
    budgets = [b for b in budgets if b]
    start = aulc_start if aulc_start is not None else max((min(b) for b in budgets), default=None)
    end = aulc_end if aulc_end is not None else min((max(b) for b in budgets), default=None)
    if start is None or end is None:
        return None
    if aulc_start is None and aulc_end is None and start > end:
        warnings.warn(f"the runs' {BUDGETS[budget]} do not overlap (the latest start {start:g} is past the earliest "
                      f"end {end:g}): no AULC; run more rounds or pass aulc_start and aulc_end", stacklevel=2)
        return None
    if not 0 < start <= end:
        raise ValueError(f"the AULC range must satisfy 0 < start <= end, got start {start} and end {end}; "
                         f"pass an aulc_end of at least {start}")
    return float(start), float(end)


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
    test_mean, test_sd = st.mean_sd([p[test] for p in per_seed])
    return {f"{test}_mean": test_mean, f"{test}_sd": test_sd,
            f"{val}_mean": st.mean_sd([p[val] for p in per_seed])[0], "per_seed": per_seed}


def summarize(runs: Sequence[Run], target_fraction: float = 0.95, target: float | None = None, *,
              aulc_end: int | None = None, aulc_start: int | None = None,
              extra_fractions: Sequence[float] = EXTRA_FRACTIONS, delta: float = DELTA,
              n_resamples: int = st.N_RESAMPLES, seed: int = 0, budget: str = "n_annotations") -> dict:
    """Compare the strategies of ``runs`` with ``random`` (of the same sweep group), seed by seed.

    The primary endpoint, fixed before the results are looked at, is each seed's AULC on a log2-budget
    axis (:func:`activeseg.statistics.aulc_log2`) from ``aulc_start`` to ``aulc_end``; a strategy and
    random are paired by seed (same initial set and split). The paired t-test p-values are
    Holm-adjusted over the strategies of the report; the random-vs-random checks are not in that family.

    Args:
        runs: runs from :func:`activeseg.report.find_runs`; runs without a finished round are left out.
            All of one task: Dice compares segmentation runs, accuracy classification runs.
        target_fraction: the primary target is this fraction of each seed's full-pool reference test score
            (``extra_fractions`` add secondary ones)...
        target: ...or this absolute test score (Dice, or accuracy: 0.95 is an error rate of 5%).
        aulc_end: the AULC's last budget; default the largest budget every run of the report reached.
        aulc_start: its first budget; default the largest first budget of any run.
        extra_fractions: secondary targets (fractions of the reference), ignored with ``target``.
        delta: the AULC difference the seeds-needed calculation is for.
        n_resamples: bootstrap resamples of seeds for every CI.
        seed: the bootstrap's seed.
        budget: what a budget counts (``BUDGETS``): ``n_annotations`` (labelled items and regions), ``cost``
            (clicks to outline the labels) or ``labelled_pixels``; the AULC axis and the targets use it.

    Returns:
        ``{"metric", "target_fraction", "target", "targets", "endpoint", "reference",
        "strategies": {name: {...}}, "checks": [...], "runs": [...]}``, JSON-safe.
    """
    finished = [run for run in runs if run.records]
    for run in runs:
        if not run.records:
            warnings.warn(f"{run.run_dir} has no finished round yet; it is left out of the report", stacklevel=2)
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
    if budget not in BUDGETS:
        raise ValueError(f"budget {budget!r} is not one of {', '.join(BUDGETS)}")
    budgets = aulc_budgets(finished, aulc_end, aulc_start, budget)

    def baseline_of(name: str, group: list[Run]) -> list[Run] | None:
        """Random runs of the same sweep group (None for random itself)."""
        base = BASELINE if not group[0].group else f"{BASELINE} [{group[0].group}]"
        return None if name == base else groups.get(base)

    opts = {"aulc_range": budgets, "extra_fractions": extra_fractions, "delta": delta, "n_resamples": n_resamples,
            "seed": seed, "budget": budget}
    strategies = {name: strategy_summary(group, baseline_of(name, group), target_fraction, metric, target, **opts)
                  for name, group in groups.items()}
    family = [name for name, s in strategies.items() if s["comparison"] is not None]
    for name, p in zip(family, st.holm([strategies[n]["comparison"]["p_t"] for n in family]), strict=True):
        strategies[name]["comparison"]["p_holm"] = p
    uncovered = [f"{name} seed {p['seed']}" for name, s in strategies.items() for p in s["per_seed"]
                 if p["aulc_log2"] is None]
    if budgets is not None and uncovered:
        warnings.warn(f"{', '.join(uncovered)} do(es) not cover the AULC range {budgets[0]:g}-{budgets[1]:g} "
                      f"{BUDGETS[budget]}; left out of the paired comparison", stacklevel=2)
    reference = reference_summary(finished, metric)
    ref = reference or {}
    return {
        "metric": metric,
        "target_fraction": target_fraction,
        "target": target,
        "targets": [{**spec, "reference_mean": ref.get(f"test_{metric}_mean"),
                     "reference_sd": ref.get(f"test_{metric}_sd"), "reference_seeds": len(ref.get("per_seed", []))}
                    for spec in target_specs(target_fraction, target, extra_fractions)],
        "endpoint": {"name": "aulc_log2", "budget": budget, "start": None if budgets is None else budgets[0],
                     "end": None if budgets is None else budgets[1], "end_is_default": aulc_end is None,
                     "start_is_default": aulc_start is None, "primary_test": "paired t-test", "holm_family": family,
                     "delta": delta, "n_resamples": n_resamples, "level": LEVEL, "bootstrap_seed": seed},
        "reference": reference,
        "strategies": strategies,
        "checks": [random_check(group, metric, budgets, delta, n_resamples, seed, budget)
                   for group in groups.values() if group[0].strategy == BASELINE],
        "runs": [
            {"strategy": run.strategy, "group": run.group, "seed": run.seed, "rounds": len(run.records),
             "run_dir": str(run.run_dir.resolve())}
            for group in groups.values() for run in group
        ],
    }
