"""Reports of simulation runs: run discovery, learning curves, uncertainty heatmaps, and ``build_report``
(summary tables plus one self-contained HTML page). Run folders and ledgers are read through
:mod:`activeseg.records`.

matplotlib is imported only when a figure is drawn, so reading ledgers needs numpy alone.
"""

from activeseg.records import read_ledger
from activeseg.report.build import build_report
from activeseg.report.curves import plot_learning_curves
from activeseg.report.heatmaps import save_overlay
from activeseg.report.runs import Run, find_runs

__all__ = [
    "Run",
    "build_report",
    "find_runs",
    "plot_learning_curves",
    "read_ledger",
    "save_overlay",
]
