"""Selectors: from per-item scores to the indices of the items to label next.

Indices are positions in the scored array (``0..N-1``, i.e. pool positions); the caller maps them to
dataset indices. Ranking is highest score first with a stable sort, so on exact ties the lower index
wins; random selection draws only from the ``numpy.random.Generator`` it is given.
"""

from __future__ import annotations

import operator

import numpy as np

__all__ = ["random_k", "top_k"]


def _check_k(k: int) -> int:
    """Returns ``k`` as an int after checking it is a positive integer."""
    try:
        k = operator.index(k)
    except TypeError:
        raise TypeError(f"k must be an integer number of items to select, got {k!r}") from None
    if k <= 0:
        raise ValueError(f"k must be at least 1 (number of items to select), got {k}")
    return k


def check_rng(rng) -> np.random.Generator:
    """Returns ``rng`` after checking it is a ``numpy.random.Generator`` (the only source of randomness)."""
    if not isinstance(rng, np.random.Generator):
        raise TypeError(
            "rng must be a numpy.random.Generator (e.g. np.random.default_rng(seed)), "
            f"got {type(rng).__name__}"
        )
    return rng


def top_k(scores_N, k: int) -> np.ndarray:
    """Indices of the ``k`` highest scores, highest first.

    Args:
        scores_N: one score per item ``[N]`` (numpy, torch or a sequence), higher = select first.
        k: number of items to select; ``k >= N`` returns all N items in ranked order.

    Returns:
        ``min(k, N)`` distinct indices into ``scores_N``, int64. Exact ties keep the lower index first.

    Raises:
        ValueError: ``k <= 0``, scores not one-dimensional, or NaN scores (the count is reported).
    """
    k = _check_k(k)
    if hasattr(scores_N, "detach"):  # torch tensor
        scores_N = scores_N.detach().cpu().double().numpy()
    scores_N = np.asarray(scores_N, dtype=np.float64)
    if scores_N.ndim != 1:
        raise ValueError(f"scores must be one-dimensional [N], got shape {scores_N.shape}")
    num_nan = int(np.isnan(scores_N).sum())
    if num_nan:
        raise ValueError(
            f"{num_nan} of {scores_N.size} scores are NaN; cannot rank them. Check the model's "
            "probabilities for NaN (e.g. a diverged training run)"
        )
    return np.argsort(-scores_N, kind="stable")[:k].astype(np.int64)


def random_k(n: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """``min(k, n)`` distinct indices drawn uniformly from ``0..n-1``.

    Args:
        n: number of candidate items.
        k: number of items to select.
        rng: the source of randomness; the same generator state gives the same picks.

    Returns:
        Distinct indices, int64, in the order they were drawn.

    Raises:
        ValueError: ``k <= 0`` or ``n < 0``.
        TypeError: ``rng`` is not a ``numpy.random.Generator``.
    """
    k = _check_k(k)
    n = operator.index(n)
    if n < 0:
        raise ValueError(f"n must be the number of candidate items (>= 0), got {n}")
    return check_rng(rng).choice(n, size=min(k, n), replace=False).astype(np.int64)
