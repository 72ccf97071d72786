"""A lab's own data: ``images/`` and ``masks/`` folders matched by file stem.

Images: PNG or TIFF, 8- or 16-bit, grayscale or RGB(A, alpha dropped); all images of one folder must have
the same number of channels. Masks: single-channel, same height and width as their image, either

* binary: values in {0, 1}, or {0, 255} (255 = foreground) when no class count is given; or
* label maps: integer values 0..C-1, with C from ``classes`` (``--classes``), else from a
  ``classes.json`` in the masks folder (a list of C names, background first, or ``{"names": [...]}``),
  else inferred as the largest value + 1. The value ``ignore_index`` (255 by default, ``--ignore-index``)
  means "not labelled": the loss and the metrics skip those pixels (it is stored as 255 inside).

Everything is checked before any training starts; each problem names the file and the fix.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from activeseg.data.dataset import IGNORE_INDEX, ImageDataset, normalize_percentile, tile_images

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
    """Validate one mask's shape against its image; return it as read (its values are checked by
    :func:`label_masks` once every mask of the folder is known)."""
    if mask.ndim != 2:
        raise DatasetError(f"mask '{path.name}' has shape {mask.shape}; masks must be single-channel 2-D images")
    if mask.shape != tuple(image_shape[:2]):
        h, w = mask.shape
        ih, iw = image_shape[:2]
        raise DatasetError(
            f"mask '{path.name}' is {h}×{w} but image '{image_name}' is {ih}×{iw}; "
            "masks must have the size of their image"
        )
    if not np.issubdtype(mask.dtype, np.integer) and not np.all(np.mod(mask, 1) == 0):
        raise DatasetError(f"mask '{path.name}' holds fractional values; save integer class labels")
    return mask


def read_class_names(masks_dir: Path | None) -> list[str] | None:
    """The class names of ``masks_dir/classes.json`` (a list, or ``{"names": [...]}``), or None."""
    path = None if masks_dir is None else Path(masks_dir) / "classes.json"
    if path is None or not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DatasetError(f"{path} is not valid JSON ({err}); write a list of class names, background first") from None
    names = doc.get("names") if isinstance(doc, dict) else doc
    if not isinstance(names, list) or len(names) < 2 or not all(isinstance(n, str) and n for n in names):
        raise DatasetError(f"{path} must hold a list of 2 or more class names, background first "
                           '(e.g. ["background", "nucleus"])')
    return names


MAX_INFERRED_CLASSES = 20
"""Inferring more classes than this from the values is refused: such masks are usually instance labels."""


def _encoding(values: set) -> str:
    if values <= {0, 1}:
        return "binary"
    if values <= {0, 255}:
        return "binary255"
    return "labels"


def label_masks(masks: dict[str, np.ndarray], paths: dict[str, Path], classes: int | None,
                ignore_index: int = IGNORE_INDEX) -> tuple[dict[str, np.ndarray], int, list[str]]:
    """The folder's masks as uint8 class maps (not-labelled pixels = 255), the class count C, and the
    problems found (one line each).

    Without ``classes`` and with every mask binary, each mask keeps today's rule: {0, 1}, or {0, 255} with
    255 = foreground; C = 2. Otherwise the values are class labels 0..C-1 or ``ignore_index``, C is
    ``classes`` or the largest label + 1 (at most :data:`MAX_INFERRED_CLASSES` when inferred); a folder
    that mixes {0, 255} binary masks with label maps is ambiguous and refused.
    """
    values = {stem: set(np.unique(m).tolist()) for stem, m in masks.items()}
    kinds = {stem: _encoding(v) for stem, v in values.items()}
    if classes is None and "labels" not in kinds.values():
        return {stem: (m > 0).astype(np.uint8) for stem, m in masks.items()}, 2, []
    if classes is not None and not 2 <= classes <= 255:
        return {}, 2, [f"classes={classes}; a label map needs 2 to 255 classes (background included)"]
    problems = []
    if classes is None:
        binary255 = [stem for stem, kind in kinds.items() if kind == "binary255"]
        labels = [stem for stem, kind in kinds.items() if kind == "labels"]
        if binary255 and ignore_index == 255:
            return {}, 2, [f"mask '{paths[binary255[0]].name}' is binary with 255 = foreground but mask "
                           f"'{paths[labels[0]].name}' holds class labels (where 255 means not labelled); save "
                           "the binary masks as {0, 1}, or give --classes / classes.json"]
        every = set().union(*values.values()) - {ignore_index}
        largest = int(max(every, default=1))
        if largest + 1 > MAX_INFERRED_CLASSES:
            stem = next(s for s, v in values.items() if largest in v)
            return {}, 2, [f"mask '{paths[stem].name}' holds the value {largest}: {largest + 1} classes is more "
                           f"than the {MAX_INFERRED_CLASSES} inferred at most, so these look like instance labels; "
                           "for nucleus vs background save `labels > 0`, for a label map give --classes or a "
                           "classes.json with the class names"]
        classes = max(2, largest + 1)
    for stem, vals in values.items():
        bad = sorted(v for v in vals if v != ignore_index and not 0 <= v < classes)
        if bad:
            shown = ", ".join(str(int(v)) for v in bad[:5]) + (" ..." if len(bad) > 5 else "")
            problems.append(f"mask '{paths[stem].name}' holds the value(s) {shown}, not a class 0..{classes - 1} "
                            f"nor the not-labelled value {ignore_index}; fix the mask, or set --classes / "
                            "classes.json to the right class count")
    out = {}
    for stem, m in masks.items():
        m = np.asarray(m).astype(np.int64)
        out[stem] = np.where(m == ignore_index, IGNORE_INDEX, m).astype(np.uint8)
    return out, classes, problems


@dataclass
class FolderImages:
    """Full-size images of a folder, normalised, with masks where they exist."""

    names: list[str]
    paths: list[Path]
    images: list[np.ndarray]  # each [C, H, W] float32
    masks: list[np.ndarray | None]  # each [H, W] uint8 class map (255 = not labelled) or None
    num_classes: int = 2
    class_names: tuple[str, ...] | None = None


def read_folder(images_dir: str | Path, masks_dir: str | Path | None, require_masks: bool,
                classes: int | None = None, ignore_index: int = IGNORE_INDEX) -> FolderImages:
    """Read and validate every image and mask; raise one DatasetError listing all problems.

    Args:
        classes: the class count C of label-map masks (else ``classes.json``, else inferred).
        ignore_index: the masks' "not labelled" value.
    """
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
    names = read_class_names(masks_dir)
    if names is not None and classes is not None and len(names) != classes:
        raise DatasetError(f"--classes {classes} disagrees with the {len(names)} names of "
                           f"{Path(masks_dir) / 'classes.json'}; drop one or make them agree")
    classes = classes if classes is not None else (len(names) if names is not None else None)
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
    given = {stem: m for stem, m in zip(out.names, out.masks, strict=True) if m is not None}
    labelled, out.num_classes, label_problems = label_masks(given, masks, classes, ignore_index)
    problems += label_problems
    if problems:
        raise DatasetError(f"{len(problems)} problem(s) in {images_dir}:\n  - " + "\n  - ".join(problems))
    out.masks = [labelled.get(stem) for stem in out.names]
    if names is not None:
        out.class_names = tuple(names)
    return out


def is_volume_folder(images_dir: str | Path) -> bool:
    """Whether a folder holds volumes: any NIfTI file (``.nii``, ``.nii.gz``) makes its TIFFs stacks too."""
    folder = Path(images_dir)
    return folder.is_dir() and any(p.name.lower().endswith((".nii", ".nii.gz")) for p in folder.iterdir())


def load_folder(root: str | Path, patch_size: int = 64, classes: int | None = None,
                ignore_index: int = IGNORE_INDEX) -> ImageDataset:
    """A fully labelled ``root/images`` + ``root/masks`` folder, tiled into patches (one group per image).

    A folder of volumes (:func:`is_volume_folder`) is read by :func:`activeseg.data.volumes.read_volume_folder`
    (every volume needs its label volume) and tiled into ``patch_size``³ cubes, each volume's intensities
    scaled to [0, 1] between its 1st and 99.8th percentiles."""
    root = Path(root)
    if is_volume_folder(root / "images"):
        from activeseg.data.volumes import read_volume_folder, scaled

        names, vols, labels, n_classes = read_volume_folder(root / "images", root / "masks", classes, ignore_index)
        missing = [n for n, lab in zip(names, labels, strict=True) if lab is None]
        if missing:
            raise DatasetError(f"volume(s) {', '.join(missing)} have no label volume in {root / 'masks'}; a "
                               "simulation needs every volume labelled")
        return tile_images(names, [scaled(v) for v in vols], [lab.data for lab in labels], patch_size,
                           groups=range(len(names)),
                           num_classes=n_classes, class_names=read_class_names(root / "masks"))
    data = read_folder(root / "images", root / "masks", require_masks=True, classes=classes,
                       ignore_index=ignore_index)
    return tile_images(data.names, data.images, data.masks, patch_size, groups=range(len(data.names)),
                       num_classes=data.num_classes, class_names=data.class_names)
