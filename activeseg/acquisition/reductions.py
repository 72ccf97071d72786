"""From an uncertainty map ``[N, *spatial]`` to one score per item ``[N]``.

A segmentation model gives an uncertainty value per pixel (see ``heuristics``); ranking needs one number
per image. ``reduce_map`` offers the reductions in ``REDUCTIONS``:

- ``sum``: total uncertainty. Grows with image size, so it favours large images in a mixed-size pool.
- ``mean``: size-free average over pixels.
- ``max``: the single most uncertain pixel.
- ``topq_mean``: mean of the highest ``q`` fraction of pixels (at least one pixel).
- ``foreground_mean``: mean over pixels predicted foreground (``p̄_fg >= threshold``).
- ``distance_weighted``: ``Σ map · minmax(edt(mask))`` with ``mask = p̄_fg >= threshold``, the
  axon-myelin weighting that down-weights the uncertain but uninformative object borders.

Classification maps ``[N]`` have one value per item: every reduction returns them unchanged, except the
two foreground ones which need pixels and raise ``ValueError``.

References:
    Lubrano di Scandalea, Perone, Boudreau, Cohen-Adad. Deep active learning for axon-myelin
    segmentation on histology data. 2019. https://arxiv.org/abs/1907.05143
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.ndimage import distance_transform_edt

from activeseg.acquisition.heuristics import foreground

__all__ = ["REDUCTIONS", "distance_weights", "reduce_map"]

REDUCTIONS = ("sum", "mean", "max", "topq_mean", "foreground_mean", "distance_weighted")
"""Valid values of ``how`` in ``reduce_map``."""

_NEEDS_PROBS = ("foreground_mean", "distance_weighted")


def _to_numpy(array) -> np.ndarray:
    """A float64 numpy copy or view of a numpy array or torch tensor."""
    if isinstance(array, torch.Tensor):
        array = array.detach().cpu().double().numpy()
    return np.asarray(array, dtype=np.float64)


def _foreground_N_S(probs_N_K_C_S, fg_class: int | None) -> np.ndarray:
    """Mean foreground probability ``p̄_fg`` over the K samples, ``[N, *spatial]`` float64."""
    if probs_N_K_C_S.ndim < 3:
        raise ValueError(f"probs must be shaped [N, K, C, *spatial], got shape {tuple(probs_N_K_C_S.shape)}")
    if isinstance(probs_N_K_C_S, torch.Tensor):
        return _to_numpy(foreground(probs_N_K_C_S, fg_class).mean(dim=1))
    probs = np.asarray(probs_N_K_C_S, dtype=np.float64)
    if fg_class is None and probs.shape[2] > 2:
        return probs[:, :, 1:].sum(2).mean(axis=1)
    foreground(probs_N_K_C_S[:1, :1], fg_class)  # checks the index
    return probs[:, :, 1 if fg_class is None else fg_class].mean(axis=1)


def distance_weights(mask_S: np.ndarray) -> np.ndarray:
    """Min-max scaled Euclidean distance transform of one binary mask (2-D, 3-D or any dimension).

    ``distance_transform_edt`` gives each foreground pixel its distance to the nearest background pixel.
    Two pitfalls are handled:

    - A mask with no background pixel (all foreground) has nothing to measure distance to. The mask is
      padded with a one-pixel background border before the transform and cropped afterwards, so the
      distance is to the image border: border pixels get 1, the centre the most.
    - A constant transform (e.g. an empty mask, all zeros) cannot be min-max scaled; its weight is all
      ones, so the weighted sum falls back to the plain sum.

    Args:
        mask_S: boolean foreground mask ``[*spatial]``.

    Returns:
        Weights ``[*spatial]``, float64 in ``[0, 1]``.
    """
    padded = np.pad(np.asarray(mask_S, dtype=bool), 1, mode="constant", constant_values=False)
    dist = distance_transform_edt(padded)[(slice(1, -1),) * padded.ndim]
    low, high = dist.min(), dist.max()
    if high == low:
        return np.ones_like(dist, dtype=np.float64)
    return (dist - low) / (high - low)


def _topq_mean(map_N_P: np.ndarray, q: float) -> np.ndarray:
    """Mean of the ``ceil(q · P)`` largest values of each row of ``[N, P]`` (at least one)."""
    num_pixels = map_N_P.shape[1]
    # The tiny tolerance keeps e.g. 0.1 * 30 = 3.0000000000000004 from rounding up to 4.
    num_top = min(num_pixels, max(1, math.ceil(q * num_pixels - 1e-9)))
    top = np.partition(map_N_P, num_pixels - num_top, axis=1)[:, num_pixels - num_top :]
    return top.mean(axis=1)


def reduce_map(
    map_N_S,
    how: str,
    probs_N_K_C_S=None,
    *,
    q: float = 0.1,
    fg_class: int | None = None,
    threshold: float = 0.5,
) -> np.ndarray:
    """Reduces an uncertainty map to one score per item.

    Args:
        map_N_S: uncertainty map ``[N, *spatial]`` (numpy or torch), higher = more uncertain; ``[N]``
            for classification.
        how: one of ``REDUCTIONS``.
        probs_N_K_C_S: the probabilities the map came from, ``[N, K, C, *spatial]``; required only by
            ``foreground_mean`` and ``distance_weighted``, which threshold the mean foreground
            probability ``p̄_fg``.
        q: fraction of pixels averaged by ``topq_mean``, in ``(0, 1]``; ``ceil(q · pixels)`` pixels,
            at least one.
        fg_class: foreground class index on axis 2 of ``probs_N_K_C_S``; None: every class but the background.
        threshold: a pixel is foreground when ``p̄_fg >= threshold``.

    Returns:
        ``scores_N``, numpy float64. ``foreground_mean`` is 0 for an item with no foreground pixel (no
        predicted object, nothing to be uncertain about). ``distance_weighted`` is
        ``Σ map · distance_weights(mask)`` per item (see ``distance_weights`` for the empty and
        all-foreground masks).

    Raises:
        ValueError: unknown ``how``; ``q`` outside ``(0, 1]``; a foreground reduction without
            ``probs_N_K_C_S``, with mismatched shapes, or on a classification map ``[N]``.
    """
    if how not in REDUCTIONS:
        raise ValueError(f"unknown reduction {how!r}; valid reductions: {', '.join(REDUCTIONS)}")
    if not 0.0 < q <= 1.0:
        raise ValueError(f"q must be in (0, 1] (fraction of pixels for topq_mean), got {q}")
    map_N_S = _to_numpy(map_N_S)
    if map_N_S.ndim < 1:
        raise ValueError(f"map must be shaped [N, *spatial], got a scalar of shape {map_N_S.shape}")
    num_items = map_N_S.shape[0]

    if map_N_S.ndim == 1:
        if how in _NEEDS_PROBS:
            raise ValueError(
                f"reduction {how!r} needs a spatial map [N, *spatial] (segmentation), got a classification "
                f"map of shape {map_N_S.shape}; use one of: sum, mean, max, topq_mean"
            )
        return map_N_S.copy()

    num_pixels = math.prod(map_N_S.shape[1:])
    map_N_P = map_N_S.reshape(num_items, num_pixels)  # explicit size: N may be 0
    if how == "sum":
        return map_N_P.sum(axis=1)
    if how == "mean":
        return map_N_P.mean(axis=1)
    if how == "max":
        return map_N_P.max(axis=1, initial=-np.inf)
    if how == "topq_mean":
        return _topq_mean(map_N_P, q)

    if probs_N_K_C_S is None:
        raise ValueError(f"reduction {how!r} needs probs_N_K_C_S to find the predicted foreground")
    fg_N_S = _foreground_N_S(probs_N_K_C_S, fg_class)
    if fg_N_S.shape != map_N_S.shape:
        raise ValueError(
            f"map shape {map_N_S.shape} does not match the probabilities' [N, *spatial] shape {fg_N_S.shape}"
        )
    mask_N_S = fg_N_S >= threshold
    if how == "foreground_mean":
        mask_N_P = mask_N_S.reshape(num_items, num_pixels)
        counts_N = mask_N_P.sum(axis=1)
        sums_N = np.where(mask_N_P, map_N_P, 0.0).sum(axis=1)
        return np.divide(sums_N, counts_N, out=np.zeros(num_items), where=counts_N > 0)
    # distance_weighted: one transform per item, since the mask differs per image.
    pairs = zip(map_N_S, mask_N_S, strict=True)
    return np.array([(map_S * distance_weights(mask_S)).sum() for map_S, mask_S in pairs], dtype=np.float64)
