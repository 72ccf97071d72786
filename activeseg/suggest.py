"""The human loop: train on the images that have masks, rank the ones that do not.

Writes into ``out``: ``suggestions.csv`` (every unlabelled image, most worth labelling first: file, score,
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
import torch
import torch.nn.functional as F

from activeseg.acquisition.heuristics import fused_maps
from activeseg.config import SimConfig
from activeseg.data.dataset import ImageDataset, tile
from activeseg.data.folder import DatasetError, FolderImages, read_folder
from activeseg.loop import make_strategy, round_estimator, round_seed, train_round
from activeseg.scoring import pick_device

MEASURES = ("max_entropy", "bald", "variation_ratio", "std")  # per-image columns of suggestions.csv


def _patches(data: FolderImages, which: list[int], patch_size: int) -> ImageDataset:
    images, masks, ids, groups = [], [], [], []
    for i in which:
        hwc = np.moveaxis(data.images[i], 0, -1)
        for (r, c, t_img), (_, _, t_mask) in zip(tile(hwc, patch_size), tile(data.masks[i], patch_size), strict=True):
            images.append(np.moveaxis(t_img, -1, 0))
            masks.append(t_mask)
            ids.append(f"{data.names[i]}_r{r}_c{c}")
            groups.append(i)
    return ImageDataset(np.stack(images).astype(np.float32), np.stack(masks), ids, np.asarray(groups), num_classes=2)


def _full_image_probs(model, image_C_H_W: np.ndarray, estimator, depth: int, device: str) -> torch.Tensor:
    """``probs_1_K_C_H_W`` of one whole image, reflect-padded to a multiple of 2**depth and cropped back."""
    m = 2**depth
    _, h, w = image_C_H_W.shape
    x = torch.from_numpy(image_C_H_W)[None]
    ph, pw = (-h) % m, (-w) % m
    if ph or pw:
        mode = "reflect" if ph < h and pw < w else "replicate"
        x = F.pad(x, (0, pw, 0, ph), mode=mode)
    probs = torch.cat(list(estimator.batches(model, x, device)))
    return probs[..., :h, :w]


def suggest(images_dir, masks_dir, out, k: int = 8, cfg: SimConfig | None = None, quiet: bool = False) -> list[dict]:
    """Rank the unlabelled images of ``images_dir`` for annotation.

    Args:
        images_dir: folder of PNG/TIFF images.
        masks_dir: folder of masks for some of them (matched by file stem).
        out: output folder.
        k: number of suggestions to render as heatmaps (all images are ranked in the CSV).
        cfg: model, training and strategy settings (``SimConfig`` fields; dataset/rounds are ignored).

    Returns:
        rows of the CSV as dicts, best first.
    """
    from tqdm.auto import tqdm

    from activeseg.report.heatmaps import save_overlay

    cfg = cfg or SimConfig()
    data = read_folder(images_dir, masks_dir, require_masks=False)
    labeled = [i for i, m in enumerate(data.masks) if m is not None]
    unlabeled = [i for i, m in enumerate(data.masks) if m is None]
    if not labeled:
        raise DatasetError(
            f"no image in {images_dir} has a mask in {masks_dir}; label at least one image "
            "(a mask with the image's file stem) so the model has something to learn from"
        )
    if not unlabeled:
        raise DatasetError(f"every image in {images_dir} already has a mask; there is nothing to suggest")
    # Hold out whole images for checkpoint selection when there are enough; else validate on training.
    rng = np.random.default_rng(cfg.seed)
    order = list(rng.permutation(labeled))
    n_val = max(1, round(0.2 * len(labeled))) if len(labeled) >= 3 else 0
    val_imgs, train_imgs = order[:n_val], order[n_val:]
    train = _patches(data, train_imgs, cfg.patch_size)
    val = _patches(data, val_imgs or train_imgs, cfg.patch_size)
    both = ImageDataset(
        np.concatenate([train.images, val.images]), np.concatenate([train.targets, val.targets]),
        train.item_ids + val.item_ids, np.concatenate([train.groups, val.groups]),
    )
    device = pick_device(cfg.device)
    if not quiet:
        print(f"activeseg: training on {len(train)} patches from {len(train_imgs)} labelled image(s), "
              f"validating on {len(val_imgs) or len(train_imgs)} image(s)")
    t0 = time.perf_counter()
    model, fitres = train_round(cfg, both, np.arange(len(train)), np.arange(len(train), len(both)),
                                round_seed(cfg.seed, 1), device)
    strategy = make_strategy(cfg)
    estimator = round_estimator(cfg, round_seed(cfg.seed, 1))
    scores, maps, fgs, measures = [], {}, {}, []
    for i in tqdm(unlabeled, desc="scoring", unit="image", disable=quiet):
        probs = _full_image_probs(model, data.images[i], estimator, cfg.depth, device)
        scores.append(float(np.asarray(strategy.score(probs))[0]))
        measures.append({f"mean_{name}": round(float(m.mean()), 6) for name, m in fused_maps(probs, MEASURES).items()})
        if strategy.needs_model:
            maps[i] = np.asarray(strategy.map(probs))[0]
        fgs[i] = probs.mean(1)[0, 1:].sum(0).numpy()
    if not strategy.needs_model:
        scores = strategy.select(np.zeros(len(unlabeled)), len(unlabeled), rng)  # a random order
        scores = (len(unlabeled) - np.argsort(scores)).astype(float).tolist()
    ranking = np.argsort(-np.asarray(scores), kind="stable")
    out = Path(out)
    (out / "heatmaps").mkdir(parents=True, exist_ok=True)
    rows = []
    for rank, j in enumerate(ranking, start=1):
        i = unlabeled[j]
        rows.append({"file": data.paths[i].name, "score": scores[j], "rank": rank, **measures[j]})
        if rank <= k:
            img = data.images[i][0] if data.images[i].shape[0] == 1 else np.moveaxis(data.images[i], 0, -1)
            unc = maps.get(i, np.zeros_like(fgs[i]))
            save_overlay(out / "heatmaps" / f"{rank:03d}_{data.names[i]}.png", img, fgs[i], unc,
                         title=f"rank {rank}: {data.paths[i].name} ({cfg.strategy} {scores[j]:.4g})")
    with open(out / "suggestions.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    torch.save(model.state_dict(), out / "model.pt")
    meta = {**json.loads(cfg.to_json()), "labeled_images": len(labeled), "unlabeled_images": len(unlabeled),
            "best_val_dice": fitres.best_val, "seconds": round(time.perf_counter() - t0, 2)}
    (out / "config.json").write_text(json.dumps(meta, indent=1))
    return rows
