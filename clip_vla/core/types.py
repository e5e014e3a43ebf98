"""Plain data passed between the core stages, the CLI and the ROS node.

Everything here is numpy/stdlib only and serialises to JSON through ``to_dict``.
"""
from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import numpy as np


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole camera intrinsics in pixels (CameraInfo K: fx, fy, cx, cy)."""

    fx: float
    fy: float
    cx: float
    cy: float

    def __post_init__(self) -> None:
        values = (self.fx, self.fy, self.cx, self.cy)
        if not all(math.isfinite(v) for v in values):
            raise ValueError(f"intrinsics must be finite, got {values}")
        if self.fx <= 0 or self.fy <= 0:
            raise ValueError(f"focal lengths must be positive, got fx={self.fx}, fy={self.fy}")

    @classmethod
    def from_matrix(cls, k: Any) -> "Intrinsics":
        """From a 3x3 K matrix or its 9 row-major numbers (CameraInfo.k)."""
        m = np.asarray(k, dtype=np.float64).reshape(3, 3)
        return cls(fx=float(m[0, 0]), fy=float(m[1, 1]), cx=float(m[0, 2]), cy=float(m[1, 2]))

    def matrix(self) -> np.ndarray:
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    def scaled(self, sx: float, sy: float) -> "Intrinsics":
        """Intrinsics of the same camera resized by (sx, sy) (pixel-centre convention)."""
        return Intrinsics(
            fx=self.fx * sx, fy=self.fy * sy, cx=(self.cx + 0.5) * sx - 0.5, cy=(self.cy + 0.5) * sy - 0.5
        )


@dataclass
class Frame:
    """One camera observation: colour (HxWx3 uint8 RGB), optional registered depth and intrinsics."""

    rgb: np.ndarray
    depth: Optional[np.ndarray] = None  # HxW uint16 millimetres (scaled by depth_scale) or float32 metres
    intrinsics: Optional[Intrinsics] = None
    stamp: float = 0.0  # seconds; the node copies the source image stamp to every output
    frame_id: str = "camera_color_optical_frame"

    def __post_init__(self) -> None:
        if not isinstance(self.rgb, np.ndarray) or self.rgb.ndim != 3 or self.rgb.shape[2] != 3:
            shape = getattr(self.rgb, "shape", None)
            raise ValueError(f"colour image must be HxWx3, got shape {shape}")
        if self.rgb.dtype != np.uint8:
            raise ValueError(f"colour image must be uint8, got {self.rgb.dtype}")
        if self.rgb.shape[0] < 1 or self.rgb.shape[1] < 1:
            raise ValueError(f"colour image is empty: {self.rgb.shape}")
        if self.depth is not None:
            if self.depth.ndim != 2:
                raise ValueError(f"depth must be HxW, got shape {self.depth.shape}")
            if self.depth.shape != self.rgb.shape[:2]:
                raise ValueError(
                    f"depth {self.depth.shape[1]}x{self.depth.shape[0]} does not match colour "
                    f"{self.rgb.shape[1]}x{self.rgb.shape[0]}: register or resize it first"
                )

    @property
    def size(self) -> Tuple[int, int]:
        """(width, height)."""
        return int(self.rgb.shape[1]), int(self.rgb.shape[0])


def rounded_probabilities(probabilities: Dict[str, float]) -> Dict[str, float]:
    """Skill probabilities as every JSON answer shows them: 4 decimals, CLIP's order kept."""
    return {k: round(float(v), 4) for k, v in probabilities.items()}


GOAL_PUBLISHED = "goal published"  # the status message of an accepted command


class Reason(str, enum.Enum):
    """Why a command produced no goal. Values are the stable strings published on ~/status."""

    EMPTY_COMMAND = "empty_command"
    BAD_COMMAND = "bad_command"
    UNKNOWN_SKILL = "unknown_skill"
    NO_OBJECT_NAMED = "no_object_named"
    NO_DESTINATION = "no_destination"
    NO_OBJECT = "no_object"
    LOW_CONFIDENCE = "low_confidence"
    OUTSIDE_WORKSPACE = "outside_workspace"
    NO_MOTION = "no_motion"  # the skill has no action-chunk geometry (open, close): clip_vla.core.chunks
    NO_DEPTH = "no_depth"
    NO_INTRINSICS = "no_intrinsics"
    STALE_FRAME = "stale_frame"
    NO_FRAME = "no_frame"
    BAD_INPUT = "bad_input"
    MODEL_ERROR = "model_error"
    QUEUE_FULL = "queue_full"
    STOPPED = "stopped"
    INACTIVE = "inactive"
    DESTINATION_ON_GRIPPER = "destination_on_gripper"  # refused before acting: clip_vla.perception.verify
    IMPLAUSIBLE_HEIGHT = "implausible_height"  # refused before acting: nothing rests that high above the table
    UNKNOWN_OPTION = "unknown_option"  # "option N": no suggestion list yet, or none numbered N


@dataclass
class Detection:
    """Where one phrase is in the image, from the CLIPSeg mask."""

    phrase: str
    found: bool
    confidence: float  # mean target probability over the chosen component (0 when not found)
    mask: Optional[np.ndarray] = None  # HxW bool at input resolution (None when not found)
    centroid: Optional[Tuple[float, float]] = None  # (u, v) pixels
    bbox: Optional[Tuple[int, int, int, int]] = None  # (u_min, v_min, u_max, v_max), inclusive
    area: int = 0  # pixels
    peak: float = 0.0  # max target probability anywhere
    other_instances: int = 0  # further components of the same phrase that cleared the threshold

    def to_dict(self) -> Dict[str, Any]:
        return {
            "phrase": self.phrase,
            "found": self.found,
            "confidence": round(float(self.confidence), 4),
            "centroid": None if self.centroid is None else [round(c, 2) for c in self.centroid],
            "bbox": None if self.bbox is None else list(self.bbox),
            "area": int(self.area),
            "peak": round(float(self.peak), 4),
            "other_instances": int(self.other_instances),
        }


@dataclass
class ActionGoal:
    """An executable goal: the skill, where, and its RT-2 style tokens."""

    cmd: str
    cmd_token: int
    skill_probabilities: Dict[str, float]
    object_phrase: Optional[str]
    destination_phrase: Optional[str]
    pixel: Optional[Tuple[float, float]]
    detection: Optional[Detection]
    xyz_camera: Optional[Tuple[float, float, float]]
    xyz_base: Tuple[float, float, float]
    theta: float
    tokens: Tuple[int, int, int, int, int]
    confidence: float
    depth_source: str  # "depth" | "table_plane" | "none"
    timings_ms: Dict[str, float] = field(default_factory=dict)
    command: str = ""
    stamp: float = 0.0
    frame_id: str = ""
    destination: Optional[Detection] = None
    object_xyz_base: Optional[Tuple[float, float, float]] = None  # the object itself when the goal is the destination
    # What the status says: "goal published", plus why when the point is less certain than usual
    # (e.g. placed on the table plane although a depth image was given).
    message: str = GOAL_PUBLISHED

    accepted = True

    @property
    def tokens_text(self) -> str:
        return " ".join(str(t) for t in self.tokens)

    def to_dict(self) -> Dict[str, Any]:
        def r(values: Optional[Tuple[float, ...]], n: int = 4) -> Optional[List[float]]:
            return None if values is None else [round(float(v), n) for v in values]

        return {
            "accepted": True,
            "command": self.command,
            "cmd": self.cmd,
            "cmd_token": self.cmd_token,
            "skill_probabilities": rounded_probabilities(self.skill_probabilities),
            "object": self.object_phrase,
            "destination": self.destination_phrase,
            "pixel": r(self.pixel, 2),
            "detection": None if self.detection is None else self.detection.to_dict(),
            "destination_detection": None if self.destination is None else self.destination.to_dict(),
            "xyz_camera": r(self.xyz_camera),
            "xyz_base": r(self.xyz_base),
            "object_xyz_base": r(self.object_xyz_base),
            "theta": round(float(self.theta), 4),
            "tokens": list(self.tokens),
            "tokens_text": self.tokens_text,
            "confidence": round(float(self.confidence), 4),
            "depth_source": self.depth_source,
            "message": self.message,
            "timings_ms": {k: round(float(v), 3) for k, v in self.timings_ms.items()},
            "stamp": self.stamp,
            "frame_id": self.frame_id,
        }


@dataclass
class NoAction:
    """A reasoned refusal: nothing is executed, the status says why."""

    reason: Reason
    message: str
    command: str = ""
    skill: Optional[str] = None
    object_phrase: Optional[str] = None
    skill_probabilities: Dict[str, float] = field(default_factory=dict)
    detection: Optional[Detection] = None
    timings_ms: Dict[str, float] = field(default_factory=dict)
    stamp: float = 0.0

    accepted = False

    def to_dict(self) -> Dict[str, Any]:
        return {
            "accepted": False,
            "reason": self.reason.value,
            "message": self.message,
            "command": self.command,
            "skill": self.skill,
            "object": self.object_phrase,
            "skill_probabilities": rounded_probabilities(self.skill_probabilities),
            "detection": None if self.detection is None else self.detection.to_dict(),
            "timings_ms": {k: round(float(v), 3) for k, v in self.timings_ms.items()},
            "stamp": self.stamp,
        }
