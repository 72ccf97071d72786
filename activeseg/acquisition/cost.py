"""Annotation cost of a region (CEREALS, Mackowiak et al. 2018): features of each candidate window from
the image and the round's prediction, a small regressor that learns the cost of the regions labelled so
far, and a proxy while there are too few of them.

Features (``COST_FEATURES``), each a per-pixel map summed over the window with the window machinery of
:mod:`activeseg.acquisition.regions`:

* ``boundary``: pixels of a predicted foreground class with a 4-neighbour of another class (the length
  of the outlines an annotator would trace);
* ``components``: predicted connected components of the foreground classes, each counted at its centroid;
* ``foreground``: predicted foreground pixels;
* ``gradient``: the image's gradient magnitude (texture an annotator must read);
* ``uncertainty``: the strategy's map.

The regressor is ridge regression on the standardised features (``fit_cost``), refitted every round on
the regions labelled so far: clicks in simulation, recorded seconds in the human loop (the unit does not
matter, costs are min-max normalised to ``C`` in [0, 1] before ``g = (1 - C)·I``). With fewer than
``MIN_COST_SAMPLES`` labelled regions the proxy stands in: ``components + boundary / PROXY_PX_PER_CLICK``,
the clicks of a polygon with one vertex per ``PROXY_PX_PER_CLICK`` pixels of predicted outline plus one
click closing each component (the form of :func:`~activeseg.acquisition.regions.click_cost`).

References:
    Mackowiak et al. CEREALS. BMVC 2018, §3.2 (cost model, ``g = (1 - C)·I``).
    https://arxiv.org/abs/1810.09726
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from activeseg.acquisition.regions import Windows

__all__ = ["COST_FEATURES", "CostFit", "cost_maps", "fit_cost", "predict_cost", "window_features"]

COST_FEATURES = ("boundary", "components", "foreground", "gradient", "uncertainty")
MIN_COST_SAMPLES = 10
PROXY_PX_PER_CLICK = 4.0
RIDGE = 1.0  # on standardised features


def cost_maps(image_C_H_W, probs_C_H_W, map_H_W, background: int = 0) -> np.ndarray:
    """The per-pixel feature maps ``[F, H, W]`` (``COST_FEATURES`` order) of one image; of a volume
    (``[C, D, H, W]``) ``[F, D, H, W]``, each slice's own in-plane maps, as its clicks are counted slice by
    slice."""
    probs = np.asarray(probs_C_H_W)
    if probs.ndim == 4:
        image, unc = np.asarray(image_C_H_W), np.asarray(map_H_W)
        return np.stack([cost_maps(image[:, z], probs[:, z], unc[z], background) for z in range(probs.shape[1])],
                        axis=1)
    label = probs.argmax(0)
    fg = label != background
    edge = np.zeros_like(fg)
    edge[1:] |= label[1:] != label[:-1]
    edge[:-1] |= label[:-1] != label[1:]
    edge[:, 1:] |= label[:, 1:] != label[:, :-1]
    edge[:, :-1] |= label[:, :-1] != label[:, 1:]
    centres = np.zeros(label.shape)
    for c in np.unique(label[fg]):
        parts, count = ndimage.label(label == c)
        if count:
            at = np.rint(ndimage.center_of_mass(np.ones_like(parts), parts, np.arange(1, count + 1))).astype(int)
            np.add.at(centres, (at[:, 0], at[:, 1]), 1.0)
    image = np.asarray(image_C_H_W, dtype=np.float64)
    gradient = np.mean([np.hypot(ndimage.sobel(ch, 0), ndimage.sobel(ch, 1)) for ch in image], axis=0)
    return np.stack([edge & fg, centres, fg, gradient, np.asarray(map_H_W, dtype=np.float64)]).astype(np.float64)


def window_features(windows: Windows, maps_F_H_W) -> np.ndarray:
    """``[W, F]``: each feature map summed over each window (``maps_F_H_W``: one ``[F, H, W]`` or
    ``[F, D, H, W]`` per candidate)."""
    maps = [np.asarray(m, dtype=np.float64) for m in maps_F_H_W]
    return np.stack([windows.sums([m[f] for m in maps]) for f in range(len(COST_FEATURES))], axis=1)


@dataclass(frozen=True)
class CostFit:
    """A fitted ridge regression of cost on the window features (None fields: the proxy is used)."""

    mean: np.ndarray | None = None
    scale: np.ndarray | None = None
    coef: np.ndarray | None = None
    intercept: float = 0.0
    samples: int = 0

    @property
    def source(self) -> str:
        return "proxy" if self.coef is None else f"ridge on {self.samples} labelled regions"


def fit_cost(features_M_F, costs_M, min_samples: int = MIN_COST_SAMPLES, ridge: float = RIDGE) -> CostFit:
    """Ridge regression of the observed costs on the features of the regions labelled so far; the proxy
    (an empty :class:`CostFit`) while fewer than ``min_samples`` are known."""
    x = np.asarray(features_M_F, dtype=np.float64).reshape(-1, len(COST_FEATURES))
    y = np.asarray(costs_M, dtype=np.float64).ravel()
    if len(y) != len(x):
        raise ValueError(f"{len(x)} feature rows but {len(y)} costs; give one cost per labelled region")
    if len(y) < min_samples:
        return CostFit(samples=len(y))
    mean, scale = x.mean(0), x.std(0)
    scale[scale == 0] = 1.0
    z = (x - mean) / scale
    coef = np.linalg.solve(z.T @ z + ridge * np.eye(z.shape[1]), z.T @ (y - y.mean()))
    return CostFit(mean, scale, coef, float(y.mean()), len(y))


def predict_cost(fit: CostFit, features_W_F) -> np.ndarray:
    """``[W]`` predicted cost (≥ 0) of each window, by the fit or the proxy."""
    x = np.asarray(features_W_F, dtype=np.float64)
    if fit.coef is None:
        return x[:, 1] + x[:, 0] / PROXY_PX_PER_CLICK
    return np.maximum(((x - fit.mean) / fit.scale) @ fit.coef + fit.intercept, 0.0)
