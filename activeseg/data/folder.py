"""A lab's own data: ``images/`` and ``masks/`` folders matched by file stem.

Images: PNG or TIFF, 8- or 16-bit, grayscale or RGB(A, alpha dropped); all images of one folder must have
the same number of channels. Masks: single-channel, same height and width as their image, values in
{0, 1} or {0, 255}. Everything is checked before any training starts; each problem names the file and
the fix.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from activeseg.data.dataset import ImageDataset, normalize_percentile, tile_images

IMAGE_SUFFIXES = (".png", ".tif", ".tiff")


class DatasetError(ValueError):
    """A folder dataset is not usable; the message lists every problem found."""


def read_image(path: Path) -> np.ndarray:
    """Read a PNG or TIFF as ``[H, W]`` or ``[H, W, C]`` (alpha dropped); clear error if unreadable."""
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            import tifffile

            arr = tifffile.imread(path)
        else:
            from PIL import Image

            with Image.open(path) as im:
                arr = np.asarray(im)
    except Exception as err:  # noqa: BLE001 - any decoder failure is reported the same way
        raise DatasetError(f"{path}: cannot be read as an image ({err}); re-export it as PNG or TIFF") from err
    if arr.size == 0:  # tifffile returns an empty array for a corrupt or truncated file
        raise DatasetError(f"{path}: cannot be read as an image (no pixel data); re-export it as PNG or TIFF")
    arr = np.squeeze(arr)
    if arr.ndim == 3 and arr.shape[0] in (3, 4) and arr.shape[-1] not in (3, 4):
        arr = np.moveaxis(arr, 0, -1)  # channel-first TIFF
    if arr.ndim == 3 and arr.shape[-1] == 4:
        arr = arr[..., :3]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] != 3):
        raise DatasetError(
            f"{path}: shape {arr.shape} is not a 2-D grayscale or RGB image; "
            "save one 2-D plane per file (gray or RGB)"
        )
    return arr


def _list(folder: Path) -> dict[str, Path]:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    out: dict[str, Path] = {}
    for p in files:
        if p.stem in out:
            raise DatasetError(
                f"{folder}: two files share the stem '{p.stem}' ({out[p.stem].name}, {p.name}); rename one"
            )
        out[p.stem] = p
    return out


def check_mask(mask: np.ndarray, path: Path, image_shape: tuple[int, ...], image_name: str) -> np.ndarray:
    """Validate one mask against its image and return it as uint8 {0, 1}."""
    if mask.ndim != 2:
        raise DatasetError(f"mask '{path.name}' has shape {mask.shape}; masks must be single-channel 2-D images")
    if mask.shape != tuple(image_shape[:2]):
        h, w = mask.shape
        ih, iw = image_shape[:2]
        raise DatasetError(
            f"mask '{path.name}' is {h}×{w} but image '{image_name}' is {ih}×{iw}; "
            "masks must have the size of their image"
        )
    values = np.unique(mask)
    if set(values.tolist()) <= {0, 1}:
        return mask.astype(np.uint8)
    if set(values.tolist()) <= {0, 255}:
        return (mask == 255).astype(np.uint8)
    shown = ", ".join(str(v) for v in values[:8]) + (" ..." if len(values) > 8 else "")
    raise DatasetError(
        f"mask '{path.name}' has values {{{shown}}}; binary masks must use {{0, 1}} or {{0, 255}} "
        "(for instance labels, save `labels > 0`)"
    )


@dataclass
class FolderImages:
    """Full-size images of a folder, normalised, with masks where they exist."""

    names: list[str]
    paths: list[Path]
    images: list[np.ndarray]  # each [C, H, W] float32
    masks: list[np.ndarray | None]  # each [H, W] uint8 or None


def read_folder(images_dir: str | Path, masks_dir: str | Path | None, require_masks: bool) -> FolderImages:
    """Read and validate every image and mask; raise one DatasetError listing all problems."""
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise DatasetError(f"{images_dir}: no such folder; expected a folder of PNG/TIFF images")
    images = _list(images_dir)
    if not images:
        raise DatasetError(f"{images_dir}: no .png/.tif/.tiff images found")
    masks: dict[str, Path] = {}
    if masks_dir is not None:
        masks_dir = Path(masks_dir)
        if not masks_dir.is_dir():
            raise DatasetError(f"{masks_dir}: no such folder; expected a folder of masks named like the images")
        masks = _list(masks_dir)
    problems: list[str] = []
    for stem in sorted(set(masks) - set(images)):
        problems.append(
            f"mask '{masks[stem].name}' has no image with stem '{stem}' in {images_dir}; "
            "add the image or remove the mask"
        )
    out = FolderImages([], [], [], [])
    channels: dict[int, str] = {}
    for stem, path in images.items():
        try:
            img = read_image(path)
            mask = None
            if stem in masks:
                mask = check_mask(read_image(masks[stem]), masks[stem], img.shape, path.name)
            elif require_masks:
                raise DatasetError(
                    f"image '{path.name}' has no mask; add {Path(masks_dir or 'masks') / (stem + '.png')} "
                    "or move the image out of the folder"
                )
        except DatasetError as err:
            problems.append(str(err))
            continue
        c = 1 if img.ndim == 2 else 3
        channels.setdefault(c, path.name)
        chw = normalize_percentile(img)
        chw = chw[None] if chw.ndim == 2 else np.moveaxis(chw, -1, 0)
        out.names.append(stem)
        out.paths.append(path)
        out.images.append(np.ascontiguousarray(chw))
        out.masks.append(mask)
    if len(channels) > 1:
        problems.append(
            f"images mix grayscale and RGB (e.g. '{channels[1]}' is gray, '{channels[3]}' is RGB); "
            "convert them all to one kind"
        )
    if problems:
        raise DatasetError(f"{len(problems)} problem(s) in {images_dir}:\n  - " + "\n  - ".join(problems))
    return out


def load_folder(root: str | Path, patch_size: int = 64) -> ImageDataset:
    """A fully labelled ``root/images`` + ``root/masks`` folder, tiled into patches (one group per image)."""
    root = Path(root)
    data = read_folder(root / "images", root / "masks", require_masks=True)
    return tile_images(data.names, data.images, data.masks, patch_size, groups=range(len(data.names)))
