"""The human loop: train on the images that have masks, rank the ones that do not.

Region strategies rank windows instead (:mod:`activeseg.suggest_regions`: ``regions.csv``); a folder of
NIfTI volumes is ranked volume by volume, or by cubes inside them for a region strategy
(:mod:`activeseg.suggest_volumes`). Otherwise
writes into ``out``: ``suggestions.csv`` (every unlabelled image, most worth labelling first: file, score,
rank and the image's mean entropy, BALD, variation ratio and foreground std, all from the same MC passes),
``heatmaps/<rank>_<name>.png`` for the top ``k`` (image, prediction, uncertainty), ``model.pt`` (the
trained weights, a state_dict) and ``config.json``.
"""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import numpy as np

from activeseg.config import SimConfig
from activeseg.data.dataset import ImageDataset
from activeseg.data.folder import DatasetError, is_volume_folder, read_folder, tile_images
from activeseg.engine import Engine, round_seed
from activeseg.scoring import pick_device
from activeseg.suggest_regions import suggest_regions

MEASURES = ("max_entropy", "bald", "variation_ratio", "std")  # per-image columns of suggestions.csv


def ranking(selection, n: int) -> np.ndarray:
    """All ``n`` candidates, best first: the engine's picks in pick order, then the rest by score."""
    rest = np.setdiff1d(np.arange(n), selection.indices)
    rest = rest[np.argsort(-selection.scores[rest], kind="stable")]
    return np.concatenate([selection.indices, rest]).astype(np.int64)


def suggest(images_dir, masks_dir, out, k: int = 8, cfg: SimConfig | None = None, quiet: bool = False) -> list[dict]:
    """Rank the unlabelled images of ``images_dir`` for annotation.

    The model is trained on patches of the labelled images (a fifth of them, at least one, held out for
    checkpoint selection when there are three or more); the engine then scores the whole unlabelled
    images and picks ``k`` with the strategy, batch selectors included (``coreset`` picks what it picks in
    a simulation). Score-only strategies rank every image; after a batch selector's ``k`` picks the rest
    follow by their uncertainty score.

    Args:
        images_dir: folder of PNG/TIFF images.
        masks_dir: folder of masks for some of them (matched by file stem).
        out: output folder.
        k: number of suggestions to pick and render as heatmaps (all images are ranked in the CSV).
        cfg: model, training and strategy settings (``SimConfig`` fields; dataset/rounds are ignored).

    Returns:
        rows of the CSV as dicts, best first.
    """
    import torch

    cfg = cfg or SimConfig()
    engine = Engine(cfg)
    if is_volume_folder(images_dir):  # NIfTI volumes: patches to train on, sliding windows to score
        from activeseg.suggest_volumes import suggest_volumes

        out, t0 = Path(out), time.perf_counter()
        device = pick_device(cfg.device)
        rows, model, fitres = suggest_volumes(engine, images_dir, masks_dir, out, k, round_seed(cfg.seed, 1), device,
                                              quiet)
        torch.save(model.state_dict(), out / "model.pt")
        meta = {**json.loads(cfg.to_json()), "suggested": len(rows), "best_val_dice": fitres.best_val,
                "seconds": round(time.perf_counter() - t0, 2)}
        (out / "config.json").write_text(json.dumps(meta, indent=1))
        return rows
    data = read_folder(images_dir, masks_dir, require_masks=False, classes=cfg.classes,
                       ignore_index=cfg.ignore_index)
    labeled = [i for i, m in enumerate(data.masks) if m is not None]
    unlabeled = [i for i, m in enumerate(data.masks) if m is None]
    if not labeled:
        raise DatasetError(
            f"no image in {images_dir} has a mask in {masks_dir}; label at least one image "
            "(a mask with the image's file stem) so the model has something to learn from"
        )
    regions = getattr(engine.strategy, "unit", "image") == "region"
    if not unlabeled and not regions:
        raise DatasetError(f"every image in {images_dir} already has a mask; there is nothing to suggest")
    device = pick_device(cfg.device)
    t0 = time.perf_counter()
    seed = round_seed(cfg.seed, 1)
    model, fitres = _train(engine, data, labeled, seed, device, quiet)
    out = Path(out)
    if regions:  # windows of the images, partly labelled ones included (regions.csv)
        if not quiet:
            print(f"activeseg: scoring the regions of {len(data.images)} image(s) with {cfg.strategy}")
        rows = suggest_regions(engine, model, data, masks_dir, out, k, seed, device)
    else:
        rows = _suggest_images(engine, model, data, labeled, unlabeled, out, k, seed, device, quiet)
    torch.save(model.state_dict(), out / "model.pt")
    meta = {**json.loads(cfg.to_json()), "labeled_images": len(labeled), "unlabeled_images": len(unlabeled),
            "best_val_dice": fitres.best_val, "seconds": round(time.perf_counter() - t0, 2)}
    (out / "config.json").write_text(json.dumps(meta, indent=1))
    return rows


def _suggest_images(engine: Engine, model, data, labeled, unlabeled, out: Path, k: int, seed: int, device: str,
                    quiet: bool) -> list[dict]:
    """Rank the unlabelled images; write ``suggestions.csv`` and the top ``k`` heatmaps."""
    from activeseg.report.heatmaps import save_item_overlay

    cfg = engine.cfg
    if not quiet:
        print(f"activeseg: scoring {len(unlabeled)} unlabelled image(s) with {cfg.strategy}")
    order, sel = rank_unlabelled(engine, model, data, labeled, unlabeled, k, seed, device, measures=MEASURES)
    rows = [{"file": data.paths[unlabeled[j]].name, "score": float(sel.scores[j]), "rank": rank,
             **{f"mean_{name}": round(float(v[j]), 6) for name, v in sel.measures.items()}}
            for rank, j in enumerate(order, start=1)]
    top = [unlabeled[j] for j in order[:k]]
    probs, maps = engine.maps(model, [data.images[i] for i in top], seed, device)
    (out / "heatmaps").mkdir(parents=True, exist_ok=True)
    for rank, (i, row, p, unc) in enumerate(zip(top, rows, probs, maps, strict=False), start=1):
        save_item_overlay(out / "heatmaps" / f"{rank:03d}_{data.names[i]}.png", data.images[i], p, unc,
                          title=f"rank {rank}: {row['file']} ({cfg.strategy} {row['score']:.4g})",
                          class_names=data.class_names)
    with open(out / "suggestions.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return rows


def _train(engine: Engine, data, labeled: list[int], seed: int, device: str, quiet: bool):
    """The model trained on patches of the labelled images; whole images are held out for checkpoint
    selection when there are three or more, else it validates on its training images."""
    order = list(np.random.default_rng(engine.cfg.seed).permutation(labeled))
    n_val = max(1, round(0.2 * len(labeled))) if len(labeled) >= 3 else 0
    return train_on(engine, data, order[n_val:], order[:n_val], seed, device, quiet)


def train_on(engine: Engine, data, train: list[int], val: list[int], seed: int, device: str, quiet: bool = True):
    """``(model, FitResult)`` trained on patches of the images ``train`` (their masks must exist) with
    checkpoints chosen on the whole images ``val`` (on the training images when ``val`` is empty)."""
    train, val = [int(i) for i in train], [int(i) for i in val]
    both = _patches(data, train + (val or train), engine.cfg.patch_size)
    n_train = int(np.isin(both.groups, train).sum()) if val else len(both) // 2
    if not quiet:
        print(f"activeseg: training on {n_train} patches from {len(train)} labelled image(s), "
              f"validating on {len(val) or len(train)} image(s)")
    return engine.fit(both, np.arange(n_train), np.arange(n_train, len(both)), seed, device)


def rank_unlabelled(engine: Engine, model, data, labeled: list[int], unlabeled: list[int], k: int, seed: int,
                    device: str, measures: tuple[str, ...] = ()):
    """``(order, selection)``: every unlabelled image (positions in ``unlabeled``) best first, the engine's
    ``k`` picks leading (score-only strategies rank them all by score)."""
    picks = len(unlabeled) if not engine.strategy.needs else min(k, len(unlabeled))
    sel = engine.propose(model, [data.images[i] for i in unlabeled], [data.images[i] for i in labeled], picks,
                         seed, device, measures=measures)
    return ranking(sel, len(unlabeled)), sel


def _patches(data, which: list[int], patch_size: int) -> ImageDataset:
    """Patches of the images ``which`` (their masks must exist), grouped by image number."""
    return tile_images([data.names[i] for i in which], [data.images[i] for i in which],
                       [data.masks[i] for i in which], patch_size, groups=which, num_classes=data.num_classes,
                       class_names=data.class_names)
