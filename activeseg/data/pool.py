"""The active-learning pool: which items are labelled, since which round, and how often they train."""

from __future__ import annotations

import numpy as np


class Pool:
    """Labelling state of the items available for training.

    ``pool_idx`` (0..n-1) indexes this pool; ``dataset_idx[pool_idx]`` maps back to the dataset.

    Attributes:
        dataset_idx: ``[n]`` dataset index of each pool item.
        labeled_round: ``[n]`` the round from which the item is in the training set (0 = unlabelled;
            the initial set has 1; items picked at the end of round r have r + 1).
        train_count: ``[n]`` how many times the item sits in the training set (> 1 only with
            NoDelete, when an already labelled item is picked again).
    """

    def __init__(self, dataset_idx: np.ndarray) -> None:
        self.dataset_idx = np.asarray(dataset_idx, dtype=np.int64)
        n = len(self.dataset_idx)
        self.labeled_round = np.zeros(n, dtype=np.int64)
        self.train_count = np.zeros(n, dtype=np.int64)
        self._pool_of = {int(d): i for i, d in enumerate(self.dataset_idx)}

    def __len__(self) -> int:
        return len(self.dataset_idx)

    def pool_idx_of(self, dataset_idx) -> np.ndarray:
        """Pool indices of the given dataset indices (KeyError names an unknown one)."""
        try:
            return np.array([self._pool_of[int(d)] for d in np.atleast_1d(dataset_idx)], dtype=np.int64)
        except KeyError as err:
            raise KeyError(f"dataset index {err.args[0]} is not in the pool") from None

    def label(self, pool_idx, round_: int) -> None:
        """Add items to the training set; an item already labelled is duplicated (NoDelete)."""
        pool_idx = np.atleast_1d(np.asarray(pool_idx, dtype=np.int64))
        if round_ < 1:
            raise ValueError(f"round_={round_}; labelled items need a round >= 1 (0 means unlabelled)")
        bad = pool_idx[(pool_idx < 0) | (pool_idx >= len(self))]
        if len(bad):
            raise IndexError(
                f"pool indices {bad.tolist()} are outside 0..{len(self) - 1}; "
                "map dataset indices with pool_idx_of() first"
            )
        if len(np.unique(pool_idx)) != len(pool_idx):
            raise ValueError(f"duplicate pool indices in one labelling call: {pool_idx.tolist()}")
        new = self.labeled_round[pool_idx] == 0
        self.labeled_round[pool_idx[new]] = round_
        self.train_count[pool_idx] += 1

    @property
    def labeled(self) -> np.ndarray:
        return np.flatnonzero(self.labeled_round > 0)

    @property
    def unlabeled(self) -> np.ndarray:
        return np.flatnonzero(self.labeled_round == 0)

    def candidates(self, no_delete: bool = False) -> np.ndarray:
        """Pool indices a strategy may pick from: unlabelled ones, or all with NoDelete."""
        return np.arange(len(self)) if no_delete else self.unlabeled

    @property
    def n_annotations(self) -> int:
        """Distinct items an annotator had to label."""
        return int((self.labeled_round > 0).sum())

    @property
    def train_size(self) -> int:
        """Training-set size counting NoDelete duplicates."""
        return int(self.train_count.sum())

    def training_dataset_idx(self) -> np.ndarray:
        """Dataset indices of the training set, each repeated ``train_count`` times."""
        return np.repeat(self.dataset_idx, self.train_count)
