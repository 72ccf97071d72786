"""The human loop on volumes (``activeseg suggest`` on a folder of NIfTI volumes and label volumes).

The 3-D U-Net trains on ``patch_size``³ patches of the labelled volumes, drawn 1:1 from foreground and
background as Nath et al. do (:func:`activeseg.data.patch_sampler.sample_patches`; with three or more
labelled volumes one in five is held out for validation). Each unlabelled volume is then scored whole by
sliding windows (stride ¾ of the window, Gaussian-weighted; :func:`activeseg.scoring.sliding_maps`): its
score is the mean of the strategy's map. Written into ``out``: ``suggestions.csv`` (every unlabelled volume,
best first), and per volume ``volumes/<name>_prediction.nii.gz`` (the predicted classes) beside
``volumes/<name>_uncertainty.nii.gz`` (the map) on the volume's own grid, to open together in a viewer, and
for the top ``k`` the PNGs of the orthogonal slices through the most uncertain voxel (``heatmaps/``).

With a region strategy (``entropy_regions``, ``cereals``, ``random_regions``) the unit is a cube of side
``region_size`` inside a volume: a label volume may then label part of its volume (the ignore value, 255,
marks the voxels left to label; patches train only around labelled voxels), and ``regions.csv`` lists the
best ``k`` disjoint cubes among the unlabelled voxels of every volume (file, ``z, y, x, d, h, w``, score,
informativeness; for ``cereals`` the predicted cost, from the proxy: recorded annotation times are read
for 2-D regions only), each with the orthogonal slices through its most uncertain voxel.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from activeseg.data.dataset import ImageDataset
from activeseg.data.folder import DatasetError

__all__ = ["PATCHES_PER_VOLUME", "suggest_volumes"]

PATCHES_PER_VOLUME = 32


def _patches(vols, labels, which, p: int, rng, num_classes: int, ignore: int) -> ImageDataset:
    """Patches of the volumes ``which``: half centred on foreground when they hold any."""
    from activeseg.data.patch_sampler import sample_patches

    chosen = [labels[i] for i in which]
    fg = any(((lab != 0) & (lab != ignore)).any() for lab in chosen)
    picks = sample_patches(chosen, (p, p, p), max(16, PATCHES_PER_VOLUME * len(which)), rng,
                           fg_fraction=0.5 if fg else 0.0, ignore_index=ignore)
    images = np.stack([vols[which[v]][(slice(None), *box)] for v, box in picks])
    targets = np.stack([labels[which[v]][box] for v, box in picks])
    ids = [f"v{which[v]}_{'_'.join(str(s.start) for s in box)}" for v, box in picks]
    return ImageDataset(images, targets, ids, np.array([which[v] for v, _ in picks]), num_classes=num_classes)


def suggest_volumes(engine, images_dir, masks_dir, out: Path, k: int, seed: int, device: str,
                    quiet: bool = True) -> tuple[list[dict], object, object]:
    """``(rows, model, fit result)``: rank the unlabelled volumes (a region strategy: the cubes inside the
    volumes' unlabelled voxels) and write the files above."""
    import torch

    from activeseg.data.volumes import read_volume_folder, write_volume
    from activeseg.data.volumes import scaled as scale
    from activeseg.report.heatmaps import save_volume_overlays
    from activeseg.scoring import sliding_maps

    cfg = engine.cfg
    strategy = engine.strategy
    regions = getattr(strategy, "unit", "image") == "region"
    if strategy.needs:
        raise ValueError(f"strategy {strategy.name!r} needs more than a map; on volumes pick a map strategy "
                         "(bald, max_entropy, variation_ratio, ...), random, or a region strategy (entropy_regions, "
                         "cereals, random_regions)")
    names, vols, labels, n_classes = read_volume_folder(images_dir, masks_dir, cfg.classes, cfg.ignore_index)
    lab_data = [None if lab is None else lab.data for lab in labels]
    done = [None if lab is None else lab != cfg.ignore_index for lab in lab_data]  # labelled voxels
    labelled = [i for i, d in enumerate(done) if d is not None and d.any()]
    unlabelled = [i for i, d in enumerate(done) if d is None or (regions and not d.all())]
    if not labelled:
        raise DatasetError(f"no volume in {images_dir} has a label volume in {masks_dir}; label at least one")
    if not unlabelled:
        raise DatasetError(f"every {'voxel of every ' if regions else ''}volume in {images_dir} is labelled; there "
                           "is nothing to suggest")
    scaled = [scale(v) for v in vols]
    p = int(cfg.patch_size)
    multiple = 2 ** cfg.depth
    if p % multiple or any(min(v.data.shape[1:]) < p for v in vols):
        raise ValueError(f"patch_size {p} must be a multiple of {multiple} (depth {cfg.depth}) and fit every volume "
                         f"(the smallest side is {min(min(v.data.shape[1:]) for v in vols)}); set --patch-size")
    rng = np.random.default_rng(cfg.seed)
    order = [labelled[i] for i in rng.permutation(len(labelled))]
    n_val = max(1, round(0.2 * len(order))) if len(order) >= 3 else 0
    train = _patches(scaled, lab_data, order[n_val:], p, rng, n_classes, cfg.ignore_index)
    val = _patches(scaled, lab_data, order[:n_val] or order[n_val:], p, rng, n_classes, cfg.ignore_index)
    both = ImageDataset(np.concatenate([train.images, val.images]), np.concatenate([train.targets, val.targets]),
                        train.item_ids + val.item_ids, np.concatenate([train.groups, val.groups]),
                        num_classes=n_classes)
    if not quiet:
        print(f"activeseg: training a 3-D U-Net on {len(train)} patches of {len(order) - n_val} labelled volume(s)")
    model, fitres = engine.fit(both, np.arange(len(train)), np.arange(len(train), len(both)), seed, device)
    model.eval()
    estimator = engine.estimator(seed)
    window, stride = (p,) * 3, (max(1, 3 * p // 4),) * 3
    rows, maps = [], {}
    (out / "volumes").mkdir(parents=True, exist_ok=True)
    for i in unlabelled:
        vol = scaled[i]
        pads = [(0, (-s) % multiple) for s in vol.shape[1:]]  # windows must fit the U-Net's size multiple
        padded = np.pad(vol, [(0, 0), *pads], mode="edge")
        with torch.no_grad():
            mean, umap = sliding_maps(model, padded, strategy, estimator, window, stride, device)
        crop = tuple(slice(0, s) for s in vol.shape[1:])
        mean, umap = mean[(slice(None), *crop)], umap[crop]
        write_volume(out / "volumes" / f"{names[i]}_prediction.nii.gz", mean.argmax(0).astype(np.uint8), vols[i])
        write_volume(out / "volumes" / f"{names[i]}_uncertainty.nii.gz", umap.astype(np.float32), vols[i])
        maps[i] = (mean, umap)
        score = float(umap.mean()) if strategy.needs_model else float(rng.random())  # random: a seeded draw
        rows.append({"file": names[i], "score": score})
    (out / "heatmaps").mkdir(exist_ok=True)
    if regions:
        rows = _region_rows(engine, model, names, scaled, done, maps, unlabelled, k, seed, device, out)
        return rows, model, fitres
    rows.sort(key=lambda r: -r["score"])
    index = {n: i for i, n in enumerate(names)}
    for rank, row in enumerate(rows, start=1):
        row["rank"] = rank
        if rank <= k:
            i = index[row["file"]]
            save_volume_overlays(out / "heatmaps" / f"{rank:03d}_{row['file']}.png", scaled[i], *maps[i],
                                 title=f"rank {rank}: {row['file']} ({cfg.strategy} {row['score']:.4g})")
    with open(out / "suggestions.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["file", "score", "rank"])
        writer.writeheader()
        writer.writerows(rows)
    return rows, model, fitres


def _region_rows(engine, model, names, scaled, done, maps, candidates, k: int, seed: int, device: str,
                 out: Path) -> list[dict]:
    """The ``k`` best cubes (side ``region_size``) among the candidates' unlabelled voxels, scored on their
    sliding-window maps; ``regions.csv`` and the orthogonal slices through each cube's most uncertain voxel."""
    from activeseg.report.heatmaps import save_volume_overlays
    from activeseg.suggest_regions import write_regions

    masks = [np.zeros(scaled[i].shape[1:], bool) if done[i] is None else done[i] for i in candidates]
    scored = ([maps[i][0] for i in candidates], [maps[i][1] for i in candidates])
    sel = engine.propose_regions(model, [scaled[i] for i in candidates], masks, k, seed, device, scored=scored)
    rows = write_regions(out / "regions.csv", sel, lambda item: names[candidates[item]], "cube", "voxels")
    for row, region in zip(rows, sel.pick.regions, strict=True):
        i, box = candidates[region.item], region.slices()
        mean, umap = maps[i]
        save_volume_overlays(out / "heatmaps" / f"{row['rank']:03d}_{names[i]}_z{region.z}_y{region.y}_x{region.x}.png",
                             scaled[i][(slice(None), *box)], mean[(slice(None), *box)], umap[box],
                             title=f"rank {row['rank']}: {names[i]} z={region.z} y={region.y} x={region.x} "
                                   f"({engine.cfg.strategy} {row['score']:.3g})")
    return rows
