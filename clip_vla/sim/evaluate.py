"""Scripted baselines: how well the sim's skills work when the goal is known.

Two goal sources bound what the learned pipeline can reach:

* ``"pose"``: the true object centre and yaw (``world.object_pose``): the executor alone.
* ``"mask"``: what a perfect segmenter gives perception: the ground-truth mask's centroid
  pixel back-projected at the median depth over the mask, and the yaw of the mask's major
  axis from a PCA of its back-projected points. That point lies on the visible surface
  (above the centre, towards the camera), the pipeline's ``point_estimate: surface``; the
  skills must cope with it (the default ``object_centre`` is closer to the truth).

Run ``python -m clip_vla.sim.evaluate --episodes 50`` for the figures.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from clip_vla.sim.camera import backproject
from clip_vla.sim.world import Observation, TabletopWorld


def mask_goal(obs: Observation, name: str) -> Optional[Tuple[np.ndarray, float]]:
    """(xyz, theta) of an entity from its ground-truth mask and the rendered depth, as perception would."""
    mask = obs.mask_of(name)
    vs, us = np.nonzero(mask)
    if len(us) == 0:
        return None
    depth = float(np.median(obs.depth[mask]))
    xyz = backproject(float(us.mean()), float(vs.mean()), depth, obs.intrinsics, obs.camera_to_base)
    k = obs.intrinsics
    d = obs.depth[vs, us].astype(np.float64)
    pts_c = np.column_stack([(us - k.cx) / k.fx * d, (vs - k.cy) / k.fy * d, d])
    pts = pts_c @ obs.camera_to_base[:3, :3].T + obs.camera_to_base[:3, 3]
    xy = pts[:, :2] - pts[:, :2].mean(axis=0)
    evals, evecs = np.linalg.eigh(xy.T @ xy)
    major = evecs[:, int(np.argmax(evals))]
    theta = math.atan2(major[1], major[0])
    theta = (theta + math.pi / 2) % math.pi - math.pi / 2
    return xyz, theta


def run_episode(world: TabletopWorld, seed: int, skill: str, goal_source: str = "pose") -> Dict[str, object]:
    """One scripted episode (``skill`` may be "place:bowl" / "place:tray"); returns success and goal errors."""
    skill, _, destination = skill.partition(":")
    task = world.reset(seed=seed, skill=skill, destination=destination or None)
    true_xyz, true_yaw = world.object_pose(task.object)
    if goal_source == "pose":
        xyz, theta = true_xyz, true_yaw
    else:
        obs = world.observe()
        goal = mask_goal(obs, task.object)
        if goal is None:
            return {"seed": seed, "success": False, "reason": "target not visible", "command": task.command}
        xyz, theta = goal
    out: Dict[str, object] = {"seed": seed, "command": task.command,
                              "goal_error": (np.asarray(xyz) - true_xyz).tolist()}
    t0 = time.perf_counter()
    if skill == "place":
        first = world.execute("pick", xyz, theta)
        dest_xyz, dest_yaw = world.object_pose(task.destination)
        if goal_source == "mask":
            goal = mask_goal(obs, task.destination)
            dest_xyz, dest_yaw = goal if goal is not None else (dest_xyz, dest_yaw)
            out["destination_error"] = (np.asarray(dest_xyz) - world.object_pose(task.destination)[0]).tolist()
        res = world.execute("place", dest_xyz, dest_yaw) if first.success else first
    elif skill in ("push", "pull"):
        res = world.execute(skill, xyz, task.theta)
    else:
        res = world.execute(skill, xyz, theta)
    out.update(success=bool(world.check_success(task)), reason=res.reason, wall_s=time.perf_counter() - t0,
               shape=task.layout.object(task.object).shape, destination=task.destination)
    return out


def benchmark(skills: Sequence[str] = ("pick", "place", "push"), episodes: int = 50, goal_source: str = "pose",
              n_distractors: int = 3, first_seed: int = 1000) -> Dict[str, Dict[str, object]]:
    """Success rate, mean wall time and goal error statistics per skill over seeded episodes."""
    world = TabletopWorld(seed=0, n_distractors=n_distractors)
    report: Dict[str, Dict[str, object]] = {}
    try:
        for skill in skills:
            rows: List[Dict[str, object]] = [run_episode(world, first_seed + i, skill, goal_source)
                                             for i in range(episodes)]
            errs = np.array([r["goal_error"] for r in rows if "goal_error" in r])
            fails = [(r["seed"], r["command"], r["reason"]) for r in rows if not r["success"]]
            report[skill] = {
                "success_rate": sum(bool(r["success"]) for r in rows) / len(rows),
                "mean_wall_s": statistics.fmean(float(r.get("wall_s", 0.0)) for r in rows),
                "median_abs_goal_error_xyz": np.median(np.abs(errs), axis=0).round(4).tolist() if len(errs) else None,
                "by_shape": _rates(rows, "shape"),
                "failures": fails,
            }
            if skill.startswith("place"):
                report[skill]["by_destination"] = _rates(rows, "destination")
    finally:
        world.close()
    return report


def _rates(rows: List[Dict[str, object]], key: str) -> Dict[str, str]:
    """``{value: "successes/episodes"}`` grouped by one episode field."""
    groups: Dict[str, List[bool]] = {}
    for r in rows:
        groups.setdefault(str(r.get(key)), []).append(bool(r["success"]))
    return {k: f"{sum(v)}/{len(v)}" for k, v in sorted(groups.items())}


def main(argv: Optional[Sequence[str]] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--episodes", type=int, default=50)
    ap.add_argument("--skills", default="pick,place:bowl,place:tray,push,pull,point_at")
    ap.add_argument("--goal-source", choices=("pose", "mask"), default="pose")
    ap.add_argument("--distractors", type=int, default=3)
    args = ap.parse_args(argv)
    print(json.dumps(benchmark(args.skills.split(","), args.episodes, args.goal_source, args.distractors), indent=1))


if __name__ == "__main__":
    main()
