"""Training augmentations of images and masks together, 2-D and 3-D: random affine (shift, rotation, flip,
zoom; volumes rotate in-plane) or the dihedral group (flips, 90° rotations) with gamma."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def augment_batch(
    images_B_C_H_W: torch.Tensor,
    masks_B_H_W: torch.Tensor | None,
    generator: torch.Generator,
    max_rotation_deg: float = 20.0,
    max_shift: float = 0.1,
    zoom: tuple[float, float] = (0.9, 1.1),
    flip: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply one random affine transform (plus flips) per item.

    Images are resampled bilinearly (trilinearly), masks with nearest neighbour; pixels shifted in from
    outside the patch are reflected. Volumes ``[B, C, D, H, W]`` are rotated in the H-W plane (about the D
    axis, where a scan's spacing is usually equal), shifted and zoomed in H and W, and also flipped along D.
    All randomness comes from ``generator`` (2-D batches draw what they drew before volumes were supported).

    Args:
        images_B_C_H_W: float images ``[B, C, H, W]`` or volumes ``[B, C, D, H, W]``.
        masks_B_H_W: integer class masks, or None (classification: labels do not move).
        max_rotation_deg: rotation drawn uniformly in ±this.
        max_shift: translation drawn uniformly in ±this fraction of the side.
        zoom: scale range.
        flip: random flips along every spatial axis.

    Returns:
        (augmented images, augmented masks or None) of the input shapes and dtypes.
    """
    spatial = images_B_C_H_W.ndim - 2
    if spatial not in (2, 3):
        raise ValueError(f"augmentation transforms 2-D images and 3-D volumes; these have {spatial} spatial "
                         "dimensions")
    b = images_B_C_H_W.shape[0]
    dev = images_B_C_H_W.device

    def uniform(lo: float, hi: float) -> torch.Tensor:
        return (lo + (hi - lo) * torch.rand(b, generator=generator)).to(dev)

    angle = uniform(-max_rotation_deg, max_rotation_deg) * math.pi / 180
    scale = 1.0 / uniform(*zoom)
    tx, ty = uniform(-max_shift, max_shift) * 2, uniform(-max_shift, max_shift) * 2
    sx = torch.ones(b, device=dev)
    sy = torch.ones(b, device=dev)
    if flip:
        sx = torch.where(uniform(0, 1) < 0.5, -sx, sx)
        sy = torch.where(uniform(0, 1) < 0.5, -sy, sy)
    cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
    zero = torch.zeros(b, device=dev)
    if spatial == 2:
        theta = torch.stack(
            [torch.stack([cos * sx, -sin * sy, tx], 1), torch.stack([sin * sx, cos * sy, ty], 1)], 1
        )
    else:  # grid coordinates are (x, y, z): rotate x-y, flip z
        sz = torch.where(uniform(0, 1) < 0.5, -1.0, 1.0) if flip else torch.ones(b, device=dev)
        theta = torch.stack([torch.stack([cos * sx, -sin * sy, zero, tx], 1),
                             torch.stack([sin * sx, cos * sy, zero, ty], 1),
                             torch.stack([zero, zero, sz, zero], 1)], 1)
    grid = F.affine_grid(theta, list(images_B_C_H_W.shape), align_corners=False)
    images = F.grid_sample(images_B_C_H_W, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    if masks_B_H_W is None:
        return images, None
    masks = F.grid_sample(
        masks_B_H_W[:, None].float(), grid, mode="nearest", padding_mode="reflection", align_corners=False
    )[:, 0].to(masks_B_H_W.dtype)
    return images, masks


def dihedral_batch(
    images_B_C_H_W: torch.Tensor,
    masks_B_H_W: torch.Tensor | None,
    generator: torch.Generator,
    gamma: tuple[float, float] = (0.7, 1.5),
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One random element of the dihedral group (horizontal and vertical flips and a transpose: the 8
    flips and 90° rotations of a square) per item, and a random intensity gamma. Volumes ``[B, C, D, H, W]``
    are also flipped along D (the in-plane rotations stay in the H-W plane, where a volume's anisotropic
    spacing, if any, is equal).

    Nothing is resampled, so masks keep their exact pixels; the gamma ``x ** g`` with ``log g`` uniform
    in ``log gamma`` applies to images in [0, 1] (the dataset's normalisation). A non-square batch is only
    flipped. All randomness comes from ``generator`` (2-D batches draw exactly what they drew before volumes
    were supported, so runs repeat).

    Returns:
        (augmented images, augmented masks or None) of the input shapes and dtypes.
    """
    x, y = images_B_C_H_W, masks_B_H_W
    spatial = x.ndim - 2
    if spatial not in (2, 3):
        raise ValueError(f"augmentation transforms 2-D images and 3-D volumes; these have {spatial} spatial "
                         "dimensions")
    b = x.shape[0]
    draws = torch.rand(b, 4 if spatial == 2 else 5, generator=generator).to(x.device)
    square = x.shape[-1] == x.shape[-2]
    ops = [(0, lambda t: t.flip(-1)), (1, lambda t: t.flip(-2))]
    if square:
        ops.append((2, lambda t: t.transpose(-1, -2)))
    if spatial == 3:
        ops.append((4, lambda t: t.flip(-3)))
    for j, op in ops:
        on = draws[:, j] < 0.5
        x = torch.where(on.view(b, *[1] * (x.ndim - 1)), op(x), x)
        if y is not None:
            y = torch.where(on.view(b, *[1] * (y.ndim - 1)), op(y), y)
    lo, hi = math.log(gamma[0]), math.log(gamma[1])
    g = torch.exp(lo + (hi - lo) * draws[:, 3])
    x = x.clamp_min(0.0) ** g.view(b, *[1] * (x.ndim - 1)).to(x.dtype)
    return x, y


AUGMENTATIONS = {"affine": augment_batch, "dihedral": dihedral_batch}
"""Training augmentations by ``augment_style`` name; each maps (images, masks or None, generator) to both."""
