"""``index.html``: one self-contained page (summary tables, learning curve, uncertainty heatmaps).

Images are embedded as base64 data URIs, so the page can be mailed or archived as one file.
"""

from __future__ import annotations

import base64
import re
from html import escape
from pathlib import Path

from activeseg.report.runs import Run
from activeseg.report.tables import best_val_table, main_table, notes, targets_table, timing_table

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 80em; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.7em; text-align: left; }
th { background: #f3f3f3; }
img { max-width: 100%; }
figure { margin: 0.5em 0 1.5em 0; }
figcaption { font-family: monospace; color: #555; }
details { margin: 0.5em 0; }
summary { cursor: pointer; font-weight: 600; }
"""


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{escape(alt)}">'


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _round_number(folder: Path) -> int | None:
    match = re.fullmatch(r"round_(\d+)", folder.name)
    return int(match.group(1)) if match else None


def find_heatmaps(run: Run) -> list[tuple[int, list[Path]]]:
    """``(round, PNG files)`` of ``run_dir/heatmaps/round_*/``, rounds ascending, files by name."""
    out = []
    for folder in (run.run_dir / "heatmaps").glob("round_*"):
        number = _round_number(folder)
        pngs = sorted(folder.glob("*.png"))
        if number is not None and folder.is_dir() and pngs:
            out.append((number, pngs))
    return sorted(out)


def _heatmap_section(run: Run) -> str:
    rounds = find_heatmaps(run)
    if not rounds:
        return ""
    scores = {
        (rec["round"], str(s.get("item_id"))): s.get("score")
        for rec in run.records for s in rec.get("selected") or []
    }
    n = sum(len(pngs) for _, pngs in rounds)
    parts = [f"<details><summary>{escape(run.label)} ({n} heatmap{'s' if n != 1 else ''})</summary>"]
    for number, pngs in rounds:
        parts.append(f"<h4>round {number}: picked at the end of the round</h4>")
        for png in pngs:
            score = scores.get((number, png.stem))
            caption = png.stem if score is None else f"{png.stem} (score {score:.4g})"
            parts.append(f"<figure>{_img(png, png.stem)}<figcaption>{escape(caption)}</figcaption></figure>")
    parts.append("</details>")
    return "\n".join(parts)


def render_page(summary: dict, curve_png: Path, runs: list[Run], more_curves: list[Path] = (),
                views: list[tuple[str, Path]] = ()) -> str:
    """The HTML text of the report page (``more_curves``: further learning-curve PNGs; ``views``:
    (heading, PNG) sections after the curves)."""
    strategies = ", ".join(summary["strategies"])
    heatmaps = [section for run in runs if (section := _heatmap_section(run))]
    body = [
        "<h1>activeseg report</h1>",
        f"<p>{len(summary['runs'])} run(s); strategies: {escape(strategies)}.</p>",
        "<h2>Summary</h2>",
        _table(*main_table(summary)),
        "<ul>" + "".join(f"<li>{escape(note)}</li>" for note in notes(summary)) + "</ul>",
        "<h2>Annotations to each target</h2>",
        _table(*targets_table(summary)),
        "<h2>At the best-validation round (secondary)</h2>",
        _table(*best_val_table(summary)),
        "<h2>Learning curves</h2>",
        f"<figure>{_img(curve_png, 'learning curves')}</figure>",
        *(f"<figure>{_img(png, 'learning curves')}</figure>" for png in more_curves),
        *(f"<h2>{escape(title)}</h2><figure>{_img(png, title)}</figure>" for title, png in views),
        "<h2>Seconds per round</h2>",
        _table(*timing_table(summary)),
        "<p>Mean over rounds and seeds; score and select only over rounds that selected items.</p>",
        "<h2>Uncertainty heatmaps</h2>",
        *(heatmaps or ["<p>No heatmaps were saved (simulate with <code>--heatmaps N</code>).</p>"]),
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>activeseg report: {escape(strategies)}</title>\n<style>{STYLE}</style>\n</head>\n"
        "<body>\n" + "\n".join(body) + "\n</body>\n</html>\n"
    )
