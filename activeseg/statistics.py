"""Statistics of a strategy comparison at the unit that varies: the seed (one whole active-learning run,
with its own initial set, split and training randomness), never the test item.

Pure numpy/scipy functions on per-seed numbers; randomness (the bootstrap) comes from a seed argument
or a ``numpy.random.Generator`` passed in, never the global RNG. Outputs that go into reports are
JSON-safe: None, never NaN.

References:
    Holm, "A simple sequentially rejective multiple test procedure", 1979. https://www.jstor.org/stable/4615733
    Efron & Tibshirani, "An Introduction to the Bootstrap", 1993 (percentile intervals).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
from scipy import stats

from activeseg.metrics import efficiency_ratio, wilcoxon_paired

POWER_FACTOR = 2.8  # z_{0.975} + z_{0.80} = 1.96 + 0.84: a two-sided test at α = 0.05 with power 0.8
MIN_SEEDS = 10  # the fewest seeds recommended, whatever the pilot's σ_d
N_RESAMPLES = 10_000
MIN_CHECK_SEEDS = 4  # the random-vs-random check needs two halves of at least two seeds


def _finite(x) -> float | None:
    """A finite float, or None for None/NaN/inf."""
    return None if x is None or not np.isfinite(x) else float(x)


def mean_sd(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (ddof=1; 0.0 for one value) of the finite values; None, None if none."""
    finite = np.array([v for v in values if v is not None and np.isfinite(v)], dtype=np.float64)
    if finite.size == 0:
        return None, None
    sd = float(np.std(finite, ddof=1)) if finite.size > 1 else 0.0
    return float(np.mean(finite)), sd


def aulc_log2(n_annotations_R: Sequence[float], score_R: Sequence[float], start: float, end: float) -> float:
    """Normalised area under the learning curve on a log2(budget) axis, from ``start`` to ``end``.

    The curve is linear between rounds in log2(annotations) space; at ``start`` and ``end`` it is
    interpolated linearly in that space. The area is divided by ``log2(end / start)``, so the result
    is the curve's mean height (a score in the metric's own units). Rounds with a NaN score or a
    budget ≤ 0 (no place on a log axis) are dropped.

    Args:
        n_annotations_R: annotations at each round, shape ``[R]``.
        score_R: the test score at each round, shape ``[R]``.
        start: the first budget of the integral (> 0).
        end: the last budget (≥ ``start``); ``start == end`` gives the curve's value there.

    Returns:
        The mean height, or NaN when the run does not cover ``[start, end]`` (its first budget is
        above ``start`` or its last below ``end``).
    """
    x_R = np.asarray(n_annotations_R, dtype=np.float64)
    y_R = np.asarray(score_R, dtype=np.float64)
    if x_R.shape != y_R.shape:
        raise ValueError(f"n_annotations_R has shape {x_R.shape} but score_R has shape {y_R.shape}")
    if not 0 < start <= end:
        raise ValueError(f"the AULC range needs 0 < start <= end; got start={start}, end={end}")
    keep_R = np.isfinite(x_R) & np.isfinite(y_R) & (x_R > 0)
    x_R, y_R = x_R[keep_R], y_R[keep_R]
    if x_R.size == 0 or x_R.min() > start or x_R.max() < end:
        return float("nan")
    order = np.argsort(x_R, kind="stable")
    log_R, y_R = np.log2(x_R[order]), y_R[order]
    lo, hi = math.log2(start), math.log2(end)
    y_lo, y_hi = np.interp([lo, hi], log_R, y_R)
    if hi == lo:
        return float(y_lo)
    inside_R = (log_R > lo) & (log_R < hi)
    xs = np.concatenate([[lo], log_R[inside_R], [hi]])
    ys = np.concatenate([[y_lo], y_R[inside_R], [y_hi]])
    return float(np.sum(np.diff(xs) * (ys[1:] + ys[:-1]) / 2) / (hi - lo))


def smooth3(values_R: Sequence[float]) -> np.ndarray:
    """Centred 3-point moving average, shape ``[R]``; each end is the mean of itself and its one neighbour."""
    v_R = np.asarray(values_R, dtype=np.float64)
    if v_R.size < 2:
        return v_R.copy()
    out_R = np.empty_like(v_R)
    out_R[1:-1] = (v_R[:-2] + v_R[1:-1] + v_R[2:]) / 3
    out_R[0] = (v_R[0] + v_R[1]) / 2
    out_R[-1] = (v_R[-2] + v_R[-1]) / 2
    return out_R


def annotations_to_stable_target(n_annotations_R: Sequence[float], score_R: Sequence[float],
                                 target: float) -> int | None:
    """The first budget after which the curve, smoothed by :func:`smooth3`, stays ≥ ``target``.

    A single noisy crossing followed by a dip does not count. Rounds with a NaN score are dropped
    before smoothing.

    Args:
        n_annotations_R: annotations at each round, shape ``[R]``.
        score_R: the score at each round, shape ``[R]``.
        target: the score to reach (inclusive).

    Returns:
        That budget, or None when the smoothed curve ends below the target.
    """
    x_R = np.asarray(n_annotations_R, dtype=np.float64)
    y_R = np.asarray(score_R, dtype=np.float64)
    if x_R.shape != y_R.shape:
        raise ValueError(f"n_annotations_R has shape {x_R.shape} but score_R has shape {y_R.shape}")
    keep_R = np.isfinite(y_R)
    order = np.argsort(x_R[keep_R], kind="stable")
    x_R, y_R = x_R[keep_R][order], y_R[keep_R][order]
    below = np.flatnonzero(smooth3(y_R) < target)
    first = 0 if below.size == 0 else int(below[-1]) + 1
    return None if first >= x_R.size else int(x_R[first])


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm-Bonferroni adjusted p-values, in the input order; None entries stay None and are not in the family.

    With the m p-values sorted ascending, ``p_adj(i) = max_{j ≤ i} min(1, (m - j + 1) · p(j))``.
    """
    family = [i for i, p in enumerate(p_values) if _finite(p) is not None]
    m = len(family)
    out: list[float | None] = [None] * len(p_values)
    running = 0.0
    for rank, i in enumerate(sorted(family, key=lambda i: p_values[i])):
        running = max(running, min(1.0, (m - rank) * float(p_values[i])))
        out[i] = running
    return out


def bootstrap_ci(values_S, statistic: Callable[[np.ndarray], np.ndarray] | None = None,
                 n_resamples: int = N_RESAMPLES, level: float = 0.95,
                 seed: int | np.random.Generator = 0) -> tuple[float, float] | None:
    """Percentile bootstrap interval over seeds (rows resampled with replacement).

    Args:
        values_S: one row per seed, shape ``[S]`` or ``[S, F]``.
        statistic: maps the resamples ``[B, S]`` (or ``[B, S, F]``) to ``[B]``; default the mean over seeds.
        n_resamples: B.
        level: two-sided coverage.
        seed: the bootstrap's seed or Generator (the same seed gives the same interval).

    Returns:
        ``(low, high)``, or None with fewer than 2 seeds.
    """
    values = np.asarray(values_S, dtype=np.float64)
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    n = values.shape[0] if values.ndim else 0
    if n < 2:
        return None
    idx_B_S = np.random.default_rng(seed).integers(0, n, size=(n_resamples, n))
    resamples = values[idx_B_S]
    stat_B = resamples.mean(axis=1) if statistic is None else np.asarray(statistic(resamples), dtype=np.float64)
    low, high = np.quantile(stat_B, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def paired_t_p(diffs_S: Sequence[float]) -> float | None:
    """Two-sided one-sample t-test p of the paired differences against 0; None with < 2 pairs.

    All differences 0 gives 1.0; equal non-zero differences (no spread) give 0.0.
    """
    d_S = np.asarray(diffs_S, dtype=np.float64)
    if d_S.size < 2:
        return None
    if np.all(d_S == 0):
        return 1.0
    if np.all(d_S == d_S[0]):
        return 0.0
    return _finite(stats.ttest_1samp(d_S, 0.0).pvalue)


def seeds_needed(sd_diff: float, delta: float = 0.01, minimum: int = MIN_SEEDS) -> int:
    """Seeds for a paired difference ``delta`` at α = 0.05, power 0.8: ``max(minimum, ⌈(2.8·σ_d/δ)²⌉)``."""
    if delta <= 0:
        raise ValueError(f"delta must be > 0, got {delta}")
    return max(minimum, math.ceil(round((POWER_FACTOR * sd_diff / delta) ** 2, 9)))


def power(diffs_S: Sequence[float], delta: float = 0.01) -> dict:
    """From a pilot's per-seed differences: ``{"n_used", "sd_diff", "delta", "n_recommended",
    "min_detectable"}`` with σ_d the sd (ddof=1) and ``min_detectable = 2.8·σ_d/√n_used``; None
    entries with < 2 differences."""
    d_S = np.asarray(diffs_S, dtype=np.float64)
    n = int(d_S.size)
    sd = float(np.std(d_S, ddof=1)) if n > 1 else None
    return {
        "n_used": n, "sd_diff": sd, "delta": float(delta),
        "n_recommended": None if sd is None else seeds_needed(sd, delta),
        "min_detectable": None if sd is None else POWER_FACTOR * sd / math.sqrt(n),
    }


def paired_comparison(seeds_S: Sequence[int], a_S: Sequence[float | None], b_S: Sequence[float | None],
                      delta: float = 0.01, n_resamples: int = N_RESAMPLES, level: float = 0.95,
                      seed: int | np.random.Generator = 0) -> dict:
    """Compare ``a`` with ``b`` (e.g. a strategy's and random's per-seed AULC), paired by seed.

    Pairs where either value is missing are dropped.

    Args:
        seeds_S: the seed of each pair, shape ``[S]``.
        a_S: the first arm's value per seed; None/NaN when missing.
        b_S: the second arm's value per seed.
        delta: the difference the power calculation is for.
        n_resamples: bootstrap resamples of seeds.
        level: the CI's coverage.
        seed: the bootstrap's seed or Generator.

    Returns:
        ``{"seeds", "diffs", "pairs", "mean_diff", "ci", "p_t", "p_wilcoxon", **power}``: differences
        ``a - b``; ``ci`` ``[low, high]`` of the mean difference; the p-values None with < 2 pairs
        (Wilcoxon 1.0 when all differences are 0).
    """
    if not len(seeds_S) == len(a_S) == len(b_S):
        raise ValueError(f"{len(seeds_S)} seeds for {len(a_S)} and {len(b_S)} values; pass one value per seed")
    a = np.array([np.nan if v is None else v for v in a_S], dtype=np.float64)
    b = np.array([np.nan if v is None else v for v in b_S], dtype=np.float64)
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    d_S = a - b
    ci = bootstrap_ci(d_S, n_resamples=n_resamples, level=level, seed=seed)
    return {
        "seeds": [int(s) for s, k in zip(seeds_S, keep, strict=True) if k],
        "diffs": d_S.tolist(),
        "pairs": int(d_S.size),
        "mean_diff": float(d_S.mean()) if d_S.size else None,
        "ci": None if ci is None else list(ci),
        "p_t": paired_t_p(d_S),
        "p_wilcoxon": None if d_S.size < 2 else _finite(wilcoxon_paired(a, b)),
        **power(d_S, delta),
    }


def disjoint_halves(seeds: Sequence[int]) -> tuple[list[int], list[int]] | None:
    """Sorted seeds split into a first and second half of equal size (an odd last seed left out), paired
    in order: the random-vs-random check; None with fewer than 4 seeds."""
    ordered = sorted(seeds)
    if len(ordered) < MIN_CHECK_SEEDS:
        return None
    half = len(ordered) // 2
    return ordered[:half], ordered[half:2 * half]


def efficiency(base_S: Sequence[float | None], annotations_S: Sequence[float | None],
               n_resamples: int = N_RESAMPLES, level: float = 0.95, seed: int | np.random.Generator = 0) -> dict:
    """Labelling efficiency against a baseline at one target, over seeds where both reached it.

    Args:
        base_S: the baseline's annotations to the target per paired seed; None where not reached.
        annotations_S: the strategy's, same seeds.

    Returns:
        ``{"ratio", "ci", "both_reached", "pairs"}``: ratio = mean baseline annotations / mean strategy
        annotations over the seeds both reached it on (2.0: half the labels), with a bootstrap
        ``[low, high]`` over those seeds; None when no seed (CI: fewer than 2) qualifies.
    """
    both = [(b, a) for b, a in zip(base_S, annotations_S, strict=True) if b is not None and a is not None]
    pairs_S_2 = np.asarray(both, dtype=np.float64).reshape(-1, 2)
    ratio = efficiency_ratio(*pairs_S_2.mean(axis=0)) if both else None
    ci = None if ratio is None else bootstrap_ci(
        pairs_S_2, lambda r: r[..., 0].mean(axis=1) / r[..., 1].mean(axis=1),
        n_resamples=n_resamples, level=level, seed=seed)
    if ci is not None and not all(np.isfinite(ci)):
        ci = None
    return {"ratio": ratio, "ci": None if ci is None else list(ci), "both_reached": len(both),
            "pairs": len(base_S)}
