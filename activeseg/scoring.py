"""Score a pool with any model: the acquisition core shared by simulation and the human loop."""

from __future__ import annotations

import ctypes
import functools

import numpy as np
import torch
from torch import nn

from activeseg.acquisition import get_strategy
from activeseg.uncertainty import MCDropout, get_estimator


def pick_device(device: str | None = "auto") -> str:
    """``auto`` (or None) → ``cuda`` when available, else ``cpu``; anything else is passed through."""
    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def _resolve(strategy):
    return get_strategy(strategy) if isinstance(strategy, str) else strategy


def score_pool(
    model: nn.Module,
    images_N_C_H_W,
    strategy="bald",
    k: int = 20,
    batch_size: int = 16,
    device: str | None = "auto",
    seed: int = 0,
    estimator=None,
    progress=None,
) -> np.ndarray:
    """One uncertainty score per image, higher = more worth labelling.

    Streams over the images: for each batch it runs the estimator (MC dropout with ``k`` passes unless
    ``estimator`` is given), reduces ``probs_B_K_C_*`` to per-image scores and keeps only those.

    Args:
        model: any ``nn.Module`` with dropout returning logits ``[N, C, H, W]`` or ``[N, C]``.
        images_N_C_H_W: numpy array or tensor of inputs.
        strategy: a registered strategy name (e.g. ``"bald"``, ``"std_edt"``) or a strategy object.
        k: MC-dropout passes.
        batch_size: images per forward pass.
        device: ``"auto"`` picks CUDA when present.
        seed: seed of the dropout masks.
        estimator: an object with ``batches(model, images, device)`` (see ``activeseg.uncertainty``).
        progress: optional callable(n_images_done).

    Returns:
        ``scores_N`` float64.
    """
    strategy = _resolve(strategy)
    estimator = estimator or MCDropout(k=k, batch_size=batch_size, seed=seed)
    return score_and_summarize(model, images_N_C_H_W, strategy, estimator, device, progress=progress)[0]


@functools.cache
def _malloc_trim():
    try:
        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # not glibc: nothing to do
        return None


def release_free_memory() -> None:
    """Give the C heap's free pages back to the system (glibc ``malloc_trim``; a no-op elsewhere).

    Scoring allocates tens of MB per batch for the K passes; glibc raises its mmap threshold after such
    blocks are freed and then serves them from the heap, which fragments and grows batch after batch
    when the inputs arrive from a loader's worker processes (about 0.75 MB per 128×128 image at K = 20
    without this). Trimming after each batch keeps the peak memory flat in the pool size.
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def score_and_summarize(model: nn.Module, images_N_C_H_W, strategy, estimator, device: str | None = "auto",
                        summarize: bool = False, progress=None, measures: tuple[str, ...] = ()):
    """Scores ``[N]``, with ``summarize`` ``strategy.summarize`` of each batch's probabilities (BatchBALD's
    ``[N, K, C]``, else None) and the per-item mean of each heuristic map in ``measures`` (a dict), from
    one streaming pass; the full ``probs_N_K_C_H_W`` is never held. Strategies that need no scores skip
    the passes unless summaries or measures are asked for."""
    from activeseg.acquisition.heuristics import fused_maps

    n = len(images_N_C_H_W)
    if (not strategy.needs_model or not strategy.needs_scores) and not summarize and not measures:
        return np.zeros(n), None, {}
    device = pick_device(device)
    model.to(device)
    scores, summaries = [], []
    means: dict[str, list[np.ndarray]] = {name: [] for name in measures}
    done = 0
    wants_scores = strategy.needs_model and strategy.needs_scores
    for probs in estimator.batches(model, images_N_C_H_W, device):
        scores.append(np.asarray(strategy.score(probs), dtype=np.float64) if wants_scores else np.zeros(len(probs)))
        if summarize:
            summaries.append(strategy.summarize(probs))
        for name, m in fused_maps(probs, measures).items() if measures else ():
            means[name].append(m.reshape(len(m), -1).double().mean(1).numpy())
        done += len(probs)
        del probs
        release_free_memory()
        if progress is not None:
            progress(done)
    return ((np.concatenate(scores) if scores else np.zeros(0)),
            (np.concatenate(summaries) if summaries else None),
            {name: np.concatenate(v) if v else np.zeros(0) for name, v in means.items()})


def uncertainty_maps(
    model: nn.Module, images_N_C_H_W, strategy, estimator, device: str = "cpu"
) -> tuple[np.ndarray, np.ndarray]:
    """Mean class probabilities ``[N, C, H, W]`` and the strategy's uncertainty map ``[N, H, W]``.

    Used for heatmaps of a few items, so it keeps everything in memory. Strategies without a map
    (random) fall back to BALD so the annotator still sees where the model is unsure.
    """
    strategy = _resolve(strategy)
    if not strategy.needs_model:
        strategy = get_strategy("bald")
    if isinstance(estimator, str):
        estimator = get_estimator(estimator)
    means, maps = [], []
    for probs in estimator.batches(model, images_N_C_H_W, device):
        means.append(probs.mean(1).numpy())
        maps.append(np.asarray(strategy.map(probs)))
    return np.concatenate(means), np.concatenate(maps)


def sliding_maps(model: nn.Module, volume_C_S, strategy, estimator, window, stride, device: str = "cpu",
                 batch: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Mean class probabilities ``[C, *S]`` and the strategy's map ``[*S]`` of one image or volume larger
    than the network's window: each window's K samples are reduced to its mean and map where they are made,
    then blended with Gaussian weights (:func:`activeseg.sliding.sliding_window`), so memory holds ``batch``
    windows' samples, never the whole volume's."""
    from activeseg.sliding import sliding_window

    strategy = _resolve(strategy)
    if not strategy.needs_model:
        strategy = get_strategy("bald")

    def predict(windows):
        means, maps = [], []
        for probs in estimator.batches(model, windows, device):
            means.append(probs.mean(1).double().numpy())
            maps.append(np.asarray(strategy.map(probs), dtype=np.float64))
        return np.concatenate(means), np.concatenate(maps)

    mean, umap = sliding_window(np.asarray(volume_C_S, dtype=np.float32), window, stride, predict, batch)
    return mean, umap


UNCERTAINTY_BINS = 20


def entropy_histogram(model: nn.Module, images_N_C_H_W, estimator, device: str = "cpu",
                      bins: int = UNCERTAINTY_BINS) -> list[int]:
    """Counts of the per-pixel (per-item for classification) predictive entropy, divided by log C so it
    lies in [0, 1], in ``bins`` equal bins: the distribution of uncertainty over a set of images
    (Nath et al. 2020, Fig. 12, plot it for the training pool round by round)."""
    from activeseg.acquisition.heuristics import max_entropy

    counts = np.zeros(bins, dtype=np.int64)
    for probs in estimator.batches(model, images_N_C_H_W, device):
        h = max_entropy(probs).double().numpy() / np.log(probs.shape[2])
        counts += np.histogram(np.clip(h, 0.0, 1.0), bins=bins, range=(0.0, 1.0))[0]
    return counts.tolist()
