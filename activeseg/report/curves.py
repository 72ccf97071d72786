"""Learning curves: a metric against annotations spent, mean and confidence band over seeds."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from activeseg.metrics import mean_band
from activeseg.report._figure import new_figure, save_png
from activeseg.report.runs import Run, group_by_strategy, references_by_seed

METRIC_LABELS = {"dice": "Dice", "iou": "IoU", "accuracy": "accuracy", "error": "error", "auc": "AUC"}
X_AXES = {"n_annotations": "annotations (labelled items and regions)",
          "train_size": "training-set size (NoDelete repeats counted)",
          "cost": "annotation cost (clicks to outline the labels)",
          "labelled_pixels": "labelled pixels"}
AGAINST = {"n_annotations": "annotations", "train_size": "training-set size", "cost": "annotation cost",
           "labelled_pixels": "labelled pixels"}


def uses_no_delete(runs: Sequence[Run]) -> bool:
    """Whether any round trained on repeats (NoDelete re-picked a labelled item; region runs aside, whose
    annotations count regions)."""
    return any(rec.get("train_size", rec["n_annotations"]) != rec["n_annotations"] for run in runs
               for rec in run.records if not rec.get("n_regions"))


def records_cost(runs: Sequence[Run]) -> bool:
    """Whether every round of the runs records its annotation cost (segmentation runs since 2026-12-07)."""
    return bool(runs) and all("cost" in rec for run in runs for rec in run.records)


def curve_matrix(
    runs: Sequence[Run], metric: str = "dice", split: str = "test", x: str = "n_annotations"
) -> tuple[np.ndarray, np.ndarray]:
    """One row per run, one column per round number, NaN where a run has no such round.

    Rounds are aligned by their number. The x value of a round is the mean of the runs' ``x`` at that
    round: ``n_annotations`` (identical across seeds unless NoDelete re-picks items), ``train_size``
    (the training set with NoDelete repeats), ``cost`` (clicks) or ``labelled_pixels``.

    Args:
        runs: runs to stack, usually the seeds of one strategy.
        metric: a key of the records' metric dicts (``dice``, ``iou``, ``sensitivity``, ...).
        split: ``"test"`` or ``"val"``.
        x: a key of ``X_AXES``.

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
    ax.set_title(f"{name} vs {AGAINST[x]} (mean, {level:.0%} band over seeds)")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small", loc="lower right")
    fig.tight_layout()
    return save_png(fig, out_png)


def detail_metrics(runs: Sequence[Run]) -> list[str]:
    """The test metrics beyond the headline one that every run records: per-class Dice (``dice_<class>``),
    mIoU, instance F1, AJI and each source's Dice (``dice@<source>``), in that order."""
    keys = None
    for run in runs:
        for rec in run.records:
            have = set(rec.get("test") or {})
            keys = have if keys is None else keys & have
    keys = keys or set()
    order = (sorted(k for k in keys if k.startswith("dice_")) + [k for k in ("miou", "instance_f1", "aji") if k in keys]
             + sorted(k for k in keys if k.startswith("dice@")))
    return order if len(order) > 1 or any(k.startswith("dice_") for k in order) else []


def plot_metric_panels(runs: Sequence[Run], out_png: str | Path, metrics: Sequence[str], level: float = 0.9,
                       x: str = "n_annotations") -> Path:
    """Small multiples: one panel per test metric (per class, per source, instance scores), one line per
    strategy with its ``level`` band over seeds; save a PNG."""
    metrics = list(metrics)
    if not metrics:
        raise ValueError("no metrics to draw; pass the test metrics the ledgers hold (e.g. dice_boundary)")
    cols = min(3, len(metrics))
    rows = -(-len(metrics) // cols)
    fig = new_figure(4.2 * cols, 3.2 * rows, dpi=110)
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    groups = group_by_strategy(runs)
    for ax, metric in zip(axes, metrics, strict=False):
        for strategy, group in groups.items():
            n_annotations_R, values_S_R = curve_matrix(group, metric, "test", x)
            if n_annotations_R.size == 0:
                continue
            mean_R, lo_R, hi_R = mean_band(values_S_R, level)
            (line,) = ax.plot(n_annotations_R, mean_R, marker="o", markersize=2, label=strategy)
            if len(group) > 1:
                ax.fill_between(n_annotations_R, np.clip(lo_R, 0, 1), np.clip(hi_R, 0, 1), color=line.get_color(),
                                alpha=0.15, linewidth=0)
        ax.set_xscale("log", base=2)
        ax.set_title(f"test {metric}", fontsize="small")
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize="x-small")
    for ax in axes[len(metrics):]:
        ax.set_visible(False)
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, fontsize="x-small", loc="lower center", ncol=min(len(labels), 8))
    fig.suptitle(f"per class, source and instance ({X_AXES[x]}, log2 axis; {level:.0%} band over seeds)",
                 fontsize="small")
    fig.tight_layout(rect=(0, 0.06, 1, 0.96))
    return save_png(fig, out_png)
