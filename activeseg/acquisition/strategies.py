"""Acquisition strategies: a heuristic map, a reduction and a selector bundled under one name.

The engine depends only on this protocol, never on concrete classes::

    class Strategy(Protocol):
        name: str
        needs_model: bool
        needs_scores: bool
        consistent: bool
        needs: tuple[str, ...]
        def score(self, probs_N_K_C_S) -> np.ndarray: ...
        def map(self, probs_N_K_C_S): ...
        def summarize(self, probs_N_K_C_S) -> np.ndarray: ...
        def select(self, scores_N, k, rng, extras=None) -> np.ndarray: ...

- ``name``: the registry name (snake_case, the same in Python, config and CLI).
- ``needs_model``: False when scores are not needed (``random``); the loop then skips scoring and
  passes any ``scores_N`` of the pool's length (e.g. zeros) to ``select``.
- ``score(probs_N_K_C_S)``: one float64 score per item ``[N]`` for ONE batch, higher = more wanted. It
  depends only on that item's probabilities, so the loop may call it batch by batch and concatenate.
- ``map(probs_N_K_C_S)``: the per-pixel uncertainty map ``[N, *spatial]`` the score came from (for
  heatmaps), same array library as the input.
- ``select(scores_N, k, rng, extras=None)``: exactly ``min(k, N)`` distinct positions in ``0..N-1``;
  only ``rng`` supplies randomness.
- ``needs``: what ``select`` needs besides the scores, which the loop then passes in ``extras``:
  ``"descriptors"`` (``[N, D]`` encoder descriptors of the candidates), ``"labeled_descriptors"`` (of
  the labelled items), ``"embedding"`` (BADGE gradient embeddings), ``"probs"`` (per-sample
  probabilities ``[N, K, C]`` from ``summarize``), ``"images"`` / ``"train_images"`` (the candidate
  and labelled images), ``"device"`` (where the strategy may train networks of its own). Empty for the
  score-only strategies.
- ``needs_scores``: False when ``select`` ignores the MC-dropout scores (core-set, BADGE), so the loop
  skips the K passes; ``consistent``: True when the K samples must share dropout masks across items.
- ``summarize(probs_N_K_C_S)``: the per-sample summary ``[N, K, C]`` that ``"probs"`` in ``needs`` asks for.

A batch selector is one :class:`Selector` record in ``SELECTORS`` (its function and what it needs);
adding one touches that dict and the registry ``STRATEGIES``.

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
- ``nath_entropy``: ``member_entropy`` map (Nath et al.'s Eq. 3: each member's entropy, summed over the
  members), ``sum`` over the pixels as the paper sums over voxels; ``bald`` is the epistemic alternative
  (the committee's Jensen-Shannon divergence). ``entropy_mi`` takes either as its ``base``.
- ``random``: no map; ``needs_model=False``.
- ``power_bald``: BALD scores, k items sampled ∝ score (Kirsch et al. 2023); any uncertainty strategy
  takes ``sampling="power" | "softmax" | "rank"`` and ``temperature``.
- ``max_cover``: Suggestive Annotation, top 16 by ``mean_std`` then greedy max cover of the pool.
- ``coreset``: k-center greedy on descriptors (Sener & Savarese 2018).
- ``density_weighted``: BALD × mean similarity to the pool ^ β (Settles & Craven 2008).
- ``batchbald``: BatchBALD (Kirsch et al. 2019) on consistent MC-dropout samples; for segmentation over
  a fixed subset of pixels, each a label (``labels="pixels"``).
- ``badge``: k-means++ on gradient embeddings (Ash et al. 2020).
- ``entropy_mi``: Nath et al. (2020): α·minmax(entropy) − minmax(mean image MI to the labelled set)/α,
  the entropy of the committee mean (``max_entropy``); ``nath_entropy_mi`` is the same with Eq. 3 as
  written (``nath_entropy``).
- ``random_regions``, ``entropy_regions``, ``cereals``: region queries (Mackowiak et al. 2018): windows
  picked uniformly, by accumulated entropy, or by entropy weighed by the predicted annotation cost
  (``activeseg.acquisition.region_strategy``); the engine picks them with ``Engine.propose_regions``.
- ``ceal``: CEAL (Wang et al. 2016; Gorriz et al. 2017): the top-k by ``max_entropy`` for the oracle
  (optionally a share of missed-foreground and random picks) and confident pseudo-labels for the next
  round's training (``activeseg.acquisition.ceal``).
- ``vaal``: VAAL (Sinha et al. 2019): a VAE and a discriminator on its latent means trained on labelled and
  unlabelled images each round; the candidates the discriminator is surest are unlabelled
  (``activeseg.acquisition.vaal``). Needs no MC passes.

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

from activeseg.acquisition import batch, mutual_info
from activeseg.acquisition.ceal import CealStrategy
from activeseg.acquisition.heuristics import HEURISTICS
from activeseg.acquisition.reductions import REDUCTIONS, reduce_map
from activeseg.acquisition.region_strategy import RegionStrategy
from activeseg.acquisition.selectors import random_k, top_k
from activeseg.acquisition.vaal import VaalStrategy

__all__ = ["STRATEGIES", "BatchStrategy", "RandomStrategy", "Strategy", "UncertaintyStrategy", "get_strategy",
           "whole_item_strategies"]


@runtime_checkable
class Strategy(Protocol):
    """What the loop needs from an acquisition strategy (see the module docstring)."""

    name: str
    needs_model: bool
    needs_scores: bool
    consistent: bool
    needs: tuple[str, ...]

    def score(self, probs_N_K_C_S) -> np.ndarray: ...

    def map(self, probs_N_K_C_S): ...

    def summarize(self, probs_N_K_C_S) -> np.ndarray: ...

    def select(self, scores_N: np.ndarray, k: int, rng: np.random.Generator, extras=None) -> np.ndarray: ...


BATCHBALD_LABELS = ("pixels", "mean")


def summarize_probs(probs_N_K_C_S, pixels: int = 256, labels: str = "mean") -> np.ndarray:
    """Float64 per-sample summary: the probabilities ``[N, K, C]`` themselves for classification; for maps,
    ``pixels`` fixed positions (drawn once from seed 0, the same for every image), either kept
    (``labels="pixels"``: ``[N, K, C, P]``) or averaged (``labels="mean"``: ``[N, K, C]``)."""
    if labels not in BATCHBALD_LABELS:
        raise ValueError(f"labels must be one of {', '.join(BATCHBALD_LABELS)}, got {labels!r}")
    p = probs_N_K_C_S.double().numpy() if isinstance(probs_N_K_C_S, torch.Tensor) else np.asarray(probs_N_K_C_S)
    if p.ndim == 3:
        return p.astype(np.float64)
    flat = p.reshape(*p.shape[:3], -1)
    n_pix = flat.shape[-1]
    where = np.sort(np.random.default_rng(0).choice(n_pix, min(pixels, n_pix), replace=False))
    kept = flat[..., where].astype(np.float64)
    return kept if labels == "pixels" else kept.mean(-1)


@dataclass(frozen=True)
class UncertaintyStrategy:
    """Score = ``reduction(heuristic(probs))``; select = the top k scores (ties: lower index first).

    Args:
        name: registry name of this configuration.
        heuristic: key of ``HEURISTICS``.
        reduction: one of ``REDUCTIONS``.
        q: fraction of pixels for ``topq_mean``.
        fg_class: foreground class index, used by the ``std`` map and the foreground reductions; None: every
            class but the background (class 1 of a binary task).
        threshold: foreground threshold on ``p̄_fg`` for the foreground reductions.
        variance: with ``heuristic="std"``, use the variance instead of the standard deviation.
        sampling: ``top_k`` (default), or sample the batch ∝ the scores: ``power``, ``softmax``, ``rank``
            (``batch.stochastic_batch``).
        temperature: of the stochastic sampling.
    """

    name: str
    heuristic: str
    reduction: str
    q: float = 0.1
    fg_class: int | None = None
    threshold: float = 0.5
    variance: bool = False
    sampling: str = "top_k"
    temperature: float = 1.0

    needs_model: ClassVar[bool] = True
    needs_scores: ClassVar[bool] = True
    consistent: ClassVar[bool] = False
    needs: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self) -> None:
        if self.heuristic not in HEURISTICS:
            valid = ", ".join(HEURISTICS)
            raise ValueError(f"unknown heuristic {self.heuristic!r}; valid heuristics: {valid}")
        if self.reduction not in REDUCTIONS:
            valid = ", ".join(REDUCTIONS)
            raise ValueError(f"unknown reduction {self.reduction!r}; valid reductions: {valid}")
        if self.variance and self.heuristic != "std":
            raise ValueError(f"variance=True only applies to the 'std' heuristic, not {self.heuristic!r}")
        if self.sampling not in ("top_k", *batch.STOCHASTIC_MODES):
            raise ValueError(f"unknown sampling {self.sampling!r}; valid: top_k, {', '.join(batch.STOCHASTIC_MODES)}")

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

    def summarize(self, probs_N_K_C_S) -> np.ndarray:
        return summarize_probs(probs_N_K_C_S)

    def select(self, scores_N: np.ndarray, k: int, rng: np.random.Generator, extras=None) -> np.ndarray:
        """The ``min(k, N)`` highest-scoring positions, highest first (``rng`` unused), or a sample."""
        if self.sampling == "top_k":
            return top_k(scores_N, k)
        return batch.stochastic_batch(scores_N, k, rng, mode=self.sampling, temperature=self.temperature)


@dataclass(frozen=True)
class RandomStrategy:
    """Uniform random acquisition, the baseline every paper compares against. Needs no model.

    Args:
        name: registry name.
    """

    name: str = "random"

    needs_model: ClassVar[bool] = False
    needs_scores: ClassVar[bool] = False
    consistent: ClassVar[bool] = False
    needs: ClassVar[tuple[str, ...]] = ()

    def map(self, probs_N_K_C_S):
        """A zero map ``[N, *spatial]`` (same array library as the input): random has no uncertainty."""
        shape = (probs_N_K_C_S.shape[0], *probs_N_K_C_S.shape[3:])
        if isinstance(probs_N_K_C_S, torch.Tensor):
            return torch.zeros(shape, device=probs_N_K_C_S.device)
        return np.zeros(shape)

    def score(self, probs_N_K_C_S) -> np.ndarray:
        """Zeros ``[N]`` float64: the score carries no information for random selection."""
        return np.zeros(probs_N_K_C_S.shape[0])

    def summarize(self, probs_N_K_C_S) -> np.ndarray:
        return summarize_probs(probs_N_K_C_S)

    def select(self, scores_N: np.ndarray, k: int, rng: np.random.Generator, extras=None) -> np.ndarray:
        """``min(k, N)`` distinct positions drawn with ``rng``; the score values are ignored."""
        return random_k(len(scores_N), k, rng)


def _max_cover(st, scores_N, k, rng, extras):
    cands = max(st.candidates or 16, 2 * k)  # Yang et al.: 16 candidates for 8 picks
    return batch.max_cover(scores_N, extras["descriptors"], k, candidates=cands)


def _coreset(st, scores_N, k, rng, extras):
    return batch.k_center_greedy(extras["descriptors"], k, labeled_M_D=extras.get("labeled_descriptors"))


def _density(st, scores_N, k, rng, extras):
    return top_k(batch.information_density(scores_N, extras["descriptors"], beta=st.beta), k)


def _entropy_mi(st, scores_N, k, rng, extras):
    mi = mutual_info.mi_matrix(extras["images"], extras["train_images"], bins=st.bins)
    itself = mutual_info.same_images(extras["images"], extras["train_images"])  # NoDelete: labelled candidates
    return top_k(mutual_info.entropy_mi_score(scores_N, mi, alpha=st.alpha, exclude_N_M=itself), k)


def _batchbald(st, scores_N, k, rng, extras):
    if extras["probs"].ndim == 4:  # segmentation, labels="pixels"
        return batch.batchbald_pixels(extras["probs"], k, rng, num_samples=st.num_samples, candidates=st.candidates)
    return batch.batchbald(extras["probs"], k, rng, num_samples=st.num_samples, candidates=st.candidates)


def _badge(st, scores_N, k, rng, extras):
    return batch.kmeans_pp(extras["embedding"], k, rng)


@dataclass(frozen=True)
class Selector:
    """One batch selector: ``pick(strategy, scores_N, k, rng, extras) -> positions`` and what it needs.

    Args:
        pick: the selection; reads its settings from the :class:`BatchStrategy` passed first.
        needs: what ``extras`` must hold (see the module docstring).
        needs_scores: False when ``pick`` ignores the uncertainty scores (the MC passes are skipped).
        consistent: the K samples must share dropout masks across items (BatchBALD).
        settings: the :class:`BatchStrategy` fields it reads besides ``base`` (the only ones
            ``get_strategy`` accepts for it).
    """

    pick: Callable
    needs: tuple[str, ...]
    needs_scores: bool = True
    consistent: bool = False
    settings: tuple[str, ...] = ()


SELECTORS: dict[str, Selector] = {
    "max_cover": Selector(_max_cover, ("descriptors",), settings=("candidates",)),
    "coreset": Selector(_coreset, ("descriptors", "labeled_descriptors"), needs_scores=False),
    "density_weighted": Selector(_density, ("descriptors",), settings=("beta",)),
    "batchbald": Selector(_batchbald, ("probs",), consistent=True, settings=("candidates", "num_samples", "pixels",
                                                                                    "labels")),
    "badge": Selector(_badge, ("embedding",), needs_scores=False),
    "entropy_mi": Selector(_entropy_mi, ("images", "train_images"), settings=("alpha", "bins")),
}


@dataclass(frozen=True)
class BatchStrategy:
    """A batch selector over an informativeness score (``base``, a registered uncertainty strategy).

    Args:
        name: registry name.
        selector: one of ``SELECTORS`` (see ``activeseg.acquisition.batch``).
        base: the uncertainty strategy whose score is the informativeness (and the ledger's score).
        candidates: max-cover's K uncertain candidates (Yang et al.: 16 for k = 8; at least 2k is used);
            BatchBALD's BALD pre-filter (default: all).
        beta: density exponent of ``density_weighted``.
        num_samples: BatchBALD's exact-configuration limit and sample count.
        pixels: segmentation only: BatchBALD looks at this many fixed pixel positions of every image (the
            same for every image).
        labels: segmentation only: ``pixels`` (default): each of those pixels is a label, independent of the
            others given the parameters (``batch.batchbald_pixels``, per-pixel information, at most
            log K per batch); ``mean``: the image is one categorical label, the mean class probabilities
            over those pixels per MC sample: this measures disagreement about class areas, not where the
            classes are (BatchBALD on segmentation before 2026-12-07).
        alpha: ``entropy_mi``'s weight α (Nath et al.: 1).
        bins: ``entropy_mi``'s intensity bins of the joint histograms (32; fewer for small images).
    """

    name: str
    selector: str
    base: str = "bald"
    candidates: int | None = None
    beta: float = 1.0
    num_samples: int = 1000
    pixels: int = 256
    labels: str = "pixels"
    alpha: float = 1.0
    bins: int = 32

    needs_model: ClassVar[bool] = True

    def __post_init__(self) -> None:
        if self.selector not in SELECTORS:
            raise ValueError(f"unknown selector {self.selector!r}; valid: {', '.join(SELECTORS)}")
        if self.labels not in BATCHBALD_LABELS:
            raise ValueError(f"labels must be one of {', '.join(BATCHBALD_LABELS)}, got {self.labels!r}")
        get_strategy(self.base)  # a clear error for an unknown base

    @property
    def needs(self) -> tuple[str, ...]:
        return SELECTORS[self.selector].needs

    @property
    def needs_scores(self) -> bool:
        return SELECTORS[self.selector].needs_scores

    @property
    def consistent(self) -> bool:
        return SELECTORS[self.selector].consistent

    def _base(self) -> Strategy:
        return get_strategy(self.base)

    def map(self, probs_N_K_C_S):
        return self._base().map(probs_N_K_C_S)

    def score(self, probs_N_K_C_S) -> np.ndarray:
        return self._base().score(probs_N_K_C_S)

    def summarize(self, probs_N_K_C_S) -> np.ndarray:
        """``[N, K, C]`` for BatchBALD; for segmentation ``[N, K, C, P]`` (``labels="pixels"``) or the
        mean over the P positions."""
        return summarize_probs(probs_N_K_C_S, self.pixels, self.labels)

    def select(self, scores_N: np.ndarray, k: int, rng: np.random.Generator, extras=None) -> np.ndarray:
        """``min(k, N)`` positions from the selector; ``extras`` holds what ``needs`` names."""
        extras = extras or {}
        missing = [n for n in self.needs if n not in extras]
        if missing:
            raise ValueError(f"strategy {self.name!r} needs {missing} in extras (the loop provides them)")
        return SELECTORS[self.selector].pick(self, scores_N, k, rng, extras)


def _batch(name: str, selector: str, **defaults) -> Callable[..., Strategy]:
    return functools.partial(BatchStrategy, name=name, selector=selector, **defaults)


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
    "nath_entropy": _uncertainty("nath_entropy", "member_entropy", "sum"),
    "random": RandomStrategy,
    "power_bald": _uncertainty("power_bald", "bald", "mean", sampling="power"),
    "max_cover": _batch("max_cover", "max_cover", base="mean_std", candidates=16),
    "coreset": _batch("coreset", "coreset"),
    "density_weighted": _batch("density_weighted", "density_weighted"),
    "batchbald": _batch("batchbald", "batchbald"),
    "badge": _batch("badge", "badge"),
    "entropy_mi": _batch("entropy_mi", "entropy_mi", base="max_entropy"),
    "nath_entropy_mi": _batch("nath_entropy_mi", "entropy_mi", base="nath_entropy"),
    "random_regions": functools.partial(RegionStrategy, name="random_regions", base="random"),
    "entropy_regions": functools.partial(RegionStrategy, name="entropy_regions", base="max_entropy"),
    "cereals": functools.partial(RegionStrategy, name="cereals", base="max_entropy", cost=True),
    "ceal": functools.partial(CealStrategy, name="ceal"),
    "vaal": VaalStrategy,
}
"""Strategy factories by name; call with keyword overrides or use ``get_strategy``."""

_FIXED = ("name", "heuristic", "selector")  # what a strategy name means; not overridable


def whole_item_strategies() -> list[str]:
    """The registered strategies that pick whole items (all but the region strategies), sorted: what a
    queue of whole images (``activeseg serve``) can rank by."""
    return sorted(n for n in STRATEGIES if getattr(get_strategy(n), "unit", "image") == "image")


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
    selector = getattr(factory, "keywords", {}).get("selector")
    if selector is not None:  # a batch selector takes its base and its own settings only
        allowed = ["base", *SELECTORS[selector].settings]
    unknown = sorted(set(overrides) - set(allowed))
    if unknown:
        valid = ", ".join(allowed) if allowed else "none"
        hint = "; the heuristic is fixed by the name, pick another strategy" if "heuristic" in unknown else ""
        raise ValueError(
            f"strategy {name!r} has no setting {', '.join(map(repr, unknown))}; valid settings: {valid}{hint}"
        )
    return factory(**overrides)
