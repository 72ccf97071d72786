"""Uncertainty heatmaps: what the model predicts on an item and where it is unsure.

A binary prediction is shown as the foreground probability; a multi-class one as the predicted class map
in a fixed class colour map (background uncoloured) with the class names in a legend.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from activeseg.report._figure import new_figure, save_png


def _display_image(image: np.ndarray) -> tuple[np.ndarray, str | None]:
    """``image`` scaled to [0, 1] for display (1st-99th percentile), and the colormap to use."""
    image = np.asarray(image, dtype=np.float64)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    elif image.ndim == 3 and image.shape[2] == 4:
        image = image[..., :3]  # drop alpha
    finite = image[np.isfinite(image)]
    lo, hi = np.percentile(finite, [1, 99]) if finite.size else (0.0, 1.0)
    if hi <= lo:
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    scaled = np.clip((image - lo) / (hi - lo), 0, 1) if hi > lo else np.zeros_like(image)
    return np.nan_to_num(scaled), "gray" if image.ndim == 2 else None


def _check_shapes(image, fg_prob_H_W, uncertainty_H_W, mask_H_W) -> tuple[int, int]:
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3, 4)):
        raise ValueError(
            f"image has shape {image.shape}; pass [H, W] (gray) or [H, W, 3] (RGB, channels last; "
            "[H, W, 1] and RGBA also work)"
        )
    hw = image.shape[:2]
    maps = {"fg_prob_H_W": fg_prob_H_W, "uncertainty_H_W": uncertainty_H_W, "mask_H_W": mask_H_W}
    for name, arr in maps.items():
        if arr is not None and arr.shape != hw:
            raise ValueError(
                f"{name} has shape {arr.shape} but the image is {hw[0]}×{hw[1]}; "
                f"pass one value per pixel, shape {hw}"
            )
    return hw


CLASS_COLOURS = ((0.0, 0.0, 0.0), (0.12, 0.47, 0.71), (1.0, 0.5, 0.05), (0.17, 0.63, 0.17), (0.84, 0.15, 0.16),
                 (0.58, 0.4, 0.74), (0.55, 0.34, 0.29), (0.89, 0.47, 0.76), (0.5, 0.5, 0.5), (0.74, 0.74, 0.13))
"""RGB of classes 0, 1, 2, ... (cycled after 9 foreground classes); class 0 (background) is not drawn."""


def class_table(classes: int) -> list[tuple[float, float, float]]:
    """RGB in [0, 1] of classes ``0 .. classes-1`` (the colours cycle after 9 foreground classes)."""
    return [CLASS_COLOURS[0]] + [CLASS_COLOURS[1 + (c - 1) % 9] for c in range(1, classes)]


def class_colours(class_map_H_W: np.ndarray) -> np.ndarray:
    """``[H, W, 4]`` RGBA of a class map: each foreground class in its colour, background transparent."""
    cls = np.asarray(class_map_H_W, dtype=np.int64)
    table = np.array(class_table(int(cls.max(initial=0)) + 1))
    rgba = np.zeros((*cls.shape, 4))
    rgba[..., :3] = table[np.clip(cls, 0, len(table) - 1)]
    rgba[..., 3] = np.where(cls > 0, 0.6, 0.0)
    return rgba


def save_overlay(
    path: str | Path,
    image: np.ndarray,
    fg_prob_H_W: np.ndarray,
    uncertainty_H_W: np.ndarray,
    title: str = "",
    mask_H_W: np.ndarray | None = None,
    class_names: tuple[str, ...] | None = None,
) -> Path:
    """Write a PNG with four panels: image, prediction, uncertainty, uncertainty on image.

    Args:
        path: the PNG to write (parent folders are created).
        image: ``[H, W]`` gray or ``[H, W, 3]`` RGB, any numeric range (scaled for display).
        fg_prob_H_W: predicted foreground probability in [0, 1], or the mean class probabilities
            ``[C, H, W]``: C = 2 shows the foreground's, C > 2 the argmax class map on the image.
        uncertainty_H_W: the strategy's per-pixel uncertainty map (any scale; a colorbar shows it).
        title: figure title, e.g. the item id and strategy.
        mask_H_W: optional ground truth, drawn as a contour of its foreground (255 = not labelled is not
            foreground) on the prediction panel.
        class_names: names of the C classes for the class map's legend.

    Returns:
        ``path`` as a ``Path``.

    Raises:
        ValueError: if a map's shape differs from the image's height and width.
    """
    image = np.asarray(image)
    fg_prob_H_W = np.asarray(fg_prob_H_W, dtype=np.float64)
    class_map = None
    if fg_prob_H_W.ndim == 3:  # mean class probabilities [C, H, W]
        probs = fg_prob_H_W
        class_map = probs.argmax(0) if probs.shape[0] > 2 else None
        fg_prob_H_W = probs[1:].sum(0)
    uncertainty_H_W = np.asarray(uncertainty_H_W, dtype=np.float64)
    mask_H_W = None if mask_H_W is None else np.asarray(mask_H_W)
    _check_shapes(image, fg_prob_H_W, uncertainty_H_W, mask_H_W)
    shown, cmap = _display_image(image)

    fig = new_figure(13.0, 3.6, dpi=100)
    axes = fig.subplots(1, 4)
    axes[0].imshow(shown, cmap=cmap)
    axes[0].set_title("image")
    if class_map is None:
        prob = axes[1].imshow(fg_prob_H_W, cmap="viridis", vmin=0, vmax=1)
        fig.colorbar(prob, ax=axes[1], fraction=0.046, pad=0.04)
        what = "foreground prob."
    else:
        axes[1].imshow(shown, cmap=cmap)
        axes[1].imshow(class_colours(class_map))
        names = class_names or tuple(f"class {c}" for c in range(int(class_map.max(initial=0)) + 1))
        from matplotlib.patches import Patch

        handles = [Patch(color=class_colours(np.array([[c]]))[0, 0, :3], label=names[c])
                   for c in range(1, len(names))]
        axes[1].legend(handles=handles, loc="lower left", fontsize="x-small", framealpha=0.7)
        what = "predicted classes"
    truth = None if mask_H_W is None else ((mask_H_W > 0) & (mask_H_W != 255))
    if truth is not None and np.any(truth) and np.any(~truth):
        axes[1].contour(truth.astype(float), levels=[0.5], colors="red", linewidths=0.8)
        axes[1].set_title(f"{what} (red: truth)")
    else:
        axes[1].set_title("foreground probability" if class_map is None else what)
    unc = np.nan_to_num(uncertainty_H_W)
    heat = axes[2].imshow(unc, cmap="inferno")
    fig.colorbar(heat, ax=axes[2], fraction=0.046, pad=0.04)
    axes[2].set_title("uncertainty")
    axes[3].imshow(shown, cmap=cmap)
    axes[3].imshow(unc, cmap="inferno", alpha=0.5)
    axes[3].set_title("uncertainty on image")
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize="medium")
    fig.tight_layout()
    return save_png(fig, path)


def save_item_overlay(path: str | Path, image_C_S: np.ndarray, probs: np.ndarray, uncertainty: np.ndarray,
                      title: str = "", mask: np.ndarray | None = None,
                      class_names: tuple[str, ...] | None = None) -> Path:
    """:func:`save_overlay` of a channel-first item ``[C, *S]`` as the data holds it (gray or RGB), with its
    mean class probabilities ``probs`` ``[C, *S]`` (or a foreground probability ``[*S]``)."""
    spatial = image_C_S.ndim - 1
    if spatial == 3:
        return save_volume_overlays(path, image_C_S, probs, uncertainty, title, mask, class_names)[0]
    if spatial != 2:
        raise ValueError(f"heatmaps draw 2-D images and 3-D volumes; this item has {spatial} spatial dimensions "
                         f"(shape {image_C_S.shape})")
    shown = image_C_S[0] if image_C_S.shape[0] == 1 else np.moveaxis(image_C_S, 0, -1)
    return save_overlay(path, shown, probs, uncertainty, title=title, mask_H_W=mask, class_names=class_names)


PLANES = ("axial", "coronal", "sagittal")  # slices across D, H and W of a [D, H, W] volume


def save_volume_overlays(path: str | Path, image_C_D_H_W: np.ndarray, probs: np.ndarray, uncertainty_D_H_W: np.ndarray,
                         title: str = "", mask: np.ndarray | None = None,
                         class_names: tuple[str, ...] | None = None) -> list[Path]:
    """:func:`save_overlay` of the three orthogonal slices through the volume's most uncertain voxel:
    ``<path stem>_axial.png``, ``_coronal.png`` and ``_sagittal.png`` (returned in that order).

    Args:
        image_C_D_H_W: the volume, channel first.
        probs: mean class probabilities ``[C, D, H, W]`` (or a foreground probability ``[D, H, W]``).
        uncertainty_D_H_W: the strategy's map.
        mask: optional ground truth ``[D, H, W]``.
    """
    path = Path(path)
    unc = np.asarray(uncertainty_D_H_W, dtype=np.float64)
    image = np.asarray(image_C_D_H_W)
    if unc.shape != image.shape[1:]:
        raise ValueError(f"uncertainty {unc.shape} and volume {image.shape[1:]} differ in shape")
    centre = np.unravel_index(int(np.argmax(unc)), unc.shape)
    probs = np.asarray(probs)
    out = []
    for axis, plane in enumerate(PLANES):
        cut = [slice(None)] * 3
        cut[axis] = centre[axis]
        at = tuple(cut)
        shown = image[(0, *at)] if image.shape[0] == 1 else np.moveaxis(image[(slice(None), *at)], 0, -1)
        p = probs[(slice(None), *at)] if probs.ndim == 4 else probs[at]
        out.append(save_overlay(path.with_name(f"{path.stem}_{plane}.png"), shown, p, unc[at],
                                title=f"{title} ({plane} slice {centre[axis]}, through the most uncertain voxel "
                                f"{tuple(int(c) for c in centre)})".strip(),
                                mask_H_W=None if mask is None else np.asarray(mask)[at], class_names=class_names))
    return out
