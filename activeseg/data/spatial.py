"""Leak-free spatial splits: test, validation and pool regions of one plane that run through every
plane of a stack, separated by guard bands, and the tiles cut inside them.

A source is a 2-D image or a stack ``[P, H, W]`` of labelled planes (z-slices, time frames). Splitting
its planes (slices 0.29 µm apart, consecutive frames) puts the same nucleus on both sides, so the split
is made in the (y, x) plane instead: every region covers the same rectangle in all P planes, regions
are at least ``guard`` pixels apart, and square tiles of side ``patch_size`` are cut only entirely
inside one region (none in the guard bands). The layout depends only on the plane shape, the patch
size and the guard (no seed), and is one of two kinds, along the longer axis (x when square):

* ``strips``: test | guard | pool | guard | validation, each a strip of whole tiles across the plane;
* ``held_out``: held-out strip | guard | pool, the held-out strip split across the other axis into
  test (at its start) | guard | validation (flush with its end): for planes too short for three strips
  (cells3d's 256 px at patch 64 would give equal thirds).

Among all layouts of whole tiles (both kinds) the one chosen puts the test and validation shares of the
source's tiles inside ``test_share`` and ``val_share`` (or nearest to them), and among those keeps the
most pool tiles (then: ``strips`` first, then more held-out tiles).

Ground-truth instances of a test or validation region that also appear in another region's tiles (in
any plane: a cells3d nucleus spans tens of slices) are set to ``ignore_index`` in that region's masks
(``rule="reaching"``, the default), so no object is scored in the test set whose other part lies in the
pool. ``rule="leaving"`` ignores every instance that reaches out of its region at all (into a guard
band; rows left over at the plane's border, narrower than a tile, count as inside); on cells3d, whose
nuclei are about 50 px wide and 3-D, it leaves the validation tiles without a single nucleus pixel, so
it is not the default. Nuclei cut by a region's edge but not reaching another region stay, as nuclei
cut by every tile's edge do.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from activeseg.data.dataset import IGNORE_INDEX, ImageDataset

PARTS = ("pool", "val", "test")


@dataclass(frozen=True)
class Layout:
    """The pool, validation and test regions of an ``(H, W)`` plane, each a half-open box ``(y0, x0, y1, x1)``
    holding whole tiles; ``kind`` is ``strips`` or ``held_out``."""

    kind: str
    shape: tuple[int, int]
    pool: tuple[int, int, int, int]
    val: tuple[int, int, int, int]
    test: tuple[int, int, int, int]

    def region(self, part: str) -> tuple[int, int, int, int]:
        """The tiled box of ``part`` (``pool``, ``val`` or ``test``)."""
        return getattr(self, part)

    def extent(self, part: str, patch_size: int) -> tuple[int, int, int, int]:
        """The box of ``part`` grown to the plane's border where the margin is narrower than a tile (rows
        left over below the last tile belong to no region, so an object reaching into them stays in)."""
        y0, x0, y1, x1 = self.region(part)
        h, w = self.shape
        return (0 if y0 < patch_size else y0, 0 if x0 < patch_size else x0,
                h if h - y1 < patch_size else y1, w if w - x1 < patch_size else x1)


def _out_of(share: np.ndarray, band: tuple[float, float]) -> np.ndarray:
    return np.maximum(0.0, np.maximum(band[0] - share, share - band[1]))


def strip_layout(
    shape_hw: tuple[int, int],
    patch_size: int,
    guard: int = 32,
    test_share: tuple[float, float] = (0.20, 0.25),
    val_share: tuple[float, float] = (0.10, 0.15),
) -> Layout:
    """The deterministic layout of one plane (see the module docstring for the rule).

    Args:
        shape_hw: the plane's ``(H, W)``.
        patch_size: tile side p; regions are whole tiles.
        guard: the least number of pixels between two regions.
        test_share, val_share: the wanted ranges of the test and validation shares of the tiles.

    Returns:
        the regions; each holds ``(y1 - y0) // p · (x1 - x0) // p`` tiles.
    """
    p, g = patch_size, guard
    long_is_x = shape_hw[1] >= shape_hw[0]
    short, long = (shape_hw[0], shape_hw[1]) if long_is_x else (shape_hw[1], shape_hw[0])
    rows, n = short // p, (long - 2 * g) // p
    n = n if rows else 0  # a plane narrower than a tile holds none
    cands = []  # (kind, test tiles, val tiles, pool tiles, parameters)
    cands += [("strips", rows * t, rows * v, rows * (n - t - v), (t, v)) for t in range(1, n) for v in range(1, n - t)]
    m = (short - g) // p  # rows of the held-out strip shared by test and validation
    for h in range(1, (long - g) // p if rows else 0):
        k = (long - g - h * p) // p
        cands += [("held_out", h * rt, h * rv, rows * k, (h, rt, rv))
                  for rt in range(1, m) for rv in range(1, m - rt + 1)]
    if not cands:
        raise ValueError(f"a {shape_hw[0]}×{shape_hw[1]} plane is too small for test, validation and pool tiles of "
                         f"{p} px with {g} px guard bands; use a smaller patch_size or guard")
    test, val, pool = (np.array([c[i] for c in cands], dtype=float) for i in (1, 2, 3))
    total = test + val + pool
    miss = np.round(_out_of(test / total, test_share) + _out_of(val / total, val_share), 9)
    order = np.lexsort((-(test + val), [c[0] != "strips" for c in cands], -pool, miss))
    kind, *_, par = cands[order[0]]
    if kind == "strips":
        t, v = par
        k = n - t - v
        test_u, pool_u, val_u = (0, t * p), (t * p + g, (t + k) * p + g), (long - v * p, long)
        boxes_uw = [(pool_u, (0, rows * p)), (val_u, (0, rows * p)), (test_u, (0, rows * p))]
    else:
        h, rt, rv = par
        k = (long - g - h * p) // p
        boxes_uw = [((h * p + g, h * p + g + k * p), (0, rows * p)), ((0, h * p), (short - rv * p, short)),
                    ((0, h * p), (0, rt * p))]
    boxes = [(w[0], u[0], w[1], u[1]) if long_is_x else (u[0], w[0], u[1], w[1]) for u, w in boxes_uw]
    return Layout(kind, (int(shape_hw[0]), int(shape_hw[1])), *boxes)


def tile_boxes(region: tuple[int, int, int, int], patch_size: int) -> list[tuple[int, int, int, int]]:
    """The tiles of side ``patch_size`` filling ``region`` from its top-left corner, row-major."""
    y0, x0, y1, x1 = region
    return [(y, x, y + patch_size, x + patch_size) for y in range(y0, y1 - patch_size + 1, patch_size)
            for x in range(x0, x1 - patch_size + 1, patch_size)]


def box_mask(shape_hw: tuple[int, ...], *boxes: tuple[int, int, int, int]) -> np.ndarray:
    """``[H, W]`` bool, True inside any of the half-open ``(y0, x0, y1, x1)`` boxes."""
    mask = np.zeros(shape_hw, dtype=bool)
    for y0, x0, y1, x1 in boxes:
        mask[y0:y1, x0:x1] = True
    return mask


def crossing_instances(labels_P_H_W: np.ndarray, inside_H_W: np.ndarray, outside_H_W: np.ndarray) -> np.ndarray:
    """Instance ids (not 0) with pixels in both ``inside`` and ``outside`` (plane masks), in any plane."""
    ids_in = np.unique(labels_P_H_W[:, inside_H_W])
    ids_out = np.unique(labels_P_H_W[:, outside_H_W])
    return np.setdiff1d(np.intersect1d(ids_in, ids_out), [0])


def per_plane_ids(labels_P_H_W: np.ndarray) -> np.ndarray:
    """Per-plane instance labels renumbered so that an id names one instance in one plane only (ids
    reused in other planes, as in a movie segmented frame by frame, become distinct); 0 stays 0."""
    lab = labels_P_H_W.astype(np.int64)
    span = int(lab.max()) + 1
    return np.where(lab > 0, lab + span * np.arange(len(lab))[:, None, None], 0)


def link_planes(labels_P_H_W: np.ndarray) -> np.ndarray:
    """Per-plane instance labels relabelled so that instances overlapping in consecutive planes (one
    object in consecutive frames) share one id; 0 stays background.

    Args:
        labels_P_H_W: instance ids that mean nothing across planes (a movie segmented frame by frame).

    Returns:
        int64 ``[P, H, W]`` ids of the linked tracks (connected components of the overlap graph).
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    node = per_plane_ids(labels_P_H_W)  # one node per (plane, id)
    a, b = node[:-1].ravel(), node[1:].ravel()
    both = (a > 0) & (b > 0)
    size = int(node.max()) + 1
    graph = coo_matrix((np.ones(both.sum()), (a[both], b[both])), shape=(size, size))
    _, comp = connected_components(graph, directed=False)
    return np.where(node > 0, comp[node] + 1, 0)


@dataclass
class Source:
    """One source to split: a stack of planes, their class masks and the instances that must not leak.

    Attributes:
        name: the item-id prefix (``cells3d``); never contains ``_``.
        images: ``[P, C, H, W]`` float32 normalised planes.
        targets: ``[P, H, W]`` uint8 class masks.
        instances: label stacks ``[P, H, W]`` whose ids are one object across all P planes (pass per-frame
            labels through ``per_plane_ids`` or ``link_planes``); several stacks for several kinds.
        planes: P plane tags for the item ids (``z17``, ``t03``), or None for a single image (P = 1).
    """

    name: str
    images: np.ndarray
    targets: np.ndarray
    instances: list[np.ndarray] = field(default_factory=list)
    planes: list[str] | None = None


def held_out_targets(source: Source, layout: Layout, patch_size: int, ignore_index: int = IGNORE_INDEX,
                     rule: str = "reaching") -> np.ndarray:
    """``source.targets`` with crossing instances set to ``ignore_index`` inside the test and validation
    regions (the pool keeps its masks).

    Args:
        rule: which instances cross: ``"leaving"`` those with a pixel outside the region's
            ``extent`` (in a guard band, another region) in any plane; ``"reaching"`` only those with a
            pixel in another region's tiles (an object cut by a guard band but seen nowhere else stays).
    """
    if rule not in ("leaving", "reaching"):
        raise ValueError(f"unknown rule '{rule}': use 'leaving' or 'reaching'")
    shape = source.targets.shape[1:]
    targets = source.targets.copy()
    for part in ("val", "test"):
        y0, x0, y1, x1 = layout.region(part)
        box = (slice(None), slice(y0, y1), slice(x0, x1))
        if rule == "leaving":
            outside = ~box_mask(shape, layout.extent(part, patch_size))
        else:
            outside = box_mask(shape, *(layout.region(other) for other in PARTS if other != part))
        for labels in source.instances:
            crossing = crossing_instances(labels, box_mask(shape, layout.region(part)), outside)
            targets[box][np.isin(labels[box], crossing)] = ignore_index
    return targets


def spatial_dataset(
    sources: list[Source],
    patch_size: int,
    num_classes: int,
    class_names: tuple[str, ...],
    guard: int = 32,
    ignore_index: int = IGNORE_INDEX,
    rule: str = "reaching",
) -> ImageDataset:
    """Tile every source by its ``strip_layout`` into one dataset with fixed test and validation sets.

    Item ids are ``<name>[_<plane>]_y<y0>_x<x0>`` (3 digits), ``boxes`` the tiles' ``(y0, x0, y1, x1)`` in
    their plane, ``groups`` one id per (source, region), numbered source by source in ``PARTS`` order.

    Args:
        rule: which instances are ignored in the test and validation masks (see ``held_out_targets``).

    Returns:
        the dataset, ``official_test`` / ``official_val`` set to the tiles of the test / validation regions.
    """
    images, targets, ids, groups, boxes, part_of = [], [], [], [], [], []
    for s_idx, src in enumerate(sources):
        try:
            layout = strip_layout(src.targets.shape[1:], patch_size, guard)
        except ValueError as err:
            raise ValueError(f"source '{src.name}': {err}") from None
        masks = held_out_targets(src, layout, patch_size, ignore_index, rule)
        planes = src.planes or [None] * len(masks)
        for p_idx, part in enumerate(PARTS):
            tiles = tile_boxes(layout.region(part), patch_size)
            for plane, image_C_H_W, mask_H_W in zip(planes, src.images, masks, strict=True):
                for y0, x0, y1, x1 in tiles:
                    images.append(image_C_H_W[:, y0:y1, x0:x1])
                    targets.append(mask_H_W[y0:y1, x0:x1])
                    ids.append("_".join([src.name, *([plane] if plane else []), f"y{y0:03d}", f"x{x0:03d}"]))
                    groups.append(len(PARTS) * s_idx + p_idx)
                    boxes.append((y0, x0, y1, x1))
                    part_of.append(part)
    part_of = np.array(part_of)
    return ImageDataset(np.stack(images).astype(np.float32), np.stack(targets).astype(np.uint8), ids,
                        np.asarray(groups, dtype=np.int64), num_classes,
                        official_test=np.flatnonzero(part_of == "test"), official_val=np.flatnonzero(part_of == "val"),
                        class_names=class_names, boxes=np.asarray(boxes, dtype=np.int64))
