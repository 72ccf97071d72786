"""Seeded, leakage-free splits into initial / pool / validation / test."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from activeseg.data.dataset import SegDataset


@dataclass(frozen=True)
class Split:
    """Dataset indices of each partition (disjoint)."""

    initial: np.ndarray
    pool: np.ndarray
    val: np.ndarray
    test: np.ndarray

    def to_json(self, dataset: SegDataset, path: str | Path, seed: int) -> None:
        parts = {name: getattr(self, name) for name in ("initial", "pool", "val", "test")}
        doc = {
            "seed": seed,
            **{f"{k}_dataset_idx": v.tolist() for k, v in parts.items()},
            **{f"{k}_ids": [dataset.item_ids[i] for i in v] for k, v in parts.items()},
        }
        Path(path).write_text(json.dumps(doc, indent=1))


def _source(item_id: str) -> str:
    return item_id.split("_", 1)[0]


def split_groups(
    dataset: SegDataset,
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


def make_split(
    dataset: SegDataset,
    n_initial: int,
    split_seed: int,
    run_seed: int,
    test_frac: float = 0.2,
    val_frac: float = 0.1,
    max_pool: int | None = None,
) -> Split:
    """Split once by ``split_seed`` (fixed across runs) and draw the initial set by ``run_seed``.

    Args:
        n_initial: labelled items at the start.
        max_pool: if set, keep a random subset of this many pool items (seeded by ``split_seed``) to
            bound the cost of each round.
    """
    available, val, test = split_groups(dataset, split_seed, test_frac, val_frac)
    if max_pool is not None and max_pool + n_initial < len(available):
        keep = np.random.default_rng(split_seed + 1).choice(len(available), max_pool + n_initial, replace=False)
        available = np.sort(available[keep])
    if n_initial >= len(available):
        raise ValueError(
            f"n_initial={n_initial} leaves no pool: only {len(available)} items are available for training"
        )
    rng = np.random.default_rng(run_seed)
    pick = rng.choice(len(available), n_initial, replace=False)
    initial = np.sort(available[pick])
    pool = np.setdiff1d(available, initial)
    return Split(initial=initial, pool=pool, val=val, test=test)
