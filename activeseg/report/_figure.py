"""Headless matplotlib figures, imported only when a figure is drawn.

Figures are made with ``matplotlib.figure.Figure`` (no pyplot state, no GUI backend); saving to PNG
goes through the Agg canvas.
"""

from __future__ import annotations

from pathlib import Path


def new_figure(width_in: float, height_in: float, dpi: int = 100):
    """A blank Agg-backed ``Figure`` of the given size in inches."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError(
            "activeseg draws its figures with matplotlib, a dependency of activeseg; reinstall it with "
            "`pip install activeseg` (or `pip install matplotlib`)"
        ) from None
    fig = Figure(figsize=(width_in, height_in), dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def save_png(fig, path: str | Path) -> Path:
    """Write ``fig`` as a PNG, creating parent folders; return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path
