"""CEAL's pseudo-labels in a simulation (:mod:`activeseg.acquisition.ceal`).

At the end of round ``r`` the round's model labels the unlabelled candidates it did not send to the oracle
where it is confident (:meth:`activeseg.engine.Engine.pseudo_labels`); round ``r + 1`` trains on them beside
the true labels and then they are dropped: round ``r + 1`` makes its own. They are saved beside the ledger
as ``pseudo/round_<r+1>.npz`` (the dataset indices and their label maps, written before the round's ledger
line, so a resumed run trains on exactly what the uninterrupted one did) and never enter the pool: no
annotation, no cost. The round's ledger line says how many there are and how accurate they are against the
hidden truth (``pseudo``: ``threshold``, ``items``, ``pixels`` (items, for classification), ``accuracy``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

__all__ = ["load", "make", "save"]

DIR = "pseudo"


def _path(run_dir: str | Path, round_: int) -> Path:
    return Path(run_dir) / DIR / f"round_{round_:02d}.npz"


def save(run_dir: str | Path, round_: int, dataset_idx: np.ndarray, labels: np.ndarray) -> None:
    """Write the pseudo-labels round ``round_`` trains on (atomically: a temp file, then a rename)."""
    path = _path(run_dir, round_)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, dataset_idx=np.asarray(dataset_idx, dtype=np.int64), labels=labels)
    os.replace(tmp, path)


def load(run_dir: str | Path, round_: int) -> tuple[np.ndarray, np.ndarray] | None:
    """``(dataset_idx, labels)`` that round ``round_`` trains on, or None when it has none."""
    path = _path(run_dir, round_)
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as f:
        return f["dataset_idx"], f["labels"]


def make(engine, model, dataset, dataset_idx: np.ndarray, round_: int, seed: int, device: str,
         ignore_index: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """``(dataset_idx, labels, stats)``: the confident items among ``dataset_idx`` (segmentation: with at least
    one confident pixel, the others ``ignore_index``) at round ``round_``'s threshold, and the ledger's stats."""
    threshold = engine.strategy.pseudo_threshold(round_)
    dataset_idx = np.asarray(dataset_idx, dtype=np.int64)
    empty = (dataset_idx[:0], np.asarray(dataset.targets[:0]))
    stats = {"threshold": round(threshold, 6), "items": 0, "pixels": 0, "accuracy": None}
    if threshold <= 0 or not len(dataset_idx):
        return *empty, stats
    labels = np.stack(engine.pseudo_labels(model, dataset.images[dataset_idx], seed, threshold, device,
                                           ignore_index))
    confident = labels != ignore_index
    keep = confident.reshape(len(labels), -1).any(1)
    truth = np.asarray(dataset.targets[dataset_idx])
    judged = confident & (truth != ignore_index)
    stats.update(items=int(keep.sum()), pixels=int(confident.sum()),
                 accuracy=None if not judged.any() else round(float((labels[judged] == truth[judged]).mean()), 6))
    return dataset_idx[keep], labels[keep].astype(np.asarray(dataset.targets).dtype), stats
