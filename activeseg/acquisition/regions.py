"""Region queries (CEREALS, Mackowiak et al. 2018): score every window of every image at once, keep the best
non-overlapping ones, and price a region by the clicks it takes to outline it.

* ``window_sums``: the sum of a map over every ``size × size`` window on a ``stride`` grid, from a
  summed-area table (one cumulative sum per image, four look-ups per window; no loop over windows).
* ``region_scores``: those sums normalised to [0, 1] over the round's candidates (min-max), with labelled
  pixels counted as 0 (``labelled="zero"``) or their windows left out (``labelled="exclude"``).
* ``select_regions``: greedy non-maximum suppression over all images: the best window first, then the
  next whose IoU with every kept window of the same image is at most ``iou_max`` (0: disjoint).
* ``candidate_windows`` / ``Windows`` / ``nms``: the same for candidates of different sizes as flat window
  lists (what the region strategies use), with the windows that may be picked given each image's labelled
  pixels. For volumes ``[D, H, W]`` the windows are cubes (summed-volume tables, 3-D IoU): the patch queries
  inside volumes of Nath et al.'s setting, with the same partial labels.
* ``click_cost``: the clicks to outline a region's ground truth: for each connected component of each
  labelled class inside the box, the vertices of its outer contour after Douglas–Peucker simplification
  (``tolerance`` pixels, default 1.0; at least 3), plus one click per component; 0 for an all-background region. A
  proxy for the recorded clicks of Cityscapes that CEREALS learnt its cost model from.

References:
    Mackowiak, Lenz, Ghori, Diego, Lange, Rother. CEREALS - Cost-Effective REgion-based Active Learning
    for Semantic Segmentation. BMVC 2018. https://arxiv.org/abs/1810.09726
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

__all__ = ["Region", "Windows", "box_sums", "candidate_windows", "click_cost", "minmax", "nms", "region_scores",
           "select_regions", "window_grid", "window_sums"]

LABELLED_MODES = ("zero", "exclude")


@dataclass(frozen=True)
class Region:
    """A box of one image: rows ``y:y+h``, columns ``x:x+w``; of a volume also slices ``z:z+d`` (``d`` > 0)."""

    item: int
    y: int
    x: int
    h: int
    w: int
    z: int = 0
    d: int = 0

    @property
    def starts(self) -> tuple[int, ...]:
        return (self.z, self.y, self.x) if self.d else (self.y, self.x)

    @property
    def sides(self) -> tuple[int, ...]:
        return (self.d, self.h, self.w) if self.d else (self.h, self.w)

    def slices(self) -> tuple[slice, ...]:
        return tuple(slice(s, s + n) for s, n in zip(self.starts, self.sides, strict=True))

    def box(self) -> list[int]:
        """The ledger's ``box``: ``[y, x, h, w]``, or ``[z, y, x, d, h, w]`` in a volume."""
        return [*self.starts, *self.sides]

    @classmethod
    def from_box(cls, item: int, box) -> Region:
        """The region of a ledger ``box`` (see :meth:`box`)."""
        if len(box) == 4:
            return cls(item, *box)
        z, y, x, d, h, w = box
        return cls(item, y, x, h, w, z, d)

    def iou(self, other: Region) -> float:
        """Intersection over union of the two boxes (0 for boxes of different images)."""
        if other.item != self.item:
            return 0.0
        inter = 1
        for a, n, b, m in zip(self.starts, self.sides, other.starts, other.sides, strict=True):
            inter *= max(min(a + n, b + m) - max(a, b), 0)
        return inter / (int(np.prod(self.sides)) + int(np.prod(other.sides)) - inter)


def window_grid(length: int, size: int, stride: int) -> np.ndarray:
    """Window starts along one axis: every ``stride`` pixels, plus the last window flush with the edge."""
    if size > length:
        raise ValueError(f"window of {size} px does not fit an image side of {length} px; use a smaller window")
    if stride < 1:
        raise ValueError(f"stride must be at least 1, got {stride}")
    starts = np.arange(0, length - size + 1, stride)
    return starts if starts[-1] == length - size else np.append(starts, length - size)


def window_sums(map_N_H_W, size: int, stride: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(sums [N, Y, X], ys [Y], xs [X])``: the map summed over the window at ``(ys[i], xs[j])``, for every
    window of side ``size`` on the ``stride`` grid, from a summed-area table in float64."""
    m = np.asarray(map_N_H_W, dtype=np.float64)
    if m.ndim != 3:
        raise ValueError(f"window_sums needs maps [N, H, W], got shape {m.shape}")
    ys, xs = window_grid(m.shape[1], size, stride), window_grid(m.shape[2], size, stride)
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    starts = np.stack([yy.ravel(), xx.ravel()], axis=1)
    sums = np.stack([box_sums(plane, starts, np.full(len(starts), size)) for plane in m])
    return sums.reshape(len(m), len(ys), len(xs)), ys, xs


def box_sums(map_S, starts_W_D, side_W) -> np.ndarray:
    """``[W]``: ``map_S`` (2-D or 3-D) summed over the cubes of side ``side_W[i]`` whose lowest corner is
    ``starts_W_D[i]``, from one summed-area (summed-volume) table in float64: 2^D look-ups per box."""
    m = np.asarray(map_S, dtype=np.float64)
    table = np.zeros([n + 1 for n in m.shape])
    inner = m
    for axis in range(m.ndim):
        inner = inner.cumsum(axis)
    table[(slice(1, None),) * m.ndim] = inner
    starts, side = np.asarray(starts_W_D, dtype=np.int64), np.asarray(side_W, dtype=np.int64)
    out = np.zeros(len(starts))
    for corner in itertools.product((0, 1), repeat=m.ndim):
        sign = -1.0 if (m.ndim - sum(corner)) % 2 else 1.0
        out += sign * table[tuple(starts[:, a] + side * corner[a] for a in range(m.ndim))]
    return out


def region_scores(map_N_H_W, size: int, stride: int, labelled_N_H_W=None,
                  labelled: str = "zero") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(scores [N, Y, X], ys, xs)``: window sums of the uncertainty map min-max normalised to [0, 1] over
    every candidate window (all equal: all 0). Labelled pixels (``labelled_N_H_W`` True) count as 0
    (``labelled="zero"``), or any window holding one gets ``-inf`` (``labelled="exclude"``, never picked)."""
    if labelled not in LABELLED_MODES:
        raise ValueError(f"labelled must be one of {', '.join(LABELLED_MODES)}, got {labelled!r}")
    m = np.asarray(map_N_H_W, dtype=np.float64)
    done = None if labelled_N_H_W is None else np.asarray(labelled_N_H_W, dtype=bool)
    if done is not None and done.shape != m.shape:
        raise ValueError(f"labelled mask {done.shape} and maps {m.shape} differ in shape")
    if done is not None:
        m = np.where(done, 0.0, m)
    sums, ys, xs = window_sums(m, size, stride)
    if done is not None and labelled == "exclude":
        sums[window_sums(done, size, stride)[0] > 0] = -np.inf
    return minmax(sums.ravel(), np.isfinite(sums.ravel())).reshape(sums.shape), ys, xs


def select_regions(scores_N_Y_X, ys, xs, size: int, k: int, iou_max: float = 0.0) -> list[Region]:
    """Up to ``k`` regions, best score first, each with IoU ≤ ``iou_max`` to every kept region of its image
    (greedy non-maximum suppression; ties: lower item, then row, then column). ``-inf`` windows never."""
    s = np.asarray(scores_N_Y_X, dtype=np.float64)
    n, i, j = np.unravel_index(np.arange(s.size), s.shape)
    windows = Windows(n, np.asarray(ys)[i], np.asarray(xs)[j], np.full(s.size, size))
    return [windows.region(w) for w in nms(windows, s.ravel(), k, iou_max)]


@dataclass(frozen=True)
class Windows:
    """Candidate windows as flat arrays ``[W]``: the item (position among the candidates), the top-left
    corner and the side of each (square; cubes in volumes, whose first corner coordinate is ``z``)."""

    item: np.ndarray
    y: np.ndarray
    x: np.ndarray
    side: np.ndarray
    z: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.item)

    def region(self, w: int) -> Region:
        side = int(self.side[w])
        if self.z is None:
            return Region(int(self.item[w]), int(self.y[w]), int(self.x[w]), side, side)
        return Region(int(self.item[w]), int(self.y[w]), int(self.x[w]), side, side, int(self.z[w]), side)

    def starts(self) -> np.ndarray:
        """``[W, D]`` the lowest corner of each window (``z, y, x`` in volumes)."""
        axes = [self.y, self.x] if self.z is None else [self.z, self.y, self.x]
        return np.stack(axes, axis=1)

    def sums(self, maps) -> np.ndarray:
        """``[W]`` each window's sum of its image's map (``maps``: one ``[H, W]`` or ``[D, H, W]`` per
        candidate), from one summed-area table per image (:func:`box_sums`)."""
        out, starts = np.zeros(len(self)), self.starts()
        for n in np.unique(self.item):
            at = np.flatnonzero(self.item == n)
            out[at] = box_sums(maps[n], starts[at], self.side[at])
        return out


def candidate_windows(shapes, size: int, stride: int = 0, labelled=None,
                      mode: str = "exclude") -> tuple[Windows, np.ndarray]:
    """Every window of every candidate image and which of them may be picked.

    Args:
        shapes: ``(H, W)`` of each candidate image, or ``(D, H, W)`` of each volume (cubic windows).
        size: the window side; an image smaller than it gets one window of its shorter side.
        stride: grid step (0: half the side).
        labelled: per image a bool ``[H, W]`` (``[D, H, W]``) of already labelled pixels (None: none are).
        mode: ``exclude``: a window holding any labelled pixel may not be picked; ``zero``: only windows
            with no unlabelled pixel left are barred (their labelled pixels should count 0 in the map).

    Returns:
        ``(windows, allowed [W] bool)``.
    """
    if mode not in LABELLED_MODES:
        raise ValueError(f"labelled must be one of {', '.join(LABELLED_MODES)}, got {mode!r}")
    dims = {len(shape) for shape in shapes}
    if not dims <= {2, 3} or len(dims) > 1:
        raise ValueError(f"region queries pick squares of 2-D images or cubes of 3-D volumes, all of one kind; "
                         f"got candidates of {sorted(dims)} dimensions")
    if size < 1:
        raise ValueError(f"region size must be at least 1 pixel, got {size}")
    ndim = dims.pop() if dims else 2
    items, starts, sides = [np.zeros(0, np.int64)], [np.zeros((0, ndim), np.int64)], [np.zeros(0, np.int64)]
    for n, shape in enumerate(shapes):
        side = min(size, *shape)
        step = stride or max(side // 2, 1)
        grid = np.meshgrid(*(window_grid(length, side, step) for length in shape), indexing="ij")
        starts.append(np.stack([g.ravel() for g in grid], axis=1))
        items.append(np.full(grid[0].size, n))
        sides.append(np.full(grid[0].size, side))
    item, start, side = (np.concatenate(a).astype(np.int64) for a in (items, starts, sides))
    windows = Windows(item, start[:, -2], start[:, -1], side, start[:, 0] if ndim == 3 else None)
    if labelled is None:
        return windows, np.ones(len(windows), bool)
    done = windows.sums([np.asarray(m, dtype=np.float64) for m in labelled])
    allowed = done == 0 if mode == "exclude" else done < windows.side.astype(np.float64) ** ndim
    return windows, allowed


def minmax(values: np.ndarray, allowed: np.ndarray | None = None) -> np.ndarray:
    """``values`` scaled to [0, 1] over the allowed ones (all equal: 0); the others ``-inf``."""
    v = np.asarray(values, dtype=np.float64).copy()
    ok = np.ones(len(v), bool) if allowed is None else np.asarray(allowed, bool)
    if ok.any():
        lo, hi = v[ok].min(), v[ok].max()
        v[ok] = (v[ok] - lo) / (hi - lo) if hi > lo else 0.0
    v[~ok] = -np.inf
    return v


def nms(windows: Windows, scores_W, k: int, iou_max: float = 0.0) -> list[int]:
    """Positions of up to ``k`` windows, best score first, each with IoU ≤ ``iou_max`` to every window
    already kept in its image (greedy non-maximum suppression; ties keep the earlier window). Windows
    scoring ``-inf`` or NaN are never kept."""
    if not 0.0 <= iou_max < 1.0:
        raise ValueError(f"iou_max must be in [0, 1), got {iou_max}")
    s = np.asarray(scores_W, dtype=np.float64)
    kept: dict[int, list[Region]] = {}
    out: list[int] = []
    for w in np.argsort(-s, kind="stable"):
        if len(out) >= k or not np.isfinite(s[w]):
            break
        box = windows.region(w)
        if all(box.iou(other) <= iou_max for other in kept.get(box.item, [])):
            kept.setdefault(box.item, []).append(box)
            out.append(int(w))
    return out


def click_cost(mask_H_W, region: Region | None = None, tolerance: float = 1.0, background: int = 0,
               ignore: int = 255) -> int:
    """Clicks to outline ``region`` of a label map: per connected component (4-connected) of each class
    other than ``background`` and ``ignore``, the vertices of its outer contour simplified by
    Douglas–Peucker at ``tolerance`` pixels (at least 3), plus 1 per component (closing it). Holes are not
    outlined. Contours run through pixel-edge midpoints (marching squares), so a filled square costs 4 + 1.
    A volume ``[D, H, W]`` is outlined slice by slice, as annotators label volumes: the sum over its D slices
    (a 3-D ``region`` crops the volume first; a 2-D one applies to every slice)."""
    from skimage.measure import approximate_polygon, find_contours

    mask = np.asarray(mask_H_W)
    if region is not None and region.d:
        if mask.ndim != 3:
            raise ValueError(f"a 3-D region {region.box()} needs a [D, H, W] label volume, got shape {mask.shape}")
        return click_cost(mask[region.slices()], None, tolerance, background, ignore)
    if mask.ndim == 3:
        return sum(click_cost(plane, region, tolerance, background, ignore) for plane in mask)
    if mask.ndim != 2:
        raise ValueError(f"click_cost outlines 2-D label maps or [D, H, W] volumes, got shape {mask.shape}")
    if region is not None:
        mask = mask[region.slices()]
    clicks = 0
    for c in np.unique(mask):
        if c in (background, ignore):
            continue
        components, count = ndimage.label(mask == c)
        for i in range(1, count + 1):
            inside = np.pad(components == i, 1).astype(np.float64)
            contours = find_contours(inside, 0.5)
            outer = max(contours, key=_polygon_area)  # holes are the smaller contours
            poly = approximate_polygon(outer, tolerance=tolerance)
            vertices = len(poly) - 1 if np.allclose(poly[0], poly[-1]) else len(poly)
            clicks += max(vertices, 3) + 1  # a polygon has at least 3 vertices, however small the component
    return clicks


def _polygon_area(contour: np.ndarray) -> float:
    y, x = contour[:, 0], contour[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))
