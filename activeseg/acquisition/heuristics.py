"""Per-pixel (or per-item) uncertainty maps computed from sampled class probabilities.

Every function here takes ``probs_N_K_C_*``: N items, K stochastic samples (MC-dropout passes,
ensemble members, SVGD particles) on axis 1, C >= 2 classes on axis 2, then any number of spatial axes
(none for classification, H W for 2-D, D H W for 3-D). Each returns a map ``[N, *spatial]`` in which a
HIGHER value means MORE UNCERTAIN, so every map can be ranked the same way.

The input may be a numpy array or a torch tensor and the output is of the same kind: torch in, torch out
on the same device (float32 unless the input is float64); numpy in, numpy float64 out. Logs are natural
and ``0 * log 0`` is taken as 0 through ``xlogy``, with no epsilon that would shift the values. The
probabilities are expected to sum to one over C; this is not checked (it would cost a pass over the data).

Notation: ``p̄ = mean_K p`` is the predictive (committee-averaged) distribution.

References:
    Gal, Islam, Ghahramani. Deep Bayesian Active Learning with Image Data. ICML 2017.
    https://arxiv.org/abs/1703.02910
    Houlsby et al. Bayesian Active Learning for Classification and Preference Learning. 2011.
    https://arxiv.org/abs/1112.5745
    Lubrano di Scandalea, Perone, Boudreau, Cohen-Adad. Deep active learning for axon-myelin
    segmentation on histology data. 2019. https://arxiv.org/abs/1907.05143
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

__all__ = [
    "HEURISTICS",
    "bald",
    "fused_maps",
    "least_confidence",
    "margin",
    "max_entropy",
    "mean_std",
    "member_entropy",
    "std",
    "variation_ratio",
    "vote_entropy",
]


def _to_torch(probs_N_K_C_S) -> tuple[torch.Tensor, bool]:
    """Returns ``(float tensor, came_from_numpy)`` after checking the layout ``[N, K, C, *spatial]``."""
    from_numpy = not isinstance(probs_N_K_C_S, torch.Tensor)
    if from_numpy:
        array = np.ascontiguousarray(np.asarray(probs_N_K_C_S, dtype=np.float64))
        if not array.flags.writeable:  # e.g. np.broadcast_to views; torch wants writable memory
            array = array.copy()
        probs = torch.from_numpy(array)
    else:
        probs = probs_N_K_C_S
        if probs.dtype != torch.float64:
            probs = probs.float()
    if probs.ndim < 3:
        raise ValueError(
            f"probabilities must be shaped [N, K, C, *spatial] (K samples on axis 1, classes on axis 2), "
            f"got shape {tuple(probs.shape)}; add a K axis of size 1 for a deterministic model"
        )
    if probs.shape[1] < 1:
        raise ValueError(f"need at least one sample on axis 1 (K), got shape {tuple(probs.shape)}")
    if probs.shape[2] < 2:
        raise ValueError(
            f"need at least 2 classes on axis 2, got C={probs.shape[2]} (shape {tuple(probs.shape)}); "
            "for a single sigmoid channel p, stack [1 - p, p] along axis 2"
        )
    return probs, from_numpy


def _back(map_N_S: torch.Tensor, from_numpy: bool):
    """Returns the map as the caller's array kind."""
    return map_N_S.detach().cpu().numpy() if from_numpy else map_N_S


def _entropy_over_classes(probs: torch.Tensor, dim: int) -> torch.Tensor:
    """Shannon entropy ``-Σ p log p`` along ``dim``, with 0 log 0 = 0 (and +0.0 rather than -0.0)."""
    return 0.0 - torch.special.xlogy(probs, probs).sum(dim=dim)


def _vote_counts_N_C_S(probs_N_K_C_S: torch.Tensor) -> torch.Tensor:
    """Number of samples whose argmax is each class, ``[N, C, *spatial]`` (ties go to the lower class)."""
    argmax_N_K_S = probs_N_K_C_S.argmax(dim=2)
    counts_shape = (probs_N_K_C_S.shape[0], probs_N_K_C_S.shape[2], *probs_N_K_C_S.shape[3:])
    counts = torch.zeros(counts_shape, dtype=probs_N_K_C_S.dtype, device=probs_N_K_C_S.device)
    ones = torch.ones_like(argmax_N_K_S, dtype=probs_N_K_C_S.dtype)
    return counts.scatter_add_(1, argmax_N_K_S, ones)


def max_entropy(probs_N_K_C_S):
    """Predictive entropy ``H[p̄] = -Σ_c p̄_c log p̄_c``.

    Args:
        probs_N_K_C_S: class probabilities ``[N, K, C, *spatial]`` (numpy or torch).

    Returns:
        Entropy map ``[N, *spatial]`` in nats, in ``[0, log C]``.

    References:
        Gal et al. 2017, acquisition function 1 (Shannon 1948). https://arxiv.org/abs/1703.02910
    """
    probs, from_numpy = _to_torch(probs_N_K_C_S)
    return _back(_entropy_over_classes(probs.mean(dim=1), dim=1), from_numpy)


def bald(probs_N_K_C_S):
    """BALD, the mutual information between the label and the model: ``H[p̄] - mean_K H[p_k]``.

    Mathematically non-negative; rounding can make it a tiny bit negative, so it is clamped at 0. It
    equals the Jensen-Shannon divergence of a uniformly weighted committee of K members. With K = 1 it
    is exactly 0.

    Args:
        probs_N_K_C_S: class probabilities ``[N, K, C, *spatial]`` (numpy or torch).

    Returns:
        Mutual-information map ``[N, *spatial]`` in nats, in ``[0, min(log C, log K)]``.

    References:
        Houlsby et al. 2011, https://arxiv.org/abs/1112.5745; Gal et al. 2017, acquisition function 2.
    """
    probs, from_numpy = _to_torch(probs_N_K_C_S)
    entropy_of_mean = _entropy_over_classes(probs.mean(dim=1), dim=1)
    mean_of_entropies = _entropy_over_classes(probs, dim=2).mean(dim=1)
    return _back((entropy_of_mean - mean_of_entropies).clamp_min(0.0), from_numpy)


def member_entropy(probs_N_K_C_S):
    """Nath et al.'s Eq. 3 as written: the entropy of each sample (committee member, SVGD particle),
    summed over the K samples, ``Σ_k H[p_k] = -Σ_k Σ_c p_kc log p_kc``.

    This is K times the expected entropy ``mean_K H[p_k]``, the aleatoric term of BALD's decomposition
    ``H[p̄] = BALD + mean_K H[p_k]``: it is high where every member is unsure, whether or not they
    disagree. The epistemic alternative, the members' disagreement, is :func:`bald` (the committee's
    Jensen-Shannon divergence).

    Args:
        probs_N_K_C_S: class probabilities ``[N, K, C, *spatial]`` (numpy or torch).

    Returns:
        Map ``[N, *spatial]`` in nats, in ``[0, K log C]``.

    References:
        Nath, Yang, Xu, Roth. Diminishing uncertainty within the training pool: active learning for
        medical image segmentation. IEEE TMI 2021, Eq. 3. https://arxiv.org/abs/2101.02323
    """
    probs, from_numpy = _to_torch(probs_N_K_C_S)
    return _back(_entropy_over_classes(probs, dim=2).sum(dim=1), from_numpy)


def variation_ratio(probs_N_K_C_S):
    """Variation ratio ``1 - (count of the modal argmax class over K) / K``.

    This is Freeman's definition on the K sampled votes, as in Gal's reference code; the formula printed
    in Gal et al. 2017 (``1 - max_y p(y|x)``) is what this package calls ``least_confidence``. With K = 1
    it is 0. Ties between class probabilities within one sample go to the lower class index.

    Args:
        probs_N_K_C_S: class probabilities ``[N, K, C, *spatial]`` (numpy or torch).

    Returns:
        Map ``[N, *spatial]`` in ``[0, 1 - 1/C]``.

    References:
        Freeman 1965; Gal et al. 2017, acquisition function 3. https://arxiv.org/abs/1703.02910
    """
    probs, from_numpy = _to_torch(probs_N_K_C_S)
    modal_count = _vote_counts_N_C_S(probs).amax(dim=1)
    return _back(1.0 - modal_count / probs.shape[1], from_numpy)


def mean_std(probs_N_K_C_S):
    """Mean STD: the population standard deviation over K of each class probability, averaged over C.

    ``mean_c sqrt(E_K[p_c²] - E_K[p_c]²)`` (ddof = 0, so K = 1 gives 0).

    Args:
        probs_N_K_C_S: class probabilities ``[N, K, C, *spatial]`` (numpy or torch).

    Returns:
        Map ``[N, *spatial]`` in ``[0, 0.5]``.

    References:
        Kampffmeyer et al. 2016; Kendall et al. 2015; Gal et al. 2017, acquisition function 4.
    """
    probs, from_numpy = _to_torch(probs_N_K_C_S)
    return _back(probs.std(dim=1, correction=0).mean(dim=1), from_numpy)


def least_confidence(probs_N_K_C_S):
    """Least confidence ``1 - max_c p̄_c``.

    Args:
        probs_N_K_C_S: class probabilities ``[N, K, C, *spatial]`` (numpy or torch).

    Returns:
        Map ``[N, *spatial]`` in ``[0, 1 - 1/C]``.
    """
    probs, from_numpy = _to_torch(probs_N_K_C_S)
    return _back(1.0 - probs.mean(dim=1).amax(dim=1), from_numpy)


def margin(probs_N_K_C_S):
    """Margin uncertainty ``1 - (p̄_(1) - p̄_(2))`` from the two largest mean class probabilities.

    The classic margin ``p̄_(1) - p̄_(2)`` is SMALL when uncertain; it is returned as one minus the margin
    so that, like every map here, higher means more uncertain and top-k ranking works unchanged.

    Args:
        probs_N_K_C_S: class probabilities ``[N, K, C, *spatial]`` (numpy or torch).

    Returns:
        Map ``[N, *spatial]`` in ``[0, 1]``: 1 when the two best classes tie, 0 when one class is certain.

    References:
        Scheffer, Decomain, Wrobel. Active hidden Markov models for information extraction. 2001.
    """
    probs, from_numpy = _to_torch(probs_N_K_C_S)
    top2 = probs.mean(dim=1).topk(2, dim=1).values
    return _back(1.0 - (top2[:, 0] - top2[:, 1]), from_numpy)


def foreground(probs_N_K_C_S: torch.Tensor, fg_class: int | None = None) -> torch.Tensor:
    """The foreground probability of every sample ``[N, K, *spatial]``: class ``fg_class``, or with
    ``None`` every class but the background (class 1 when C = 2, ``1 − p_0`` as the sum of classes 1..C-1
    otherwise)."""
    num_classes = probs_N_K_C_S.shape[2]
    if fg_class is None:
        return probs_N_K_C_S[:, :, 1] if num_classes == 2 else probs_N_K_C_S[:, :, 1:].sum(2)
    if not -num_classes <= fg_class < num_classes:
        raise ValueError(f"fg_class={fg_class} is out of range for C={num_classes} classes on axis 2")
    return probs_N_K_C_S[:, :, fg_class]


def std(probs_N_K_C_S, fg_class: int | None = None, variance: bool = False):
    """Spread over K of the foreground-class probability (the axon-myelin uncertainty map).

    The paper describes the map as the standard deviation of the MC-dropout predictions; its reference
    code used the variance when distance weighting was enabled. Both are available: the default is the
    standard deviation, ``variance=True`` gives its square. Population moments (ddof = 0).

    Args:
        probs_N_K_C_S: class probabilities ``[N, K, C, *spatial]`` (numpy or torch).
        fg_class: index on axis 2 of the foreground class; None: every class but the background
            (see :func:`foreground`), so a multi-class map measures the spread of "any foreground".
        variance: return the variance instead of the standard deviation.

    Returns:
        Map ``[N, *spatial]`` in ``[0, 0.5]`` (``[0, 0.25]`` for the variance).

    References:
        Lubrano di Scandalea et al. 2019, Deep active learning for axon-myelin segmentation on histology
        data.
        https://arxiv.org/abs/1907.05143
    """
    probs, from_numpy = _to_torch(probs_N_K_C_S)
    fg_N_K_S = foreground(probs, fg_class)
    spread = fg_N_K_S.var(dim=1, correction=0) if variance else fg_N_K_S.std(dim=1, correction=0)
    return _back(spread, from_numpy)


def vote_entropy(probs_N_K_C_S):
    """Vote entropy ``-Σ_c (V_c/K) log(V_c/K)``, V_c = number of samples whose argmax is class c.

    Args:
        probs_N_K_C_S: class probabilities ``[N, K, C, *spatial]`` (numpy or torch).

    Returns:
        Map ``[N, *spatial]`` in nats, in ``[0, min(log C, log K)]``; 0 when K = 1.

    References:
        Dagan, Engelson. Committee-based sampling for training probabilistic classifiers. ICML 1995.
    """
    probs, from_numpy = _to_torch(probs_N_K_C_S)
    vote_share = _vote_counts_N_C_S(probs) / probs.shape[1]
    return _back(_entropy_over_classes(vote_share, dim=1), from_numpy)


def fused_maps(probs_N_K_C_S, names=("max_entropy", "bald", "variation_ratio", "std"),
               fg_class: int | None = None) -> dict:
    """Several maps from one pass over the K samples, sharing their common terms: the mean ``p̄`` (entropy,
    BALD, least confidence, margin), the per-sample entropies (BALD), the deviations from ``p̄`` (mean STD
    and ``std``) and the argmax votes (variation ratio, vote entropy). Each map equals the function of the
    same name; use this when a report needs several of them for the same items.

    Args:
        probs_N_K_C_S: class probabilities ``[N, K, C, *spatial]`` (numpy or torch).
        names: map names from ``HEURISTICS``.
        fg_class: foreground class of the ``std`` map.

    Returns:
        ``{name: map [N, *spatial]}`` of the caller's array kind.
    """
    unknown = [n for n in names if n not in HEURISTICS]
    if unknown:
        raise ValueError(f"unknown map(s) {unknown}; valid: {sorted(HEURISTICS)}")
    probs, from_numpy = _to_torch(probs_N_K_C_S)
    k = probs.shape[1]
    mean = probs.mean(dim=1)
    out: dict[str, torch.Tensor] = {}
    if "max_entropy" in names or "bald" in names:
        h_mean = _entropy_over_classes(mean, dim=1)
        out["max_entropy"] = h_mean
    if "bald" in names or "member_entropy" in names:
        h_each = _entropy_over_classes(probs, dim=2)  # [N, K, *S]
        out["member_entropy"] = h_each.sum(dim=1)
        if "bald" in names:
            out["bald"] = (out["max_entropy"] - h_each.mean(dim=1)).clamp_min(0.0)
    if "mean_std" in names or "std" in names:
        var = (probs - mean[:, None]).square().mean(dim=1)  # [N, C, *S], population variance over K
        out["mean_std"] = var.sqrt().mean(dim=1)
        if "std" in names:
            single = fg_class is not None or probs.shape[2] == 2
            if single:  # one class's variance is already in var
                index = 1 if fg_class is None else fg_class
                foreground(probs[:1, :1], index)  # checks the index
                out["std"] = var[:, index].sqrt()
            else:
                fg = foreground(probs)
                out["std"] = (fg - fg.mean(dim=1, keepdim=True)).square().mean(dim=1).sqrt()
    if "variation_ratio" in names or "vote_entropy" in names:
        votes = _vote_counts_N_C_S(probs)
        out["variation_ratio"] = 1.0 - votes.amax(dim=1) / k
        out["vote_entropy"] = _entropy_over_classes(votes / k, dim=1)
    if "least_confidence" in names:
        out["least_confidence"] = 1.0 - mean.amax(dim=1)
    if "margin" in names:
        top2 = mean.topk(2, dim=1).values
        out["margin"] = 1.0 - (top2[:, 0] - top2[:, 1])
    return {n: _back(out[n], from_numpy) for n in names}


HEURISTICS: dict[str, Callable] = {
    "max_entropy": max_entropy,
    "bald": bald,
    "member_entropy": member_entropy,
    "variation_ratio": variation_ratio,
    "mean_std": mean_std,
    "least_confidence": least_confidence,
    "margin": margin,
    "std": std,
    "vote_entropy": vote_entropy,
}
"""Every uncertainty map by its snake_case name; all take ``probs_N_K_C_*`` first, higher = more uncertain."""
