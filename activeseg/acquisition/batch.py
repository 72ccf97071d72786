"""Batch and diversity selection: pick k items that are informative together, not k near-duplicates.

Pure functions on arrays (numpy, float64 inside); randomness only from a passed ``numpy.random.Generator``.
Positions returned index the given candidates (``0..N-1``), in the order they were chosen.

* ``k_center_greedy``: core-set selection (Sener & Savarese 2018): repeatedly the point farthest from
  everything labelled or chosen so far.
* ``max_cover``: Suggestive Annotation (Yang et al. 2017): among the top uncertain candidates, greedily
  the one that most increases ``F(S) = Σ_x max_{s∈S} sim(x, s)`` over the pool.
* ``information_density``: Settles & Craven (2008): informativeness × (mean similarity to the pool)^β.
* ``batchbald``: Kirsch et al. (2019): greedy maximisation of the mutual information between the batch's
  joint labels and the model parameters, exact joint entropy while it is small, importance-sampled after.
  ``batchbald_pixels`` is its segmentation form: every pixel of a fixed subset is a label, independent of
  the others given the parameters.
* ``gradient_embedding`` + ``kmeans_pp``: BADGE (Ash et al. 2020).
* ``stochastic_batch``: Kirsch et al. (2023): sample k items without replacement with probabilities
  from the scores (power, softmax or rank), a strong and cheap baseline against top-k.

Pairwise similarities and distances are computed in row blocks (``block`` rows at a time), so a pool
of 20,000 descriptors never materialises a 20,000² matrix.

References:
    Sener, Savarese. Active Learning for Convolutional Neural Networks: A Core-Set Approach. ICLR 2018.
    Yang, Zhang, Chen, Zhang, Chen. Suggestive Annotation. MICCAI 2017. https://arxiv.org/abs/1706.04737
    Settles, Craven. An Analysis of Active Learning Strategies for Sequence Labeling Tasks. EMNLP 2008.
    Kirsch, van Amersfoort, Gal. BatchBALD. NeurIPS 2019. https://arxiv.org/abs/1906.08158
    Ash, Zhang, Krishnamurthy, Langford, Agarwal. Deep Batch Active Learning by Diverse, Uncertain
    Gradient Lower Bounds (BADGE). ICLR 2020. https://arxiv.org/abs/1906.03671
    Kirsch, Farquhar, Atighehchian, Jesson, Branchaud-Charron, Gal. Stochastic Batch Acquisition: A
    Simple Baseline for Deep Active Learning. TMLR 2023. https://arxiv.org/abs/2106.12059
"""

from __future__ import annotations

import logging

import numpy as np
from scipy.special import xlogy

from activeseg.acquisition.selectors import _check_k, check_rng, top_k

__all__ = [
    "batchbald",
    "batchbald_pixels",
    "cosine_normalize",
    "gradient_embedding",
    "information_density",
    "k_center_greedy",
    "kmeans_pp",
    "max_cover",
    "stochastic_batch",
]

BLOCK = 2048
_log = logging.getLogger(__name__)


def _as_2d(x, name: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"{name} must be a matrix [N, D] of descriptors, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} holds NaN or infinite values; check the model's features")
    return x


def cosine_normalize(features_N_D) -> np.ndarray:
    """Rows scaled to unit length (all-zero rows stay zero), so dot products are cosine similarities."""
    x = _as_2d(features_N_D, "features")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)


def _min_sq_dist(points_N_D: np.ndarray, centers_M_D: np.ndarray, block: int) -> np.ndarray:
    """``min_m ‖x_n - c_m‖²`` for every point, in blocks of ``block`` points."""
    out = np.full(len(points_N_D), np.inf)
    if len(centers_M_D) == 0:
        return out
    c_sq = np.einsum("md,md->m", centers_M_D, centers_M_D)
    for start in range(0, len(points_N_D), block):
        x = points_N_D[start : start + block]
        d = np.einsum("nd,nd->n", x, x)[:, None] - 2 * x @ centers_M_D.T + c_sq[None]
        out[start : start + block] = np.maximum(d.min(1), 0.0)
    return out


def k_center_greedy(features_N_D, k: int, labeled_M_D=None, block: int = BLOCK) -> np.ndarray:
    """Core-set selection: each pick is the pool point farthest (Euclidean) from the labelled points and
    the picks so far; ties go to the lowest index; with nothing labelled the first pick is index 0.

    Args:
        features_N_D: descriptors of the N candidates.
        k: items to pick (``min(k, N)`` are returned).
        labeled_M_D: descriptors of the labelled items (may be None or empty).
        block: rows per block of the distance computation.
    """
    k = _check_k(k)
    x = _as_2d(features_N_D, "features")
    labeled = np.zeros((0, x.shape[1])) if labeled_M_D is None else _as_2d(labeled_M_D, "labeled features")
    if labeled.shape[1] != x.shape[1]:
        raise ValueError(f"labelled descriptors have {labeled.shape[1]} dimensions, the pool's {x.shape[1]}")
    dist = _min_sq_dist(x, labeled, block)
    picks: list[int] = []
    for _ in range(min(k, len(x))):
        i = 0 if not np.isfinite(dist).any() else int(np.argmax(dist))  # argmax: lowest index on ties
        picks.append(i)
        dist = np.minimum(dist, _min_sq_dist(x, x[i : i + 1], block))
        dist[i] = -1.0  # never again
    return np.asarray(picks, dtype=np.int64)


def max_cover(scores_N, features_N_D, k: int, candidates: int = 16, block: int = BLOCK) -> np.ndarray:
    """Suggestive Annotation: the ``candidates`` highest-scoring items, then greedy max set cover.

    ``F(S) = Σ_{x ∈ pool} max_{s ∈ S} sim(x, s)`` with sim the cosine similarity of the descriptors
    (clipped at 0, as similarities of non-negative encoder features are); each step adds the candidate
    with the largest gain, ties to the higher-scoring candidate. Yang et al. use 16 candidates and k = 8.

    Args:
        scores_N: uncertainty per pool item (the committee's variance in the paper), higher = more.
        features_N_D: descriptors of the same N items (the whole pool is the set to cover).
        k: items to pick.
        candidates: K, the uncertain candidates the picks come from (at least k).
    """
    k = _check_k(k)
    x = cosine_normalize(features_N_D)
    scores = np.asarray(scores_N, dtype=np.float64)
    if len(scores) != len(x):
        raise ValueError(f"{len(scores)} scores for {len(x)} descriptors; pass one score per item")
    if candidates < min(k, len(x)):
        raise ValueError(f"candidates={candidates} < k={k}; the picks come from the top candidates")
    cand = top_k(scores, candidates)
    sim_N_K = np.concatenate(
        [np.clip(x[s : s + block] @ x[cand].T, 0.0, None) for s in range(0, len(x), block)]
    ) if len(x) else np.zeros((0, len(cand)))
    covered = np.zeros(len(x))
    picks: list[int] = []
    free = np.ones(len(cand), bool)
    for _ in range(min(k, len(cand))):
        gains = np.maximum(sim_N_K - covered[:, None], 0.0).sum(0)
        gains[~free] = -np.inf
        j = int(np.argmax(gains))  # candidates are in score order: ties go to the higher score
        picks.append(int(cand[j]))
        free[j] = False
        covered = np.maximum(covered, sim_N_K[:, j])
    return np.asarray(picks, dtype=np.int64)


def information_density(scores_N, features_N_D, beta: float = 1.0, block: int = BLOCK) -> np.ndarray:
    """Settles' information density: ``score_n · (mean_{x ∈ pool} cos(x_n, x))^β``.

    Similarities are clipped at 0 so the density stays non-negative; scores must be non-negative (all
    the uncertainty maps here are). β = 0 gives back the scores, larger β favours dense regions.
    """
    x = cosine_normalize(features_N_D)
    scores = np.asarray(scores_N, dtype=np.float64)
    if len(scores) != len(x):
        raise ValueError(f"{len(scores)} scores for {len(x)} descriptors; pass one score per item")
    if (scores < 0).any():
        raise ValueError("information density needs non-negative scores (uncertainties); shift them first")
    density = np.zeros(len(x))
    for start in range(0, len(x), block):
        xb = x[start : start + block]
        for s in range(0, len(x), block):  # clipped before summing, so negatives cannot cancel
            density[start : start + block] += np.clip(xb @ x[s : s + block].T, 0.0, None).sum(1)
    return scores * (density / max(len(x), 1)) ** beta


def _entropy(p: np.ndarray, axis) -> np.ndarray:
    return -xlogy(p, p).sum(axis=axis)


def batchbald(probs_N_K_C, k: int, rng: np.random.Generator, num_samples: int = 1000,
              candidates: int | None = None) -> np.ndarray:
    """BatchBALD: greedily add the item maximising ``H(y_B, y_n) - Σ_{i∈B∪{n}} E_ω H(y_i | ω)``.

    The K samples must be consistent (sample k of every item from the same dropout masks, see
    ``MCDropout(consistent=True)``); the joint entropy of the batch labels is exact while the number of
    label configurations ``C^|B|`` is at most ``num_samples``, and estimated beyond from ``num_samples``
    configurations drawn from the model's joint predictive (draw ω_k, then each y_i ~ p(y_i | ω_k)),
    importance-weighted as Kirsch et al. do. Float64 throughout.

    Args:
        probs_N_K_C: per-sample class probabilities of the N candidates (for segmentation, a documented
            per-image summary, e.g. a fixed random subset of pixels treated as items).
        k: batch size.
        rng: draws the configurations of the sampled regime.
        num_samples: the largest exact configuration count, and the number of sampled configurations.
        candidates: only the top BALD items are considered (default: all); BatchBALD never picks an item
            whose own BALD is low, and this bounds the cost.
    """
    k = _check_k(k)
    rng = check_rng(rng)
    p = np.asarray(probs_N_K_C, dtype=np.float64)
    if p.ndim != 3:
        raise ValueError(f"batchbald needs probs [N, K, C] (one label per item), got shape {p.shape}")
    n_items, n_k, n_c = p.shape
    cond_N = _entropy(p, axis=2).mean(1)  # E_ω H(y_n | ω)
    pool = np.arange(n_items)
    if candidates is not None and candidates < n_items:
        bald_N = _entropy(p.mean(1), axis=1) - cond_N
        pool = np.sort(top_k(bald_N, candidates))
    # joint_K_M[k, m] = p(y_B = configuration m | ω_k): every configuration while exact, M draws after
    joint_K_M = np.ones((n_k, 1))
    omega_M = None  # in the sampled regime: the ω each configuration was drawn under
    picks: list[int] = []
    cond_sum = 0.0
    free = np.ones(len(pool), bool)
    for _ in range(min(k, len(pool))):
        cand = pool[free]
        h_joint = np.concatenate([_joint_entropy(joint_K_M, p[cand[s : s + 256]], omega_M is not None)
                                  for s in range(0, len(cand), 256)])
        j = int(np.argmax(h_joint - (cond_sum + cond_N[cand])))  # ties: the lower index
        item = int(cand[j])
        picks.append(item)
        free[np.flatnonzero(free)[j]] = False
        cond_sum += cond_N[item]
        if omega_M is None and joint_K_M.shape[1] * n_c <= num_samples:
            joint_K_M = (joint_K_M[:, :, None] * p[item][:, None, :]).reshape(n_k, -1)
            continue
        if omega_M is None:  # too many configurations: draw num_samples of them from the joint predictive
            omega_M = rng.integers(n_k, size=num_samples)
            joint_K_M = np.ones((n_k, num_samples))
            batch = picks
        else:
            batch = [item]
        for b in batch:
            joint_K_M = joint_K_M * p[b][:, _draw_labels(p[b], omega_M, rng)]
    return np.asarray(picks, dtype=np.int64)


def _draw_labels(p_K_C: np.ndarray, omega_M: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One label per configuration m, ``y_m ~ p(y | ω_{omega_M[m]})`` (inverse-CDF sampling)."""
    cdf_M_C = np.cumsum(p_K_C[omega_M], axis=1)
    u_M = rng.random(len(omega_M))[:, None] * cdf_M_C[:, -1:]
    return (cdf_M_C < u_M).sum(1).clip(max=p_K_C.shape[1] - 1)


def _joint_entropy(joint_K_M: np.ndarray, p_N_K_C: np.ndarray, sampled: bool) -> np.ndarray:
    """``H(y_B, y_n)`` for each candidate n: exact over all configurations m, or importance-sampled.

    ``p̄(m, c) = mean_k joint[k, m] · p_n[k, c]``. Exact: ``-Σ_{m,c} p̄ log p̄``. Sampled (m drawn from
    ``p̄(y_B)``): ``-(1/M) Σ_m Σ_c p̄(m, c) / p̄(m) · log p̄(m, c)``.
    """
    joint_N_M_C = np.einsum("km,nkc->nmc", joint_K_M, p_N_K_C) / joint_K_M.shape[0]
    terms = xlogy(joint_N_M_C, joint_N_M_C)
    if not sampled:
        return -terms.sum((1, 2))
    marg_M = joint_K_M.mean(0)
    return -(terms / marg_M[None, :, None]).sum((1, 2)) / joint_K_M.shape[1]


PIXEL_MEMORY = 512 * 2**20  # bytes of per-candidate sample log-likelihoods batchbald_pixels may hold


SATURATION_TOL = 1e-6
"""Nats within which two candidates' BatchBALD gains count as a tie (broken by their BALD)."""


def batchbald_pixels(probs_N_K_C_P, k: int, rng: np.random.Generator, num_samples: int = 1000,
                     candidates: int | None = None, memory: int = PIXEL_MEMORY,
                     trace: list | None = None) -> np.ndarray:
    """BatchBALD over the pixels of images: the batch's labels are all P pixels of each of its images.

    Given the parameters ω_k (one MC sample), every pixel label is independent (the model predicts each
    pixel's softmax), so ``p(y_B | ω_k) = Π_{i∈B} Π_s p(y_{i,s} | ω_k)``, and the greedy step adds the image
    maximising ``H(y_B, y_n) - Σ_{i∈B∪{n}} Σ_s E_ω H(y_{i,s} | ω)``. ``C^{|B|·P}`` configurations cannot
    be enumerated, so the joint entropy is always estimated: M = ``num_samples`` configurations are drawn
    once from the joint predictive (ω_m uniform over the K samples, then every pixel of every candidate
    from ``p(· | ω_m)``), and the information of a batch is estimated on the same draws as
    ``I ≈ (1/M) Σ_m [log p(y_m | ω_m) - log mean_k p(y_m | ω_k)]``, in log space (products of thousands of
    pixel probabilities underflow). Each term lies in ``[0, log K]`` and the pixel-level noise of a draw
    cancels between its two parts. (Subtracting the exact conditional entropy from the estimated joint
    entropy, as the categorical :func:`batchbald` does, leaves that noise in: with 256 pixels per image and
    1000 draws the greedy argmax over 582 real nuclei3 candidates picked it up as about 0.9 nats a pick, and
    the estimate of an 8-image batch reached 4.5 × log K, ``benchmarks/results/batchbald_saturation.md`` at
    commit 3e74820.) The same draws serve every greedy step. Candidates whose gains tie (within
    ``SATURATION_TOL`` nats) are told apart by their own BALD: once the batch carries ``log K`` every
    candidate ties, and the rest of the batch is the top BALD images (logged). On real nuclei3 rounds one
    image of 256 pixels carries 98-100% of ``log K`` for K = 10, 20 and 40
    (``benchmarks/results/batchbald_saturation.md``), so there the batch is its best image plus top BALD.

    With K samples the mutual information of any batch is at most ``log K`` (the labels can at most
    identify which of the K samples produced them). An image whose pixels disagree widely across the
    samples nearly reaches it alone, and the next picks then add little: use enough samples (K) for the
    batch size, or fewer pixels. ``batchbald`` on ``[N, K, C]`` per-image means measures disagreement
    about class areas instead (two samples that move the same area of foreground elsewhere agree there).

    Args:
        probs_N_K_C_P: per-sample class probabilities of P fixed pixel positions of each candidate (the
            same positions for every image, see ``strategies.summarize_probs``); K samples consistent
            across items.
        k: batch size.
        rng: draws the configurations.
        num_samples: M, the configurations drawn.
        candidates: only the top (pixel-summed) BALD images are considered (default: all, or as many as
            ``memory`` allows for the ``[N, K, M]`` log-likelihoods, the rest with a log line).
        memory: bytes the per-candidate log-likelihoods may take (float32).
        trace: a list that receives, per greedy step, the estimated mutual information (nats) of the batch
            picked so far: how close it comes to ``log K`` (``benchmarks/batchbald_saturation.py``).
    """
    k = _check_k(k)
    rng = check_rng(rng)
    p = np.asarray(probs_N_K_C_P, dtype=np.float64)
    if p.ndim != 4:
        raise ValueError(f"batchbald_pixels needs probs [N, K, C, P] (P pixels per item), got shape {p.shape}")
    n_items, n_k, n_c, n_pix = p.shape
    if num_samples < 1:
        raise ValueError(f"num_samples must be at least 1, got {num_samples}")
    cond_N = _entropy(p, axis=2).mean(1).sum(1)  # Σ_s E_ω H(y_s | ω)
    bald_N = _entropy(p.mean(1), axis=1).sum(1) - cond_N
    fits = max(1, memory // (4 * n_k * num_samples))
    keep = min(n_items, candidates if candidates is not None else n_items, fits)
    if keep < n_items and (candidates is None or keep < candidates):
        _log.info("batchbald_pixels: %d candidates × %d samples × %d draws exceed %d MiB; keeping the top %d by "
                  "BALD", n_items, n_k, num_samples, memory >> 20, keep)
    pool = np.arange(n_items) if keep == n_items else np.sort(top_k(bald_N, keep))
    omega_M = rng.integers(n_k, size=num_samples)
    loglik_N_K_M = _pixel_logliks(p[pool], omega_M, rng)
    m_idx = np.arange(num_samples)
    log_joint_K_M = np.zeros((n_k, num_samples))  # Σ_{i∈B} log p(y_{i,m} | ω_k)
    own_M = np.zeros(num_samples)  # Σ_{i∈B} log p(y_{i,m} | ω_m): under the sample that drew them
    picks: list[int] = []
    saturated = False
    free = np.ones(len(pool), bool)
    for _ in range(min(k, len(pool))):
        cand = np.flatnonzero(free)
        gain = np.concatenate([_paired_information(log_joint_K_M, own_M, loglik_N_K_M[cand[s : s + 64]], omega_M,
                                                   m_idx) for s in range(0, len(cand), 64)])
        best = gain.max()
        tied = np.flatnonzero(gain >= best - SATURATION_TOL)
        j = int(tied[np.argmax(bald_N[pool[cand[tied]]])])  # the best gain; ties by BALD
        if len(tied) > 1 and best >= np.log(n_k) - SATURATION_TOL and not saturated:
            saturated = True
            _log.info("batchbald_pixels: the batch reached log K = %.3f nats after %d pick(s); the rest is "
                      "filled by BALD. More samples (K) or fewer pixels let BatchBALD tell more images apart",
                      np.log(n_k), len(picks) + 1)
        if trace is not None:
            trace.append(float(gain[j]))
        picks.append(int(pool[cand[j]]))
        free[cand[j]] = False
        log_joint_K_M = log_joint_K_M + loglik_N_K_M[cand[j]]
        own_M = own_M + loglik_N_K_M[cand[j]][omega_M, m_idx]
    return np.asarray(picks, dtype=np.int64)


def _paired_information(log_joint_K_M, own_M, loglik_c_K_M, omega_M, m_idx) -> np.ndarray:
    """``[c]``: the information of the batch plus each candidate, ``mean_m [log p(y_m | ω_m) - log mean_k
    p(y_m | ω_k)]`` over the drawn configurations (each term in ``[0, log K]``)."""
    joint = log_joint_K_M[None] + loglik_c_K_M
    own = own_M[None] + loglik_c_K_M[:, omega_M, m_idx]
    return (own - _logmeanexp(joint, 1)).mean(1)


def _pixel_logliks(p_N_K_C_P: np.ndarray, omega_M: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``[N, K, M]`` float32: ``log p(y_{n,m} | ω_k)`` of each item's P pixels ``y_{n,m}``, drawn under
    ω_{omega_M[m]}."""
    n_items, n_k, n_c, n_pix = p_N_K_C_P.shape
    out = np.empty((n_items, n_k, len(omega_M)), np.float32)
    step = 8  # items at a time: the draws take step × M × C × P floats
    order = np.argsort(omega_M, kind="stable")  # draws grouped by the sample they come from
    bounds = np.searchsorted(omega_M[order], np.arange(n_k + 1))
    for s in range(0, n_items, step):
        p_c = p_N_K_C_P[s : s + step].astype(np.float32)
        cdf = np.cumsum(p_c, axis=2)[:, :, :-1]  # [c, K, C-1, P]: class c is drawn where cdf[c-1] < u <= cdf[c]
        y = np.empty((len(p_c), len(omega_M), n_pix), np.int8)
        for k in range(n_k):
            m = order[bounds[k] : bounds[k + 1]]
            u = rng.random((len(p_c), len(m), 1, n_pix), dtype=np.float32)
            y[:, m] = (u > cdf[:, k, None]).sum(2)
        with np.errstate(divide="ignore"):
            logp = np.log(p_c)
        logp[~np.isfinite(logp)] = -1e30  # a class some sample gives probability 0; 0·log 0 = 0 below
        loglik = np.zeros((len(p_c), n_k, len(omega_M)), np.float32)
        for c in range(n_c):  # Σ_s log p(y_s | ω_k) = Σ_c log p_k[c] · [y = c]
            loglik += np.matmul(logp[:, :, c], (y == c).astype(np.float32).transpose(0, 2, 1))
        out[s : s + step] = np.maximum(loglik, -1e30)
    return out


def _logmeanexp(x: np.ndarray, axis: int) -> np.ndarray:
    top = x.max(axis, keepdims=True)
    return (np.log(np.exp(x - top).mean(axis, keepdims=True)) + top).squeeze(axis)


def gradient_embedding(probs_N_C, features_N_D) -> np.ndarray:
    """BADGE's embedding: the gradient of the cross-entropy at the predicted label with respect to the last
    layer's weights, ``(p - onehot(argmax p)) ⊗ h`` ``[N, C·D]`` (h = the penultimate features)."""
    p = np.asarray(probs_N_C, dtype=np.float64)
    h = _as_2d(features_N_D, "features")
    if p.ndim != 2 or len(p) != len(h):
        raise ValueError(f"probs {p.shape} and features {h.shape} must be [N, C] and [N, D] for the same N")
    g = p.copy()
    g[np.arange(len(p)), p.argmax(1)] -= 1.0
    return (g[:, :, None] * h[:, None, :]).reshape(len(p), -1)


def kmeans_pp(embedding_N_D, k: int, rng: np.random.Generator, block: int = BLOCK) -> np.ndarray:
    """k-means++ seeding as BADGE uses it: the first centre is the largest-norm embedding, each next one
    is drawn with probability ∝ squared distance to the nearest centre (never a chosen point twice)."""
    k = _check_k(k)
    rng = check_rng(rng)
    x = _as_2d(embedding_N_D, "embedding")
    if len(x) == 0:
        return np.zeros(0, np.int64)
    first = int(np.argmax(np.einsum("nd,nd->n", x, x)))
    picks = [first]
    dist = _min_sq_dist(x, x[first : first + 1], block)
    dist[first] = 0.0
    while len(picks) < min(k, len(x)):
        total = dist.sum()
        if total <= 0:  # every remaining point sits on a centre: fill with the lowest unused indices
            rest = np.setdiff1d(np.arange(len(x)), picks)[: min(k, len(x)) - len(picks)]
            picks.extend(int(i) for i in rest)
            break
        i = int(rng.choice(len(x), p=dist / total))
        picks.append(i)
        dist = np.minimum(dist, _min_sq_dist(x, x[i : i + 1], block))
        dist[picks] = 0.0
    return np.asarray(picks, dtype=np.int64)


STOCHASTIC_MODES = ("power", "softmax", "rank")


def stochastic_batch(scores_N, k: int, rng: np.random.Generator, mode: str = "power",
                     temperature: float = 1.0) -> np.ndarray:
    """Sample ``min(k, N)`` items without replacement, item n with weight

    * ``power``: ``s_n^(1/T)`` (scores must be non-negative),
    * ``softmax``: ``exp(s_n / T)``,
    * ``rank``: ``r_n^(-1/T)`` with r_n the rank (1 = highest score),

    via the Gumbel-top-k trick (equivalent to sequential sampling proportional to the weights). As T → 0
    each mode becomes top-k; T = 1 is Kirsch et al.'s default.
    """
    k = _check_k(k)
    rng = check_rng(rng)
    if mode not in STOCHASTIC_MODES:
        raise ValueError(f"unknown mode {mode!r}; valid: {', '.join(STOCHASTIC_MODES)}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    s = np.asarray(scores_N, dtype=np.float64)
    if s.ndim != 1 or np.isnan(s).any():
        raise ValueError("scores must be a one-dimensional array [N] without NaN")
    if mode == "power":
        if (s < 0).any():
            raise ValueError("power sampling needs non-negative scores; use mode='softmax' or 'rank'")
        with np.errstate(divide="ignore"):
            logits = np.log(s) / temperature
    elif mode == "softmax":
        logits = s / temperature
    else:
        ranks = np.empty(len(s))
        ranks[np.argsort(-s, kind="stable")] = np.arange(1, len(s) + 1)
        logits = -np.log(ranks) / temperature
    gumbel = -np.log(-np.log(rng.random(len(s))))
    return top_k(logits + gumbel, k)
