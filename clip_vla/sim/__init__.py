"""A simulated tabletop (MuJoCo) to test clip_vla end to end: camera frames in, physical skills out.

``TabletopWorld`` is the entry point::

    world = TabletopWorld(seed=0, n_distractors=3, width=640, height=480)
    task = world.reset(seed=7, skill="pick")
    obs = world.observe()                      # rgb, depth (m), segmentation, intrinsics, camera_to_base
    xyz, yaw = world.object_pose(task.object)
    result = world.execute("pick", xyz, yaw)   # ExecutionResult(success, reason, details, failure)
    world.check_success(task)

Names are resolved lazily so ``import clip_vla.sim`` works (and ``clip_vla.sim.objects`` /
``tasks`` stay usable) on machines without MuJoCo; only the world itself needs it. No ROS
import anywhere here: the ROS ``sim_node`` wraps this package.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "TabletopWorld": "world",
    "Observation": "world",
    "ExecutionResult": "world",
    "Task": "tasks",
    "sample_task": "tasks",
    "sample_layout": "tasks",
    "SceneConfig": "scene",
    "SceneLayout": "scene",
    "FixtureSpec": "scene",
    "ObjectSpec": "objects",
    "CameraSpec": "camera",
    "MotionLimits": "gripper",
    "SkillParams": "executor",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
