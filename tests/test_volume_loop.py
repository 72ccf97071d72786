"""3-D end to end on the real hippocampus patches: the dataset, a 3-D U-Net, two rounds of the loop."""

import numpy as np
import pytest

from activeseg.config import SimConfig
from activeseg.loop import run_simulation


@pytest.fixture(scope="module")
def hippocampus():
    from activeseg.data import load_dataset

    return load_dataset("hippocampus", patch_size=16, quiet=True)


def test_the_hippocampus_patches_split_by_hemisphere(hippocampus):
    ds = hippocampus
    assert ds.images.shape[1:] == (1, 16, 16, 16) and ds.spatial_dims == 3 and ds.num_classes == 4
    assert ds.class_names == ("background", "hippocampus", "amygdala", "parahippocampal")
    held = np.concatenate([ds.official_val, ds.official_test])
    pool = np.setdiff1d(np.arange(len(ds)), held)
    w_pool, w_held = ds.boxes[pool, 5].max(), ds.boxes[held, 2].min()
    assert w_held - w_pool >= 8  # a guard band between the hemispheres
    for idx in (pool, ds.official_val, ds.official_test):  # every part holds some hippocampus
        assert (ds.targets[idx] == 1).any()
    assert 0.0 <= ds.images.min() and ds.images.max() <= 1.0
    from activeseg.data.brain import BRAIN_FILES, _labels
    from activeseg.data.fetch import fetch_files
    from activeseg.data.volumes import read_volume

    aal = _labels(read_volume(fetch_files(BRAIN_FILES, "brain", quiet=True)["aal"], labels=True).data)
    fg = (ds.targets > 0).sum((1, 2, 3))
    for i in (pool[fg[pool].argmax()], held[fg[held].argmax()]):  # the held-out tiles are mirrored left-right
        d0, h0, w0, d1, h1, w1 = ds.boxes[i]
        tile = aal[d0:d1, h0:h1, w0:w1]
        assert not np.array_equal(tile, tile[..., ::-1])
        np.testing.assert_array_equal(ds.targets[i], tile[..., ::-1] if i in held else tile)


def test_two_rounds_in_3d_write_a_ledger_and_volume_heatmaps(hippocampus, tmp_path):
    cfg = SimConfig(dataset="hippocampus", patch_size=16, depth=2, base_filters=4, steps=6, batch_size=2, initial=4,
                    query=2, rounds=2, mc_samples=2, heatmaps=1, device="cpu", strategy="bald", reference=False,
                    max_pool=30)
    records = run_simulation(cfg, hippocampus, tmp_path, progress=False)
    assert [r["n_annotations"] for r in records] == [4, 6]
    assert {"dice_hippocampus", "dice_amygdala", "miou"} <= set(records[0]["test"])
    picked = records[0]["selected"]
    assert len(picked) == 2 and all(s["item_id"].startswith("colin27_") for s in picked)
    assert records[1]["cost"] == records[0]["cost"] + sum(s["cost"] for s in picked)  # outlined slice by slice
    planes = sorted(p.name.rsplit("_", 1)[1] for p in (tmp_path / "heatmaps").rglob("*.png"))
    assert planes == ["axial.png", "coronal.png", "sagittal.png"]


def test_region_queries_pick_cubes_inside_the_patches_with_3d_partial_labels(hippocampus, tmp_path):
    from activeseg.acquisition.regions import Region, click_cost
    from activeseg.data import Pool

    cfg = SimConfig(dataset="hippocampus", patch_size=16, depth=2, base_filters=4, steps=6, batch_size=2, initial=4,
                    query=3, rounds=3, mc_samples=2, heatmaps=0, device="cpu", strategy="cereals", reference=False,
                    max_pool=30, region_size=8)
    records = run_simulation(cfg, hippocampus, tmp_path, progress=False)
    assert [r["n_regions"] for r in records] == [0, 3, 6]
    pool = Pool(np.arange(len(hippocampus)))  # replay the ledger's boxes: the voxels they label and their clicks
    for r, record in enumerate(records[:-1], start=1):
        assert len(record["selected"]) == 3
        for s in record["selected"]:
            region = Region.from_box(0, s["box"])
            assert len(s["box"]) == 6 and region.sides == (8, 8, 8) and region.box() == s["box"]
            before = pool.labelled_mask(s["dataset_idx"], (16, 16, 16))
            truth = np.where(before, 255, hippocampus.targets[s["dataset_idx"]])
            assert s["cost"] == click_cost(truth, region)  # outlined slice by slice inside the cube
            assert s["pixels"] == pool.label_region(s["dataset_idx"], region.slices(), r, (16, 16, 16)) > 0
        assert records[r]["labelled_pixels"] - records[r - 1]["labelled_pixels"] == sum(
            s["pixels"] for s in record["selected"])
    assert records[1]["train_size"] > records[0]["train_size"]  # the partly labelled patches train, masked


def test_cells3d_cubes_split_in_the_plane_with_guard_bands():
    from activeseg.data import load_dataset

    ds = load_dataset("cells3d", patch_size=16, quiet=True)
    assert ds.images.shape[1:] == (1, 16, 16, 16) and ds.class_names == ("background", "nucleus")
    parts = {"val": ds.official_val, "test": ds.official_test}
    parts["pool"] = np.setdiff1d(np.arange(len(ds)), np.concatenate(list(parts.values())))
    assert all(len(v) for v in parts.values())
    # the parts' (y, x) footprints are 32 px apart or more, in every slice
    for a in parts:
        for b in parts:
            if a < b:
                ba, bb = ds.boxes[parts[a]], ds.boxes[parts[b]]
                gap_y = np.maximum(bb[:, None, 1] - ba[None, :, 4], ba[None, :, 1] - bb[:, None, 4])
                gap_x = np.maximum(bb[:, None, 2] - ba[None, :, 5], ba[None, :, 2] - bb[:, None, 5])
                assert np.maximum(gap_y, gap_x).min() >= 32
    assert not (ds.targets[parts["pool"]] == 255).any()  # only held-out parts ignore their crossing nuclei
    assert (ds.targets[parts["test"]] == 1).any() and (ds.targets[parts["val"]] == 1).any()
