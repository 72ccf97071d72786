"""A lab's folder of images + masks (activeseg/data/folder.py), written as real files in tmp_path."""

import re

import numpy as np
import pytest
import tifffile
from PIL import Image

from activeseg.data import DatasetError, load_dataset, load_folder, read_folder
from activeseg.data.dataset import normalize_percentile


def write(path, array):
    """Write ``array`` as PNG (PIL) or TIFF (tifffile) depending on the suffix; return the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix in (".tif", ".tiff"):
        planar = array.ndim == 3 and array.shape[0] == 3  # channel-first RGB
        kwargs = {"photometric": "rgb", "planarconfig": "separate"} if planar else {}
        tifffile.imwrite(path, array, **kwargs)
    else:
        Image.fromarray(array).save(path)
    return path


def ramp(h, w, dtype, channels=None, seed=0):
    """An image with a wide, known range of values (so the normalisation is not degenerate)."""
    rng = np.random.default_rng(seed)
    top = np.iinfo(dtype).max
    shape = (h, w) if channels is None else (h, w, channels)
    return rng.integers(0, top, shape, endpoint=True).astype(dtype)


def binary_mask(h, w, seed=0):
    rng = np.random.default_rng(seed)
    m = np.zeros((h, w), np.uint8)
    m[h // 4 : h // 2, w // 4 : 3 * w // 4] = 1
    m[rng.random((h, w)) < 0.05] = 1
    return m


# (case, image file name, the array written, channels expected after reading)
FORMATS = [
    ("png 8-bit gray", "a.png", ramp(24, 40, np.uint8), 1),
    ("png 16-bit gray", "a.png", ramp(24, 40, np.uint16), 1),
    ("png 8-bit RGB", "a.png", ramp(24, 40, np.uint8, 3), 3),
    ("png 8-bit RGBA (alpha dropped)", "a.png", ramp(24, 40, np.uint8, 4), 3),
    ("tif 8-bit gray", "a.tif", ramp(24, 40, np.uint8), 1),
    ("tif 16-bit gray", "a.tif", ramp(24, 40, np.uint16), 1),
    ("tiff 8-bit RGB", "a.tiff", ramp(24, 40, np.uint8, 3), 3),
    ("tif 16-bit RGB", "a.tif", ramp(24, 40, np.uint16, 3), 3),
    ("tif channel-first RGB", "a.tif", np.moveaxis(ramp(24, 40, np.uint8, 3), -1, 0), 3),
]


@pytest.mark.parametrize("case,name,array,channels", FORMATS, ids=[f[0] for f in FORMATS])
def test_image_formats_load_with_exact_pixels(tmp_path, case, name, array, channels):
    write(tmp_path / "images" / name, array)
    mask = binary_mask(24, 40)
    write(tmp_path / "masks" / "a.png", mask)

    data = read_folder(tmp_path / "images", tmp_path / "masks", require_masks=True)

    assert data.names == ["a"]
    img = data.images[0]
    assert img.dtype == np.float32
    assert img.shape == (channels, 24, 40)
    # The pixels read back are the pixels written (alpha dropped, channels last -> first), normalised.
    hwc = array if array.shape[0] != 3 else np.moveaxis(array, 0, -1)
    if hwc.ndim == 3:
        hwc = hwc[..., :3]
    expected = normalize_percentile(hwc)
    expected = expected[None] if expected.ndim == 2 else np.moveaxis(expected, -1, 0)
    np.testing.assert_allclose(img, expected, rtol=0, atol=1e-6)
    assert 0.0 <= img.min() and img.max() <= 1.0 and img.max() > img.min()
    np.testing.assert_array_equal(data.masks[0], mask)


# (case, mask file name, array written)
MASKS = [
    ("png {0,1}", "a.png", binary_mask(16, 16)),
    ("png {0,255}", "a.png", binary_mask(16, 16) * 255),
    ("png 1-bit", "a.png", binary_mask(16, 16).astype(bool)),
    ("tif {0,1}", "a.tif", binary_mask(16, 16)),
    ("tif {0,255}", "a.tif", binary_mask(16, 16) * 255),
    ("tif 16-bit {0,1}", "a.tif", binary_mask(16, 16).astype(np.uint16)),
]


@pytest.mark.parametrize("case,name,array", MASKS, ids=[m[0] for m in MASKS])
def test_mask_encodings_become_0_1(tmp_path, case, name, array):
    write(tmp_path / "images" / "a.png", ramp(16, 16, np.uint8))
    write(tmp_path / "masks" / name, array)
    data = read_folder(tmp_path / "images", tmp_path / "masks", require_masks=True)
    mask = data.masks[0]
    assert mask.dtype == np.uint8
    np.testing.assert_array_equal(mask, binary_mask(16, 16))


@pytest.mark.parametrize("value", [0, 1, 255])
def test_single_valued_masks(tmp_path, value):
    """All-background and all-foreground masks are valid (1 and 255 both mean foreground)."""
    write(tmp_path / "images" / "a.png", ramp(8, 8, np.uint8))
    write(tmp_path / "masks" / "a.png", np.full((8, 8), value, np.uint8))
    mask = read_folder(tmp_path / "images", tmp_path / "masks", require_masks=True).masks[0]
    np.testing.assert_array_equal(mask, np.full((8, 8), int(value > 0), np.uint8))


def test_masks_are_optional_without_require_masks(tmp_path):
    write(tmp_path / "images" / "a.png", ramp(8, 8, np.uint8))
    write(tmp_path / "images" / "b.tif", ramp(8, 8, np.uint16))
    data = read_folder(tmp_path / "images", None, require_masks=False)
    assert data.names == ["a", "b"]
    assert data.masks == [None, None]
    assert [p.name for p in data.paths] == ["a.png", "b.tif"]


def test_non_image_files_are_ignored(tmp_path):
    write(tmp_path / "images" / "a.png", ramp(8, 8, np.uint8))
    (tmp_path / "images" / "notes.txt").write_text("not an image")
    (tmp_path / "masks").mkdir()
    (tmp_path / "masks" / ".DS_Store").write_bytes(b"\0\1")
    write(tmp_path / "masks" / "a.png", binary_mask(8, 8))
    assert read_folder(tmp_path / "images", tmp_path / "masks", require_masks=True).names == ["a"]


# ---------------------------------------------------------------- errors: each names the file and the fix


def error_of(tmp_path, require_masks=True) -> str:
    with pytest.raises(DatasetError) as info:
        read_folder(tmp_path / "images", tmp_path / "masks", require_masks=require_masks)
    assert isinstance(info.value, ValueError)
    return str(info.value)


def test_missing_mask(tmp_path):
    write(tmp_path / "images" / "a.png", ramp(8, 8, np.uint8))
    write(tmp_path / "images" / "b.png", ramp(8, 8, np.uint8))
    write(tmp_path / "masks" / "a.png", binary_mask(8, 8))
    msg = error_of(tmp_path)
    assert "1 problem(s)" in msg
    assert "image 'b.png' has no mask" in msg
    assert str(tmp_path / "masks" / "b.png") in msg  # the file to add
    assert "move the image out" in msg
    assert "'a.png'" not in msg


def test_missing_mask_is_fine_when_not_required(tmp_path):
    write(tmp_path / "images" / "a.png", ramp(8, 8, np.uint8))
    write(tmp_path / "images" / "b.png", ramp(8, 8, np.uint8))
    write(tmp_path / "masks" / "a.png", binary_mask(8, 8))
    data = read_folder(tmp_path / "images", tmp_path / "masks", require_masks=False)
    assert data.names == ["a", "b"]
    assert data.masks[0] is not None and data.masks[1] is None


def test_size_mismatch(tmp_path):
    write(tmp_path / "images" / "a.png", ramp(256, 256, np.uint8))
    write(tmp_path / "masks" / "a.png", np.zeros((256, 255), np.uint8))
    msg = error_of(tmp_path)
    assert "mask 'a.png' is 256×255 but image 'a.png' is 256×256" in msg
    assert "masks must have the size of their image" in msg


def test_size_mismatch_reports_height_by_width(tmp_path):
    write(tmp_path / "images" / "a.tif", ramp(20, 30, np.uint16))
    write(tmp_path / "masks" / "a.png", np.zeros((30, 20), np.uint8))
    assert "mask 'a.png' is 30×20 but image 'a.tif' is 20×30" in error_of(tmp_path)


@pytest.mark.parametrize("folder", ["images", "masks"])
def test_unreadable_file(tmp_path, folder):
    write(tmp_path / "images" / "a.png", ramp(8, 8, np.uint8))
    write(tmp_path / "masks" / "a.png", binary_mask(8, 8))
    (tmp_path / folder / "a.png").write_bytes(b"this is not a PNG" * 10)
    msg = error_of(tmp_path)
    assert str(tmp_path / folder / "a.png") in msg
    assert "cannot be read as an image" in msg
    assert "re-export it as PNG or TIFF" in msg


def test_unreadable_tiff(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.tif").write_bytes(b"II*\0garbage")
    write(tmp_path / "masks" / "a.png", binary_mask(8, 8))
    msg = error_of(tmp_path)
    assert str(tmp_path / "images" / "a.tif") in msg and "re-export" in msg


def test_label_maps_with_inferred_classes_and_the_ignore_value(tmp_path):
    write(tmp_path / "images" / "a.png", ramp(8, 8, np.uint8))
    write(tmp_path / "images" / "b.png", ramp(8, 8, np.uint8, seed=1))
    a = np.resize(np.array([0, 1, 2, 255], np.uint8), (8, 8))
    write(tmp_path / "masks" / "a.png", a)
    write(tmp_path / "masks" / "b.png", np.zeros((8, 8), np.uint8))
    data = read_folder(tmp_path / "images", tmp_path / "masks", require_masks=True)
    assert data.num_classes == 3 and data.class_names is None
    np.testing.assert_array_equal(data.masks[0], a)  # 255 stays: not labelled


def test_classes_json_names_the_classes(tmp_path):
    write(tmp_path / "images" / "a.png", ramp(8, 8, np.uint8))
    write(tmp_path / "masks" / "a.png", np.resize(np.array([0, 1], np.uint8), (8, 8)))
    (tmp_path / "masks" / "classes.json").write_text('["background", "nucleus", "boundary"]')
    data = read_folder(tmp_path / "images", tmp_path / "masks", require_masks=True)
    assert data.num_classes == 3 and data.class_names == ("background", "nucleus", "boundary")
    (tmp_path / "masks" / "classes.json").write_text('{"names": ["background"]}')
    assert "list of 2 or more class names" in error_of(tmp_path)


def test_a_custom_ignore_value_is_stored_as_255(tmp_path):
    write(tmp_path / "images" / "a.png", ramp(8, 8, np.uint8))
    write(tmp_path / "masks" / "a.png", np.resize(np.array([0, 1, 2, 9], np.uint8), (8, 8)))
    data = read_folder(tmp_path / "images", tmp_path / "masks", require_masks=True, classes=3, ignore_index=9)
    assert set(np.unique(data.masks[0])) == {0, 1, 2, 255}


def test_a_label_at_or_above_the_class_count_names_file_and_value(tmp_path):
    write(tmp_path / "images" / "a.png", ramp(8, 8, np.uint8))
    write(tmp_path / "masks" / "a.png", np.resize(np.array([0, 3, 7], np.uint8), (8, 8)))
    with pytest.raises(DatasetError) as info:
        read_folder(tmp_path / "images", tmp_path / "masks", require_masks=True, classes=3)
    assert "mask 'a.png' holds the value(s) 3, 7, not a class 0..2 nor the not-labelled value 255" in str(info.value)
    (tmp_path / "masks" / "classes.json").write_text('["background", "a"]')
    with pytest.raises(DatasetError, match="--classes 3 disagrees with the 2 names"):
        read_folder(tmp_path / "images", tmp_path / "masks", require_masks=True, classes=3)


def test_instance_labels_are_not_taken_for_classes(tmp_path):
    write(tmp_path / "images" / "a.tif", ramp(8, 8, np.uint16))
    write(tmp_path / "masks" / "a.tif", np.arange(64, dtype=np.uint16).reshape(8, 8))
    msg = error_of(tmp_path)
    assert "mask 'a.tif' holds the value 63" in msg and "look like instance labels" in msg and "labels > 0" in msg


def test_binary_255_masks_beside_label_maps_are_ambiguous(tmp_path):
    write(tmp_path / "images" / "a.png", ramp(8, 8, np.uint8))
    write(tmp_path / "images" / "b.png", ramp(8, 8, np.uint8, seed=1))
    write(tmp_path / "masks" / "a.png", binary_mask(8, 8) * 255)
    write(tmp_path / "masks" / "b.png", np.resize(np.array([0, 1, 2], np.uint8), (8, 8)))
    msg = error_of(tmp_path)
    assert "mask 'a.png' is binary with 255 = foreground but mask 'b.png' holds class labels" in msg


def test_rgb_mask_is_rejected(tmp_path):
    write(tmp_path / "images" / "a.png", ramp(8, 8, np.uint8))
    write(tmp_path / "masks" / "a.png", np.stack([binary_mask(8, 8) * 255] * 3, -1))
    msg = error_of(tmp_path)
    assert "mask 'a.png' has shape (8, 8, 3)" in msg and "single-channel" in msg


def test_orphan_mask(tmp_path):
    write(tmp_path / "images" / "a.png", ramp(8, 8, np.uint8))
    write(tmp_path / "masks" / "a.png", binary_mask(8, 8))
    write(tmp_path / "masks" / "ghost.png", binary_mask(8, 8))
    msg = error_of(tmp_path)
    assert "1 problem(s)" in msg
    assert "mask 'ghost.png' has no image with stem 'ghost'" in msg
    assert str(tmp_path / "images") in msg
    assert "add the image or remove the mask" in msg


def test_mixed_gray_and_rgb(tmp_path):
    write(tmp_path / "images" / "gray.png", ramp(8, 8, np.uint8))
    write(tmp_path / "images" / "color.png", ramp(8, 8, np.uint8, 3))
    write(tmp_path / "masks" / "gray.png", binary_mask(8, 8))
    write(tmp_path / "masks" / "color.png", binary_mask(8, 8))
    msg = error_of(tmp_path)
    assert "mix grayscale and RGB" in msg
    assert "'gray.png' is gray" in msg and "'color.png' is RGB" in msg
    assert "convert them all to one kind" in msg


def test_two_files_with_one_stem(tmp_path):
    write(tmp_path / "images" / "a.png", ramp(8, 8, np.uint8))
    write(tmp_path / "images" / "a.tif", ramp(8, 8, np.uint8))
    write(tmp_path / "masks" / "a.png", binary_mask(8, 8))
    msg = error_of(tmp_path)
    assert "'a'" in msg and "a.png" in msg and "a.tif" in msg and "rename one" in msg


def test_missing_or_empty_folders(tmp_path):
    with pytest.raises(DatasetError, match="no such folder"):
        read_folder(tmp_path / "nope", None, require_masks=False)
    (tmp_path / "images").mkdir()
    with pytest.raises(DatasetError, match=r"no \.png/\.tif/\.tiff images found"):
        read_folder(tmp_path / "images", None, require_masks=False)
    write(tmp_path / "images" / "a.png", ramp(8, 8, np.uint8))
    with pytest.raises(DatasetError, match="no such folder; expected a folder of masks"):
        read_folder(tmp_path / "images", tmp_path / "masks", require_masks=True)


def test_all_problems_reported_together(tmp_path):
    """One DatasetError lists every problem, one line each, so a user fixes the folder in one pass."""
    write(tmp_path / "images" / "ok.png", ramp(16, 16, np.uint8))
    write(tmp_path / "masks" / "ok.png", binary_mask(16, 16))
    write(tmp_path / "images" / "nomask.png", ramp(16, 16, np.uint8))
    write(tmp_path / "images" / "small.png", ramp(16, 16, np.uint8))
    write(tmp_path / "masks" / "small.png", np.zeros((16, 15), np.uint8))
    write(tmp_path / "images" / "labels.png", ramp(16, 16, np.uint8))
    write(tmp_path / "masks" / "labels.png", np.resize(np.arange(0, 200, 50, dtype=np.uint8), (16, 16)))
    (tmp_path / "images" / "broken.png").write_bytes(b"garbage")
    write(tmp_path / "masks" / "broken.png", binary_mask(16, 16))
    write(tmp_path / "masks" / "orphan.png", binary_mask(16, 16))

    msg = error_of(tmp_path)
    lines = [line for line in msg.splitlines() if line.startswith("  - ")]
    assert msg.startswith(f"5 problem(s) in {tmp_path / 'images'}")
    assert len(lines) == 5
    expected = [
        "image 'nomask.png' has no mask",
        "mask 'small.png' is 16×15 but image 'small.png' is 16×16",
        "mask 'labels.png' holds the value 150",
        "broken.png: cannot be read as an image",
        "mask 'orphan.png' has no image",
    ]
    for fragment in expected:
        assert sum(fragment in line for line in lines) == 1, fragment
    assert "ok.png" not in msg


# ---------------------------------------------------------------- load_folder: tiling, groups, ids


def test_load_folder_tiles_with_one_group_per_image(tmp_path):
    big = ramp(70, 130, np.uint8, seed=1)  # 2 × 4 tiles of 32 (remainders dropped)
    small = ramp(64, 64, np.uint8, seed=2)  # 2 × 2 tiles
    big_mask, small_mask = binary_mask(70, 130, seed=1), binary_mask(64, 64, seed=2)
    write(tmp_path / "images" / "big.png", big)
    write(tmp_path / "masks" / "big.png", big_mask * 255)
    write(tmp_path / "images" / "small.tif", small)
    write(tmp_path / "masks" / "small.tif", small_mask)

    ds = load_folder(tmp_path, patch_size=32)

    assert len(ds) == 8 + 4
    assert ds.images.shape == (12, 1, 32, 32) and ds.images.dtype == np.float32
    assert ds.targets.shape == (12, 32, 32) and ds.targets.dtype == np.uint8
    assert ds.num_classes == 2 and ds.in_channels == 1
    np.testing.assert_array_equal(ds.groups, [0] * 8 + [1] * 4)
    assert ds.item_ids[:8] == [f"big_r{r}_c{c}" for r in range(2) for c in range(4)]
    assert ds.item_ids[8:] == [f"small_r{r}_c{c}" for r in range(2) for c in range(2)]
    assert len(set(ds.item_ids)) == len(ds)
    # Each patch is the matching crop of the (whole-image normalised) image and mask.
    norm_big = normalize_percentile(big)
    for i, (r, c) in enumerate([(r, c) for r in range(2) for c in range(4)]):
        crop = np.s_[r * 32 : (r + 1) * 32, c * 32 : (c + 1) * 32]
        np.testing.assert_allclose(ds.images[i, 0], norm_big[crop], atol=1e-6)
        np.testing.assert_array_equal(ds.targets[i], big_mask[crop])
    np.testing.assert_array_equal(ds.targets[11], small_mask[32:, 32:])


def test_load_folder_rgb_and_padding(tmp_path):
    """RGB images give 3-channel patches; an image smaller than a patch is zero-padded to one."""
    img = ramp(20, 24, np.uint8, 3)
    mask = binary_mask(20, 24)
    write(tmp_path / "images" / "tiny.png", img)
    write(tmp_path / "masks" / "tiny.png", mask)
    ds = load_folder(tmp_path, patch_size=32)
    assert ds.images.shape == (1, 3, 32, 32)
    assert ds.item_ids == ["tiny_r0_c0"]
    expected = np.moveaxis(normalize_percentile(img), -1, 0)
    np.testing.assert_allclose(ds.images[0, :, :20, :24], expected, atol=1e-6)
    assert not ds.images[0, :, 20:, :].any() and not ds.images[0, :, :, 24:].any()
    np.testing.assert_array_equal(ds.targets[0, :20, :24], mask)
    assert not ds.targets[0, 20:].any() and not ds.targets[0, :, 24:].any()


def test_load_folder_raises_before_tiling(tmp_path):
    write(tmp_path / "images" / "a.png", ramp(64, 64, np.uint8))
    (tmp_path / "masks").mkdir()
    with pytest.raises(DatasetError, match=re.escape("image 'a.png' has no mask")):
        load_folder(tmp_path, patch_size=32)


def test_load_dataset_accepts_a_folder_and_lists_names(tmp_path):
    write(tmp_path / "images" / "a.png", ramp(64, 64, np.uint8))
    write(tmp_path / "masks" / "a.png", binary_mask(64, 64))
    assert len(load_dataset(str(tmp_path), patch_size=32)) == 4
    with pytest.raises(ValueError, match=r"unknown dataset 'nucleii'.*\['cells3d', 'hippocampus', 'mnist', 'nuclei', "):
        load_dataset("nucleii")
