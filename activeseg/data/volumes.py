"""Volumes in: NIfTI (``.nii``, ``.nii.gz``, through nibabel) and TIFF stacks, with their voxel spacing.

Arrays are channel-first ``[C, D, H, W]`` (float32 images) and ``[D, H, W]`` (uint8 label volumes), ``D``
the slowest axis: a NIfTI volume's voxel axes (i, j, k) become (D, H, W) = (k, j, i), so a stack of axial
slices reads as slices; its spacing (mm) follows the same order and its affine is kept for writing results
back on the same grid. A TIFF stack's spacing comes from ImageJ metadata (``spacing`` for D, the resolution
tags for H and W) when present, else 1.

:func:`read_volume_folder` pairs a folder of volumes with a folder of label volumes by file stem, as
:func:`activeseg.data.folder.read_folder` does for images, and checks everything before returning anything:
a label volume whose shape or affine differs from its image's, label values that are not a class nor the
ignore value, an unreadable file: each is a line of one :class:`~activeseg.data.folder.DatasetError` naming
the file; nothing is written. ``resample`` brings every volume to one target spacing (linear for images,
nearest for labels).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from activeseg.data.folder import DatasetError

__all__ = ["VOLUME_SUFFIXES", "Volume", "read_volume", "read_volume_folder", "resample", "scaled", "write_volume"]

VOLUME_SUFFIXES = (".nii.gz", ".nii", ".tif", ".tiff")


@dataclass
class Volume:
    """One volume: ``data`` ``[C, D, H, W]`` (image) or ``[D, H, W]`` (labels), ``spacing`` per spatial axis
    (D, H, W), and the NIfTI ``affine`` (voxel (i, j, k) → world; None for TIFF)."""

    data: np.ndarray
    spacing: tuple[float, float, float]
    affine: np.ndarray | None = None


def scaled(volume: Volume) -> np.ndarray:
    """``[C, D, H, W]`` float32: each channel of the volume scaled to [0, 1] between its 1st and 99.8th
    percentiles (:func:`activeseg.data.dataset.normalize_percentile`), as the models see volumes."""
    from activeseg.data.dataset import normalize_percentile

    return np.stack([normalize_percentile(ch) for ch in volume.data])


def stem(path: Path) -> str:
    """The file name without its volume suffix (``a.nii.gz`` → ``a``)."""
    name = path.name
    for suffix in VOLUME_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def read_volume(path: str | Path, labels: bool = False) -> Volume:
    """Read a NIfTI or TIFF volume; ``labels``: a label volume ``[D, H, W]`` (integers) instead of an image
    ``[C, D, H, W]`` (float32). Raises :class:`DatasetError` naming the file when it cannot be read."""
    path = Path(path)
    name = path.name.lower()
    try:
        if name.endswith((".nii", ".nii.gz")):
            import nibabel as nib

            img = nib.load(str(path))
            arr = np.asarray(img.dataobj)
            zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
            affine = np.asarray(img.affine, dtype=np.float64)
            if arr.ndim == 4:  # (i, j, k, channel)
                arr = np.moveaxis(arr, 3, 0)
            elif arr.ndim != 3:
                raise DatasetError(f"volume '{path.name}' has {arr.ndim} axes; a volume has 3 (or 4 with channels)")
            arr = np.swapaxes(arr, -1, -3)  # (.., i, j, k) -> (.., k, j, i) = (.., D, H, W)
            spacing = (zooms[2], zooms[1], zooms[0])
        elif name.endswith((".tif", ".tiff")):
            arr, spacing = _read_tiff_stack(path)
            affine = None
        else:
            raise DatasetError(f"'{path.name}' is not a volume: use {', '.join(VOLUME_SUFFIXES)}")
    except DatasetError:
        raise
    except Exception as err:  # nibabel and tifffile raise many kinds for a damaged file
        raise DatasetError(f"cannot read volume '{path.name}': {type(err).__name__}: {err}") from None
    if labels:
        if arr.ndim != 3:
            raise DatasetError(f"label volume '{path.name}' has shape {arr.shape}; labels need [D, H, W]")
        if not np.issubdtype(arr.dtype, np.integer) and not np.array_equal(arr, np.round(arr)):
            raise DatasetError(f"label volume '{path.name}' holds non-integer values; save class labels")
        return Volume(arr.astype(np.int64), spacing, affine)
    data = arr[None] if arr.ndim == 3 else arr
    return Volume(np.ascontiguousarray(data, dtype=np.float32), spacing, affine)


def _read_tiff_stack(path: Path) -> tuple[np.ndarray, tuple[float, float, float]]:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        arr = tif.asarray()
        ij = tif.imagej_metadata or {}
        page = tif.pages[0]
        xy = []
        for tag in ("YResolution", "XResolution"):
            res = page.tags.get(tag)
            num, den = res.value if res is not None else (1, 1)
            xy.append(float(den) / float(num) if num else 1.0)
    if arr.ndim != 3:
        raise DatasetError(f"TIFF '{path.name}' has shape {arr.shape}; a stack is [D, H, W]")
    return arr, (float(ij.get("spacing", 1.0)), xy[0], xy[1])


def write_volume(path: str | Path, data: np.ndarray, like: Volume) -> Path:
    """Write ``data`` ``[D, H, W]`` as NIfTI on ``like``'s grid (its affine, or its spacing when it has none),
    e.g. an uncertainty volume beside the prediction; the file is written whole or not at all."""
    import nibabel as nib

    path = Path(path)
    arr = np.asarray(data)
    if arr.shape != like.data.shape[-3:]:
        raise ValueError(f"volume {arr.shape} does not match the grid {like.data.shape[-3:]} it is written on")
    affine = like.affine if like.affine is not None else np.diag([*like.spacing[::-1], 1.0])
    img = nib.Nifti1Image(np.swapaxes(arr, 0, 2), affine)  # (D, H, W) -> (i, j, k); zooms from the affine
    tmp = path.with_name(".tmp-" + path.name)  # same suffix: nibabel picks the format from it
    nib.save(img, str(tmp))
    tmp.replace(path)
    return path


def resample(volume: Volume, spacing: tuple[float, float, float], labels: bool = False) -> Volume:
    """``volume`` on a grid of ``spacing`` (linear interpolation for images, nearest for labels)."""
    from scipy import ndimage

    factors = [s / t for s, t in zip(volume.spacing, spacing, strict=True)]
    order = 0 if labels else 1
    if labels:
        data = ndimage.zoom(volume.data, factors, order=order)
    else:
        data = np.stack([ndimage.zoom(ch, factors, order=order) for ch in volume.data]).astype(np.float32)
    affine = None
    if volume.affine is not None:
        affine = volume.affine.copy()
        affine[:3, :3] = volume.affine[:3, :3] @ np.diag([1 / f for f in factors[::-1]])
    return Volume(data, tuple(float(s) for s in spacing), affine)


def read_volume_folder(images_dir: str | Path, labels_dir: str | Path | None, classes: int | None = None,
                       ignore_index: int = 255, spacing: tuple[float, float, float] | None = None
                       ) -> tuple[list[str], list[Volume], list[Volume | None], int]:
    """``(names, images, labels, classes)`` of a folder of volumes and (some of) their label volumes.

    Labels are matched by stem; a volume without one is unlabelled (None). ``classes`` (else the largest
    label + 1, at least 2) bounds the label values; ``ignore_index`` marks unlabelled voxels. Every problem
    is collected and raised together before anything is returned.
    """
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise DatasetError(f"images folder '{images_dir}' does not exist")
    files = sorted(p for p in images_dir.iterdir() if p.name.lower().endswith(VOLUME_SUFFIXES))
    if not files:
        raise DatasetError(f"no volume ({', '.join(VOLUME_SUFFIXES)}) in '{images_dir}'")
    label_files = {}
    if labels_dir is not None:
        label_files = {stem(p): p for p in sorted(Path(labels_dir).iterdir())
                       if p.name.lower().endswith(VOLUME_SUFFIXES)}
    problems, names, images, labels = [], [], [], []
    for path in files:
        try:
            image = read_volume(path)
            label = read_volume(label_files[stem(path)], labels=True) if stem(path) in label_files else None
        except DatasetError as err:
            problems.append(str(err))
            continue
        if label is not None:
            if label.data.shape != image.data.shape[1:]:
                problems.append(f"label volume '{label_files[stem(path)].name}' is {label.data.shape} but volume "
                                f"'{path.name}' is {image.data.shape[1:]}")
            elif image.affine is not None and label.affine is not None and not np.allclose(image.affine,
                                                                                        label.affine, atol=1e-3):
                problems.append(f"label volume '{label_files[stem(path)].name}' lies on another grid (affine) than "
                                f"'{path.name}'; resample it onto the image")
        names.append(stem(path))
        images.append(image)
        labels.append(label)
    known = {stem(p) for p in files}
    problems += [f"label volume '{p.name}' has no volume of that name" for s, p in label_files.items()
                 if s not in known]
    values = set().union(*(set(np.unique(v.data).tolist()) for v in labels if v is not None)) - {ignore_index}
    n_classes = classes if classes is not None else max(2, int(max(values, default=1)) + 1)
    bad = sorted(v for v in values if not 0 <= v < n_classes)
    if bad:
        problems.append(f"label values {bad[:5]} are neither a class 0..{n_classes - 1} nor the not-labelled value "
                        f"{ignore_index}; fix the labels or give the class count")
    if problems:
        raise DatasetError("\n".join(problems))
    labels = [None if v is None else Volume(v.data.astype(np.uint8), v.spacing, v.affine) for v in labels]
    if spacing is not None:
        images = [resample(v, spacing) for v in images]
        labels = [None if v is None else resample(v, spacing, labels=True) for v in labels]
    return names, images, labels, n_classes
