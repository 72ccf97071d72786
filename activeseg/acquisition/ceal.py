"""CEAL, Cost-Effective Active Learning (Wang et al. 2016; Gorriz et al. 2017 for segmentation).

Each round the oracle labels the ``k`` most uncertain items (by a ``base`` strategy's score) and the model
pseudo-labels what it is confident about: for segmentation the pixels of unlabelled images whose predictive
entropy is below ``δ_t = delta0 - decay·t`` (t = 0 in the first round), for classification the items. The
loop recomputes the pseudo-labels every round from that round's model, trains the next round on labelled ∪
pseudo-labelled data, never counts them as annotations and never promotes them to true labels.

Gorriz et al.'s query mix is configurable as fractions of ``k``: ``missed`` go to the candidates with the
smallest predicted foreground area (their "melanoma not detected", judged from the prediction since the
truth is hidden until labelled), ``random`` are drawn at random, the rest are the most uncertain. Their
melanoma runs took 10 missed, 10 uncertain and 15 random a round (``missed=10/35, random=15/35``).

Defects of public CEAL code this avoids (``ALGORITHMS.md``): the oracle gets the *most* uncertain items,
the threshold decays linearly in the round (not cumulatively), pseudo-labels last one round.

References:
    Wang, Zhang, Li, Zhang, Lin. Cost-Effective Active Learning for Deep Image Classification. IEEE TCSVT
    2016 (δ_0 = 0.005, decay 0.00033). https://arxiv.org/abs/1701.03551
    Gorriz, Carlier, Faure, Giro-i-Nieto. Cost-Effective Active Learning for Melanoma Segmentation. ML4H
    workshop, NIPS 2017. https://arxiv.org/abs/1711.09168
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from activeseg.acquisition.selectors import top_k

__all__ = ["CealStrategy"]


@dataclass(frozen=True)
class CealStrategy:
    """Top-k uncertain for the oracle (with Gorriz et al.'s optional mix), confident pseudo-labels for training.

    Args:
        name: registry name.
        base: the registered uncertainty strategy whose score ranks the candidates.
        missed: fraction of ``k`` given to the candidates with the smallest predicted foreground (segmentation).
        random: fraction of ``k`` drawn at random from the rest.
        delta0: the entropy threshold (nats) of the first round.
        decay: its linear decrease per round.
    """

    name: str
    base: str = "max_entropy"
    missed: float = 0.0
    random: float = 0.0
    delta0: float = 0.005
    decay: float = 0.00033
    background: int = 0

    needs_model: ClassVar[bool] = True
    needs_scores: ClassVar[bool] = True
    consistent: ClassVar[bool] = False
    pseudo_labels: ClassVar[bool] = True  # the loop asks pseudo_threshold(round) and trains on the labels

    def __post_init__(self) -> None:
        if not (0.0 <= self.missed <= 1.0 and 0.0 <= self.random <= 1.0 and self.missed + self.random <= 1.0):
            raise ValueError(f"missed ({self.missed}) and random ({self.random}) are fractions of the query; each in "
                             "[0, 1] and together at most 1")
        if self.delta0 < 0 or self.decay < 0:
            raise ValueError(f"delta0 and decay must be ≥ 0, got {self.delta0} and {self.decay}")
        base = self._base()
        if not base.needs_model or base.needs or getattr(base, "unit", "image") != "image":
            raise ValueError(f"base {self.base!r} of ceal must be an uncertainty strategy (max_entropy, bald, margin, "
                             "least_confidence, ...)")

    def _base(self):
        from activeseg.acquisition.strategies import get_strategy

        return get_strategy(self.base)

    @property
    def needs(self) -> tuple[str, ...]:
        return ("probs",) if self.missed > 0 else ()

    def map(self, probs_N_K_C_S):
        return self._base().map(probs_N_K_C_S)

    def score(self, probs_N_K_C_S) -> np.ndarray:
        return self._base().score(probs_N_K_C_S)

    def summarize(self, probs_N_K_C_S) -> np.ndarray:
        """``[N, K, C]``: each sample's class probabilities averaged over all pixels (the class areas)."""
        from activeseg.acquisition.strategies import summarize_probs

        return summarize_probs(probs_N_K_C_S, pixels=np.iinfo(np.int32).max, labels="mean")

    def pseudo_threshold(self, round_: int) -> float:
        """``δ_t`` of round ``round_`` (1-based): ``delta0 - decay·(round_ - 1)``, at least 0."""
        return max(self.delta0 - self.decay * (round_ - 1), 0.0)

    def select(self, scores_N: np.ndarray, k: int, rng: np.random.Generator, extras=None) -> np.ndarray:
        """``min(k, N)`` positions: the most uncertain first, then the missed, then the random ones."""
        n = len(scores_N)
        if k < 1:
            raise ValueError(f"k must be a positive number of items, got {k}")
        k = min(int(k), n)
        n_missed, n_random = round(self.missed * k), round(self.random * k)
        n_missed = min(n_missed, k - n_random)
        picked = list(top_k(scores_N, k - n_missed - n_random))
        left = np.setdiff1d(np.arange(n), picked)
        if n_missed:
            if not extras or "probs" not in extras:
                raise ValueError(f"strategy {self.name!r} needs ['probs'] in extras for its missed picks")
            area = 1.0 - np.asarray(extras["probs"])[left].mean(1)[:, self.background]
            picked += left[np.argsort(area, kind="stable")[:n_missed]].tolist()
            left = np.setdiff1d(left, picked)
        if n_random:
            picked += rng.choice(left, n_random, replace=False).tolist()
        return np.asarray(picked, dtype=np.int64)
