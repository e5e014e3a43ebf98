"""The JSON the node publishes, built by one set of functions for the node and for replay.

``~/goal`` carries the goal record of an accepted command (and of every continuous-mode
update); ``~/status`` carries the one answer every command gets. ``clip-vla replay
--write-bag`` writes the same records, so a bag replayed offline and the running node can be
compared field by field (``test/tools/test_node_replay_equivalence.py`` does)::

    ActionGoal ──goal_pose()──► position, theta, quaternion in the target frame
        │                                   │
        └────────────goal_record()──────────┴──► ~/goal JSON ──┐
    ActionGoal | NoAction ──status_record()────────────────────┴──► ~/status JSON
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

import numpy as np

from clip_vla.core.geometry import RigidTransform, rotation_to_quaternion
from clip_vla.core.types import ActionGoal, Reason, rounded_probabilities

ECHO_LIMIT = 200  # characters of a command echoed back in a record
GOAL_KEYS = ("stamp", "frame_id", "cmd", "cmd_token", "tokens", "tokens_text", "token_frame", "pose",
             "orientation", "confidence", "object", "destination", "object_position", "command", "command_id",
             "update", "depth_source", "pixel", "camera_frame")

Stamp = Dict[str, int]


def echo(text: Any, limit: int = ECHO_LIMIT) -> str:
    """A command echoed in a record: bounded and printable, whatever was sent."""
    s = str(text)
    out = "".join(ch if ch.isprintable() else "\ufffd" for ch in s[:limit])
    return out + ("..." if len(s) > limit else "")


def stamp_from_ns(ns: int) -> Stamp:
    """``{"sec", "nanosec"}`` of integer nanoseconds, as ``builtin_interfaces/Time`` spells a stamp."""
    return {"sec": int(ns) // 1_000_000_000, "nanosec": int(ns) % 1_000_000_000}


@dataclass(frozen=True)
class GoalPose:
    """Where a goal is in its published frame: position (m), yaw (rad) and orientation (x, y, z, w)."""

    xyz: Tuple[float, float, float]
    theta: float
    quaternion: Tuple[float, float, float, float]
    object_xyz: Optional[Tuple[float, float, float]]


def goal_pose(goal: ActionGoal, base_to_target: Optional[RigidTransform] = None) -> GoalPose:
    """The goal in the frame ``base_to_target`` maps the base frame into (the base frame when None).

    theta and the quaternion come from one rotation (the yaw about base z, then the transform),
    so the JSON's ``pose.theta``, its ``orientation`` and ``~/goal_pose`` always agree.
    """
    xyz = np.asarray(goal.xyz_base, dtype=np.float64)
    c, s = math.cos(float(goal.theta)), math.sin(float(goal.theta))
    rot = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    obj = None if goal.object_xyz_base is None else np.asarray(goal.object_xyz_base, dtype=np.float64)
    if base_to_target is not None:
        xyz = base_to_target.apply(xyz)
        rot = base_to_target.rotation @ rot
        obj = None if obj is None else base_to_target.apply(obj)
    return GoalPose(xyz=(float(xyz[0]), float(xyz[1]), float(xyz[2])),
                    theta=float(math.atan2(rot[1, 0], rot[0, 0])),
                    quaternion=rotation_to_quaternion(rot),
                    object_xyz=None if obj is None else (float(obj[0]), float(obj[1]), float(obj[2])))


def goal_record(goal: ActionGoal, *, stamp: Stamp, frame_id: str, token_frame: str, camera_frame: str,
                command: str, command_id: int, update: int = 0,
                base_to_target: Optional[RigidTransform] = None) -> Dict[str, Any]:
    """The ``~/goal`` JSON (the keys of ``GOAL_KEYS``): pose in ``frame_id``, tokens in ``token_frame``.

    ``stamp`` is the source image's; ``update`` counts continuous-mode re-localisations (0: the
    command's own answer); ``base_to_target`` maps the base frame into ``frame_id``.
    """
    pose = goal_pose(goal, base_to_target)
    qx, qy, qz, qw = pose.quaternion
    return {
        "stamp": dict(stamp),
        "frame_id": frame_id,
        "cmd": goal.cmd,
        "cmd_token": int(goal.cmd_token),
        "tokens": [int(t) for t in goal.tokens],
        "tokens_text": goal.tokens_text,
        "token_frame": token_frame,
        "pose": {"x": pose.xyz[0], "y": pose.xyz[1], "z": pose.xyz[2], "theta": pose.theta},
        "orientation": {"x": qx, "y": qy, "z": qz, "w": qw},
        "confidence": round(float(goal.confidence), 4),
        "object": goal.object_phrase,
        "destination": goal.destination_phrase,
        "object_position": None if pose.object_xyz is None else list(pose.object_xyz),
        "command": echo(command),
        "command_id": int(command_id),
        "update": int(update),
        "depth_source": goal.depth_source,
        "pixel": None if goal.pixel is None else [round(float(v), 2) for v in goal.pixel],
        "camera_frame": camera_frame,
    }


def status_record(result: Any, *, command_id: int, command: str, stamp: Stamp, latency_ms: float, mode: str,
                  goal: Optional[Dict[str, Any]] = None, target_frame: str = "",
                  plan: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """The ``~/status`` JSON: the one answer of a command (``result`` is an ActionGoal or a NoAction).

    ``plan`` is the plan summary (``Plan.summary()``) an accepted command carries: its steps in
    words; the goal is the first step's. The plan's final outcome is ``task_status_record``.

    An accepted result carries its ``goal`` record; without one (the goal could not be
    expressed in ``target_frame``) the answer is ``bad_input``, so nothing unpublished is
    reported as accepted.
    """
    accepted = isinstance(result, ActionGoal)
    out: Dict[str, Any] = {
        "command_id": int(command_id),
        "command": echo(command),
        "status": "accepted" if accepted else result.reason.value,
        "message": str(result.message),
        "stamp": dict(stamp),
        "latency_ms": round(float(latency_ms), 2),
        "mode": mode,
    }
    if result.skill_probabilities:  # CLIP's own reading of the command, also when the parser's verb won
        out["skill_probabilities"] = rounded_probabilities(result.skill_probabilities)
    if accepted:
        out["goal"] = goal
        if plan is not None:
            out["plan"] = plan
        if goal is None:
            out["status"] = Reason.BAD_INPUT.value
            out["message"] = f"no transform to target_frame '{target_frame}'"
    else:
        out["skill"] = result.skill
        out["object"] = result.object_phrase
        if result.detection is not None:
            out["detection"] = result.detection.to_dict()
    return out


TASK_OUTCOMES = ("done", "failed", "cancelled")


def task_status_record(*, command_id: int, command: str, outcome: str, step: Optional[int], steps: int,
                       reason: str, message: str, stamp: Stamp) -> Dict[str, Any]:
    """The ``~/task_status`` JSON: how an accepted command's plan ended, once per accepted command.

    ``outcome``: ``done`` (every step reported done), ``failed`` (a step reported failed, or a
    later step was refused on its fresh frame: ``reason`` is then the refusal's), ``cancelled``
    (``stop`` or a new command). ``step`` is the step it ended at (None: before any).

    Raises:
        ValueError: ``outcome`` is not one of ``TASK_OUTCOMES``.
    """
    if outcome not in TASK_OUTCOMES:
        raise ValueError(f"task outcome must be one of {TASK_OUTCOMES}, got {outcome!r}")
    return {"command_id": int(command_id), "command": echo(command), "final": True, "outcome": outcome,
            "step": step, "steps": int(steps), "reason": reason, "message": str(message),
            "stamp": dict(stamp)}


def task_verdict_record(*, command_id: int, command: str, step: int, attempt: int, verdict: str,
                        confidence: float, reason: str, action: Optional[str], stamp: Stamp) -> Dict[str, Any]:
    """The ``~/task_status`` JSON of one step's verification (``"final": false``), one per verdict.

    ``action``: what the node does next (``next``, ``retry``, ``replan``, ``put_back``), None when the plan ends
    (its final record follows). ``uncertain`` proceeds like ``success``: the record says so.
    """
    return {"command_id": int(command_id), "command": echo(command), "final": False, "step": int(step),
            "attempt": int(attempt), "verdict": verdict, "confidence": round(float(confidence), 4),
            "reason": reason, "action": action, "stamp": dict(stamp)}
