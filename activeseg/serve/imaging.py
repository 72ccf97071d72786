"""Uploads checked before they are decoded, and the PNGs the server sends (Pillow only).

Every decoder sees bytes only after the file type is known from its magic bytes and the pixel count
from its header is within the project's cap, so a small file that unpacks to gigabytes (a
decompression bomb) is refused before any pixel is unpacked.
"""

from __future__ import annotations

import io

import numpy as np

from activeseg.data.dataset import IGNORE_INDEX, normalize_percentile
from activeseg.report.heatmaps import class_colours

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


class UploadError(ValueError):
    """An upload that is refused; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


def kind_of(data: bytes) -> str:
    """``"png"`` or ``"tiff"`` from the magic bytes; UploadError (415) otherwise."""
    if data.startswith(PNG_MAGIC):
        return "png"
    if data[:4] in TIFF_MAGIC:
        return "tiff"
    raise UploadError("the file is neither PNG nor TIFF (checked by its first bytes); send a .png or .tif file",
                      status=415)


def decode(data: bytes, max_pixels: int) -> np.ndarray:
    """The pixels of a PNG or TIFF upload as ``[H, W]`` or ``[H, W, C]``, its size checked first."""
    kind = kind_of(data)
    try:
        if kind == "png":
            from PIL import Image

            with Image.open(io.BytesIO(data)) as im:
                _check_pixels(im.width * im.height, f"{im.width}×{im.height}", max_pixels)
                im.load()
                arr = np.asarray(im)
        else:
            import tifffile

            with tifffile.TiffFile(io.BytesIO(data)) as tif:
                if not tif.series:
                    raise UploadError("the TIFF holds no image")
                shape = tif.series[0].shape
                _check_pixels(int(np.prod(shape)), "×".join(map(str, shape)), max_pixels)
                arr = tif.series[0].asarray()
    except UploadError:
        raise
    except Exception as err:  # noqa: BLE001 - any decoder failure is the client's file
        raise UploadError(f"the {kind.upper()} file cannot be decoded ({type(err).__name__}: {err}); "
                          "re-export it") from None
    arr = np.squeeze(arr)
    if arr.ndim == 3 and arr.shape[0] in (3, 4) and arr.shape[-1] not in (3, 4):
        arr = np.moveaxis(arr, 0, -1)
    if arr.ndim == 3 and arr.shape[-1] == 4:
        arr = arr[..., :3]
    if arr.size == 0 or arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] != 3):
        raise UploadError(f"an image of shape {arr.shape} is not a 2-D gray or RGB image; send one plane")
    return arr


def _check_pixels(count: int, shape: str, max_pixels: int) -> None:
    if count > max_pixels:
        raise UploadError(f"the image is {shape} = {count:,} pixels, over this project's cap of {max_pixels:,} "
                          "(max_pixels in project.toml); send a smaller image or tile it", status=413)


def mask_from(data: bytes, shape: tuple[int, int], classes: int, max_pixels: int,
              ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """A label upload as a ``[H, W]`` uint8 class map, or UploadError saying what is wrong with it.

    Accepted: a one-channel PNG/TIFF, or an RGB(A) PNG whose three channels are equal (what a browser
    canvas writes), with values 0..classes-1 or ``ignore_index`` (not labelled), of the image's size.
    """
    arr = decode(data, max_pixels)
    if arr.ndim == 3:
        if not (np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 0], arr[..., 2])):
            raise UploadError("the mask is a colour image; send one channel of class labels (0 = background, "
                              f"1..{classes - 1} the classes, {ignore_index} = not labelled)")
        arr = arr[..., 0]
    if arr.shape != tuple(shape):
        raise UploadError(f"the mask is {arr.shape[0]}×{arr.shape[1]} but the image is {shape[0]}×{shape[1]}; "
                          "send a mask of the image's size")
    if not np.issubdtype(arr.dtype, np.integer) and not np.array_equal(arr, np.round(arr)):
        raise UploadError("the mask holds fractional values; send integer class labels")
    values = np.unique(arr)
    bad = [int(v) for v in values if not (0 <= v < classes or v == ignore_index)]
    if bad:
        raise UploadError(f"the mask holds the value(s) {bad[:10]}, not a class 0..{classes - 1} of this project or "
                          f"{ignore_index} (not labelled)")
    return arr.astype(np.uint8)


def model_input(arr: np.ndarray) -> np.ndarray:
    """An image as the model sees it: ``[C, H, W]`` float32, percentile-normalised (as ``read_folder``)."""
    chw = normalize_percentile(arr)
    chw = chw[None] if chw.ndim == 2 else np.moveaxis(chw, -1, 0)
    return np.ascontiguousarray(chw, dtype=np.float32)


def png(arr: np.ndarray) -> bytes:
    """PNG bytes of a uint8 ``[H, W]`` (gray), ``[H, W, 3]`` or ``[H, W, 4]`` array."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(arr)).save(buf, format="PNG")
    return buf.getvalue()


def display_png(image_C_H_W: np.ndarray) -> bytes:
    """The model's input as an 8-bit gray or RGB PNG."""
    shown = np.clip(image_C_H_W, 0, 1)
    shown = shown[0] if shown.shape[0] == 1 else np.moveaxis(shown, 0, -1)
    return png((shown * 255).round().astype(np.uint8))


def prediction_png(probs_C_H_W: np.ndarray) -> bytes:
    """The predicted classes as a transparent overlay in the class colours (background clear)."""
    rgba = class_colours(np.argmax(probs_C_H_W, axis=0))
    return png((rgba * 255).round().astype(np.uint8))


def labels_png(probs_C_H_W: np.ndarray) -> bytes:
    """The predicted class map itself (gray values = class labels), where the mask editor starts from."""
    return png(np.argmax(probs_C_H_W, axis=0).astype(np.uint8))


HEAT = np.array([[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]], dtype=np.float64)
"""Anchor colours of the uncertainty overlay, low to high (inferno-like)."""


def uncertainty_png(map_H_W: np.ndarray) -> bytes:
    """The uncertainty map as an overlay: colour and opacity grow with the value (scaled to its maximum)."""
    top = float(np.nanmax(map_H_W)) if np.size(map_H_W) else 0.0
    t = np.clip(np.nan_to_num(map_H_W / top), 0, 1) if top > 0 else np.zeros_like(map_H_W, dtype=np.float64)
    pos = t * (len(HEAT) - 1)
    lo = np.floor(pos).astype(int).clip(0, len(HEAT) - 2)
    frac = (pos - lo)[..., None]
    rgb = HEAT[lo] * (1 - frac) + HEAT[lo + 1] * frac
    alpha = (t * 230)[..., None]
    return png(np.concatenate([rgb, alpha], axis=-1).round().astype(np.uint8))
