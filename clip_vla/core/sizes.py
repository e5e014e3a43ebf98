"""How big is the object? Its height and footprint measured from depth, checked against known sizes.

The verifier's masks and CLIP's vote come from the models that grounded the goal; when they call
a red cup "the red bar", they agree with their own mistake. Depth is a second sensor they never
read: a bar lies 3 cm high and 12 cm long, a cup stands 7 cm tall. Given the sizes of the
objects a robot works with (``verify.object_sizes``: per noun, the height of its top above the
table and the longest side of its footprint), an acted-on object whose measured size fits none
of its noun's range, and another noun's, is the wrong object (``perception.verify``)::

    mask ──► every pixel above the table (depth) ──► the connected blob the mask lies on
                                                        ├─ height: 95th percentile of its heights
                                                        ├─ length: its footprint's extent along
                                                        │  its major axis (2nd-98th percentile)
                                                        └─ top: how much of the footprint lies
                                                           within 5 mm of the height (flat | round)

The blob, not the mask, is measured: a compact CLIPSeg lights a piece of the object (or a
piece of the look-alike), while depth outlines the whole body. Neighbouring pixels join only
where their 3D points are close (``surface_step_m``), so objects apart on the table that touch
in the image stay apart; objects that really touch, with surfaces of one height, form one blob
and measure as one, a limit of the rule (clutter) said in the README.

ROS-free: numpy and cv2 only.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Mapping, Optional, Sequence, Tuple

import cv2
import numpy as np

from clip_vla.core import geometry
from clip_vla.core.config import GeometryConfig
from clip_vla.core.types import Intrinsics

__all__ = ["MeasuredSize", "SizeRange", "parse_object_sizes", "size_range_for", "measure_object", "bodies_at",
           "on_objects", "TOPS"]

Range = Tuple[float, float]
SURFACE_STEP_M = 0.015  # neighbouring pixels farther apart than this in 3D lie on different objects
WINDOW_GROWTH = 1.0  # the measured window: the mask's box grown by its side each way ...
WINDOW_MIN_PX = 64  # ... and by at least this many pixels (a 13 cm bar is ~80 px long from 0.8 m)
TOPS = ("flat", "round")  # a noun's top: flat (block, cup, bar, box) or round (ball, fruit)
TOP_CAP_M = 0.005  # the top: the blob's points within this of its height ...
ROUND_TOP_MAX = 0.8  # ... covering at most this fraction of its footprint's area is round: on rendered
#   scenes a ball's 5 mm cap covers 0.38-0.57 of it, a block's, cup's or bar's top 0.98-1.0
SHAPE_MISMATCH_M = 0.01  # a top of the other shape counts as this far outside the range (metres)


@dataclass(frozen=True)
class MeasuredSize:
    """What depth says of one object: metres, heights above the table plane."""

    height_m: float  # its top above the table
    length_m: float  # its footprint's longest extent
    pixels: int  # how many pixels the measured blob has
    top_fraction: Optional[float] = None  # the area within TOP_CAP_M of its height over its footprint's

    @property
    def top(self) -> Optional[str]:
        """"round" (a ball: only a cap near the height) or "flat"; None when not measured."""
        if self.top_fraction is None:
            return None
        return "round" if self.top_fraction <= ROUND_TOP_MAX else "flat"

    def to_dict(self) -> Dict[str, object]:
        out: Dict[str, object] = {"height_m": round(self.height_m, 4), "length_m": round(self.length_m, 4),
                                  "pixels": self.pixels}
        if self.top_fraction is not None:
            out.update(top=self.top, top_fraction=round(self.top_fraction, 3))
        return out


@dataclass(frozen=True)
class SizeRange:
    """The sizes a noun's objects come in ("cup": 6.0-8.4 cm tall, 4.2-5.8 cm long)."""

    noun: str
    height_m: Range
    length_m: Range
    top: Optional[str] = None  # "flat" | "round" | None (not checked)

    def excess(self, size: MeasuredSize, height_tolerance_m: float = 0.0, length_tolerance_m: float = 0.0) -> float:
        """How far (metres) the measured size lies outside this range widened by the tolerances, the
        larger of the two dimensions, and at least ``SHAPE_MISMATCH_M`` when its top is of the other
        shape; 0 when it fits."""
        metric = max(_outside(size.height_m, self.height_m) - height_tolerance_m,
                     _outside(size.length_m, self.length_m) - length_tolerance_m, 0.0)
        other_top = self.top is not None and size.top is not None and size.top != self.top
        return max(metric, SHAPE_MISMATCH_M) if other_top else metric

    def to_dict(self) -> Dict[str, object]:
        out: Dict[str, object] = {"noun": self.noun, "height_m": list(self.height_m), "length_m": list(self.length_m)}
        if self.top is not None:
            out["top"] = self.top
        return out


def parse_object_sizes(items: Sequence[str]) -> Dict[str, SizeRange]:
    """``["cup 0.060 0.084 0.042 0.058 flat", ...]`` (noun, height min/max, length min/max, metres, and
    optionally the top's shape, ``TOPS``) -> ranges; blank entries are skipped.

    Why strings: a ROS parameter cannot hold a mapping, and a list of strings can.

    Raises:
        ValueError: an entry without a noun and four numbers, a minimum above its maximum, a
            negative size, or a noun given twice (the message quotes the entry).
    """
    out: Dict[str, SizeRange] = {}
    for item in items:
        words = str(item).split()
        if not words:  # [""]: ROS's spelling of an empty list
            continue
        top = words.pop().lower() if words[-1].lower() in TOPS else None
        try:
            numbers = [float(w) for w in words[-4:]]
        except ValueError:
            numbers = []
        noun = " ".join(words[:-4]).strip().lower()
        if len(words) < 5 or len(numbers) != 4 or not noun:
            raise ValueError(f"'{item}': expected 'NOUN HEIGHT_MIN HEIGHT_MAX LENGTH_MIN LENGTH_MAX [flat|round]' "
                             "(metres)")
        h_lo, h_hi, l_lo, l_hi = numbers
        if not all(np.isfinite(numbers)) or min(numbers) < 0 or h_lo > h_hi or l_lo > l_hi:
            raise ValueError(f"'{item}': sizes must be finite, >= 0, each minimum at most its maximum")
        if noun in out:
            raise ValueError(f"'{item}': '{noun}' has a size already")
        out[noun] = SizeRange(noun, (h_lo, h_hi), (l_lo, l_hi), top)
    return out


def size_range_for(name: str, ranges: Mapping[str, SizeRange]) -> Optional[SizeRange]:
    """The range of the longest noun ``name`` ends with ("red cup" -> "cup"); None when none does."""
    words = str(name).lower().split()
    for start in range(len(words)):
        found = ranges.get(" ".join(words[start:]))
        if found is not None:
            return found
    return None


def measure_object(mask: np.ndarray, depth: np.ndarray, intrinsics: Intrinsics,
                   camera_to_base: geometry.RigidTransform, config: GeometryConfig,
                   above_table_m: float, surface_step_m: float = SURFACE_STEP_M,
                   at_xy: Optional[Sequence[float]] = None) -> Optional[MeasuredSize]:
    """The height and length of the blob of above-table pixels that ``mask`` lies on (module docstring).

    ``above_table_m``: a pixel this high above the table belongs to an object (more than the
    depth noise); ``surface_step_m``: neighbouring pixels whose points lie farther apart are on
    different objects (``_bodies``). A mask over several blobs measures the one with most of its
    pixels, or with ``at_xy`` (base frame: where the gripper acted) the one reaching closest to
    it: a mask lighting a bar and the top of the cup in front of it, with the goal on the cup,
    is about the cup. None when the mask touches no such pixel (nothing measurable: no depth
    there, or a mask on the bare table).
    """
    mask = np.asarray(mask, dtype=bool)
    window = _window(mask)
    if window is None:
        return None
    (v0, v1), (u0, u1) = window
    crop = Intrinsics(intrinsics.fx, intrinsics.fy, intrinsics.cx - u0, intrinsics.cy - v0)
    measured = _heights(np.asarray(depth)[v0:v1, u0:u1], crop, camera_to_base, config)
    if measured is None:
        return None
    heights, points = measured
    labels = _bodies(heights, points, above_table_m, surface_step_m)
    on = labels[mask[v0:v1, u0:u1] & (labels > 0)]
    if on.size == 0:
        return None
    ids, counts = np.unique(on, return_counts=True)
    blob = labels == (ids[np.argmax(counts)] if at_xy is None else _closest(labels, ids, points, at_xy))
    xy = points[blob][:, :2]
    height = float(np.percentile(heights[blob], 95))
    length, top = 0.0, None
    if len(xy) >= 3:
        centred = xy - xy.mean(axis=0)
        _, axes = np.linalg.eigh(np.cov(centred.T))
        along = centred @ axes[:, -1]  # the major axis (largest eigenvalue last)
        length = float(np.percentile(along, 98) - np.percentile(along, 2))
        footprint = _hull_area(xy)
        if footprint > 0:
            top = _hull_area(xy[heights[blob] >= height - TOP_CAP_M]) / footprint
    return MeasuredSize(height, length, int(blob.sum()), top)


def bodies_at(points_xy: Sequence[Sequence[float]], shape: Tuple[int, int], intrinsics: Intrinsics,
              camera_to_base: geometry.RigidTransform, config: GeometryConfig, above_table_m: float,
              radius_m: float, depth: Optional[np.ndarray] = None,
              surface_step_m: float = SURFACE_STEP_M) -> np.ndarray:
    """HxW mask of the objects resting at ``points_xy`` (base frame): with depth, every blob of
    above-table pixels with a pixel within ``radius_m`` of a point (its whole body, however far it
    reaches); without depth, or where no blob is that close, the pixels within ``radius_m`` on the
    table plane. Why: to set aside an object the verifier refuted, all of it, when the step is
    grounded again (``PreparedCommand.avoid_xy``)."""
    measured = None if depth is None else _heights(np.asarray(depth), intrinsics, camera_to_base, config)
    points = measured[1] if measured is not None else geometry.pixel_points(shape, intrinsics, camera_to_base,
                                                                            config)
    near = np.zeros(shape, dtype=bool)
    for x, y in points_xy:
        with np.errstate(invalid="ignore"):
            near |= np.hypot(points[..., 0] - float(x), points[..., 1] - float(y)) <= radius_m
    if measured is None:
        return near
    labels = _bodies(measured[0], measured[1], above_table_m, surface_step_m)
    touched = np.unique(labels[near & (labels > 0)])
    return near | np.isin(labels, touched[touched > 0])


def on_objects(depth: np.ndarray, intrinsics: Intrinsics, camera_to_base: geometry.RigidTransform,
               config: GeometryConfig, above_table_m: float) -> Optional[np.ndarray]:
    """HxW bool: the pixels on an object, higher than ``above_table_m`` above the table; None for a
    degenerate table normal. Why: where an object stood before a step, a push did not put one."""
    measured = _heights(np.asarray(depth), intrinsics, camera_to_base, config)
    return None if measured is None else measured[0] > above_table_m


def _bodies(heights: np.ndarray, points: np.ndarray, above_table_m: float, surface_step_m: float) -> np.ndarray:
    """HxW labels (0: none) of the objects: pixels above the table, connected where neighbouring
    pixels' points are within ``surface_step_m`` of each other. Why the step: two objects apart on
    the table can touch in the image (a bar in front of the bowl); their surfaces do not."""
    above = heights > above_table_m
    step = np.zeros(above.shape, dtype=bool)
    with np.errstate(invalid="ignore"):  # a step between two object pixels (the table's edge is no step)
        right = (np.linalg.norm(points[:, 1:] - points[:, :-1], axis=-1) > surface_step_m) \
            & above[:, 1:] & above[:, :-1]
        down = (np.linalg.norm(points[1:] - points[:-1], axis=-1) > surface_step_m) & above[1:] & above[:-1]
    step[:, 1:] |= right
    step[:, :-1] |= right
    step[1:] |= down
    step[:-1] |= down
    _, labels = cv2.connectedComponents((above & ~step).astype(np.uint8), connectivity=4)
    return labels


def _hull_area(xy: np.ndarray) -> float:
    """The area (m^2) of the convex hull of base-frame (x, y) points; 0 for fewer than three."""
    if len(xy) < 3:
        return 0.0
    return float(cv2.contourArea(cv2.convexHull(xy.astype(np.float32).reshape(-1, 1, 2))))


def _closest(labels: np.ndarray, ids: np.ndarray, points: np.ndarray, at_xy: Sequence[float]) -> int:
    """The label among ``ids`` with a pixel whose point lies closest (xy) to ``at_xy``."""
    with np.errstate(invalid="ignore"):
        distance = np.hypot(points[..., 0] - float(at_xy[0]), points[..., 1] - float(at_xy[1]))
    return int(min(ids, key=lambda i: float(np.nanmin(distance[labels == i]))))


def _window(mask: np.ndarray) -> Optional[Tuple[Tuple[int, int], Tuple[int, int]]]:
    """((v0, v1), (u0, u1)): the mask's bounding box grown by ``WINDOW_GROWTH`` of its side (at least
    ``WINDOW_MIN_PX``) each way, inside the image; None for an empty mask. Why: the body may reach
    well past a mask that lit a piece of it, but not across the image, and every pixel costs."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    h, w = mask.shape
    grow = max(WINDOW_MIN_PX, int(WINDOW_GROWTH * max(rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1)))
    return ((max(0, int(rows[0]) - grow), min(h, int(rows[-1]) + 1 + grow)),
            (max(0, int(cols[0]) - grow), min(w, int(cols[-1]) + 1 + grow)))


def _heights(depth: np.ndarray, intrinsics: Intrinsics, camera_to_base: geometry.RigidTransform,
             config: GeometryConfig) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    """Every pixel's height above the table plane (-inf without a depth reading) and its base-frame
    point; None for a degenerate table normal."""
    plane = geometry.table_plane(config.table_normal, config.table_height)
    if plane is None:
        return None
    depth = np.asarray(depth)
    points = geometry.pixel_points(depth.shape[:2], intrinsics, camera_to_base, config, depth)
    valid = np.isfinite(geometry.depth_to_metres(depth, config.depth_scale, config.depth_min, config.depth_max))
    normal, offset = plane
    heights = np.where(valid, points @ normal - offset, -np.inf)
    return heights, points


def _outside(value: float, bounds: Range) -> float:
    return max(bounds[0] - value, value - bounds[1], 0.0)
