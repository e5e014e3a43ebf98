"""The simulated RGB-D camera: where it is, what it sees, and how pixels map to metres.

The geometry half (``CameraSpec`` and the transform helpers) is plain numpy so configs and
tests can use it without a GL context. ``RgbdCamera`` renders colour, depth and
segmentation from a MuJoCo model with one ``mujoco.Renderer`` per image size.

Frames: the base frame is MuJoCo's world frame (x forward, y left, z up). The camera's
optical frame is z forward, x right, y down (REP-103 ``*_optical_frame``); a MuJoCo camera
looks along its -z with y up, i.e. optical = MuJoCo camera rotated by pi about x.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from clip_vla.core.geometry import rot_x, rot_y, rot_z
from clip_vla.core.types import Intrinsics

# Optical frame expressed in MuJoCo's camera frame (a rotation by pi about x).
OPTICAL_FROM_MUJOCO_CAMERA = np.diag([1.0, -1.0, -1.0])


# --------------------------------------------------------------------------- transforms
def matrix_from_rpy(roll: float, pitch: float, yaw: float) -> np.ndarray:
    """R = Rz(yaw) Ry(pitch) Rx(roll): the convention of ``geometry.camera_to_base_rpy``."""
    return rot_z(yaw) @ rot_y(pitch) @ rot_x(roll)


def rpy_from_matrix(r: np.ndarray) -> Tuple[float, float, float]:
    """Inverse of ``matrix_from_rpy`` (pitch in [-pi/2, pi/2])."""
    r = np.asarray(r, dtype=np.float64)
    pitch = -math.asin(max(-1.0, min(1.0, float(r[2, 0]))))
    if abs(math.cos(pitch)) < 1e-9:  # gimbal lock: put everything in yaw
        return 0.0, pitch, math.atan2(-float(r[0, 1]), float(r[1, 1]))
    roll = math.atan2(float(r[2, 1]), float(r[2, 2]))
    yaw = math.atan2(float(r[1, 0]), float(r[0, 0]))
    return roll, pitch, yaw


def transform_from_xyz_rpy(xyz: Sequence[float], rpy: Sequence[float]) -> np.ndarray:
    t = np.eye(4)
    t[:3, :3] = matrix_from_rpy(*rpy)
    t[:3, 3] = np.asarray(xyz, dtype=np.float64)
    return t


def look_at_rotation(position: Sequence[float], target: Sequence[float]) -> np.ndarray:
    """Optical-frame axes (as columns) of a camera at ``position`` looking at ``target``, level roll."""
    z = np.asarray(target, dtype=np.float64) - np.asarray(position, dtype=np.float64)
    z /= np.linalg.norm(z)
    x = np.cross(z, [0.0, 0.0, 1.0])
    if np.linalg.norm(x) < 1e-9:  # looking straight down: image x along world -y
        x = np.array([0.0, -1.0, 0.0])
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    return np.column_stack([x, y, z])


def project(points_base: np.ndarray, intrinsics: Intrinsics, camera_to_base: np.ndarray) -> np.ndarray:
    """Pixel (u, v) and optical depth of base-frame points: Nx3 -> Nx3 (u, v, z)."""
    p = np.atleast_2d(np.asarray(points_base, dtype=np.float64))
    base_to_camera = np.linalg.inv(camera_to_base)
    pc = p @ base_to_camera[:3, :3].T + base_to_camera[:3, 3]
    u = intrinsics.fx * pc[:, 0] / pc[:, 2] + intrinsics.cx
    v = intrinsics.fy * pc[:, 1] / pc[:, 2] + intrinsics.cy
    return np.column_stack([u, v, pc[:, 2]])


def backproject(u: float, v: float, depth: float, intrinsics: Intrinsics, camera_to_base: np.ndarray) -> np.ndarray:
    """Base-frame point of pixel (u, v) at optical depth ``depth`` (metres along the optical z)."""
    pc = np.array([(u - intrinsics.cx) / intrinsics.fx * depth, (v - intrinsics.cy) / intrinsics.fy * depth,
                   depth, 1.0])
    return (np.asarray(camera_to_base, dtype=np.float64) @ pc)[:3]


# --------------------------------------------------------------------------- camera spec
@dataclass(frozen=True)
class CameraSpec:
    """A fixed camera looking at the table: pose from position + look-at point, vertical field of view.

    The default sits in front of the table (facing the robot), 75 cm above it, so the whole
    table top is in view and a 5 cm block spans about 30-45 px at 640x480.
    """

    position: Tuple[float, float, float] = (1.15, 0.0, 0.75)
    target: Tuple[float, float, float] = (0.55, 0.0, 0.0)
    fovy_deg: float = 45.0
    width: int = 640
    height: int = 480
    name: str = "scene_camera"

    def rotation(self) -> np.ndarray:
        """Optical frame -> base frame rotation."""
        return look_at_rotation(self.position, self.target)

    def camera_to_base(self) -> np.ndarray:
        """4x4 transform from the optical frame to the base frame."""
        t = np.eye(4)
        t[:3, :3] = self.rotation()
        t[:3, 3] = self.position
        return t

    def xyz_rpy(self) -> Tuple[Tuple[float, float, float], Tuple[float, float, float]]:
        """``geometry.camera_to_base_xyz`` / ``camera_to_base_rpy`` values for a config file."""
        return tuple(float(v) for v in self.position), rpy_from_matrix(self.rotation())  # type: ignore[return-value]

    def intrinsics(self, width: Optional[int] = None, height: Optional[int] = None) -> Intrinsics:
        """Pinhole intrinsics of a ``width`` x ``height`` render (square pixels, centred principal point).

        MuJoCo's ``fovy`` is the vertical field of view; pixel centres are at integer
        coordinates, hence cx = (w - 1) / 2.
        """
        w = self.width if width is None else int(width)
        h = self.height if height is None else int(height)
        fy = (h / 2.0) / math.tan(math.radians(self.fovy_deg) / 2.0)
        return Intrinsics(fx=fy, fy=fy, cx=(w - 1) / 2.0, cy=(h - 1) / 2.0)

    def mjcf(self) -> str:
        """The ``<camera>`` element (a child of the world body)."""
        r = self.rotation()
        mj = r @ OPTICAL_FROM_MUJOCO_CAMERA  # MuJoCo camera axes: x right, y up, z backwards
        xyaxes = " ".join(f"{v:.6f}" for v in np.concatenate([mj[:, 0], mj[:, 1]]))
        pos = " ".join(f"{v:.6f}" for v in self.position)
        return f'<camera name="{self.name}" mode="fixed" pos="{pos}" xyaxes="{xyaxes}" fovy="{self.fovy_deg:.6f}"/>'


# --------------------------------------------------------------------------- rendering
class RgbdCamera:
    """Renders colour, metric depth and geom-level segmentation of one model's fixed camera.

    One ``mujoco.Renderer`` is kept per image size and reused for every frame; a new model
    (a new scene) needs a new ``RgbdCamera`` because a renderer's GPU context is tied to
    the model's assets.
    """

    def __init__(self, model, spec: CameraSpec) -> None:
        from clip_vla.sim._mujoco import mujoco

        self._mujoco = mujoco
        self.model = model
        self.spec = spec
        self.camera_id = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, spec.name)
        if self.camera_id < 0:
            raise ValueError(f"camera '{spec.name}' is not in the model")
        self._renderers: Dict[Tuple[int, int], object] = {}

    def renderer(self, width: int, height: int):
        key = (int(width), int(height))
        r = self._renderers.get(key)
        if r is None:
            r = self._mujoco.Renderer(self.model, height=key[1], width=key[0])
            self._renderers[key] = r
        return r

    def camera_to_base(self, data) -> np.ndarray:
        """Optical frame -> base frame, read back from the simulated camera pose."""
        t = np.eye(4)
        t[:3, :3] = data.cam_xmat[self.camera_id].reshape(3, 3) @ OPTICAL_FROM_MUJOCO_CAMERA
        t[:3, 3] = data.cam_xpos[self.camera_id]
        return t

    def render(
        self, data, width: Optional[int] = None, height: Optional[int] = None, rgb: bool = True,
        depth: bool = True, segmentation: bool = True,
    ) -> Tuple[Optional[np.ndarray], Optional[np.ndarray], Optional[np.ndarray]]:
        """(rgb HxWx3 uint8, depth HxW float32 metres along the optical axis, geom id HxW int32 (-1 none))."""
        w = self.spec.width if width is None else int(width)
        h = self.spec.height if height is None else int(height)
        r = self.renderer(w, h)
        r.update_scene(data, camera=self.camera_id)
        out_rgb = out_depth = out_seg = None
        if rgb:
            r.disable_depth_rendering()
            r.disable_segmentation_rendering()
            out_rgb = r.render().copy()
        if depth:
            r.enable_depth_rendering()
            out_depth = r.render().astype(np.float32, copy=True)
            r.disable_depth_rendering()
        if segmentation:
            r.enable_segmentation_rendering()
            seg = r.render()
            r.disable_segmentation_rendering()
            geom_type = int(self._mujoco.mjtObj.mjOBJ_GEOM)
            out_seg = np.where(seg[:, :, 1] == geom_type, seg[:, :, 0], -1).astype(np.int32)
        return out_rgb, out_depth, out_seg

    def close(self) -> None:
        for r in self._renderers.values():
            try:
                r.close()  # type: ignore[attr-defined]
            except Exception:  # noqa: BLE001 - closing a dead GL context must not mask the real error
                pass
        self._renderers.clear()
