"""The object catalogue of the simulated tabletop: colours x shapes x sizes.

Kept free of MuJoCo so task sampling and phrase handling can be used (and tested)
without a physics engine. Every object is named by the phrase a person would use,
``"<colour> <shape noun>"`` ("red block", "blue cup"), because that phrase is what the
perception stack has to ground; a scene never holds two objects with the same phrase.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Tuple

# RGBA values far apart in hue so a small segmentation model can separate them.
COLOURS: Dict[str, Tuple[float, float, float, float]] = {
    "red": (0.86, 0.08, 0.08, 1.0),
    "green": (0.10, 0.62, 0.16, 1.0),
    "blue": (0.08, 0.24, 0.88, 1.0),
    "yellow": (0.96, 0.86, 0.08, 1.0),
    "orange": (1.00, 0.48, 0.00, 1.0),
    "purple": (0.52, 0.14, 0.74, 1.0),
    "pink": (1.00, 0.45, 0.72, 1.0),
    "cyan": (0.08, 0.80, 0.84, 1.0),
}
DEFAULT_COLOURS: Tuple[str, ...] = ("red", "green", "blue", "yellow", "orange", "purple")

# Shape key -> noun used in commands. "block" is a cube, "cup" an upright solid cylinder,
# "ball" a sphere and "bar" an elongated box lying on the table.
SHAPES: Dict[str, str] = {"block": "block", "cup": "cup", "ball": "ball", "bar": "bar"}
DEFAULT_SHAPES: Tuple[str, ...] = ("block", "cup", "ball", "bar")

SIZES: Tuple[str, ...] = ("small", "medium", "large")

# Dimensions per shape and size, in metres. Everything fits the 10 cm gripper opening
# across its minor axis and is at most 8.5 cm tall (the fingers are 8 cm long).
_BLOCK_HALF = {"small": 0.020, "medium": 0.024, "large": 0.028}
_CUP_RADIUS_HALFHEIGHT = {"small": (0.021, 0.030), "medium": (0.025, 0.036), "large": (0.029, 0.042)}
_BALL_RADIUS = {"small": 0.021, "medium": 0.025, "large": 0.029}
_BAR_HALF = {"small": (0.050, 0.014, 0.014), "medium": (0.058, 0.015, 0.015), "large": (0.065, 0.016, 0.016)}

DENSITY = 400.0  # kg/m^3, light plastic: a 5 cm block weighs 50 g


@dataclass(frozen=True)
class ObjectSpec:
    """One graspable object: what it looks like and where it rests (x, y, yaw on the table)."""

    colour: str
    shape: str
    size: str = "medium"
    x: float = 0.5
    y: float = 0.0
    yaw: float = 0.0

    @property
    def name(self) -> str:
        """The phrase that names it, also the key of every world query."""
        return f"{self.colour} {SHAPES[self.shape]}"

    @property
    def body_name(self) -> str:
        return body_name(self.name)

    @property
    def rgba(self) -> Tuple[float, float, float, float]:
        return COLOURS[self.colour]

    @property
    def half_extents(self) -> Tuple[float, float, float]:
        """Half sizes of the bounding box in the object frame (x = major axis)."""
        if self.shape == "block":
            h = _BLOCK_HALF[self.size]
            return (h, h, h)
        if self.shape == "cup":
            r, hh = _CUP_RADIUS_HALFHEIGHT[self.size]
            return (r, r, hh)
        if self.shape == "ball":
            r = _BALL_RADIUS[self.size]
            return (r, r, r)
        if self.shape == "bar":
            return _BAR_HALF[self.size]
        raise ValueError(f"unknown shape '{self.shape}' (known: {sorted(SHAPES)})")

    @property
    def half_height(self) -> float:
        """Height of the centre above the table when resting."""
        return self.half_extents[2]

    @property
    def radius(self) -> float:
        """Radius of the footprint's bounding circle, for non-overlapping placement."""
        hx, hy, _ = self.half_extents
        if self.shape in ("cup", "ball"):
            return hx
        return math.hypot(hx, hy)

    @property
    def mass(self) -> float:
        hx, hy, hz = self.half_extents
        if self.shape == "cup":
            volume = math.pi * hx * hx * 2 * hz
        elif self.shape == "ball":
            volume = 4.0 / 3.0 * math.pi * hx ** 3
        else:
            volume = 8 * hx * hy * hz
        return DENSITY * volume

    def mjcf_geom(self) -> str:
        """The MJCF geom of this object (friction and contact settings in the scene defaults)."""
        rgba = " ".join(f"{c:.3f}" for c in self.rgba)
        hx, hy, hz = self.half_extents
        name = f'name="{self.body_name}_geom"'
        if self.shape in ("block", "bar"):
            return f'<geom {name} class="object" type="box" size="{hx:.4f} {hy:.4f} {hz:.4f}" rgba="{rgba}"/>'
        if self.shape == "cup":
            return f'<geom {name} class="object" type="cylinder" size="{hx:.4f} {hz:.4f}" rgba="{rgba}"/>'
        return f'<geom {name} class="object" type="sphere" size="{hx:.4f}" rgba="{rgba}"/>'


def shape_sizes(shape: str) -> Tuple[Tuple[float, float], Tuple[float, float]]:
    """(height, length) ranges in metres of a shape's objects over every size, resting as placed:
    the top's height above the table and the footprint's longest extent seen from any side (a
    square's runs from its side to its diagonal). What ``verify.object_sizes`` says of this catalogue.

    Raises:
        ValueError: an unknown shape.
    """
    heights, lengths = [], []
    for size in SIZES:
        hx, hy, hz = ObjectSpec("red", shape, size).half_extents
        heights.append(2 * hz)
        lengths.extend([2 * hx, 2 * math.hypot(hx, hy) if shape == "block" else 2 * hx])
    return (min(heights), max(heights)), (min(lengths), max(lengths))


def body_name(phrase: str) -> str:
    """MJCF-safe body name of a phrase: ``"red block"`` -> ``"red_block"``."""
    return "_".join(phrase.strip().lower().split())


def phrase_of(name: str) -> str:
    """The phrase of a body name or phrase: ``"red_block"`` -> ``"red block"``."""
    return " ".join(name.strip().lower().replace("_", " ").split())
