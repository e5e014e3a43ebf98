"""How big is the object? Its height and footprint measured from depth, checked against known sizes.

The verifier's masks and CLIP's vote come from the models that grounded the goal; when they call
a red cup "the red bar", they agree with their own mistake. Depth is a second sensor they never
read: a bar lies 3 cm high and 12 cm long, a cup stands 7 cm tall. Given the sizes of the
objects a robot works with (``verify.object_sizes``: per noun, the height of its top above the
table and the longest side of its footprint), an acted-on object whose measured size fits none
of its noun's range is the wrong object::

    mask ──► every pixel above the table (depth) ──► the connected blob the mask lies on
                                                        ├─ height: 95th percentile of its heights
                                                        └─ length: its footprint's extent along
                                                           its major axis (2nd-98th percentile)

The blob, not the mask, is measured: a compact CLIPSeg lights a piece of the object (or a
piece of the look-alike), while depth outlines the whole body. Objects that touch form one blob
and measure as one; that is a limit of the rule (clutter), said in the README.

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

__all__ = ["MeasuredSize", "SizeRange", "parse_object_sizes", "size_range_for", "measure_object"]

Range = Tuple[float, float]


@dataclass(frozen=True)
class MeasuredSize:
    """What depth says of one object: metres, heights above the table plane."""

    height_m: float  # its top above the table
    length_m: float  # its footprint's longest extent
    pixels: int  # how many pixels the measured blob has

    def to_dict(self) -> Dict[str, float]:
        return {"height_m": round(self.height_m, 4), "length_m": round(self.length_m, 4), "pixels": self.pixels}


@dataclass(frozen=True)
class SizeRange:
    """The sizes a noun's objects come in ("cup": 6.0-8.4 cm tall, 4.2-5.8 cm long)."""

    noun: str
    height_m: Range
    length_m: Range

    def excess(self, size: MeasuredSize, height_tolerance_m: float = 0.0, length_tolerance_m: float = 0.0) -> float:
        """How far (metres) the measured size lies outside this range widened by the tolerances, the
        larger of the two dimensions; 0 when it fits."""
        return max(_outside(size.height_m, self.height_m) - height_tolerance_m,
                   _outside(size.length_m, self.length_m) - length_tolerance_m, 0.0)

    def to_dict(self) -> Dict[str, object]:
        return {"noun": self.noun, "height_m": list(self.height_m), "length_m": list(self.length_m)}


def parse_object_sizes(items: Sequence[str]) -> Dict[str, SizeRange]:
    """``["cup 0.060 0.084 0.042 0.058", ...]`` (noun, height min/max, length min/max, metres) -> ranges;
    blank entries are skipped.

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
        try:
            numbers = [float(w) for w in words[-4:]]
        except ValueError:
            numbers = []
        noun = " ".join(words[:-4]).strip().lower()
        if len(words) < 5 or len(numbers) != 4 or not noun:
            raise ValueError(f"'{item}': expected 'NOUN HEIGHT_MIN HEIGHT_MAX LENGTH_MIN LENGTH_MAX' (metres)")
        h_lo, h_hi, l_lo, l_hi = numbers
        if not all(np.isfinite(numbers)) or min(numbers) < 0 or h_lo > h_hi or l_lo > l_hi:
            raise ValueError(f"'{item}': sizes must be finite, >= 0, each minimum at most its maximum")
        if noun in out:
            raise ValueError(f"'{item}': '{noun}' has a size already")
        out[noun] = SizeRange(noun, (h_lo, h_hi), (l_lo, l_hi))
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
                   above_table_m: float) -> Optional[MeasuredSize]:
    """The height and length of the blob of above-table pixels that ``mask`` lies on (module docstring).

    ``above_table_m``: a pixel this high above the table belongs to an object (more than the
    depth noise). None when the mask touches no such pixel (nothing measurable: no depth there,
    or a mask on the bare table).
    """
    measured = _heights(depth, intrinsics, camera_to_base, config)
    if measured is None:
        return None
    heights, points = measured
    above = (heights > above_table_m).astype(np.uint8)
    _, labels = cv2.connectedComponents(above, connectivity=8)
    on = labels[np.asarray(mask, dtype=bool) & (above > 0)]
    if on.size == 0:
        return None
    ids, counts = np.unique(on, return_counts=True)
    blob = labels == ids[np.argmax(counts)]
    xy = points[blob][:, :2]
    height = float(np.percentile(heights[blob], 95))
    length = 0.0
    if len(xy) >= 3:
        centred = xy - xy.mean(axis=0)
        _, axes = np.linalg.eigh(np.cov(centred.T))
        along = centred @ axes[:, -1]  # the major axis (largest eigenvalue last)
        length = float(np.percentile(along, 98) - np.percentile(along, 2))
    return MeasuredSize(height, length, int(blob.sum()))


def _heights(depth: np.ndarray, intrinsics: Intrinsics, camera_to_base: geometry.RigidTransform,
             config: GeometryConfig) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    """Every pixel's height above the table plane (-inf where depth is invalid) and its base-frame
    point; None for a degenerate table normal."""
    plane = geometry.table_plane(config.table_normal, config.table_height)
    if plane is None:
        return None
    z = geometry.depth_to_metres(np.asarray(depth), config.depth_scale, config.depth_min,
                                 config.depth_max).astype(np.float64)
    h, w = z.shape
    vs, us = np.mgrid[0:h, 0:w]
    ok = np.isfinite(z)
    points = np.zeros((h, w, 3))
    points[ok] = camera_to_base.apply(geometry.backproject(us[ok], vs[ok], z[ok], intrinsics))
    normal, offset = plane
    heights = np.full((h, w), -np.inf)
    heights[ok] = points[ok] @ normal - offset
    return heights, points


def _outside(value: float, bounds: Range) -> float:
    return max(bounds[0] - value, value - bounds[1], 0.0)
