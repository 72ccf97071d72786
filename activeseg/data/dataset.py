"""In-memory dataset of equally sized images (segmentation patches or classified images), tiling and
normalisation helpers."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

IGNORE_INDEX = 255
"""The default mask value for "not labelled": the loss and the metrics skip these pixels."""


def task_of(targets: np.ndarray) -> str:
    """``"classification"`` for labels ``[N]``, ``"segmentation"`` for masks ``[N, H, W]``."""
    return "classification" if np.ndim(targets) == 1 else "segmentation"


@dataclass
class ImageDataset:
    """Labelled images ready for training: segmentation patches or classified images.

    Attributes:
        images: ``[N, C, *S]`` float32, normalised intensities (about [0, 1]); ``S`` is ``H, W`` for
            images (``spatial_dims`` = 2), ``D, H, W`` for volumes.
        targets: ``[N, *S]`` uint8 class masks (segmentation; binary: 0 background, 1 foreground;
            ``IGNORE_INDEX`` = 255: not labelled, skipped by the loss and the metrics) or
            ``[N]`` integer class labels (classification).
        item_ids: N unique strings naming where each item came from (``source_z17_r0_c2``).
        groups: ``[N]`` int; items sharing a group (one source image or a block of neighbouring
            slices/frames) always land on the same side of a split.
        num_classes: C, the number of classes (2 for binary segmentation).
        official_test: dataset indices of a standard test set (e.g. MNIST's 10,000), or None; when
            given, splits test on exactly these items.
        official_val: dataset indices of a fixed validation set (a spatial split's validation strips), or
            None (validation is then drawn from the rest).
        class_names: C names (``background`` first), or None.
        boxes: ``[N, 2·d]`` int where each item lies in its source image: ``(y0, x0, y1, x1)`` in 2-D
            (half-open), or None.
    """

    images: np.ndarray
    targets: np.ndarray
    item_ids: list[str]
    groups: np.ndarray
    num_classes: int = 2
    official_test: np.ndarray | None = None
    official_val: np.ndarray | None = None
    class_names: tuple[str, ...] | None = None
    boxes: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.images)
        if not (len(self.targets) == len(self.item_ids) == len(self.groups) == n):
            raise ValueError(
                f"dataset parts disagree in length: images {n}, targets {len(self.targets)}, "
                f"ids {len(self.item_ids)}, groups {len(self.groups)}"
            )
        if self.images.ndim < 4:
            raise ValueError(f"images must be [N, C, H, W] (or [N, C, D, H, W]), got shape {self.images.shape}")
        if self.class_names is not None and len(self.class_names) != self.num_classes:
            raise ValueError(f"{len(self.class_names)} class names for {self.num_classes} classes")
        if self.boxes is not None and len(self.boxes) != n:
            raise ValueError(f"{len(self.boxes)} boxes for {n} items")
        if self.targets.ndim not in (1, self.images.ndim - 1):
            raise ValueError(f"targets must be [N] class labels or [N, *spatial] masks matching images "
                             f"{self.images.shape}, got shape {self.targets.shape}")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def spatial_dims(self) -> int:
        """The spatial rank of the items: 2 for images, 3 for volumes."""
        return int(self.images.ndim - 2)

    @property
    def in_channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def task(self) -> str:
        """``"classification"`` for ``[N]`` labels, ``"segmentation"`` for ``[N, H, W]`` masks."""
        return task_of(self.targets)

    def subset(self, idx: np.ndarray) -> ImageDataset:
        idx = np.asarray(idx, dtype=np.int64)

        def keep(fixed):  # re-index the fixed test / validation items that the subset keeps
            return None if fixed is None else np.flatnonzero(np.isin(idx, fixed))

        return ImageDataset(
            self.images[idx],
            self.targets[idx],
            [self.item_ids[i] for i in idx],
            self.groups[idx],
            self.num_classes,
            keep(self.official_test),
            keep(self.official_val),
            self.class_names,
            None if self.boxes is None else self.boxes[idx],
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


def tile_grid(spatial_shape: tuple[int, ...], size: int) -> tuple[int, ...]:
    """Tiles per spatial axis: ``side // size``, at least one (a side shorter than a tile is padded)."""
    return tuple(max(1, side // size) for side in spatial_shape)


def cut_tile(array: np.ndarray, position: tuple[int, ...], size: int) -> np.ndarray:
    """The tile at grid ``position`` of the leading ``len(position)`` axes of ``array`` (a view when the
    array fills the tile; zero-padded to ``size`` on a short side)."""
    short = [(0, max(0, size - array.shape[i])) for i in range(len(position))]
    if any(pad for _, pad in short):
        array = np.pad(array, short + [(0, 0)] * (array.ndim - len(position)))
    return array[tuple(slice(p * size, (p + 1) * size) for p in position)]


def tile(array: np.ndarray, size: int, spatial_dims: int = 2) -> list[tuple[tuple[int, ...], np.ndarray]]:
    """Cut the leading ``spatial_dims`` axes of ``array`` into non-overlapping tiles of side ``size``.

    Rows/columns (planes) that do not fill a whole tile are dropped; a side shorter than one tile is
    zero-padded to a single tile. Tiles come in row-major grid order.

    Returns:
        list of (grid position, tile): position ``(row, column)`` in 2-D.
    """
    grid = tile_grid(array.shape[:spatial_dims], size)
    return [(pos, cut_tile(array, pos, size)) for pos in np.ndindex(*grid)]


def tile_name(position: tuple[int, ...]) -> str:
    """The item-id suffix of a tile: ``r{row}_c{col}`` in 2-D, ``z{plane}_r{row}_c{col}`` in 3-D."""
    axes = ("r", "c") if len(position) == 2 else ("z", "r", "c")[-len(position):]
    return "_".join(f"{a}{p}" for a, p in zip(axes, position, strict=True))


def tile_pairs(image_C_S: np.ndarray, mask_S: np.ndarray, size: int) -> list[tuple[tuple[int, ...], np.ndarray,
                                                                                     np.ndarray]]:
    """The matching tiles ``(position, image [C, *tile], mask [*tile])`` of a channel-first image and its mask."""
    spatial = mask_S.ndim
    moved = np.moveaxis(image_C_S, 0, -1)
    return [(pos, np.moveaxis(t_img, -1, 0), t_mask)
            for (pos, t_img), (_, t_mask) in zip(tile(moved, size, spatial), tile(mask_S, size, spatial), strict=True)]


def pad_to_multiple(image_C_S: np.ndarray, multiple: int) -> np.ndarray:
    """``image_C_S`` padded at the end of every spatial axis to a multiple of ``multiple`` (reflected, or
    the edge repeated when a pad is as long as its side); crop ``[..., :h, :w]`` to undo."""
    pads = [(0, (-side) % multiple) for side in image_C_S.shape[1:]]
    if not any(p for _, p in pads):
        return image_C_S
    mode = "reflect" if all(p < side for (_, p), side in zip(pads, image_C_S.shape[1:], strict=True)) else "edge"
    return np.pad(image_C_S, [(0, 0), *pads], mode=mode)


def tile_images(names, images, masks, patch_size: int, groups, num_classes: int = 2,
                class_names: tuple[str, ...] | None = None) -> ImageDataset:
    """Patches of the images ``[C, *S]`` and class masks ``[*S]`` (tiled by ``tile_pairs``), the item ids
    ``<name>_r<row>_c<col>`` and each image's group: a number, or a function of the tile's grid position."""
    tile_imgs, tile_masks, ids, group_of = [], [], [], []
    for name, img, mask, g in zip(names, images, masks, groups, strict=True):
        for pos, t_img, t_mask in tile_pairs(img, mask, patch_size):
            tile_imgs.append(t_img)
            tile_masks.append(t_mask)
            ids.append(f"{name}_{tile_name(pos)}")
            group_of.append(g(*pos) if callable(g) else g)
    return ImageDataset(np.stack(tile_imgs).astype(np.float32), np.stack(tile_masks), ids, np.asarray(group_of),
                        num_classes=num_classes, class_names=None if class_names is None else tuple(class_names))
