"""``hippocampus``: Colin27's T1 MRI with the AAL atlas, cut into 3-D patches for patch-level active learning.

The Debian package ``mricron-data`` ships Colin27 (``ch2.nii.gz``, a single subject scanned 27 times and
averaged, 181 × 217 × 181 at 1 mm) and the AAL atlas on the same grid (``aal.nii.gz``). The task keeps
four classes, each merged over both hemispheres: background, hippocampus (AAL regions 37/38 of the file,
codes 4101/4102), amygdala (41/42, codes 4201/4202) and parahippocampal gyrus (39/40, codes 4111/4112), the
medial temporal structures around the hippocampus.

One subject: the pool and the held-out parts are split in space, by hemisphere. A box around both medial
temporal lobes (D 24-104, H 64-160, W 24-160 in voxels; D = inferior → superior, H = posterior → anterior,
W = right → left in the file's axes) is cut into ``patch_size``³ tiles; the tiles of the hemisphere with
W < 88 form the pool, those with W ≥ 96 (an 8-voxel guard band at the midline) the validation (inferior
half) and test (superior half) sets. The held-out tiles are mirrored left–right (along W), so that both
parts show the medial temporal lobe the same way round, as registering the other hemisphere onto the first
would: a U-Net trained on one hemisphere's tiles meets the other's mirror image otherwise, and with 16-voxel
tiles it did not carry over (full-pool test Dice 0.09 unmirrored, 0.24 mirrored: one U-Net, 600 steps, no
augmentation; a one-off check of 2026-12-07, not a committed benchmark). Their ``boxes`` stay where the
tiles lie in the brain. It is a demonstration of the 3-D pipeline on real anatomy, not a label-efficiency
benchmark: one brain, one atlas.

References:
    Holmes et al. Enhancement of MR images using registration for signal averaging. JCAT 1998 (Colin27).
    Tzourio-Mazoyer et al. Automated anatomical labeling of activations in SPM. NeuroImage 2002 (AAL).
"""

from __future__ import annotations

import numpy as np

from activeseg.data.dataset import ImageDataset
from activeseg.data.fetch import RegistryFile, fetch_files

__all__ = ["BRAIN_FILES", "load_hippocampus"]

_MRICRON = "mricron-data=1.2.20211006+dfsg-4"
BRAIN_FILES: dict[str, RegistryFile] = {
    "t1": RegistryFile(_MRICRON, "usr/share/mricron/templates/ch2.nii.gz",
                       "a009051127f64dc3dd554d5f5b589870ea72106d9642c21b4e7093e478cfc309", client="apt"),
    "aal": RegistryFile(_MRICRON, "usr/share/mricron/templates/aal.nii.gz",
                        "b512dcd3f36b77f56be7a9a038134096e66314b7e8c31d25875b96bcf6991454", client="apt"),
}
CLASSES = ("background", "hippocampus", "amygdala", "parahippocampal")
AAL_REGIONS = {1: (37, 38), 2: (41, 42), 3: (39, 40)}  # the values in aal.nii.gz (aal.nii.txt: index, name, code)
BOX = {"d": (24, 104), "h": (64, 160)}
POOL_W, HELD_W = (24, 88), (96, 160)  # the two hemispheres, an 8-voxel band between them


def _labels(aal: np.ndarray) -> np.ndarray:
    out = np.zeros(aal.shape, np.uint8)
    for cls, regions in AAL_REGIONS.items():
        out[np.isin(aal, regions)] = cls
    return out


def _tiles(lo: int, hi: int, p: int) -> list[int]:
    return list(range(lo, lo + (hi - lo) // p * p, p))


def load_hippocampus(patch_size: int = 16, quiet: bool = False) -> ImageDataset:
    """The Colin27 medial-temporal patches (see the module docstring); ``patch_size`` is the tile side."""
    from activeseg.data.volumes import read_volume

    p = int(patch_size)
    if not 4 <= p <= 64:
        raise ValueError(f"patch_size={p}; hippocampus tiles are 4 to 64 voxels a side (e.g. 16 or 32)")
    paths = fetch_files(BRAIN_FILES, "brain", quiet=quiet)
    t1, aal = read_volume(paths["t1"]), read_volume(paths["aal"], labels=True)
    image = t1.data[0]
    lo, hi = np.percentile(image[image > 0], [0.5, 99.5])
    image = np.clip((image - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)
    labels = _labels(aal.data)
    images, targets, ids, boxes, part = [], [], [], [], []
    for side, (w_lo, w_hi) in (("pool", POOL_W), ("held", HELD_W)):
        ds = _tiles(*BOX["d"], p)
        for d in ds:
            for h in _tiles(*BOX["h"], p):
                for w in _tiles(w_lo, w_hi, p):
                    box = (slice(d, d + p), slice(h, h + p), slice(w, w + p))
                    mirror = slice(None, None, -1 if side == "held" else 1)
                    images.append(image[box][None, ..., mirror])
                    targets.append(labels[box][..., mirror])
                    ids.append(f"colin27_d{d:03d}_h{h:03d}_w{w:03d}")
                    boxes.append((d, h, w, d + p, h + p, w + p))
                    held = side == "held"
                    part.append("pool" if not held else ("val" if d < ds[len(ds) // 2] else "test"))
    part = np.array(part)
    return ImageDataset(np.stack(images), np.stack(targets), ids, np.arange(len(ids)), num_classes=len(CLASSES),
                        official_test=np.flatnonzero(part == "test"), official_val=np.flatnonzero(part == "val"),
                        class_names=CLASSES, boxes=np.array(boxes))
