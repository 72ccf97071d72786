"""Stream a pool of image files to the model: decode, normalise and tile in worker processes.

Scoring a pool of thousands of images must not hold them all in memory, and the model should not wait
for PNG/TIFF decoding. :class:`TilePool` lists the tiles of a set of files (only image headers are read
up front); :func:`pool_loader` wraps it in a ``torch.utils.data.DataLoader`` whose workers decode and
tile while the main process runs the network. The loader is accepted wherever a pool array is
(``activeseg.scoring.score_pool``, every estimator's ``batches``): scoring then streams from disk and its
peak memory no longer grows with the pool.

Tiles are numbered image by image, row-major (as :func:`activeseg.data.dataset.tile`), so
``pool.index[i] == (file number, tile row, tile column)`` names the i-th score.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from activeseg.data.dataset import cut_tile, normalize_percentile, tile_grid
from activeseg.data.folder import IMAGE_SUFFIXES, DatasetError, read_image


def _image_shape(path: Path) -> tuple[int, int, int]:
    """``(channels, height, width)`` from the file header, without decoding the pixels."""
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            import tifffile

            with tifffile.TiffFile(path) as tif:
                shape = tuple(tif.series[0].shape)
        else:
            from PIL import Image

            with Image.open(path) as im:
                bands = len(im.getbands())
                shape = (im.height, im.width, bands) if bands > 1 else (im.height, im.width)
    except Exception as err:  # noqa: BLE001 - any header failure is reported the same way
        raise DatasetError(f"{path}: cannot be read as an image ({err}); re-export it as PNG or TIFF") from err
    shape = tuple(s for s in shape if s != 1) or (1, 1)
    if len(shape) == 3 and shape[0] in (3, 4) and shape[-1] not in (3, 4):
        shape = (*shape[1:], shape[0])  # channel-first TIFF, as read_image handles it
    if len(shape) == 2:
        return 1, shape[0], shape[1]
    if len(shape) == 3 and shape[-1] in (3, 4):
        return 3, shape[0], shape[1]
    raise DatasetError(f"{path}: shape {shape} is not a 2-D grayscale or RGB image; save one 2-D plane per file")


class TilePool(Dataset):
    """The tiles of a list of image files, decoded on demand.

    Args:
        paths: PNG/TIFF files, or one folder (its images, sorted by name).
        patch_size: tile side; ``None`` = whole images, which must then all have one size. Edge rows and
            columns that do not fill a tile are dropped and an image smaller than a tile is zero-padded,
            exactly as :func:`activeseg.data.dataset.tile` cuts the training data.
        normalize: scale each image by its 1st/99.8th intensity percentiles (as ``read_folder`` does).
    """

    def __init__(self, paths, patch_size: int | None = None, normalize: bool = True) -> None:
        if isinstance(paths, (str, Path)) and Path(paths).is_dir():
            paths = sorted(p for p in Path(paths).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        self.paths = [Path(p) for p in paths]
        if not self.paths:
            raise DatasetError("the pool has no images; give PNG/TIFF files or a folder that holds some")
        self.patch_size = patch_size
        self.normalize = normalize
        shapes = [_image_shape(p) for p in self.paths]
        channels = {s[0] for s in shapes}
        if len(channels) > 1:
            raise DatasetError("the pool mixes grayscale and RGB images; convert them all to one kind")
        self.channels = channels.pop()
        if patch_size is None:
            sizes = {s[1:] for s in shapes}
            if len(sizes) > 1:
                raise DatasetError(
                    f"whole-image scoring needs one image size, the pool has {len(sizes)} "
                    f"(e.g. {sorted(sizes)[:2]}); pass patch_size to score tiles instead"
                )
            self.index = [(i, 0, 0) for i in range(len(self.paths))]
        else:
            if patch_size < 1:
                raise ValueError(f"patch_size={patch_size}; it must be a positive number of pixels")
            self.index = [(i, *pos) for i, shape in enumerate(shapes)
                          for pos in np.ndindex(*tile_grid(shape[1:], patch_size))]
        self._cached: tuple[int, np.ndarray] | None = None  # per process: the last decoded image

    def __len__(self) -> int:
        return len(self.index)

    def image(self, i: int) -> np.ndarray:
        """File ``i`` decoded as float32 ``[C, H, W]`` (tiles of one file are consecutive, so one cached
        image per worker decodes each file once)."""
        if self._cached is None or self._cached[0] != i:
            arr = read_image(self.paths[i])
            arr = normalize_percentile(arr) if self.normalize else arr.astype(np.float32)
            chw = arr[None] if arr.ndim == 2 else np.moveaxis(arr, -1, 0)
            self._cached = (i, np.ascontiguousarray(chw))
        return self._cached[1]

    def __getitem__(self, j: int) -> torch.Tensor:
        i, *pos = self.index[j]
        img = self.image(i)
        if self.patch_size is None:
            return torch.from_numpy(img)
        t = cut_tile(np.moveaxis(img, 0, -1), tuple(pos), self.patch_size)  # the training tiler's cut and padding
        return torch.from_numpy(np.ascontiguousarray(np.moveaxis(t, -1, 0)))


def iter_batches(images, batch_size: int) -> Iterator:
    """Consecutive batches of a pool: ``batch_size`` slices of an array or tensor, or the batches of a
    ``DataLoader`` (or any iterable of tensors) as they come."""
    if isinstance(images, torch.utils.data.DataLoader) or not hasattr(images, "__getitem__"):
        yield from images
        return
    for start in range(0, len(images), batch_size):
        yield images[start : start + batch_size]


def pool_loader(pool: TilePool, batch_size: int = 32, workers: int = 2, pin_memory: bool | None = None) -> DataLoader:
    """Batches ``[B, C, P, P]`` of the pool's tiles in order, decoded by ``workers`` processes (0 = in
    the calling process). Pass the loader to ``score_pool`` in place of an array. ``pin_memory`` (default:
    when CUDA is present) puts each batch in page-locked memory, so it reaches the GPU by an asynchronous
    copy."""
    import torch

    if workers < 0:
        raise ValueError(f"workers={workers}; use 0 to decode in this process or a positive count")
    pin = torch.cuda.is_available() if pin_memory is None else pin_memory
    return DataLoader(pool, batch_size=batch_size, shuffle=False, num_workers=workers,
                      prefetch_factor=2 if workers else None, persistent_workers=False, pin_memory=pin)
