"""The tabletop scene as MJCF generated from code: table, bowl, tray, objects, camera, gripper.

Generating the XML (rather than shipping a file) lets every episode have its own object
set and poses while the table, camera and gripper stay exactly the same. Fixtures (bowl,
tray) are static bodies: they are place targets, not things to manipulate.

Base frame = MuJoCo world: x forward from the robot base at the origin, y left, z up; the
table top is the plane z = 0.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import List, Tuple

import numpy as np

from clip_vla.sim.camera import CameraSpec
from clip_vla.sim.gripper import gripper_mjcf
from clip_vla.sim.objects import DEFAULT_COLOURS, DEFAULT_SHAPES, SIZES, ObjectSpec

TABLE_RGBA = (0.58, 0.55, 0.50, 1.0)
BOWL_RGBA = (0.95, 0.95, 0.93, 1.0)
TRAY_RGBA = (0.20, 0.22, 0.26, 1.0)


@dataclass(frozen=True)
class SceneConfig:
    """What an episode may contain and where: the catalogue, the table and the sampling regions."""

    colours: Tuple[str, ...] = DEFAULT_COLOURS
    shapes: Tuple[str, ...] = DEFAULT_SHAPES
    sizes: Tuple[str, ...] = SIZES
    table_x: Tuple[float, float] = (0.2, 0.9)
    table_y: Tuple[float, float] = (-0.4, 0.4)
    # Object centres are sampled here: inside the camera view and the gripper's reach.
    object_x: Tuple[float, float] = (0.33, 0.78)
    object_y: Tuple[float, float] = (-0.30, 0.30)
    # Fixture centres (bowl, tray) are sampled here.
    fixture_x: Tuple[float, float] = (0.36, 0.76)
    fixture_y: Tuple[float, float] = (-0.27, 0.27)
    clearance: float = 0.03  # free gap between footprint circles
    finger_clearance: float = 0.012  # free gap around the open finger pads of every object's top grasp
    with_bowl: bool = True
    with_tray: bool = True
    # Every distractor shares the target's colour or its shape (training's hard look-alikes). Off:
    # one shares its colour, one its shape, the rest are random (the benchmark's scenes).
    all_look_alikes: bool = False
    camera: CameraSpec = field(default_factory=CameraSpec)
    timestep: float = 0.002


@dataclass(frozen=True)
class FixtureSpec:
    """A static place target: ``"bowl"`` or ``"tray"``, its centre on the table and yaw."""

    kind: str
    x: float
    y: float
    yaw: float = 0.0

    # Bowl: flat base plus a ring of outward-tilted wall segments. Tray: plate plus a low rim.
    BOWL_BASE_RADIUS = 0.075
    BOWL_WALL_HEIGHT = 0.045
    BOWL_TILT = math.radians(25.0)
    BOWL_SEGMENTS = 18
    TRAY_HALF = (0.11, 0.075)
    TRAY_RIM_HEIGHT = 0.022
    WALL = 0.005  # wall thickness

    @property
    def name(self) -> str:
        return self.kind

    @property
    def body_name(self) -> str:
        return self.kind

    @property
    def rim_radius(self) -> float:
        return self.BOWL_BASE_RADIUS + self.BOWL_WALL_HEIGHT * math.tan(self.BOWL_TILT)

    @property
    def height(self) -> float:
        return self.BOWL_WALL_HEIGHT if self.kind == "bowl" else self.TRAY_RIM_HEIGHT

    @property
    def radius(self) -> float:
        """Bounding circle of the footprint."""
        if self.kind == "bowl":
            return self.rim_radius + self.WALL
        return math.hypot(*self.TRAY_HALF)

    def contains(self, x: float, y: float, margin: float = 0.0) -> bool:
        """Is (x, y) over the inside of the fixture (``margin`` metres in from its inner edge)?"""
        dx, dy = x - self.x, y - self.y
        if self.kind == "bowl":
            return math.hypot(dx, dy) <= self.rim_radius - margin
        c, s = math.cos(self.yaw), math.sin(self.yaw)
        lx, ly = c * dx + s * dy, -s * dx + c * dy
        hx, hy = self.TRAY_HALF
        return abs(lx) <= hx - self.WALL - margin and abs(ly) <= hy - self.WALL - margin

    def footprint_distance(self, x: float, y: float) -> float:
        """Distance from (x, y) to the fixture's outline (0 inside): for placement clearance."""
        dx, dy = x - self.x, y - self.y
        if self.kind == "bowl":
            return max(0.0, math.hypot(dx, dy) - self.radius)
        c, s = math.cos(self.yaw), math.sin(self.yaw)
        lx, ly = abs(c * dx + s * dy), abs(-s * dx + c * dy)
        hx, hy = self.TRAY_HALF
        return math.hypot(max(0.0, lx - hx), max(0.0, ly - hy))

    def mjcf(self) -> str:
        pos = f"{self.x:.5f} {self.y:.5f} 0"
        quat = _quat_str(_yaw_quat(self.yaw))
        rgba = " ".join(f"{c:.3f}" for c in (BOWL_RGBA if self.kind == "bowl" else TRAY_RGBA))
        geoms: List[str] = []
        w = self.WALL
        if self.kind == "bowl":
            rb, hgt, tilt, n = self.BOWL_BASE_RADIUS, self.BOWL_WALL_HEIGHT, self.BOWL_TILT, self.BOWL_SEGMENTS
            geoms.append(f'<geom name="bowl_base" class="fixture" type="cylinder" size="{rb + w:.4f} {w / 2:.4f}" '
                         f'pos="0 0 {w / 2:.4f}" rgba="{rgba}"/>')
            half_len = hgt / (2 * math.cos(tilt))
            r_mid = rb + w / 2 + (hgt / 2) * math.tan(tilt)
            half_width = math.pi * (r_mid + 0.01) / n * 1.05  # overlap so no gap opens between segments
            for i in range(n):
                a = 2 * math.pi * i / n
                q = _quat_mul(_yaw_quat(a), np.array([math.cos(tilt / 2), 0.0, math.sin(tilt / 2), 0.0]))
                geoms.append(
                    f'<geom name="bowl_wall{i}" class="fixture" type="box" '
                    f'size="{w / 2:.4f} {half_width:.4f} {half_len:.4f}" '
                    f'pos="{r_mid * math.cos(a):.5f} {r_mid * math.sin(a):.5f} {w + hgt / 2:.5f}" '
                    f'quat="{_quat_str(q)}" rgba="{rgba}"/>'
                )
        else:
            hx, hy = self.TRAY_HALF
            hr = self.TRAY_RIM_HEIGHT / 2
            geoms.append(f'<geom name="tray_plate" class="fixture" type="box" size="{hx:.4f} {hy:.4f} {w / 2:.4f}" '
                         f'pos="0 0 {w / 2:.4f}" rgba="{rgba}"/>')
            rims = ((hx - w / 2, 0, w / 2, hy), (-hx + w / 2, 0, w / 2, hy),
                    (0, hy - w / 2, hx, w / 2), (0, -hy + w / 2, hx, w / 2))
            for i, (px, py, sx, sy) in enumerate(rims):
                geoms.append(
                    f'<geom name="tray_rim{i}" class="fixture" type="box" size="{sx:.4f} {sy:.4f} {hr:.4f}" '
                    f'pos="{px:.4f} {py:.4f} {w + hr:.4f}" rgba="{rgba}"/>'
                )
        inner = "\n      ".join(geoms)
        return f'    <body name="{self.body_name}" pos="{pos}" quat="{quat}">\n      {inner}\n    </body>'


@dataclass(frozen=True)
class SceneLayout:
    """Everything that differs between episodes: the objects and fixtures with their poses."""

    objects: Tuple[ObjectSpec, ...]
    fixtures: Tuple[FixtureSpec, ...] = ()

    @property
    def names(self) -> List[str]:
        return [o.name for o in self.objects] + [f.name for f in self.fixtures]

    def object(self, name: str) -> ObjectSpec:
        for o in self.objects:
            if o.name == name:
                return o
        raise KeyError(f"no object '{name}' in the scene (objects: {[o.name for o in self.objects]})")

    def fixture(self, name: str) -> FixtureSpec:
        for f in self.fixtures:
            if f.name == name:
                return f
        raise KeyError(f"no fixture '{name}' in the scene (fixtures: {[f.name for f in self.fixtures]})")


def build_mjcf(layout: SceneLayout, config: SceneConfig) -> str:
    """The complete MJCF of one episode's scene."""
    cam = config.camera
    (x0, x1), (y0, y1) = config.table_x, config.table_y
    tx, ty, hx, hy = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
    leg_h = 0.36
    legs = "\n".join(
        f'      <geom class="visual" type="box" size="0.025 0.025 {leg_h:.3f}" '
        f'pos="{sx * (hx - 0.05):.3f} {sy * (hy - 0.05):.3f} {-0.04 - leg_h:.3f}" rgba="0.35 0.33 0.3 1"/>'
        for sx in (-1, 1) for sy in (-1, 1)
    )
    objects = "\n".join(
        f'    <body name="{o.body_name}" pos="{o.x:.5f} {o.y:.5f} {o.half_height + 1e-4:.5f}" '
        f'quat="{_quat_str(_yaw_quat(o.yaw))}">\n'
        f'      <freejoint name="{o.body_name}_joint"/>\n'
        f'      {o.mjcf_geom()}\n'
        f'      <inertial pos="0 0 0" mass="{o.mass:.5f}" diaginertia="{_inertia(o)}"/>\n'
        f"    </body>"
        for o in layout.objects
    )
    fixtures = "\n".join(f.mjcf() for f in layout.fixtures)
    gripper_body, gripper_extra = gripper_mjcf()
    table_rgba = " ".join(f"{c:.3f}" for c in TABLE_RGBA)
    off_w, off_h = max(cam.width, 1280), max(cam.height, 1024)
    return f"""<mujoco model="clip_vla_tabletop">
  <compiler angle="radian" autolimits="true"/>
  <option timestep="{config.timestep}" integrator="implicitfast" cone="elliptic" impratio="10"/>
  <visual>
    <global offwidth="{off_w}" offheight="{off_h}"/>
    <quality shadowsize="2048"/>
    <map znear="0.01" zfar="20"/>
    <headlight ambient="0.35 0.35 0.35" diffuse="0.45 0.45 0.45" specular="0.05 0.05 0.05"/>
  </visual>
  <default>
    <geom solref="0.01 1" solimp="0.95 0.99 0.001"/>
    <default class="object">
      <!-- condim 6: rolling friction, or a ball (or a cup on its side) never comes to rest -->
      <geom friction="0.6 0.01 0.002" condim="6"/>
    </default>
    <default class="fixture">
      <geom friction="0.6 0.005 0.0001"/>
    </default>
    <default class="pad">
      <geom friction="1.5 0.02 0.0001" condim="4" rgba="0.12 0.12 0.13 1"/>
    </default>
    <default class="gripper">
      <geom rgba="0.55 0.56 0.6 1" friction="0.5 0.005 0.0001"/>
    </default>
    <default class="visual">
      <geom contype="0" conaffinity="0"/>
    </default>
  </default>
  <worldbody>
    <light name="key" pos="0.6 -0.3 1.6" dir="-0.1 0.2 -1" diffuse="0.55 0.55 0.55" specular="0.1 0.1 0.1"
           castshadow="true"/>
    <light name="fill" pos="1.4 0.6 1.2" dir="-0.6 -0.3 -0.7" diffuse="0.2 0.2 0.2" castshadow="false"/>
    <geom name="floor" type="plane" size="3 3 0.05" pos="0 0 -0.76" rgba="0.30 0.30 0.32 1"/>
    <geom name="robot_pedestal" class="visual" type="cylinder" size="0.09 0.38" pos="0 0 -0.38" rgba="0.2 0.2 0.22 1"/>
    {cam.mjcf()}
    <body name="table" pos="{tx:.4f} {ty:.4f} 0">
      <geom name="table_top" type="box" size="{hx:.4f} {hy:.4f} 0.02" pos="0 0 -0.02" rgba="{table_rgba}"
            friction="0.5 0.005 0.0001"/>
{legs}
    </body>
{fixtures}
{objects}
{gripper_body}
  </worldbody>
{gripper_extra}
</mujoco>
"""


def _inertia(o: ObjectSpec) -> str:
    """Diagonal inertia of the solid primitive (explicit so the bar and the cup are exact)."""
    hx, hy, hz = o.half_extents
    m = o.mass
    if o.shape == "ball":
        i = 0.4 * m * hx * hx
        return f"{i:.4e} {i:.4e} {i:.4e}"
    if o.shape == "cup":
        ixy = m * (3 * hx * hx + 4 * hz * hz) / 12.0
        return f"{ixy:.4e} {ixy:.4e} {0.5 * m * hx * hx:.4e}"
    ix, iy, iz = m * (hy * hy + hz * hz) / 3.0, m * (hx * hx + hz * hz) / 3.0, m * (hx * hx + hy * hy) / 3.0
    return f"{ix:.4e} {iy:.4e} {iz:.4e}"


def _yaw_quat(yaw: float) -> np.ndarray:
    return np.array([math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2)])


def _quat_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    w1, x1, y1, z1 = a
    w2, x2, y2, z2 = b
    return np.array([
        w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2,
        w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
        w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2,
        w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2,
    ])


def _quat_str(q: np.ndarray) -> str:
    return " ".join(f"{v:.6f}" for v in q)
