"""Volumes in: NIfTI and TIFF round trips with spacing, folder pairing and its refusals, resampling."""

import numpy as np
import pytest

from activeseg.data.folder import DatasetError
from activeseg.data.volumes import Volume, read_volume, read_volume_folder, resample, write_volume


def _nifti(path, arr_dhw, spacing_dhw, dtype=np.float32):
    import nibabel as nib

    affine = np.diag([*spacing_dhw[::-1], 1.0])
    affine[:3, 3] = [-10.0, 5.0, 2.5]
    nib.save(nib.Nifti1Image(np.swapaxes(np.asarray(arr_dhw, dtype), 0, 2), affine), str(path))
    return affine


def test_nifti_round_trip_keeps_the_array_the_spacing_and_the_grid(tmp_path):
    arr = np.random.default_rng(0).random((5, 6, 7)).astype(np.float32)
    affine = _nifti(tmp_path / "a.nii.gz", arr, (2.0, 1.0, 0.5))
    vol = read_volume(tmp_path / "a.nii.gz")
    assert vol.data.shape == (1, 5, 6, 7) and vol.data.dtype == np.float32
    np.testing.assert_array_equal(vol.data[0], arr)  # (i, j, k) on disk, (D, H, W) here
    assert vol.spacing == (2.0, 1.0, 0.5) and np.allclose(vol.affine, affine)
    write_volume(tmp_path / "u.nii.gz", arr * 2, vol)  # e.g. an uncertainty volume on the same grid
    back = read_volume(tmp_path / "u.nii.gz")
    np.testing.assert_allclose(back.data[0], arr * 2) and np.testing.assert_allclose(back.affine, affine)
    assert not list(tmp_path.glob(".tmp-*"))
    with pytest.raises(ValueError, match="does not match the grid"):
        write_volume(tmp_path / "bad.nii.gz", arr[:4], vol)


def test_tiff_stack_reads_its_imagej_spacing(tmp_path):
    import tifffile

    arr = (np.random.default_rng(1).random((4, 8, 9)) * 1000).astype(np.uint16)
    tifffile.imwrite(tmp_path / "s.tif", arr, imagej=True, resolution=(1 / 0.25, 1 / 0.5), metadata={"spacing": 2.0})
    vol = read_volume(tmp_path / "s.tif")
    np.testing.assert_array_equal(vol.data[0], arr)
    assert vol.spacing == pytest.approx((2.0, 0.5, 0.25)) and vol.affine is None
    plain = tmp_path / "p.tif"
    tifffile.imwrite(plain, arr, photometric="minisblack")
    assert read_volume(plain).spacing == (1.0, 1.0, 1.0)


def test_a_folder_of_volumes_pairs_labels_and_says_everything_that_is_wrong(tmp_path):
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir()
    labels.mkdir()
    rng = np.random.default_rng(2)
    for name in ("a", "b", "c"):
        _nifti(images / f"{name}.nii.gz", rng.random((4, 6, 6)), (1.0, 1.0, 1.0))
    _nifti(labels / "a.nii.gz", rng.integers(0, 3, (4, 6, 6)), (1.0, 1.0, 1.0), np.uint8)
    names, vols, labs, classes = read_volume_folder(images, labels)
    assert names == ["a", "b", "c"] and classes == 3 and labs[1] is None and labs[0].data.dtype == np.uint8
    # now break it in four ways: every problem is reported at once, naming the files
    _nifti(labels / "b.nii.gz", np.zeros((4, 6, 5)), (1.0, 1.0, 1.0), np.uint8)
    _nifti(labels / "c.nii.gz", np.full((4, 6, 6), 7), (1.0, 1.0, 1.0), np.uint8)
    _nifti(labels / "zzz.nii.gz", np.zeros((4, 6, 6)), (1.0, 1.0, 1.0), np.uint8)
    (images / "d.nii.gz").write_bytes(b"not a volume")
    with pytest.raises(DatasetError) as err:
        read_volume_folder(images, labels, classes=3)
    text = str(err.value)
    assert "cannot read volume 'd.nii.gz'" in text
    assert "'b.nii.gz' is (4, 6, 5) but volume 'b.nii.gz' is (4, 6, 6)" in text
    assert "label values [7]" in text and "'zzz.nii.gz' has no volume" in text
    with pytest.raises(DatasetError, match="does not exist"):
        read_volume_folder(tmp_path / "nope", None)


def test_labels_on_another_grid_are_refused(tmp_path):
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir()
    labels.mkdir()
    _nifti(images / "a.nii", np.zeros((4, 6, 6)), (1.0, 1.0, 1.0))
    _nifti(labels / "a.nii", np.zeros((4, 6, 6)), (2.0, 1.0, 1.0), np.uint8)
    with pytest.raises(DatasetError, match="another grid"):
        read_volume_folder(images, labels)


def test_resampling_to_a_target_spacing():
    data = np.arange(4 * 4 * 4, dtype=np.float32).reshape(1, 4, 4, 4)
    vol = Volume(data, (2.0, 1.0, 1.0), np.diag([1.0, 1.0, 2.0, 1.0]))
    fine = resample(vol, (1.0, 1.0, 1.0))
    assert fine.data.shape == (1, 8, 4, 4) and fine.spacing == (1.0, 1.0, 1.0)
    assert np.allclose(np.diag(fine.affine)[:3], [1.0, 1.0, 1.0])
    labels = Volume(np.array([[[0, 1], [2, 1]]] * 2, np.uint8), (1.0, 1.0, 1.0))
    up = resample(labels, (0.5, 0.5, 0.5), labels=True)
    assert up.data.shape == (4, 4, 4) and set(np.unique(up.data)) == {0, 1, 2}  # nearest: no new labels


def test_a_labelled_folder_of_volumes_is_tiled_and_simulated(tmp_path):
    from activeseg.config import SimConfig
    from activeseg.data import load_dataset
    from activeseg.loop import run_simulation

    root = tmp_path / "lab"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    zz, yy, xx = np.mgrid[:16, :16, :16]
    for i in range(4):
        ball = ((zz - 8) ** 2 + (yy - 4 - 2 * i) ** 2 + (xx - 8) ** 2) < 16
        _nifti(root / "images" / f"sub_{i}.nii.gz", ball * 100 + rng.normal(0, 10, ball.shape), (1.0, 1.0, 1.0))
        _nifti(root / "masks" / f"sub_{i}.nii.gz", ball, (1.0, 1.0, 1.0), np.uint8)
    ds = load_dataset(str(root), patch_size=8)
    assert ds.images.shape == (32, 1, 8, 8, 8) and ds.spatial_dims == 3 and ds.num_classes == 2
    assert ds.item_ids[0] == "sub_0_z0_r0_c0" and len(set(ds.groups.tolist())) == 4
    cfg = SimConfig(dataset=str(root), patch_size=8, depth=1, base_filters=4, steps=4, batch_size=2, initial=4,
                    query=2, rounds=2, mc_samples=2, heatmaps=0, device="cpu", strategy="max_entropy",
                    reference=False)
    records = run_simulation(cfg, ds, tmp_path / "run", progress=False)
    assert [r["n_annotations"] for r in records] == [4, 6]
    (root / "masks" / "sub_3.nii.gz").unlink()
    with pytest.raises(DatasetError, match="sub_3 have no label volume"):
        load_dataset(str(root), patch_size=8)


def test_suggest_ranks_unlabelled_volumes_and_writes_their_maps_beside_the_predictions(tmp_path):
    import csv

    from activeseg.config import SimConfig
    from activeseg.suggest import suggest

    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    rng = np.random.default_rng(0)
    zz, yy, xx = np.mgrid[:12, :16, :16]
    for i in range(5):
        ball = ((zz - 6) ** 2 + (yy - 5 - i) ** 2 + (xx - 8) ** 2) < 12
        _nifti(images / f"sub_{i}.nii.gz", ball * 100 + rng.normal(0, 10, ball.shape), (1.5, 1.0, 1.0))
        if i < 3:
            _nifti(masks / f"sub_{i}.nii.gz", ball, (1.5, 1.0, 1.0), np.uint8)
    cfg = SimConfig(patch_size=8, depth=1, base_filters=4, steps=4, batch_size=2, mc_samples=2, device="cpu",
                    strategy="bald")
    rows = suggest(images, masks, tmp_path / "out", k=1, cfg=cfg, quiet=True)
    assert [r["file"] for r in rows] != [] and {r["file"] for r in rows} == {"sub_3", "sub_4"}
    assert [r["rank"] for r in rows] == [1, 2] and rows[0]["score"] >= rows[1]["score"]
    with open(tmp_path / "out" / "suggestions.csv") as fh:
        assert [r["file"] for r in csv.DictReader(fh)] == [r["file"] for r in rows]
    for name in ("sub_3", "sub_4"):
        pred = read_volume(tmp_path / "out" / "volumes" / f"{name}_prediction.nii.gz", labels=True)
        unc = read_volume(tmp_path / "out" / "volumes" / f"{name}_uncertainty.nii.gz")
        assert pred.data.shape == unc.data.shape[1:] == (12, 16, 16) and pred.spacing == (1.5, 1.0, 1.0)
    assert len(list((tmp_path / "out" / "heatmaps").glob("001_*.png"))) == 3  # the top volume's three planes
    assert (tmp_path / "out" / "model.pt").is_file()
    with pytest.raises(ValueError, match="on volumes pick a map strategy"):
        suggest(images, masks, tmp_path / "out2", k=1, cfg=cfg.replace(strategy="coreset"), quiet=True)
    # region queries: cubes of the unlabelled voxels, a partly labelled volume included
    part = read_volume(masks / "sub_2.nii.gz", labels=True).data.copy()
    part[:, 8:] = 255  # the half y >= 8 is left to label
    _nifti(masks / "sub_2.nii.gz", part, (1.5, 1.0, 1.0), np.uint8)
    cubes = suggest(images, masks, tmp_path / "out3", k=4, cfg=cfg.replace(strategy="cereals", region_size=4),
                    quiet=True)
    assert len(cubes) == 4 and [r["rank"] for r in cubes] == [1, 2, 3, 4]
    assert {r["file"] for r in cubes} <= {"sub_2", "sub_3", "sub_4"} and all(r["d"] == r["h"] == r["w"] == 4
                                                                               for r in cubes)
    assert all(r["y"] >= 8 for r in cubes if r["file"] == "sub_2")  # never a labelled voxel
    boxes = {(r["file"], r["z"], r["y"], r["x"]) for r in cubes}
    assert len(boxes) == 4 and all("predicted_cost" in r for r in cubes)
    with open(tmp_path / "out3" / "regions.csv") as fh:
        assert [(r["file"], int(r["z"]), int(r["y"]), int(r["x"])) for r in csv.DictReader(fh)] == [
            (r["file"], r["z"], r["y"], r["x"]) for r in cubes]
    assert len(list((tmp_path / "out3" / "heatmaps").glob("001_*_z*_y*_x*_axial.png"))) == 1


def test_files_come_out_of_a_debian_package_without_dpkg_and_a_missing_apt_says_what_to_do(tmp_path, monkeypatch):
    import io
    import tarfile

    from activeseg.data import fetch

    payload = b"a volume's bytes"
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w:xz") as tf:
        info = tarfile.TarInfo("./usr/share/demo/vol.nii.gz")
        info.size = len(payload)
        tf.addfile(info, io.BytesIO(payload))
    members = [(b"debian-binary", b"2.0\n"), (b"control.tar.xz", b"x"), (b"data.tar.xz", data.getvalue())]
    deb = tmp_path / "demo-data_1.0_all.deb"
    with open(deb, "wb") as fh:  # the ar format of a .deb: a global header, then 60-byte member headers
        fh.write(b"!<arch>\n")
        for name, body in members:
            fh.write(name.ljust(16) + b"0".ljust(12) + b"0".ljust(6) + b"0".ljust(6) + b"100644".ljust(8)
                     + str(len(body)).encode().ljust(10) + b"`\n" + body + (b"\n" if len(body) % 2 else b""))
    dest = tmp_path / "out.nii.gz"
    assert fetch._extract(deb, "usr/share/demo/vol.nii.gz", dest) and dest.read_bytes() == payload
    assert not fetch._extract(deb, "usr/share/demo/other", tmp_path / "x")
    spec = fetch.RegistryFile("demo-data=1.0", "usr/share/demo/vol.nii.gz", fetch.sha256_of(dest), client="apt")
    monkeypatch.setattr(fetch.shutil, "which", lambda tool: None)
    with pytest.raises(RuntimeError, match="apt-get is needed to fetch the Debian package demo-data=1.0"):
        fetch._apt_download(spec, tmp_path)
    assert spec.dist == "demo-data"
