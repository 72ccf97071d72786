"""Sliding-window inference over images or volumes larger than the network's window, memory bounded.

A volume ``[C, *S]`` is covered by windows of ``window`` voxels on a ``stride`` grid (the last window of each
axis flush with the edge, :func:`activeseg.acquisition.regions.window_grid`); each window's outputs are
weighted by a Gaussian importance map (σ = ``sigma_scale`` × the window side on each axis, 1/8 as nnU-Net
uses; Nath et al. 2020 slide 48³ windows at a stride of 36) and accumulated, then divided by the summed
weights, so overlaps blend smoothly and every voxel's weights sum to 1. What is accumulated is whatever the
``predict`` callable returns per window (the mean class probabilities and an uncertainty map, say), never
the K samples of the whole volume: memory holds the accumulators and ``batch`` windows' samples.

References:
    Isensee et al. nnU-Net. Nature Methods 2021 (Gaussian importance weighting, σ = 1/8 of the patch).
    Nath, Yang, Xu, Roth. Diminishing uncertainty within the training pool. IEEE TMI 2020, §4 (48³
    windows, stride 36).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import numpy as np

from activeseg.acquisition.regions import window_grid

__all__ = ["gaussian_importance", "sliding_window", "window_starts"]


def gaussian_importance(window: Sequence[int], sigma_scale: float = 0.125) -> np.ndarray:
    """``[*window]`` float64 weights: a separable Gaussian centred in the window, σ = ``sigma_scale``·side per
    axis, scaled to a maximum of 1 and floored at its smallest positive value (never 0 at the borders)."""
    axes = []
    for side in window:
        x = np.arange(side) - (side - 1) / 2
        sigma = max(sigma_scale * side, 1e-6)
        axes.append(np.exp(-0.5 * (x / sigma) ** 2))
    w = axes[0]
    for a in axes[1:]:
        w = np.multiply.outer(w, a)
    w = w / w.max()
    return np.maximum(w, w[w > 0].min())


def window_starts(shape: Sequence[int], window: Sequence[int], stride: Sequence[int]) -> list[tuple[int, ...]]:
    """The corner of every window: the product of each axis' starts (every ``stride``, the last flush)."""
    if not len(shape) == len(window) == len(stride):
        raise ValueError(f"shape {tuple(shape)}, window {tuple(window)} and stride {tuple(stride)} need one entry "
                         "per spatial axis")
    return list(itertools.product(*(window_grid(n, w, s) for n, w, s in zip(shape, window, stride, strict=True))))


def sliding_window(volume_C_S: np.ndarray, window: Sequence[int], stride: Sequence[int],
                   predict: Callable[[np.ndarray], Sequence[np.ndarray]], batch: int = 1,
                   sigma_scale: float = 0.125) -> list[np.ndarray]:
    """Blend ``predict`` over windows of ``volume_C_S``.

    Args:
        volume_C_S: ``[C, *S]`` (an image or a volume); a side smaller than the window gets one window of
            the whole side.
        window: window side per spatial axis.
        stride: step per spatial axis (≤ the window for full coverage).
        predict: ``windows [B, C, *window] -> outputs``, each ``[B, *lead, *window]`` (e.g. mean
            probabilities ``[B, C, *window]`` and a map ``[B, *window]``).
        batch: windows per ``predict`` call.
        sigma_scale: the importance map's σ over the window side.

    Returns:
        Per output of ``predict``, the weighted mean over windows ``[*lead, *S]`` (float32).
    """
    vol = np.asarray(volume_C_S)
    spatial = vol.shape[1:]
    window = tuple(min(int(w), n) for w, n in zip(window, spatial, strict=True))
    if any(int(s) < 1 for s in stride):
        raise ValueError(f"stride {tuple(stride)} must be at least 1 voxel on every axis")
    weight = gaussian_importance(window, sigma_scale)
    starts = window_starts(spatial, window, stride)
    sums: list[np.ndarray] | None = None
    total = np.zeros(spatial)
    for first in range(0, len(starts), batch):
        corners = starts[first:first + batch]
        boxes = [tuple(slice(c, c + w) for c, w in zip(corner, window, strict=True)) for corner in corners]
        outputs = [np.asarray(o, dtype=np.float64) for o in predict(np.stack([vol[(slice(None), *b)]
                                                                               for b in boxes]))]
        if sums is None:
            sums = [np.zeros((*o.shape[1:-len(window)], *spatial)) for o in outputs]
        for j, box in enumerate(boxes):
            for acc, out in zip(sums, outputs, strict=True):
                acc[(..., *box)] += out[j] * weight
            total[box] += weight
    return [(acc / total).astype(np.float32) for acc in (sums or [])]
