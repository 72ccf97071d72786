"""In-memory dataset of equally sized images (segmentation patches or classified images), tiling and
normalisation helpers."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def task_of(targets: np.ndarray) -> str:
    """``"classification"`` for labels ``[N]``, ``"segmentation"`` for masks ``[N, H, W]``."""
    return "classification" if np.ndim(targets) == 1 else "segmentation"


@dataclass
class ImageDataset:
    """Labelled images ready for training: segmentation patches or classified images.

    Attributes:
        images: ``[N, C, H, W]`` float32, normalised intensities (about [0, 1]).
        targets: ``[N, H, W]`` uint8 class masks (segmentation; binary: 0 background, 1 foreground) or
            ``[N]`` integer class labels (classification).
        item_ids: N unique strings naming where each item came from (``source_z17_r0_c2``).
        groups: ``[N]`` int; items sharing a group (one source image or a block of neighbouring
            slices/frames) always land on the same side of a split.
        num_classes: C, the number of classes (2 for binary segmentation).
        official_test: dataset indices of a standard test set (e.g. MNIST's 10,000), or None; when
            given, splits test on exactly these items.
    """

    images: np.ndarray
    targets: np.ndarray
    item_ids: list[str]
    groups: np.ndarray
    num_classes: int = 2
    official_test: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.images)
        if not (len(self.targets) == len(self.item_ids) == len(self.groups) == n):
            raise ValueError(
                f"dataset parts disagree in length: images {n}, targets {len(self.targets)}, "
                f"ids {len(self.item_ids)}, groups {len(self.groups)}"
            )
        if self.images.ndim != 4:
            raise ValueError(f"images must be [N, C, H, W], got shape {self.images.shape}")
        if self.targets.ndim not in (1, 3):
            raise ValueError(
                f"targets must be [N] class labels or [N, H, W] masks, got shape {self.targets.shape}"
            )

    def __len__(self) -> int:
        return len(self.images)

    @property
    def in_channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def task(self) -> str:
        """``"classification"`` for ``[N]`` labels, ``"segmentation"`` for ``[N, H, W]`` masks."""
        return task_of(self.targets)

    def subset(self, idx: np.ndarray) -> ImageDataset:
        idx = np.asarray(idx, dtype=np.int64)
        official = None
        if self.official_test is not None:  # re-index the standard test items that the subset keeps
            official = np.flatnonzero(np.isin(idx, self.official_test))
        return ImageDataset(
            self.images[idx],
            self.targets[idx],
            [self.item_ids[i] for i in idx],
            self.groups[idx],
            self.num_classes,
            official,
        )


def normalize_percentile(image: np.ndarray, low: float = 1.0, high: float = 99.8) -> np.ndarray:
    """Scale intensities so the ``low``/``high`` percentiles map to 0/1, clipped to [0, 1].

    Args:
        image: ``[H, W]`` or ``[H, W, C]`` array of any numeric dtype (channels normalised together).

    Returns:
        float32 array of the same shape.
    """
    image = image.astype(np.float32)
    lo, hi = np.percentile(image, [low, high])
    if hi <= lo:
        return np.zeros_like(image)
    # lo/hi are float64 scalars; keep the float32 promised above (NumPy 2 would promote to float64).
    return np.clip((image - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def tile(array: np.ndarray, size: int) -> list[tuple[int, int, np.ndarray]]:
    """Cut the leading two axes of ``array`` into non-overlapping ``size`` × ``size`` tiles.

    Rows/columns that do not fill a whole tile are dropped; an image smaller than one tile is
    zero-padded to a single tile.

    Returns:
        list of (row index, column index, tile).
    """
    h, w = array.shape[:2]
    if h < size or w < size:
        pad = [(0, max(0, size - h)), (0, max(0, size - w))] + [(0, 0)] * (array.ndim - 2)
        array = np.pad(array, pad)
        h, w = array.shape[:2]
    out = []
    for r in range(h // size):
        for c in range(w // size):
            out.append((r, c, array[r * size : (r + 1) * size, c * size : (c + 1) * size]))
    return out
