"""Training patches from labelled images or volumes, half centred on foreground (Nath et al. 2020, §4).

Nath et al. train their 3-D U-Net on random 48³ patches drawn 1:1 from foreground and background: with a
small structure (a hippocampus is ~0.2% of a head MRI) uniform patches would almost never show it.
:func:`sample_patches` draws exactly ``round(n · fg_fraction)`` patches centred on a random labelled
foreground voxel and the rest on a random labelled background voxel (unlabelled voxels, the ignore value,
are never centres), each box clipped to lie inside its volume. 2-D images work the same way.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["sample_patches"]


def sample_patches(labels: Sequence[np.ndarray], size: Sequence[int], n: int, rng: np.random.Generator,
                   fg_fraction: float = 0.5, background: int = 0,
                   ignore_index: int = 255) -> list[tuple[int, tuple[slice, ...]]]:
    """``n`` patches ``(volume index, box)`` of side ``size`` (clipped to the volume's sides).

    Args:
        labels: one label map per volume ``[*S]`` (the ignore value marks unlabelled voxels).
        size: the patch side per spatial axis.
        n: patches to draw.
        rng: the only source of randomness.
        fg_fraction: the share centred on foreground (Nath et al.: 1:1, 0.5); the centre's class is drawn
            first, then a volume holding that class, then a voxel of it.
        background: the background class; every other labelled value is foreground.
    """
    if not 0.0 <= fg_fraction <= 1.0:
        raise ValueError(f"fg_fraction must be in [0, 1], got {fg_fraction}")
    pools = {True: [], False: []}  # per kind: (volume, flat indices)
    for v, lab in enumerate(labels):
        lab = np.asarray(lab)
        for kind, where in ((True, (lab != background) & (lab != ignore_index)), (False, lab == background)):
            flat = np.flatnonzero(where)
            if len(flat):
                pools[kind].append((v, flat))
    n_fg = round(n * fg_fraction)
    kinds = np.array([True] * n_fg + [False] * (n - n_fg))
    rng.shuffle(kinds)
    for kind, name in ((True, "foreground"), (False, "background")):
        if (kinds == kind).any() and not pools[kind]:
            raise ValueError(f"no labelled {name} voxel in any volume to centre a patch on; "
                             f"set fg_fraction to {0.0 if kind else 1.0} or label some {name}")
    out = []
    for kind in kinds:
        v, flat = pools[bool(kind)][int(rng.integers(len(pools[bool(kind)])))]
        shape = np.shape(labels[v])
        centre = np.unravel_index(int(flat[int(rng.integers(len(flat)))]), shape)
        box = []
        for c, s, side in zip(centre, size, shape, strict=True):
            s = min(int(s), side)
            start = min(max(int(c) - s // 2, 0), side - s)
            box.append(slice(start, start + s))
        out.append((v, tuple(box)))
    return out
