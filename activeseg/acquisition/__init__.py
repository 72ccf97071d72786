"""Acquisition: uncertainty maps from probabilities, map-to-score reductions, selectors, strategies.

Pure functions and small frozen objects; no I/O, no models, no global randomness. The loop uses
``get_strategy(name)`` and the ``Strategy`` protocol; see ``strategies`` for the registered names.
"""

from activeseg.acquisition.heuristics import (
    HEURISTICS,
    bald,
    least_confidence,
    margin,
    max_entropy,
    mean_std,
    std,
    variation_ratio,
    vote_entropy,
)
from activeseg.acquisition.reductions import REDUCTIONS, distance_weights, reduce_map
from activeseg.acquisition.selectors import random_k, top_k
from activeseg.acquisition.strategies import (
    STRATEGIES,
    RandomStrategy,
    Strategy,
    UncertaintyStrategy,
    get_strategy,
    whole_item_strategies,
)

__all__ = [
    "HEURISTICS",
    "REDUCTIONS",
    "STRATEGIES",
    "RandomStrategy",
    "Strategy",
    "UncertaintyStrategy",
    "bald",
    "distance_weights",
    "get_strategy",
    "least_confidence",
    "margin",
    "max_entropy",
    "mean_std",
    "random_k",
    "reduce_map",
    "std",
    "top_k",
    "variation_ratio",
    "vote_entropy",
    "whole_item_strategies",
]
