"""Acquisition strategies: a heuristic map, a reduction and a selector bundled under one name.

The loop depends only on this protocol, never on concrete classes::

    class Strategy(Protocol):
        name: str
        needs_model: bool
        def score(self, probs_N_K_C_S) -> np.ndarray: ...
        def map(self, probs_N_K_C_S): ...
        def select(self, scores_N, k, rng) -> np.ndarray: ...

- ``name``: the registry name (snake_case, the same in Python, config and CLI).
- ``needs_model``: False when scores are not needed (``random``); the loop then skips scoring and
  passes any ``scores_N`` of the pool's length (e.g. zeros) to ``select``.
- ``score(probs_N_K_C_S)``: one float64 score per item ``[N]`` for ONE batch, higher = more wanted. It
  depends only on that item's probabilities, so the loop may call it batch by batch and concatenate.
- ``map(probs_N_K_C_S)``: the per-pixel uncertainty map ``[N, *spatial]`` the score came from (for
  heatmaps), same array library as the input.
- ``select(scores_N, k, rng)``: exactly ``min(k, N)`` distinct positions in ``0..N-1``; only ``rng``
  supplies randomness.

Registered strategies (``STRATEGIES``; ``get_strategy(name, **overrides)`` builds one):

- ``max_entropy``: ``max_entropy`` map, ``mean`` reduction (Gal et al. 2017).
- ``bald``: ``bald`` map, ``mean`` (Houlsby et al. 2011; Gal et al. 2017).
- ``variation_ratio``: ``variation_ratio`` map, ``mean`` (Gal et al. 2017).
- ``mean_std``: ``mean_std`` map, ``mean`` (Gal et al. 2017).
- ``least_confidence``: ``least_confidence`` map, ``mean``.
- ``margin``: ``margin`` map (scored as ``1 - margin``), ``mean``.
- ``vote_entropy``: ``vote_entropy`` map, ``mean``.
- ``std``: ``std`` map, ``sum`` (the axon-myelin score without distance weighting).
- ``std_edt``: ``std`` map, ``distance_weighted`` (the axon-myelin method).
- ``random``: no map; ``needs_model=False``.

The default reduction is ``mean`` because summed scores grow with image size and would favour large
images in a pool of mixed sizes; ``sum`` is one override away (``get_strategy("bald", reduction="sum")``).
The two axon-myelin strategies keep the paper's sums. ``std_edt`` uses the standard deviation map as the
paper describes; its reference code used the variance when distance weighting was on, which
``variance=True`` reproduces.

References:
    Gal, Islam, Ghahramani. Deep Bayesian Active Learning with Image Data. ICML 2017.
    https://arxiv.org/abs/1703.02910
    Lubrano di Scandalea, Perone, Boudreau, Cohen-Adad. Deep active learning for axon-myelin
    segmentation on histology data. 2019. https://arxiv.org/abs/1907.05143
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Protocol, runtime_checkable

import numpy as np
import torch

from activeseg.acquisition.heuristics import HEURISTICS
from activeseg.acquisition.reductions import REDUCTIONS, reduce_map
from activeseg.acquisition.selectors import random_k, top_k

__all__ = ["STRATEGIES", "RandomStrategy", "Strategy", "UncertaintyStrategy", "get_strategy"]


@runtime_checkable
class Strategy(Protocol):
    """What the loop needs from an acquisition strategy (see the module docstring)."""

    name: str
    needs_model: bool

    def score(self, probs_N_K_C_S) -> np.ndarray: ...

    def map(self, probs_N_K_C_S): ...

    def select(self, scores_N: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray: ...


@dataclass(frozen=True)
class UncertaintyStrategy:
    """Score = ``reduction(heuristic(probs))``; select = the top k scores (ties: lower index first).

    Args:
        name: registry name of this configuration.
        heuristic: key of ``HEURISTICS``.
        reduction: one of ``REDUCTIONS``.
        q: fraction of pixels for ``topq_mean``.
        fg_class: foreground class index, used by the ``std`` map and the foreground reductions.
        threshold: foreground threshold on ``p̄_fg`` for the foreground reductions.
        variance: with ``heuristic="std"``, use the variance instead of the standard deviation.
    """

    name: str
    heuristic: str
    reduction: str
    q: float = 0.1
    fg_class: int = 1
    threshold: float = 0.5
    variance: bool = False

    needs_model: ClassVar[bool] = True

    def __post_init__(self) -> None:
        if self.heuristic not in HEURISTICS:
            valid = ", ".join(HEURISTICS)
            raise ValueError(f"unknown heuristic {self.heuristic!r}; valid heuristics: {valid}")
        if self.reduction not in REDUCTIONS:
            valid = ", ".join(REDUCTIONS)
            raise ValueError(f"unknown reduction {self.reduction!r}; valid reductions: {valid}")
        if self.variance and self.heuristic != "std":
            raise ValueError(f"variance=True only applies to the 'std' heuristic, not {self.heuristic!r}")

    def map(self, probs_N_K_C_S):
        """Uncertainty map ``[N, *spatial]`` (same array library as the input), higher = more uncertain."""
        heuristic = HEURISTICS[self.heuristic]
        if self.heuristic == "std":
            return heuristic(probs_N_K_C_S, fg_class=self.fg_class, variance=self.variance)
        return heuristic(probs_N_K_C_S)

    def score(self, probs_N_K_C_S) -> np.ndarray:
        """One float64 score per item ``[N]`` for this batch of probabilities ``[N, K, C, *spatial]``."""
        return reduce_map(
            self.map(probs_N_K_C_S),
            self.reduction,
            probs_N_K_C_S,
            q=self.q,
            fg_class=self.fg_class,
            threshold=self.threshold,
        )

    def select(self, scores_N: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
        """The ``min(k, N)`` highest-scoring positions, highest first; ``rng`` is unused."""
        return top_k(scores_N, k)


@dataclass(frozen=True)
class RandomStrategy:
    """Uniform random acquisition, the baseline every paper compares against. Needs no model.

    Args:
        name: registry name.
    """

    name: str = "random"

    needs_model: ClassVar[bool] = False

    def map(self, probs_N_K_C_S):
        """A zero map ``[N, *spatial]`` (same array library as the input): random has no uncertainty."""
        shape = (probs_N_K_C_S.shape[0], *probs_N_K_C_S.shape[3:])
        if isinstance(probs_N_K_C_S, torch.Tensor):
            return torch.zeros(shape, device=probs_N_K_C_S.device)
        return np.zeros(shape)

    def score(self, probs_N_K_C_S) -> np.ndarray:
        """Zeros ``[N]`` float64: the score carries no information for random selection."""
        return np.zeros(probs_N_K_C_S.shape[0])

    def select(self, scores_N: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
        """``min(k, N)`` distinct positions drawn with ``rng``; the score values are ignored."""
        return random_k(len(scores_N), k, rng)


def _uncertainty(name: str, heuristic: str, reduction: str, **defaults) -> Callable[..., Strategy]:
    """A factory for one registered configuration; keyword arguments override the defaults."""
    return functools.partial(
        UncertaintyStrategy, name=name, heuristic=heuristic, reduction=reduction, **defaults
    )


STRATEGIES: dict[str, Callable[..., Strategy]] = {
    "max_entropy": _uncertainty("max_entropy", "max_entropy", "mean"),
    "bald": _uncertainty("bald", "bald", "mean"),
    "variation_ratio": _uncertainty("variation_ratio", "variation_ratio", "mean"),
    "mean_std": _uncertainty("mean_std", "mean_std", "mean"),
    "least_confidence": _uncertainty("least_confidence", "least_confidence", "mean"),
    "margin": _uncertainty("margin", "margin", "mean"),
    "vote_entropy": _uncertainty("vote_entropy", "vote_entropy", "mean"),
    "std": _uncertainty("std", "std", "sum"),
    "std_edt": _uncertainty("std_edt", "std", "distance_weighted", variance=False),
    "random": RandomStrategy,
}
"""Strategy factories by name; call with keyword overrides or use ``get_strategy``."""

_FIXED = ("name", "heuristic")  # what a strategy name means; not overridable


def get_strategy(name: str, **overrides) -> Strategy:
    """Builds the registered strategy ``name`` with optional keyword overrides.

    Args:
        name: a key of ``STRATEGIES``.
        **overrides: settings to change, e.g. ``reduction="sum"``, ``q=0.2``, ``variance=True``.

    Returns:
        The strategy.

    Raises:
        ValueError: unknown name (the valid ones are listed) or an override the strategy does not take.
    """
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; valid strategies: {', '.join(STRATEGIES)}")
    factory = STRATEGIES[name]
    allowed = [p for p in inspect.signature(factory).parameters if p not in _FIXED]
    unknown = sorted(set(overrides) - set(allowed))
    if unknown:
        valid = ", ".join(allowed) if allowed else "none"
        hint = "; the heuristic is fixed by the name, pick another strategy" if "heuristic" in unknown else ""
        raise ValueError(
            f"strategy {name!r} has no setting {', '.join(map(repr, unknown))}; valid settings: {valid}{hint}"
        )
    return factory(**overrides)
