"""Seeded, leakage-free splits into initial / pool / validation / test."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from activeseg.data.dataset import ImageDataset


@dataclass(frozen=True)
class Split:
    """Dataset indices of each partition (disjoint)."""

    initial: np.ndarray
    pool: np.ndarray
    val: np.ndarray
    test: np.ndarray


def _source(item_id: str) -> str:
    return item_id.split("_", 1)[0]


def split_groups(
    dataset: ImageDataset,
    seed: int,
    test_frac: float = 0.2,
    val_frac: float = 0.1,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Assign whole groups to test and validation, stratified by source.

    Within each source (the item-id prefix before the first ``_``) ``round(test_frac·G)`` groups (at
    least one when the source has 3+ groups) go to test and ``round(val_frac·G)`` (at least one when it
    has 3+) to validation; the rest are available for training.

    Returns:
        (train-available, val, test) dataset indices, each sorted.
    """
    rng = np.random.default_rng(seed)
    sources = np.array([_source(i) for i in dataset.item_ids])
    test_groups: list[int] = []
    val_groups: list[int] = []
    for src in sorted(set(sources)):
        groups = np.unique(dataset.groups[sources == src])
        groups = groups[rng.permutation(len(groups))]
        n = len(groups)
        n_test = int(round(test_frac * n))
        n_val = int(round(val_frac * n))
        if n >= 3:
            n_test, n_val = max(n_test, 1), max(n_val, 1)
        test_groups += groups[:n_test].tolist()
        val_groups += groups[n_test : n_test + n_val].tolist()
    is_test = np.isin(dataset.groups, test_groups)
    is_val = np.isin(dataset.groups, val_groups)
    if not is_test.any() or not is_val.any():
        raise ValueError(
            f"cannot split {len(dataset)} items in {len(np.unique(dataset.groups))} groups into "
            "validation and test sets without splitting a group; add more images (3 or more)."
        )
    idx = np.arange(len(dataset))
    return idx[~is_test & ~is_val], idx[is_val], idx[is_test]


def _official_split(dataset: ImageDataset, split_seed: int, val_frac: float, val_size: int | None):
    """(available, val, test) when the dataset has a standard test set; validation drawn from the rest."""
    test = np.sort(np.asarray(dataset.official_test, dtype=np.int64))
    rest = np.setdiff1d(np.arange(len(dataset)), test)
    if dataset.official_val is not None:  # a fixed validation set (spatial splits)
        val = np.sort(np.asarray(dataset.official_val, dtype=np.int64))
        return np.setdiff1d(rest, val), val, test
    n_val = val_size if val_size is not None else int(round(val_frac * len(rest)))
    if not 0 < n_val < len(rest):
        raise ValueError(f"val_size={n_val} must be between 1 and {len(rest) - 1} (items outside the test set)")
    val = np.sort(np.random.default_rng(split_seed).choice(rest, n_val, replace=False))
    return np.setdiff1d(rest, val), val, test


def _initial(available: np.ndarray, targets: np.ndarray, n_initial: int, balanced: bool, rng) -> np.ndarray:
    """``n_initial`` items of ``available``: uniformly, or the same number per class (``balanced``)."""
    if not balanced:
        return np.sort(available[rng.choice(len(available), n_initial, replace=False)])
    if targets.ndim != 1:
        raise ValueError("a class-balanced initial set needs class labels; it applies to classification only")
    classes = np.unique(targets[available])
    if n_initial % len(classes):
        raise ValueError(
            f"initial={n_initial} cannot be split evenly over {len(classes)} classes; use a multiple of {len(classes)}"
        )
    per_class = n_initial // len(classes)
    picks = []
    for c in classes:
        members = available[targets[available] == c]
        if len(members) < per_class:
            raise ValueError(f"class {c} has only {len(members)} items, fewer than {per_class} per class")
        picks.append(rng.choice(members, per_class, replace=False))
    return np.sort(np.concatenate(picks))


def make_split(
    dataset: ImageDataset,
    n_initial: int,
    split_seed: int,
    run_seed: int,
    test_frac: float = 0.2,
    val_frac: float = 0.1,
    max_pool: int | None = None,
    val_size: int | None = None,
    balanced: bool = False,
    initial_source: str | None = None,
) -> Split:
    """Split once by ``split_seed`` (fixed across runs) and draw the initial set by ``run_seed``.

    A dataset with an ``official_test`` set (MNIST, the spatial splits of ``nuclei3``) is tested on exactly
    that set, and validated on its ``official_val`` set when it has one, else on ``val_size`` items (else
    ``val_frac`` of the rest) drawn by ``split_seed``; other datasets
    are split by whole groups (see ``split_groups``).

    Args:
        n_initial: labelled items at the start.
        max_pool: if set, keep a random subset of this many pool items (seeded by ``split_seed``) to
            bound the cost of each round.
        val_size: validation items for a dataset with an official test set (Gal et al.: 100).
        balanced: draw the initial set with the same number of items per class (Gal et al.: 2 per
            digit); classification only.
        initial_source: draw the initial set from the items of this source only (item-id prefix); the
            pool keeps every source.
    """
    if dataset.official_test is not None:
        available, val, test = _official_split(dataset, split_seed, val_frac, val_size)
    else:
        available, val, test = split_groups(dataset, split_seed, test_frac, val_frac)
    if max_pool is not None and max_pool + n_initial < len(available):
        keep = np.random.default_rng(split_seed + 1).choice(len(available), max_pool + n_initial, replace=False)
        available = np.sort(available[keep])
    if n_initial >= len(available):
        raise ValueError(
            f"n_initial={n_initial} leaves no pool: only {len(available)} items are available for training"
        )
    candidates = available
    if initial_source is not None:
        sources = np.array([_source(dataset.item_ids[i]) for i in available])
        candidates = available[sources == initial_source]
        if len(candidates) < n_initial:
            known = sorted({_source(i) for i in dataset.item_ids})
            raise ValueError(f"initial_source '{initial_source}' has {len(candidates)} training items, fewer than "
                             f"initial={n_initial}; sources: {', '.join(known)}")
    initial = _initial(candidates, dataset.targets, n_initial, balanced, np.random.default_rng(run_seed))
    pool = np.setdiff1d(available, initial)
    return Split(initial=initial, pool=pool, val=val, test=test)
