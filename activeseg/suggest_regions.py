"""The human loop with region queries (``activeseg suggest --strategy cereals | entropy_regions |
random_regions``): rank windows of the images instead of whole images.

A mask may label part of its image: pixels with the ignore value (255) are unlabelled, the loss skips them,
and windows holding a labelled pixel are not suggested again. ``regions.csv`` lists the best ``k`` regions
(file, box, score, informativeness and, for ``cereals``, the predicted cost and which cost model priced it);
``heatmaps/<rank>_<name>_y<y>_x<x>.png`` show each region (image, prediction, uncertainty).

The cost model of ``cereals`` learns from the annotators' own times once there are any: a CSV
``annotation_times.csv`` beside the masks, one row per labelled region, ``file,y,x,h,w,seconds``. Its rows
are priced with features from the current model's prediction of those images (predicted outlines,
components, foreground, image gradient, uncertainty: :mod:`activeseg.acquisition.cost`); with fewer than 10
rows, the proxy (predicted components + outline / 4 px) stands in.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from activeseg.data.folder import DatasetError

__all__ = ["TIMES", "read_times", "suggest_regions", "write_regions"]

TIMES = "annotation_times.csv"
TIME_COLUMNS = ("file", "y", "x", "h", "w", "seconds")


def read_times(path: Path, data) -> list[tuple[int, int, int, int, int, float]]:
    """Rows ``(image, y, x, h, w, seconds)`` of an annotation-times CSV, checked against the images."""
    by_name = {p.name: i for i, p in enumerate(data.paths)} | {n: i for i, n in enumerate(data.names)}
    rows = []
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in TIME_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise DatasetError(f"{path}: missing column(s) {', '.join(missing)}; the header must be "
                               f"{','.join(TIME_COLUMNS)} (one row per labelled region)")
        for line, row in enumerate(reader, start=2):
            if row["file"] not in by_name:
                raise DatasetError(f"{path}, line {line}: no image {row['file']!r} in the images folder")
            try:
                y, x, h, w = (int(row[c]) for c in ("y", "x", "h", "w"))
                seconds = float(row["seconds"])
            except ValueError:
                raise DatasetError(f"{path}, line {line}: y, x, h, w must be whole pixels and seconds a number, "
                                   f"got {[row[c] for c in TIME_COLUMNS[1:]]}") from None
            i = by_name[row["file"]]
            height, width = data.images[i].shape[1:]
            if y < 0 or x < 0 or h < 1 or w < 1 or y + h > height or x + w > width or seconds < 0:
                raise DatasetError(f"{path}, line {line}: box y={y} x={x} h={h} w={w} does not fit "
                                   f"{row['file']} ({height} × {width}) or seconds {seconds} < 0")
            rows.append((i, y, x, h, w, seconds))
    return rows


def write_regions(path: Path, sel, file_of, unit: str, cells: str) -> list[dict]:
    """The rows of a region suggestion, best first, written to ``path`` (CSV): rank, file (``file_of(item)``),
    the box (``y, x, h, w``; in a volume ``z, y, x, d, h, w``), score, informativeness and, for a cost-aware
    strategy, the predicted cost and the model that priced it. No region (``unit``s of ``cells``) fitting
    between the labelled ones is an error that says what to change."""
    pick = sel.pick
    rows = []
    for rank, region in enumerate(pick.regions, start=1):
        axes = ("z", "y", "x", "d", "h", "w") if region.d else ("y", "x", "h", "w")
        row = {"rank": rank, "file": file_of(region.item), **dict(zip(axes, region.box(), strict=True)),
               "score": round(float(pick.scores[rank - 1]), 6),
               "informativeness": round(float(pick.informativeness[rank - 1]), 6)}
        if pick.predicted_cost is not None:
            row.update(predicted_cost=round(float(pick.predicted_cost[rank - 1]), 4), cost_model=sel.cost_source)
        rows.append(row)
    if not rows:
        raise DatasetError(f"no {unit} fits between the labelled {cells}; lower --region-size")
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[-1]))
        writer.writeheader()
        writer.writerows(rows)
    return rows


def _features_of(engine, model, data, rows, seed: int, device: str):
    """``(features [M, F], seconds [M])`` of the recorded regions under the current model."""
    from activeseg.acquisition.cost import cost_maps, window_features
    from activeseg.acquisition.regions import Windows

    images = sorted({r[0] for r in rows})
    probs, maps = engine.maps(model, [data.images[i] for i in images], seed, device)
    feats = {i: cost_maps(data.images[i], p, m) for i, p, m in zip(images, probs, maps, strict=True)}
    out = []
    for i, y, x, h, w, _ in rows:
        side = min(h, w)  # windows are square: a recorded box is read as its largest inner square
        out.append(window_features(Windows(np.array([0]), np.array([y]), np.array([x]), np.array([side])),
                                   [feats[i]])[0])
    return np.asarray(out), np.array([r[5] for r in rows])


def suggest_regions(engine, model, data, masks_dir, out: Path, k: int, seed: int, device: str) -> list[dict]:
    """Rank regions of the images with pixels left to label; write ``regions.csv`` and heatmaps."""
    from activeseg.report.heatmaps import save_item_overlay

    ignore = engine.cfg.ignore_index
    labelled = [np.zeros(im.shape[1:], bool) if m is None else m != ignore for im, m in zip(data.images, data.masks,
                                                                                         strict=True)]
    candidates = [i for i, done in enumerate(labelled) if not done.all()]
    if not candidates:
        raise DatasetError("every pixel of every image is labelled; there is no region left to suggest")
    times = Path(masks_dir) / TIMES if masks_dir is not None else None
    samples = None
    if engine.strategy.cost and times is not None and times.is_file():
        rows = read_times(times, data)
        samples = _features_of(engine, model, data, rows, seed, device) if rows else None
    sel = engine.propose_regions(model, [data.images[i] for i in candidates], [labelled[i] for i in candidates], k,
                                 seed, device, samples)
    pick = sel.pick
    out.mkdir(parents=True, exist_ok=True)
    rows_out = write_regions(out / "regions.csv", sel, lambda item: data.paths[candidates[item]].name, "window",
                             "pixels")
    shown = sorted({candidates[r.item] for r in pick.regions})
    probs, maps = engine.maps(model, [data.images[i] for i in shown], seed, device)
    at = dict(zip(shown, range(len(shown)), strict=True))
    (out / "heatmaps").mkdir(exist_ok=True)
    for row, region in zip(rows_out, pick.regions, strict=True):
        i, box = candidates[region.item], region.slices()
        save_item_overlay(out / "heatmaps" / f"{row['rank']:03d}_{data.names[i]}_y{region.y}_x{region.x}.png",
                          data.images[i][(slice(None), *box)], probs[at[i]][(slice(None), *box)],
                          maps[at[i]][box], title=f"rank {row['rank']}: {row['file']} y={region.y} x={region.x} "
                          f"({engine.cfg.strategy} {row['score']:.3g})", class_names=data.class_names)
    return rows_out
