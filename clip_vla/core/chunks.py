"""Action chunks: the end-effector waypoints that execute one grounded step, RT-2 tokenized.

A goal ``(cmd, x, y, z, theta)`` says where; a manipulator needs how: approach, descend,
close, lift. RT-2 answers with short sequences of tokenized end-effector actions, and so
does this module. Every waypoint is ``(x, y, z, theta, gripper)`` of the fingertip centre
(TCP) in the base frame, gripper 0 = open, 1 = closed; heights come from ``motion.*``
(``MotionConfig``) and the table height (``geometry.table_height``)::

    pick      above ──► grasp ──► close ──► lift            (open, open, closed, closed)
                z+approach  max(table+clearance, z-grasp_depth)   grasp+lift_height
    place     above ──► release ──► open ──► retreat        (closed, closed, open, open)
                z+approach  z+release_height     release+retreat_height
    push/pull above start ──► down ──► through ──► up       (closed throughout)
                start = goal - standoff*d, end = goal + follow_through*d, d = (cos theta, sin theta),
                in contact at table+push_height; theta is the motion direction (pull: towards the robot)
    point_at  above ──► hover                               (closed), hover at z+point_height

``open`` and ``close`` (a drawer, a lid) have no geometry here: a handle's pose and pull axis
cannot be read from one mask, so their steps are refused (reason ``no_motion``) rather than
guessed. A chunk with any waypoint outside the workspace is refused (``outside_workspace``,
naming the waypoint): like a goal, it is never published.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Sequence, Tuple

from clip_vla.core.config import MotionConfig
from clip_vla.core.tokenizer import GRIPPER_CLOSED, GRIPPER_OPEN, ActionTokenizer, EncodedChunk, Waypoint
from clip_vla.core.types import Reason

__all__ = ["Chunk", "ChunkError", "MOTION_SKILLS", "build_chunk", "chunk_waypoints"]


class ChunkError(ValueError):
    """A step's chunk cannot be built or must not be published; ``reason`` is its status reason."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Chunk:
    """One step's waypoints and their tokens (``waypoints`` exact, ``decoded`` at the bin centres)."""

    skill: str
    waypoints: Tuple[Waypoint, ...]
    encoded: EncodedChunk
    decoded: Tuple[Waypoint, ...]

    @property
    def tokens(self) -> Tuple[int, ...]:
        return self.encoded.tokens

    @property
    def text(self) -> str:
        return self.encoded.text

    def to_dict(self) -> Dict[str, Any]:
        """The chunk as the plan record carries it: tokens, text form and decoded waypoints."""
        labelled = [Waypoint(d.x, d.y, d.z, d.theta, d.gripper, w.label) for d, w in zip(self.decoded, self.waypoints)]
        return {"skill": self.skill, "tokens": list(self.tokens), "text": self.text,
                "waypoints": [w.to_dict() for w in labelled]}


# --------------------------------------------------------------------------- geometry per skill
def _pick(x: float, y: float, z: float, theta: float, m: MotionConfig, table_z: float) -> List[Waypoint]:
    grasp = max(table_z + m.min_tip_clearance, z - m.grasp_depth)
    return [
        Waypoint(x, y, z + m.approach_height, theta, GRIPPER_OPEN, "above"),
        Waypoint(x, y, grasp, theta, GRIPPER_OPEN, "grasp"),
        Waypoint(x, y, grasp, theta, GRIPPER_CLOSED, "close"),
        Waypoint(x, y, grasp + m.lift_height, theta, GRIPPER_CLOSED, "lift"),
    ]


def _place(x: float, y: float, z: float, theta: float, m: MotionConfig, table_z: float) -> List[Waypoint]:
    release = max(z, table_z) + m.release_height
    return [
        Waypoint(x, y, z + m.approach_height, theta, GRIPPER_CLOSED, "above"),
        Waypoint(x, y, release, theta, GRIPPER_CLOSED, "release"),
        Waypoint(x, y, release, theta, GRIPPER_OPEN, "open"),
        Waypoint(x, y, release + m.retreat_height, theta, GRIPPER_OPEN, "retreat"),
    ]


def _push(x: float, y: float, z: float, theta: float, m: MotionConfig, table_z: float) -> List[Waypoint]:
    dx, dy = math.cos(theta), math.sin(theta)  # theta is the direction of motion
    sx, sy = x - m.push_standoff * dx, y - m.push_standoff * dy
    ex, ey = x + m.push_follow_through * dx, y + m.push_follow_through * dy
    contact = table_z + m.push_height
    above = contact + m.approach_height
    return [
        Waypoint(sx, sy, above, theta, GRIPPER_CLOSED, "above_start"),
        Waypoint(sx, sy, contact, theta, GRIPPER_CLOSED, "down"),
        Waypoint(ex, ey, contact, theta, GRIPPER_CLOSED, "through"),
        Waypoint(ex, ey, above, theta, GRIPPER_CLOSED, "up"),
    ]


def _point(x: float, y: float, z: float, theta: float, m: MotionConfig, table_z: float) -> List[Waypoint]:
    hover = max(z, table_z) + m.point_height
    return [
        Waypoint(x, y, max(z + m.approach_height, hover), theta, GRIPPER_CLOSED, "above"),
        Waypoint(x, y, hover, theta, GRIPPER_CLOSED, "hover"),
    ]


Motion = Callable[[float, float, float, float, MotionConfig, float], List[Waypoint]]
MOTION_SKILLS: Dict[str, Motion] = {"pick": _pick, "place": _place, "push": _push, "pull": _push,
                                    "point_at": _point}


# --------------------------------------------------------------------------- public API
def chunk_waypoints(skill: str, xyz: Sequence[float], theta: float, motion: MotionConfig,
                    table_z: float = 0.0) -> List[Waypoint]:
    """The waypoints of ``skill`` at goal point ``xyz`` (base frame, metres) with yaw ``theta``.

    Raises:
        ChunkError: the skill has no chunk geometry (reason ``no_motion``).
    """
    make = MOTION_SKILLS.get(skill)
    if make is None:
        raise ChunkError(Reason.NO_MOTION, f"'{skill}' has no action-chunk motion (chunks exist for "
                                           f"{', '.join(MOTION_SKILLS)})")
    x, y, z = (float(v) for v in xyz)
    return make(x, y, z, float(theta), motion, float(table_z))


def build_chunk(skill: str, cmd_token: int, xyz: Sequence[float], theta: float, motion: MotionConfig,
                tokenizer: ActionTokenizer, table_z: float = 0.0) -> Chunk:
    """The tokenized chunk of one grounded step; refused when any waypoint leaves the workspace.

    Raises:
        ChunkError: no motion for the skill (``no_motion``) or a waypoint outside the workspace
            (``outside_workspace``, naming the first such waypoint).
    """
    waypoints = chunk_waypoints(skill, xyz, theta, motion, table_z)
    encoded = tokenizer.encode_chunk(cmd_token, waypoints)
    if encoded.outside:
        i = encoded.outside[0]
        w = waypoints[i]
        (x0, x1), (y0, y1), (z0, z1) = tokenizer.bounds[:3]
        raise ChunkError(Reason.OUTSIDE_WORKSPACE,
                         f"{skill} chunk waypoint {i} ({w.label}) at ({w.x:.3f}, {w.y:.3f}, {w.z:.3f}) m is outside "
                         f"the workspace x[{x0}, {x1}] y[{y0}, {y1}] z[{z0}, {z1}]")
    _, decoded = tokenizer.decode_chunk(encoded)
    return Chunk(skill=skill, waypoints=tuple(waypoints), encoded=encoded, decoded=tuple(decoded))
