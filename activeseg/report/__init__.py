"""Reports of simulation runs: the JSON-lines ledger, run discovery, learning curves, uncertainty
heatmaps, and ``build_report`` (summary tables plus one self-contained HTML page).

matplotlib is imported only when a figure is drawn, so reading ledgers needs numpy alone.
"""

from activeseg.records import append_record, read_ledger, write_ledger
from activeseg.report.build import build_report
from activeseg.report.curves import plot_learning_curves
from activeseg.report.heatmaps import save_overlay
from activeseg.report.runs import Run, find_runs

__all__ = [
    "Run",
    "append_record",
    "build_report",
    "find_runs",
    "plot_learning_curves",
    "read_ledger",
    "save_overlay",
    "write_ledger",
]
