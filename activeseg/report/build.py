"""``build_report``: from run folders to a report folder (figure, tables, JSON and one HTML page)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from activeseg.report.curves import (
    detail_metrics,
    plot_learning_curves,
    plot_metric_panels,
    records_cost,
    uses_no_delete,
)
from activeseg.report.page import render_page
from activeseg.report.runs import find_runs
from activeseg.report.summary import summarize
from activeseg.report.tables import to_markdown, write_csv
from activeseg.report.views import plot_embedding, plot_uncertainty_distribution


def build_report(
    paths: Sequence[str | Path] | str | Path, out: str | Path, target_fraction: float = 0.95,
    target: float | None = None, host: str | None = None, budget: str = "n_annotations",
) -> dict:
    """Compare the strategies of the runs under ``paths`` and write the report into ``out``.

    Writes ``learning_curve.png`` (and ``learning_curve_train_size.png`` when NoDelete runs trained on
    repeats; ``learning_curve_cost.png`` and ``learning_curve_pixels.png`` when the ledgers record the
    annotation cost, with ``learning_curves_detail_cost.png``: the per-class, per-source and instance panels
    against the clicks), ``uncertainty_distribution.png`` and ``embedding.png`` (Nath et al. Figs. 12-13, see
    :mod:`activeseg.report.views`; left out when the ledgers or the dataset do not allow them),
    ``summary.md``, ``summary.csv``, ``summary.json`` and ``index.html`` (self-contained: the tables,
    the figures and each run's ``heatmaps/round_*/`` PNGs).

    Args:
        paths: ``--out`` folders of ``activeseg simulate``, or strategy/run folders inside them.
        out: the report folder (created; files of the same names are replaced).
        target_fraction: annotations-to-target uses this fraction of each seed's full-pool test Dice...
        target: ...or this absolute test score (Dice; accuracy for classification).
        host: the machine the runs ran on (CPU, its features, measured matmul peaks), for a benchmark's
            report: the first line of ``summary.md`` and ``host`` in ``summary.json``.
        budget: what the AULC axis and the targets count (``activeseg.report.summary.BUDGETS``).

    Returns:
        The summary, as written to ``summary.json`` (see :func:`activeseg.report.summary.summarize`).

    Raises:
        FileNotFoundError: if a path does not exist or holds no run.
    """
    runs = find_runs(paths)
    summary = summarize(runs, target_fraction, target, budget=budget)
    if host:
        summary["host"] = host
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    finished = [run for run in runs if run.records]
    curve = plot_learning_curves(finished, out / "learning_curve.png", metric=summary["metric"],
                                 target_fraction=target_fraction)
    extra = []
    if uses_no_delete(finished):  # NoDelete: the same scores against the training set that was used
        extra.append(plot_learning_curves(finished, out / "learning_curve_train_size.png", metric=summary["metric"],
                                          target_fraction=target_fraction, x="train_size"))
    if records_cost(finished):  # segmentation: the same scores against what the labels cost
        for x, name in (("cost", "learning_curve_cost.png"), ("labelled_pixels", "learning_curve_pixels.png")):
            extra.append(plot_learning_curves(finished, out / name, metric=summary["metric"],
                                              target_fraction=target_fraction, x=x))
    details = detail_metrics(finished)
    if details:  # multi-class, multi-source or nuclei runs: a panel per class, source and instance score
        extra.append(plot_metric_panels(finished, out / "learning_curves_detail.png", details))
        if records_cost(finished):  # mIoU, per-class Dice, ... against the clicks spent
            extra.append(plot_metric_panels(finished, out / "learning_curves_detail_cost.png", details, x="cost"))
    views = []
    dist = plot_uncertainty_distribution(finished, out / "uncertainty_distribution.png")
    if dist is not None:
        views.append(("Uncertainty over the training set", dist))
    emb = plot_embedding(finished, out / "embedding.png")
    if emb is not None:
        views.append(("Where the picks lie: t-SNE of the initial set and pool", emb))
    (out / "summary.md").write_text((f"Host: {host}\n\n" if host else "") + to_markdown(summary), encoding="utf-8")
    write_csv(summary, out / "summary.csv")
    (out / "summary.json").write_text(json.dumps(summary, indent=1, allow_nan=False) + "\n", encoding="utf-8")
    (out / "index.html").write_text(render_page(summary, curve, finished, extra, views), encoding="utf-8")
    return summary
