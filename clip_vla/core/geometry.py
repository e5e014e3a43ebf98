"""From a mask in the image to a point (and a grasp yaw) in the robot's base frame.

Pure numpy/cv2 so every step is testable with hand-computed numbers.

Conventions (REP-103): metres and radians; the base frame is x forward, y left,
z up; the camera optical frame is z forward, x right, y down. A pixel (u, v) is
(column, row) with pixel centres at integer coordinates. ``camera_to_base``
maps optical-frame coordinates into the base frame: ``p_base = R @ p_cam + t``.

The default mounting in ``GeometryConfig`` (xyz = [0.5, 0, 0.8], rpy = [pi, 0, -pi/2])
is a camera 0.8 m above the table looking straight down, for which image +u
(right) is base -y, image +v (down) is base -x and the optical axis is base -z.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

from clip_vla.core.config import DEPTH_STATISTICS, ConfigError, GeometryConfig
from clip_vla.core.types import Intrinsics

ArrayLike = Union[np.ndarray, Sequence[float]]

# Hand-typed calibration matrices (0.7071...) are rarely orthonormal to machine precision.
_ORTHONORMAL_TOL = 1e-3
# Below this elongation the principal axis is noise: grasp_yaw returns 0.0.
MIN_ELONGATION = 1.15
# point_estimate="object_centre": at most this many mask pixels are back-projected (a regular
# subsample of bigger masks); fewer valid points than CENTRE_MIN_POINTS, or an object whose robust
# top is less than CENTRE_MIN_HEIGHT above the table, falls back to the surface point.
CENTRE_MAX_POINTS = 20000
CENTRE_MIN_POINTS = 10
CENTRE_MIN_HEIGHT = 0.005
# The top band whose in-plane extent gives the object's centre: heights >= top - max(frac*top, min).
CENTRE_BAND_FRACTION = 0.1
CENTRE_BAND_MIN = 0.005
# Robust top = this percentile of heights; robust extent = these percentiles along each in-plane axis.
CENTRE_TOP_PERCENTILE = 90.0
CENTRE_EXTENT_PERCENTILE = 2.0


class GeometryError(RuntimeError):
    """No 3D point can be computed for a detection (no usable depth and no table intersection)."""


# --------------------------------------------------------------------------- angles
def wrap_angle(a: Any) -> Any:
    """Wrap an angle (or an array of angles) into [-pi, pi); float in, float out."""
    arr = np.asarray(a, dtype=np.float64)
    out = np.mod(arr + np.pi, 2.0 * np.pi) - np.pi
    # np.mod of a tiny negative number can round to exactly 2*pi, i.e. +pi: fold it back.
    out = np.where(out >= np.pi, out - 2.0 * np.pi, out)
    if out.ndim == 0:
        return float(out)
    return out


def wrap_half_turn(a: Any) -> Any:
    """Wrap into [-pi/2, pi/2): the representative of an axis direction, which is symmetric by pi."""
    arr = np.asarray(a, dtype=np.float64)
    out = np.mod(arr + np.pi / 2.0, np.pi) - np.pi / 2.0
    out = np.where(out >= np.pi / 2.0, out - np.pi, out)
    if out.ndim == 0:
        return float(out)
    return out


# --------------------------------------------------------------------------- rigid transforms
def rot_x(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def rot_y(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def rot_z(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def rotation_to_quaternion(r: ArrayLike) -> Tuple[float, float, float, float]:
    """(x, y, z, w) of a 3x3 rotation matrix, unit length with w >= 0 (Shepperd's method).

    The one conversion used for TF messages, goal poses and markers, so a pose written to a
    bag and the one the node publishes agree to the last bit.
    """
    m = np.asarray(r, dtype=np.float64)
    trace = m[0, 0] + m[1, 1] + m[2, 2]
    if trace > 0:
        s = 2.0 * math.sqrt(trace + 1.0)
        w, x, y, z = 0.25 * s, (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s
    elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
        s = 2.0 * math.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2])
        w, x, y, z = (m[2, 1] - m[1, 2]) / s, 0.25 * s, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s
    elif m[1, 1] > m[2, 2]:
        s = 2.0 * math.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2])
        w, x, y, z = (m[0, 2] - m[2, 0]) / s, (m[0, 1] + m[1, 0]) / s, 0.25 * s, (m[1, 2] + m[2, 1]) / s
    else:
        s = 2.0 * math.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1])
        w, x, y, z = (m[1, 0] - m[0, 1]) / s, (m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, 0.25 * s
    q = np.array([x, y, z, w])
    q /= np.linalg.norm(q)
    if q[3] < 0:
        q = -q
    return float(q[0]), float(q[1]), float(q[2]), float(q[3])


def _vector3(values: ArrayLike, what: str) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if v.shape != (3,):
        raise ValueError(f"{what} must have 3 numbers, got {v.size}")
    if not np.all(np.isfinite(v)):
        raise ValueError(f"{what} must be finite, got {v.tolist()}")
    return v


def _frozen(a: np.ndarray) -> np.ndarray:
    a = np.array(a, dtype=np.float64, copy=True)
    a.setflags(write=False)
    return a


@dataclass(frozen=True, eq=False)
class RigidTransform:
    """A proper rigid transform ``p' = rotation @ p + translation`` (rotation orthonormal, det +1)."""

    rotation: np.ndarray
    translation: np.ndarray

    def __post_init__(self) -> None:
        r = np.asarray(self.rotation, dtype=np.float64)
        if r.shape != (3, 3):
            raise ValueError(f"rotation must be 3x3, got shape {r.shape}")
        t = _vector3(self.translation, "translation")
        object.__setattr__(self, "rotation", _frozen(r))
        object.__setattr__(self, "translation", _frozen(t))

    # ---- constructors
    @classmethod
    def identity(cls) -> "RigidTransform":
        return cls(np.eye(3), np.zeros(3))

    @classmethod
    def from_matrix(cls, m: ArrayLike) -> "RigidTransform":
        """From a 4x4 homogeneous matrix or its 16 row-major numbers (how ROS parameters carry it).

        The rotation block must be orthonormal with det +1 to within 1e-3 (hand-typed
        calibrations); it is then snapped to the nearest rotation so composition stays exact.
        """
        a = np.asarray(m, dtype=np.float64)
        if a.size != 16:
            raise ValueError(f"a rigid transform matrix needs 16 numbers (4x4), got {a.size}")
        a = a.reshape(4, 4)
        if not np.all(np.isfinite(a)):
            raise ValueError("transform matrix contains NaN or inf")
        if not np.allclose(a[3], [0.0, 0.0, 0.0, 1.0], atol=1e-9):
            raise ValueError(f"last row of a rigid transform must be [0, 0, 0, 1], got {a[3].tolist()}")
        r = a[:3, :3]
        err = float(np.abs(r @ r.T - np.eye(3)).max())
        if err > _ORTHONORMAL_TOL:
            raise ValueError(f"rotation block is not orthonormal (max |R R^T - I| = {err:.3g})")
        if np.linalg.det(r) < 0:
            raise ValueError("rotation block has det -1: it is a reflection, not a rotation")
        u, _, vt = np.linalg.svd(r)
        return cls(u @ vt, a[:3, 3])

    @classmethod
    def from_xyz_rpy(cls, xyz: ArrayLike, rpy: ArrayLike) -> "RigidTransform":
        """ROS/URDF convention: fixed-axis roll (x), pitch (y), yaw (z); R = Rz(yaw) Ry(pitch) Rx(roll)."""
        roll, pitch, yaw = _vector3(rpy, "rpy")
        return cls(rot_z(yaw) @ rot_y(pitch) @ rot_x(roll), _vector3(xyz, "xyz"))

    @classmethod
    def from_xyz_quat(cls, xyz: ArrayLike, quat_xyzw: ArrayLike) -> "RigidTransform":
        """From a translation and a quaternion in ROS order (x, y, z, w); the quaternion is normalised."""
        q = np.asarray(quat_xyzw, dtype=np.float64).reshape(-1)
        if q.shape != (4,) or not np.all(np.isfinite(q)):
            raise ValueError(f"quaternion must be 4 finite numbers (x, y, z, w), got {q.tolist()}")
        n = float(np.linalg.norm(q))
        if n < 1e-12:
            raise ValueError("quaternion has zero norm")
        x, y, z, w = q / n
        r = np.array(
            [
                [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
            ]
        )
        return cls(r, _vector3(xyz, "xyz"))

    # ---- algebra
    def matrix(self) -> np.ndarray:
        """4x4 homogeneous matrix."""
        m = np.eye(4)
        m[:3, :3] = self.rotation
        m[:3, 3] = self.translation
        return m

    def inverse(self) -> "RigidTransform":
        rt = self.rotation.T
        return RigidTransform(rt, -rt @ self.translation)

    def __matmul__(self, other: "RigidTransform") -> "RigidTransform":
        """Composition: ``(A @ B).apply(p) == A.apply(B.apply(p))``."""
        if not isinstance(other, RigidTransform):
            return NotImplemented
        return RigidTransform(self.rotation @ other.rotation, self.rotation @ other.translation + self.translation)

    def apply(self, points: ArrayLike) -> np.ndarray:
        """Transform a point (3,) or points (N, 3)."""
        p = np.asarray(points, dtype=np.float64)
        if p.shape[-1:] != (3,) or p.ndim > 2:
            raise ValueError(f"points must be (3,) or (N, 3), got shape {p.shape}")
        return p @ self.rotation.T + self.translation

    def apply_direction(self, v: ArrayLike) -> np.ndarray:
        """Rotate a direction (3,) or (N, 3); translation does not apply to directions."""
        d = np.asarray(v, dtype=np.float64)
        if d.shape[-1:] != (3,) or d.ndim > 2:
            raise ValueError(f"directions must be (3,) or (N, 3), got shape {d.shape}")
        return d @ self.rotation.T

    def __repr__(self) -> str:
        return f"RigidTransform(rotation={self.rotation.tolist()}, translation={self.translation.tolist()})"


# --------------------------------------------------------------------------- configuration
def camera_to_base_from_config(geometry: GeometryConfig) -> RigidTransform:
    """The camera->base transform: the 16-number matrix when set, else xyz + rpy.

    ``GeometryConfig`` has already checked the lengths (a matrix of ``[0.0]`` is ROS's "unset")
    and that the matrix is rigid.

    Raises:
        ConfigError: the transform cannot be built (a config changed by hand after validation).
    """
    try:
        if len(geometry.camera_to_base_matrix) == 16:
            return RigidTransform.from_matrix(geometry.camera_to_base_matrix)
        return RigidTransform.from_xyz_rpy(geometry.camera_to_base_xyz, geometry.camera_to_base_rpy)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"geometry camera_to_base: {exc}") from exc


def intrinsics_from_config(geometry: GeometryConfig) -> Optional[Intrinsics]:
    """Fallback intrinsics (fx, fy, cx, cy) when no CameraInfo arrives; None when unset (``[]``/``[0.0]``).

    ``GeometryConfig`` has already refused any other length and non-positive focal lengths.
    """
    values = geometry.intrinsics
    return Intrinsics(*values) if len(values) == 4 else None


# --------------------------------------------------------------------------- depth
def depth_to_metres(
    depth: np.ndarray, depth_scale: float = 0.001, depth_min: float = 0.05, depth_max: float = 10.0
) -> np.ndarray:
    """Float32 metres with every invalid reading as NaN, so statistics can simply skip NaN.

    uint16 (16UC1) is multiplied by ``depth_scale``; float (32FC1) is already metres.
    Zero (the driver's "no return"), NaN, inf and readings outside [depth_min, depth_max] are invalid.
    """
    depth = np.asarray(depth)
    # Scale and compare in float64 so a reading exactly at a limit is not lost to float32 rounding.
    if depth.dtype == np.uint16:
        metres = depth.astype(np.float64) * float(depth_scale)
    elif np.issubdtype(depth.dtype, np.floating):
        metres = depth.astype(np.float64)
    else:
        raise ValueError(f"depth must be uint16 (16UC1) or float (32FC1 metres), got dtype {depth.dtype}")
    with np.errstate(invalid="ignore"):
        invalid = ~np.isfinite(metres) | (metres <= 0) | (metres < depth_min) | (metres > depth_max)
    metres[invalid] = np.nan
    return metres.astype(np.float32)


def masked_values(image: np.ndarray, mask: Optional[np.ndarray]) -> np.ndarray:
    """The pixels of ``image`` under ``mask`` (all of them without a mask), as a flat array."""
    image = np.asarray(image)
    if mask is None:
        return image.reshape(-1)
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != image.shape:
        raise ValueError(f"mask shape {mask.shape} does not match depth shape {image.shape}")
    return image[mask]


def robust_depth(
    depth_m: np.ndarray, mask: Optional[np.ndarray], statistic: str = "median", min_valid: int = 5
) -> Optional[float]:
    """A statistic of the valid depth over the mask that a few bad pixels cannot move.

    ``median`` is the object's typical surface, ``percentile_25`` its near surface (useful
    to grasp the top), ``min_valid`` the 5th percentile (nearest, minus outliers). Returns
    None when fewer than ``min_valid`` pixels under the mask have a finite, positive depth.
    """
    if statistic not in DEPTH_STATISTICS:
        raise ValueError(f"unknown depth statistic '{statistic}' (known: {', '.join(DEPTH_STATISTICS)})")
    values = masked_values(depth_m, mask).astype(np.float64, copy=False)
    with np.errstate(invalid="ignore"):
        values = values[np.isfinite(values) & (values > 0)]
    if values.size < max(1, int(min_valid)):
        return None
    if statistic == "median":
        return float(np.median(values))
    if statistic == "percentile_25":
        return float(np.percentile(values, 25))
    return float(np.percentile(values, 5))


# --------------------------------------------------------------------------- rays and planes
def pixel_ray(u: float, v: float, intrinsics: Intrinsics) -> np.ndarray:
    """Unit direction, in the optical frame, of the ray through pixel (u, v)."""
    d = np.array([(u - intrinsics.cx) / intrinsics.fx, (v - intrinsics.cy) / intrinsics.fy, 1.0])
    return d / np.linalg.norm(d)


def backproject(u: ArrayLike, v: ArrayLike, z: ArrayLike, intrinsics: Intrinsics) -> np.ndarray:
    """Optical-frame point(s) of pixel(s) (u, v) at depth z along the optical axis (what depth cameras
    report): shape (3,) for scalars, (N, 3) for arrays of N pixels."""
    u, v, z = (np.asarray(a, dtype=np.float64) for a in (u, v, z))
    return np.stack([(u - intrinsics.cx) * z / intrinsics.fx, (v - intrinsics.cy) * z / intrinsics.fy, z], axis=-1)


def project(point_camera: ArrayLike, intrinsics: Intrinsics) -> Optional[Tuple[float, float]]:
    """Pixel (u, v) of an optical-frame point; None when it is not in front of the camera."""
    x, y, z = _vector3(point_camera, "point")
    if z <= 0:
        return None
    return (intrinsics.fx * x / z + intrinsics.cx, intrinsics.fy * y / z + intrinsics.cy)


def intersect_ray_plane(
    origin: ArrayLike, direction: ArrayLike, normal: ArrayLike, offset: float
) -> Optional[np.ndarray]:
    """Where ``origin + t * direction`` (t >= 0) meets the plane ``normal . p = offset``.

    None when the ray is parallel to the plane or the plane is behind the origin.
    """
    o, d, n = _vector3(origin, "origin"), _vector3(direction, "direction"), _vector3(normal, "normal")
    denom = float(n @ d)
    scale = float(np.linalg.norm(n) * np.linalg.norm(d))
    if scale == 0.0 or abs(denom) <= 1e-9 * scale:
        return None
    t = (float(offset) - float(n @ o)) / denom
    if t < 0:
        return None
    return o + t * d


def table_plane_point(
    u: float,
    v: float,
    intrinsics: Intrinsics,
    camera_to_base: RigidTransform,
    table_normal: ArrayLike,
    table_height: float,
) -> Optional[np.ndarray]:
    """The pixel's ray hits the table (``normal . p = height`` in base): the point in the OPTICAL frame.

    Returned in the camera frame so the caller handles it exactly like a back-projected depth point.
    None when the ray is parallel to the table or the table is behind the camera.
    """
    origin = camera_to_base.translation
    direction = camera_to_base.apply_direction(pixel_ray(u, v, intrinsics))
    hit = intersect_ray_plane(origin, direction, table_normal, table_height)
    if hit is None:
        return None
    return camera_to_base.inverse().apply(hit)


def pixel_points(shape: Tuple[int, int], intrinsics: Intrinsics, camera_to_base: RigidTransform,
                 config: GeometryConfig, depth: Optional[np.ndarray] = None) -> np.ndarray:
    """HxWx3 base-frame point of every pixel: back-projected where ``depth`` is valid, else where its ray
    meets the table plane; NaN where neither gives one (a ray parallel to the table, or one that meets it
    behind the camera). For whole-image questions: what is above the table, what lies near a point."""
    h, w = shape
    vs, us = np.mgrid[0:h, 0:w]
    rays = np.stack([(us - intrinsics.cx) / intrinsics.fx, (vs - intrinsics.cy) / intrinsics.fy,
                     np.ones((h, w))], axis=-1) @ camera_to_base.rotation.T
    origin = camera_to_base.translation
    points = np.full((h, w, 3), np.nan)
    plane = table_plane(config.table_normal, config.table_height)
    if plane is not None:
        normal, offset = plane
        with np.errstate(divide="ignore", invalid="ignore"):
            t = (offset - float(origin @ normal)) / (rays @ normal)
        hit = np.isfinite(t) & (t > 0)
        points[hit] = origin + t[hit, None] * rays[hit]
    if depth is not None:
        z = depth_to_metres(np.asarray(depth), config.depth_scale, config.depth_min, config.depth_max)
        ok = np.isfinite(z)
        points[ok] = camera_to_base.apply(backproject(us[ok], vs[ok], z[ok], intrinsics))
    return points


# --------------------------------------------------------------------------- orientation
def mask_principal_axis(mask: np.ndarray) -> Optional[Tuple[float, float]]:
    """(angle, elongation) of the mask's major axis from its second-order central moments.

    The angle is in image coordinates, ``atan2(dv, du)`` in (-pi/2, pi/2] (v points down, so a
    positive angle leans right-and-down); the elongation is the ratio of the standard deviations
    along the major and minor axes (>= 1; inf for a one-pixel-wide line). None for an empty mask.
    """
    m = cv2.moments(np.asarray(mask).astype(np.uint8), binaryImage=True)
    if m["m00"] <= 0:
        return None
    a, b, c = m["mu20"] / m["m00"], m["mu11"] / m["m00"], m["mu02"] / m["m00"]
    angle = 0.5 * math.atan2(2.0 * b, a - c)
    half_diff = math.hypot((a - c) / 2.0, b)
    major, minor = (a + c) / 2.0 + half_diff, (a + c) / 2.0 - half_diff
    if major <= 1e-12:  # a single pixel: no axis at all
        return (0.0, 1.0)
    elongation = math.inf if minor <= 1e-12 else math.sqrt(major / minor)
    return (float(angle), float(elongation))


def grasp_yaw(
    mask: np.ndarray,
    centroid_uv: Tuple[float, float],
    depth_z: float,
    intrinsics: Intrinsics,
    camera_to_base: RigidTransform,
    plane_normal: Optional[ArrayLike] = None,
) -> float:
    """Base-frame yaw of the object's major axis, in [-pi/2, pi/2) (a parallel-jaw grasp is symmetric by pi).

    The centroid and a point a few pixels along the image principal axis are back-projected at the
    same depth and moved into the base frame; the yaw is atan2 of their difference's (y, x). With
    ``plane_normal`` (base frame, e.g. the table normal) the second point is instead taken on the
    plane through the centroid with that normal, which is exact for a flat object seen obliquely.

    Returns 0.0, by convention "no preferred yaw", when the mask is empty, too round
    (elongation < 1.15) to have a meaningful axis, or its axis is vertical in the base frame.
    """
    axis = mask_principal_axis(mask)
    if axis is None:
        return 0.0
    angle, elongation = axis
    if elongation < MIN_ELONGATION:
        return 0.0
    z = float(depth_z)
    if not math.isfinite(z) or z <= 0:
        raise ValueError(f"depth must be positive and finite, got {depth_z}")
    u0, v0 = float(centroid_uv[0]), float(centroid_uv[1])
    step = 5.0  # pixels; the back-projection is linear so only the direction matters
    u1, v1 = u0 + step * math.cos(angle), v0 + step * math.sin(angle)
    p0 = camera_to_base.apply(backproject(u0, v0, z, intrinsics))
    if plane_normal is None:
        p1 = camera_to_base.apply(backproject(u1, v1, z, intrinsics))
    else:
        n = _vector3(plane_normal, "plane_normal")
        direction = camera_to_base.apply_direction(pixel_ray(u1, v1, intrinsics))
        p1 = intersect_ray_plane(camera_to_base.translation, direction, n, float(n @ p0))
        if p1 is None:
            p1 = camera_to_base.apply(backproject(u1, v1, z, intrinsics))
    d = p1 - p0
    if math.hypot(d[0], d[1]) < 1e-9 * max(1.0, float(np.linalg.norm(d))):
        return 0.0
    return wrap_half_turn(math.atan2(d[1], d[0]))


# --------------------------------------------------------------------------- object centre
def table_plane(table_normal: ArrayLike, table_height: float) -> Optional[Tuple[np.ndarray, float]]:
    """(unit normal n_hat, offset) of the table ``table_normal . p = table_height``, so that a point's
    height above the table is ``p . n_hat - offset``; None for a degenerate normal."""
    n = _vector3(table_normal, "table_normal")
    norm = float(np.linalg.norm(n))
    if norm < 1e-12:
        return None
    return n / norm, float(table_height) / norm


def object_centre(
    points_base: np.ndarray, table_normal: ArrayLike, table_height: float
) -> Optional[Tuple[np.ndarray, float]]:
    """(centre, top height) of an object resting on the table, from its visible points (N, 3), base frame.

    The table is ``table_normal . p = table_height`` (as for ``table_plane_point``). A point's
    height is its signed distance above that plane; the object's top is a robust high percentile
    of the heights, and the centre lies ``top / 2`` above the table, under the middle of the top
    band (points within ``max(10% of top, 5 mm)`` of the top) projected onto the plane. The
    middle is the midpoint of the band's robust extent (2nd..98th percentile) along two in-plane
    axes, not its median: the band is the top face seen whole (plus the upper rim of the faces
    turned to the camera, which lie on its edge) or, for a round object, a cap; its points are
    denser on the camera's side, which would pull a median towards the camera.

    None when the points cannot support an estimate: fewer than ``CENTRE_MIN_POINTS``, a
    degenerate normal, or a top less than ``CENTRE_MIN_HEIGHT`` above the table (a flat object).
    """
    p = np.asarray(points_base, dtype=np.float64).reshape(-1, 3)
    p = p[np.all(np.isfinite(p), axis=1)]
    plane = table_plane(table_normal, table_height)
    if p.shape[0] < CENTRE_MIN_POINTS or plane is None:
        return None
    n, offset = plane
    heights = p @ n - offset
    top = float(np.percentile(heights, CENTRE_TOP_PERCENTILE))
    if not top >= CENTRE_MIN_HEIGHT:
        return None
    band = p[heights >= top - max(CENTRE_BAND_FRACTION * top, CENTRE_BAND_MIN)]
    # In-plane axes: base x projected onto the plane (base y when the normal is along x), and n x e1.
    e1 = np.array([1.0, 0.0, 0.0]) - n[0] * n
    if np.linalg.norm(e1) < 0.1:
        e1 = np.array([0.0, 1.0, 0.0]) - n[1] * n
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(n, e1)
    coords = band @ np.column_stack([e1, e2])  # (M, 2) in-plane coordinates
    lo, hi = np.percentile(coords, [CENTRE_EXTENT_PERCENTILE, 100.0 - CENTRE_EXTENT_PERCENTILE], axis=0)
    mid = (lo + hi) / 2.0
    centre = mid[0] * e1 + mid[1] * e2 + (offset + top / 2.0) * n
    return centre, top


def _mask_points_base(
    mask: np.ndarray, depth_on_mask: np.ndarray, intrinsics: Intrinsics, camera_to_base: RigidTransform
) -> np.ndarray:
    """Base-frame points (N, 3) of the mask pixels with valid depth, subsampled regularly to at most
    ``CENTRE_MAX_POINTS``. ``depth_on_mask`` is ``depth_m[mask]`` in metres (NaN = invalid)."""
    vs, us = np.nonzero(mask)  # the same (row-major) order as boolean indexing
    z = np.asarray(depth_on_mask, dtype=np.float64).reshape(-1)
    ok = np.isfinite(z) & (z > 0)
    vs, us, z = vs[ok], us[ok], z[ok]
    if z.size > CENTRE_MAX_POINTS:
        stride = int(math.ceil(z.size / CENTRE_MAX_POINTS))
        vs, us, z = vs[::stride], us[::stride], z[::stride]
    return camera_to_base.apply(backproject(us, vs, z, intrinsics)) if z.size else np.zeros((0, 3))


def low_pixels(mask: np.ndarray, depth_m: np.ndarray, intrinsics: Intrinsics, camera_to_base: RigidTransform,
               geometry: GeometryConfig, max_height: float) -> np.ndarray:
    """``mask`` without its pixels whose depth puts them more than ``max_height`` metres above the table
    plane (``geometry.table_normal``, ``table_height``); pixels without valid depth stay.

    Why: a bowl resting on the table has every pixel low; when the gripper holding an object is
    seen next to it, one mask component can span both, and its point comes out in the air.
    """
    mask = np.asarray(mask, dtype=bool)
    vs, us = np.nonzero(mask)
    if us.size == 0:
        return mask
    z = depth_to_metres(np.asarray(depth_m)[vs, us], geometry.depth_scale, geometry.depth_min,
                        geometry.depth_max).astype(np.float64)
    ok = np.isfinite(z)
    normal, offset = table_plane(geometry.table_normal, geometry.table_height)  # config checks the normal
    heights = camera_to_base.apply(backproject(us[ok], vs[ok], z[ok], intrinsics)) @ normal - offset
    out = mask.copy()
    high = np.flatnonzero(ok)[heights > max_height]
    out[vs[high], us[high]] = False
    return out


# --------------------------------------------------------------------------- the whole step
@dataclass
class LocateResult:
    """Where a detection is: the 3D point in both frames and how its depth was obtained."""

    xyz_camera: np.ndarray  # (3,) optical frame
    xyz_base: np.ndarray  # (3,) base frame
    depth_source: str  # "depth" | "table_plane"
    depth: float  # metres along the optical axis at the centroid
    valid_pixels: int = 0  # depth pixels under the mask that were used (0 for the table plane)
    note: str = ""  # why the table plane was used although a depth image was given ("" otherwise)


def locate(
    mask: Optional[np.ndarray],
    centroid_uv: Tuple[float, float],
    depth_m: Optional[np.ndarray],
    intrinsics: Intrinsics,
    camera_to_base: RigidTransform,
    geometry: GeometryConfig,
    min_valid: int = 5,
) -> LocateResult:
    """Base-frame point of a detection: from the depth over the mask, else the table plane.

    ``depth_m`` may be float metres or raw uint16; it is passed through ``depth_to_metres`` with
    the configured scale and limits. With at least ``min_valid`` valid pixels on the mask the
    point depends on ``geometry.point_estimate``:

    * ``surface``: the centroid pixel back-projected at the robust depth (``depth_statistic``):
      a point on the object's VISIBLE surface. Seen obliquely it is biased towards the camera by
      up to half the object's size, and its height is near the object's top.
    * ``object_centre`` (default): the centre of an object resting on the table plane, which is
      what a grasp wants: every valid mask pixel is back-projected into the base frame and
      ``object_centre`` puts the point half the object's (robust) top height above the table,
      under the middle of its top. When the mask's points show no height above the table (a
      flat object, < 5 mm), too few of them are valid, or there is no mask, it falls back to
      ``surface``. ``depth`` is then the optical z of that centre.

    Without a depth image the centroid's ray is intersected with the table plane instead. A depth
    image WITH fewer than ``min_valid`` valid pixels on the mask (all NaN, 0, 65535, out of range)
    means the sensor failed on this object: the table plane would put a tall object several
    centimetres off, so that is refused unless ``geometry.depth_fallback`` is ``table_plane``
    (the result's ``note`` then says why the plane was used).

    Raises:
        GeometryError: no valid depth on the mask and the fallback is ``refuse``, or the table
            plane was needed and the ray does not hit it (e.g. parallel to the table).
        ValueError: a non-finite centroid.
    """
    u, v = float(centroid_uv[0]), float(centroid_uv[1])
    if not (math.isfinite(u) and math.isfinite(v)):
        raise ValueError(f"centroid must be finite, got {centroid_uv}")
    note = ""
    if depth_m is not None:
        values = depth_to_metres(masked_values(depth_m, mask), geometry.depth_scale, geometry.depth_min,
                                 geometry.depth_max)
        z = robust_depth(values, None, geometry.depth_statistic, min_valid)
        valid_pixels = int(np.count_nonzero(np.isfinite(values)))
        if z is not None:
            if geometry.point_estimate == "object_centre" and mask is not None:
                pts = _mask_points_base(np.asarray(mask, dtype=bool), values, intrinsics, camera_to_base)
                found = object_centre(pts, geometry.table_normal, geometry.table_height)
                if found is not None:
                    centre = found[0]
                    xyz_cam = camera_to_base.inverse().apply(centre)
                    return LocateResult(
                        xyz_camera=xyz_cam,
                        xyz_base=centre,
                        depth_source="depth",
                        depth=float(xyz_cam[2]),
                        valid_pixels=valid_pixels,
                    )
            xyz_cam = backproject(u, v, z, intrinsics)
            return LocateResult(
                xyz_camera=xyz_cam,
                xyz_base=camera_to_base.apply(xyz_cam),
                depth_source="depth",
                depth=float(z),
                valid_pixels=valid_pixels,
            )
        why = (f"no valid depth over the mask ({valid_pixels} of {values.size} pixels within "
               f"[{geometry.depth_min:g}, {geometry.depth_max:g}] m, {min_valid} needed)")
        if geometry.depth_fallback == "refuse":
            raise GeometryError(f"{why}; geometry.depth_fallback 'table_plane' would use the table plane instead")
        note = f"{why}: placed on the table plane (geometry.depth_fallback: table_plane)"
    xyz_cam = table_plane_point(u, v, intrinsics, camera_to_base, geometry.table_normal, geometry.table_height)
    if xyz_cam is None:
        why = "no depth image" if depth_m is None else "no valid depth on the mask"
        raise GeometryError(
            f"cannot locate pixel ({u:.1f}, {v:.1f}): {why}, and its ray does not hit the table plane "
            "(parallel to it, or the table is behind the camera)"
        )
    return LocateResult(
        xyz_camera=xyz_cam,
        xyz_base=camera_to_base.apply(xyz_cam),
        depth_source="table_plane",
        depth=float(xyz_cam[2]),
        note=note,
    )
