"""Learning curves: a metric against annotations spent, mean and confidence band over seeds."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from activeseg.metrics import mean_band
from activeseg.report._figure import new_figure, save_png
from activeseg.report.runs import Run, group_by_strategy, references_by_seed

METRIC_LABELS = {"dice": "Dice", "iou": "IoU", "accuracy": "accuracy", "error": "error", "auc": "AUC"}
X_AXES = {"n_annotations": "annotations (labelled items)",
          "train_size": "training-set size (NoDelete repeats counted)"}


def uses_no_delete(runs: Sequence[Run]) -> bool:
    """Whether any round trained on repeats (NoDelete re-picked a labelled item)."""
    return any(rec.get("train_size", rec["n_annotations"]) != rec["n_annotations"] for run in runs
               for rec in run.records)


def curve_matrix(
    runs: Sequence[Run], metric: str = "dice", split: str = "test", x: str = "n_annotations"
) -> tuple[np.ndarray, np.ndarray]:
    """One row per run, one column per round number, NaN where a run has no such round.

    Rounds are aligned by their number. The x value of a round is the mean of the runs' ``x`` at that
    round: ``n_annotations`` (identical across seeds unless NoDelete re-picks items) or ``train_size``
    (the training set with NoDelete repeats).

    Args:
        runs: runs to stack, usually the seeds of one strategy.
        metric: a key of the records' metric dicts (``dice``, ``iou``, ``sensitivity``, ...).
        split: ``"test"`` or ``"val"``.
        x: ``n_annotations`` or ``train_size``.

    Returns:
        ``(x_R, values_S_R)`` with ``S = len(runs)`` and ``R`` the distinct round numbers.
    """
    if x not in X_AXES:
        raise ValueError(f"x='{x}' is not one of {', '.join(X_AXES)}")
    rounds = sorted({int(rec["round"]) for run in runs for rec in run.records})
    col_of = {r: j for j, r in enumerate(rounds)}
    values_S_R = np.full((len(runs), len(rounds)), np.nan)
    n_annotations_S_R = np.full((len(runs), len(rounds)), np.nan)
    for s, run in enumerate(runs):
        for rec in run.records:
            try:
                value = rec[split][metric]
            except (KeyError, TypeError):
                raise ValueError(
                    f"{run.run_dir}: round {rec['round']} has no {split} {metric!r}; "
                    f"choose one of {sorted(rec.get(split) or {})}"
                ) from None
            j = col_of[int(rec["round"])]
            values_S_R[s, j] = np.nan if value is None else value
            n_annotations_S_R[s, j] = rec.get(x, rec["n_annotations"])
    if not rounds:
        return np.zeros(0), values_S_R
    has_R = ~np.all(np.isnan(n_annotations_S_R), axis=0)
    n_annotations_R = np.full(len(rounds), np.nan)
    n_annotations_R[has_R] = np.nanmean(n_annotations_S_R[:, has_R], axis=0)
    return n_annotations_R, values_S_R


def plot_learning_curves(
    runs: Sequence[Run],
    out_png: str | Path,
    metric: str = "dice",
    split: str = "test",
    level: float = 0.9,
    target_fraction: float = 0.95,
    x: str = "n_annotations",
) -> Path:
    """Draw one line per strategy (mean over seeds) with a ``level`` confidence band; save a PNG.

    ``x`` is the horizontal axis: annotations spent, or (for NoDelete runs) the training-set size. For
    the test score, dashed lines mark the mean full-pool reference score and ``target_fraction`` of
    it when the runs have ``reference.json`` files.

    Returns:
        ``out_png`` as a ``Path``.
    """
    fig = new_figure(7.5, 4.8, dpi=120)
    ax = fig.add_subplot()
    for strategy, group in group_by_strategy(runs).items():
        n_annotations_R, values_S_R = curve_matrix(group, metric, split, x)
        if n_annotations_R.size == 0:
            continue
        mean_R, lo_R, hi_R = mean_band(values_S_R, level)
        lo_R, hi_R = np.clip(lo_R, 0, 1), np.clip(hi_R, 0, 1)  # the metrics live in [0, 1]
        n_seeds = len(group)
        (line,) = ax.plot(n_annotations_R, mean_R, marker="o", markersize=3,
                          label=f"{strategy} ({n_seeds} seed{'s' if n_seeds != 1 else ''})")
        if n_seeds > 1:
            ax.fill_between(n_annotations_R, lo_R, hi_R, color=line.get_color(), alpha=0.18, linewidth=0)
    refs = references_by_seed(runs) if split == "test" else {}
    refs = {seed: r for seed, r in refs.items() if r.get(f"test_{metric}") is not None}
    if refs:
        ref = float(np.mean([r[f"test_{metric}"] for r in refs.values()]))
        ax.axhline(ref, color="0.3", linestyle="--", linewidth=1, label=f"full pool ({ref:.3f})")
        ax.axhline(target_fraction * ref, color="0.5", linestyle=":", linewidth=1,
                   label=f"{target_fraction:.0%} of full pool")
    name = f"{split} {METRIC_LABELS.get(metric, metric)}"
    ax.set_xlabel(X_AXES[x])
    ax.set_ylabel(name)
    against = "annotations" if x == "n_annotations" else "training-set size"
    ax.set_title(f"{name} vs {against} (mean, {level:.0%} band over seeds)")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small", loc="lower right")
    fig.tight_layout()
    return save_png(fig, out_png)
