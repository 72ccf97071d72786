"""The active-learning pool: which items (or which pixels of them) are labelled, since which round, and how
often they train."""

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
        regions: ``[n]`` regions labelled in the item (region queries; 0 for an item labelled whole).
        partial: pool index -> bool ``[*S]`` of the labelled pixels of an item labelled region by region
            and not yet complete (items labelled whole have no entry: every pixel is labelled).
    """

    def __init__(self, dataset_idx: np.ndarray) -> None:
        self.dataset_idx = np.asarray(dataset_idx, dtype=np.int64)
        n = len(self.dataset_idx)
        self.labeled_round = np.zeros(n, dtype=np.int64)
        self.train_count = np.zeros(n, dtype=np.int64)
        self.regions = np.zeros(n, dtype=np.int64)
        self.partial: dict[int, np.ndarray] = {}
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
        partial = [int(i) for i in pool_idx if int(i) in self.partial]
        if partial:
            raise ValueError(f"pool items {partial} are partly labelled by regions; label their regions instead")
        new = self.labeled_round[pool_idx] == 0
        self.labeled_round[pool_idx[new]] = round_
        self.train_count[pool_idx] += 1

    def label_region(self, pool_idx: int, box: tuple[slice, ...], round_: int, shape: tuple[int, ...]) -> int:
        """Label the pixels ``box`` of item ``pool_idx`` (of spatial ``shape``); returns the pixels newly
        labelled. The item trains from ``round_`` on, once, with its unlabelled pixels ignored."""
        pool_idx = int(pool_idx)
        if round_ < 1:
            raise ValueError(f"round_={round_}; labelled items need a round >= 1 (0 means unlabelled)")
        if not 0 <= pool_idx < len(self):
            raise IndexError(f"pool index {pool_idx} is outside 0..{len(self) - 1}")
        if self.labeled_round[pool_idx] > 0 and pool_idx not in self.partial:
            raise ValueError(f"pool item {pool_idx} is labelled whole already; a region of it adds nothing")
        mask = self.partial.get(pool_idx, np.zeros(shape, dtype=bool))
        new = int((~mask[box]).sum())
        if new == 0:
            raise ValueError(f"region {box} of pool item {pool_idx} is labelled already")
        mask[box] = True
        self.partial[pool_idx] = mask
        if self.labeled_round[pool_idx] == 0:
            self.labeled_round[pool_idx] = round_
            self.train_count[pool_idx] = 1
        self.regions[pool_idx] += 1
        if mask.all():  # complete: an item like any other now
            del self.partial[pool_idx]
        return new

    def labelled_mask(self, pool_idx: int, shape: tuple[int, ...]) -> np.ndarray:
        """Bool ``shape``: the labelled pixels of the item (all, none, or those of its regions)."""
        pool_idx = int(pool_idx)
        if pool_idx in self.partial:
            return self.partial[pool_idx].copy()
        return np.full(shape, self.labeled_round[pool_idx] > 0)

    def region_candidates(self) -> np.ndarray:
        """Pool indices with pixels left to label: unlabelled items and partly labelled ones."""
        return np.union1d(self.unlabeled, np.fromiter(self.partial, dtype=np.int64, count=len(self.partial)))

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
        """Queries an annotator answered: distinct items labelled whole, plus regions."""
        return int(((self.labeled_round > 0) & (self.regions == 0)).sum() + self.regions.sum())

    def labelled_pixels(self, shape: tuple[int, ...]) -> int:
        """Pixels labelled so far, each once, for items of spatial ``shape``."""
        whole = int((self.labeled_round > 0).sum()) - len(self.partial)
        return whole * int(np.prod(shape)) + int(sum(int(m.sum()) for m in self.partial.values()))

    @property
    def train_size(self) -> int:
        """Training-set size counting NoDelete duplicates."""
        return int(self.train_count.sum())

    def training_dataset_idx(self) -> np.ndarray:
        """Dataset indices of the training set, each repeated ``train_count`` times."""
        return np.repeat(self.dataset_idx, self.train_count)

    def training_targets(self, targets_N_S: np.ndarray, ignore_index: int) -> np.ndarray:
        """The targets of ``training_dataset_idx()`` (``targets_N_S``: the dataset's, in its order) with
        the pixels no region has labelled set to ``ignore_index``, so the loss leaves them out."""
        train_pool_idx = np.repeat(np.arange(len(self)), self.train_count)
        out = np.array(targets_N_S[self.dataset_idx[train_pool_idx]])
        for j, p in enumerate(train_pool_idx):
            if int(p) in self.partial:
                out[j][~self.partial[int(p)]] = ignore_index
        return out
