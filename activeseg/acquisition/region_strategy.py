"""Region strategies (CEREALS, Mackowiak et al. 2018): the acquisition unit is a square window of an image.

A region strategy scores every window of every candidate (:func:`~activeseg.acquisition.regions.
candidate_windows`) with the accumulated uncertainty map of its ``base`` strategy, normalised to [0, 1]
(the informativeness ``I``), optionally weighs it by the predicted annotation cost (``g = (1 - C)·I``,
:mod:`activeseg.acquisition.cost`), and keeps the best windows by non-maximum suppression. Windows with
labelled pixels are never picked again (``labelled="exclude"``), or only those with none left unlabelled
are barred (``labelled="zero"``; the labelled pixels then count 0).

Registered as ``random_regions`` (uniform over the allowed windows), ``entropy_regions`` (the entropy
of the mean prediction) and ``cereals`` (entropy regions weighed by the cost model). The engine calls
:meth:`RegionStrategy.pick` through ``Engine.propose_regions``; ``select`` (the whole-item protocol) says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from activeseg.acquisition.cost import CostFit, predict_cost, window_features
from activeseg.acquisition.regions import LABELLED_MODES, Region, candidate_windows, minmax, nms

__all__ = ["RegionPick", "RegionStrategy"]


@dataclass(frozen=True)
class RegionPick:
    """The picked regions (``item``: position among the candidates), best first, and per region its
    score ``g``, informativeness ``I``, and predicted cost and features (cost-aware strategies; else None)."""

    regions: list[Region]
    scores: np.ndarray
    informativeness: np.ndarray
    predicted_cost: np.ndarray | None = None
    features: np.ndarray | None = None


@dataclass(frozen=True)
class RegionStrategy:
    """Windows scored by a base strategy's map, optionally cost-aware.

    Args:
        name: registry name.
        base: the registered strategy whose per-pixel map is accumulated (``random``: uniform scores).
        cost: weigh the informativeness by ``1 - C``, ``C`` the min-max normalised predicted cost.
        size: window side in pixels (CEREALS: 128); an image smaller than it is one window of its shorter side.
        stride: window grid step (0: half the side).
        iou_max: non-maximum suppression: the largest IoU a kept window may have with another of its image.
        labelled: ``exclude`` or ``zero`` (see the module docstring).
    """

    name: str
    base: str = "max_entropy"
    cost: bool = False
    size: int = 128
    stride: int = 0
    iou_max: float = 0.0
    labelled: str = "exclude"

    unit: ClassVar[str] = "region"
    needs_scores: ClassVar[bool] = True
    consistent: ClassVar[bool] = False
    needs: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self) -> None:
        if self.labelled not in LABELLED_MODES:
            raise ValueError(f"labelled must be one of {', '.join(LABELLED_MODES)}, got {self.labelled!r}")
        if self.size < 1 or self.stride < 0:
            raise ValueError(f"region size must be ≥ 1 and stride ≥ 0 (0: half the size), got {self.size}, "
                             f"{self.stride}")
        if not 0.0 <= self.iou_max < 1.0:
            raise ValueError(f"iou_max must be in [0, 1), got {self.iou_max}")
        base = self._base()
        if getattr(base, "unit", "image") == "region" or base.needs:
            raise ValueError(f"base {self.base!r} of a region strategy must be a map strategy (max_entropy, bald, "
                             "vote_entropy, ... or random), not a batch or region strategy")

    def _base(self):
        from activeseg.acquisition.strategies import get_strategy

        return get_strategy(self.base)

    @property
    def needs_model(self) -> bool:
        """Passes are needed for an uncertainty map or for the cost features (the prediction)."""
        return self._base().needs_model or self.cost

    def map(self, probs_N_K_C_S):
        return self._base().map(probs_N_K_C_S)

    def score(self, probs_N_K_C_S) -> np.ndarray:
        return self._base().score(probs_N_K_C_S)

    def summarize(self, probs_N_K_C_S) -> np.ndarray:
        return self._base().summarize(probs_N_K_C_S)

    def select(self, scores_N, k, rng, extras=None):
        raise TypeError(f"strategy {self.name!r} picks regions, not whole items: call Engine.propose_regions "
                        "(the simulation and suggest do so for region strategies)")

    def pick(self, maps, k: int, rng: np.random.Generator, labelled=None, features=None,
             cost_fit: CostFit | None = None) -> RegionPick:
        """Up to ``k`` regions.

        Args:
            maps: one uncertainty map ``[H, W]`` per candidate (ignored by ``base="random"``).
            k: regions to pick.
            rng: the random generator (``random`` base).
            labelled: per candidate a bool ``[H, W]`` of the pixels labelled already, or None.
            features: per candidate the cost feature maps ``[F, H, W]`` (cost-aware only).
            cost_fit: the round's fitted cost model (default: the proxy).
        """
        if labelled is not None and self.labelled == "zero":
            maps = [np.where(done, 0.0, m) for m, done in zip(maps, labelled, strict=True)]
        windows, allowed = candidate_windows([np.shape(m) for m in maps], self.size, self.stride, labelled,
                                             self.labelled)
        if self._base().needs_model:
            info = minmax(windows.sums(maps), allowed)
        else:
            info = np.where(allowed, rng.random(len(windows)), -np.inf)
        score, cost, feats = info, None, None
        if self.cost:
            if features is None:
                raise ValueError(f"strategy {self.name!r} is cost-aware: pass the cost feature maps")
            feats = window_features(windows, features)
            cost = predict_cost(cost_fit or CostFit(), feats)
            score = np.where(allowed, (1.0 - minmax(cost, allowed)) * info, -np.inf)
        chosen = nms(windows, score, k, self.iou_max)
        return RegionPick([windows.region(w) for w in chosen], score[chosen], info[chosen],
                          None if cost is None else cost[chosen], None if feats is None else feats[chosen])
