"""The numbers that compare strategies: final Dice, area under the learning curve, annotations to a
target, a paired test against random, and time per phase. Plain dicts, JSON-safe (None, never NaN).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from activeseg.metrics import annotations_to_target, area_under_curve, wilcoxon_paired
from activeseg.report.runs import Run, group_by_strategy, references_by_seed

PHASES = ("train", "evaluate", "score", "select")
BASELINE = "random"


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


def seed_summary(run: Run, target_fraction: float = 0.95) -> dict:
    """One seed's final test Dice, AULC and annotations to ``target_fraction`` of its reference."""
    records = _rounds(run)
    n_annotations_R = [rec["n_annotations"] for rec in records]
    dice_R = [np.nan if rec["test"]["dice"] is None else rec["test"]["dice"] for rec in records]
    ref = _num(run.reference["test_dice"]) if run.reference else None
    target = None if ref is None else target_fraction * ref
    return {
        "seed": run.seed,
        "rounds": len(records),
        "final_n_annotations": int(n_annotations_R[-1]),
        "final_test_dice": _num(dice_R[-1]),
        "aulc": _num(area_under_curve(n_annotations_R, dice_R)),
        "reference_test_dice": ref,
        "target_test_dice": target,
        "annotations_to_target": (
            None if target is None else annotations_to_target(n_annotations_R, dice_R, target)
        ),
    }


def _final_test_dice_per_item(run: Run) -> np.ndarray | None:
    values = (_rounds(run)[-1].get("test_per_item") or {}).get("dice")
    return None if values is None else np.asarray(values, dtype=np.float64)


def wilcoxon_vs(group: Sequence[Run], baseline: Sequence[Run]) -> tuple[float | None, int]:
    """Wilcoxon p-value of final-round per-item test Dice, paired by (seed, test item).

    Only seeds present in both groups count. Returns ``(p, n_pairs)``; p is None without pairs.
    """
    base_by_seed = {run.seed: run for run in baseline}
    a, b = [], []
    for run in group:
        base = base_by_seed.get(run.seed)
        if base is None:
            continue
        x, y = _final_test_dice_per_item(run), _final_test_dice_per_item(base)
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
        if last != last_base:
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
    group: Sequence[Run], baseline: Sequence[Run] | None, target_fraction: float = 0.95
) -> dict:
    """Per-seed numbers of one strategy and their mean/sd over seeds."""
    per_seed = [seed_summary(run, target_fraction) for run in group]
    final_mean, final_sd = _mean_sd([p["final_test_dice"] for p in per_seed])
    aulc_mean, aulc_sd = _mean_sd([p["aulc"] for p in per_seed])
    with_target = [p for p in per_seed if p["target_test_dice"] is not None]
    reached = [p["annotations_to_target"] for p in with_target if p["annotations_to_target"] is not None]
    p_value, n_pairs = (None, 0) if baseline is None else wilcoxon_vs(group, baseline)
    return {
        "seeds": [p["seed"] for p in per_seed],
        "per_seed": per_seed,
        "final_test_dice_mean": final_mean,
        "final_test_dice_sd": final_sd,
        "aulc_mean": aulc_mean,
        "aulc_sd": aulc_sd,
        "annotations_to_target_mean": _mean_sd(reached)[0],
        "annotations_to_target_reached": len(reached),
        "annotations_to_target_seeds": len(with_target),
        "wilcoxon_p_vs_random": p_value,
        "wilcoxon_pairs": n_pairs,
        "seconds_per_round": seconds_per_round(group),
    }


def reference_summary(runs: Sequence[Run]) -> dict | None:
    """The full-pool reference per seed and its mean, or None when no run has one."""
    refs = references_by_seed(runs)
    if not refs:
        return None
    per_seed = [
        {"seed": seed, "test_dice": _num(ref["test_dice"]), "val_dice": _num(ref.get("val_dice")),
         "n_annotations": ref.get("n_annotations")}
        for seed, ref in refs.items()
    ]
    test_mean, test_sd = _mean_sd([p["test_dice"] for p in per_seed])
    return {"test_dice_mean": test_mean, "test_dice_sd": test_sd,
            "val_dice_mean": _mean_sd([p["val_dice"] for p in per_seed])[0], "per_seed": per_seed}


def summarize(runs: Sequence[Run], target_fraction: float = 0.95) -> dict:
    """Compare the strategies of ``runs``; ``random`` (when present) is the baseline of the paired test.

    Args:
        runs: runs from :func:`activeseg.report.find_runs`; runs without a finished round are left out.
        target_fraction: annotations-to-target counts the annotations needed to reach this fraction
            of each seed's full-pool reference test Dice.

    Returns:
        ``{"target_fraction", "reference", "strategies": {name: {...}}, "runs": [...]}``, JSON-safe.
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
    no_dice = [str(run.run_dir) for run in finished if "dice" not in run.records[0]["test"]]
    if no_dice:
        raise ValueError(
            f"{no_dice[0]} is a classification run (test accuracy, no Dice); this report compares "
            "segmentation runs by Dice. Read its ledger.jsonl (test accuracy, error, AUC per round) instead"
        )
    groups = group_by_strategy(finished)
    baseline = groups.get(BASELINE)
    return {
        "target_fraction": target_fraction,
        "reference": reference_summary(finished),
        "strategies": {
            name: strategy_summary(group, None if name == BASELINE else baseline, target_fraction)
            for name, group in groups.items()
        },
        "runs": [
            {"strategy": run.strategy, "seed": run.seed, "rounds": len(run.records),
             "run_dir": str(run.run_dir.resolve())}
            for group in groups.values() for run in group
        ],
    }
