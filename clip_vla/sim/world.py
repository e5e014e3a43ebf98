"""``TabletopWorld``: the one object a benchmark, a test or the ROS sim node talks to.

It owns the episode (scene, physics, camera, gripper) and answers three kinds of
question: what does the camera see (``observe``), what happens when a goal is executed
(``execute``), and what is really there (``object_pose``, ``ground_truth_mask``,
``check_success``). A new scene is compiled on every ``reset`` because object kinds
differ between episodes; compiling takes a few ms, the renderer ~50 ms.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from clip_vla.core.types import Frame, Intrinsics
from clip_vla.sim._mujoco import mujoco
from clip_vla.sim.camera import RgbdCamera
from clip_vla.sim.executor import ChunkExecutor, SkillExecutor, SkillParams
from clip_vla.sim.gripper import FINGER_BODIES, GRIPPER_BODY, HOME, Gripper, MotionLimits
from clip_vla.sim.objects import body_name, phrase_of
from clip_vla.sim.scene import FixtureSpec, SceneConfig, build_mjcf
from clip_vla.sim import tasks
from clip_vla.sim.tasks import (COMPOUND, DESTINATIONS, PUSH_MIN_DISPLACEMENT, SKILLS, Task, entity_at, lifted,
                                oracle_theta, placed, pointed, pushed, sample_compound_task, sample_task)

FRAME_ID = "camera_color_optical_frame"


@dataclass
class Observation:
    """One rendered camera frame plus its geometry and the ground-truth segmentation.

    ``segmentation`` holds 0 for background/floor and ``k`` for ``labels[k]`` (objects first,
    then "bowl", "tray", "table", "gripper"); None when the frame was rendered without it.
    """

    rgb: np.ndarray  # HxWx3 uint8
    depth: np.ndarray  # HxW float32, metres along the optical axis
    segmentation: Optional[np.ndarray]  # HxW int32 label ids
    labels: Dict[int, str]
    intrinsics: Intrinsics
    camera_to_base: np.ndarray  # 4x4, optical frame -> base frame
    stamp: float  # simulation time, seconds
    frame_id: str = FRAME_ID

    def mask_of(self, name: str) -> np.ndarray:
        """HxW bool mask of one named entity ("red block", "bowl", ...)."""
        if self.segmentation is None:
            raise ValueError("this frame was rendered without segmentation (observe(segmentation=True))")
        phrase = phrase_of(name)
        for k, v in self.labels.items():
            if v == phrase:
                return self.segmentation == k
        raise KeyError(f"no '{name}' in this frame's labels {sorted(self.labels.values())}")

    def frame(self) -> Frame:
        """The core pipeline's input type (depth as float32 metres)."""
        return Frame(rgb=self.rgb, depth=self.depth, intrinsics=self.intrinsics, stamp=self.stamp,
                     frame_id=self.frame_id)


@dataclass
class ExecutionResult:
    """What executing one goal did: a physical success check of the acted-on object, and why.

    ``success`` judges the skill on whatever object it acted on (the nearest to the goal);
    ``failure`` judges the goal against the episode's task: one of ``tasks.FAILURE_LABELS``
    when the goal did not do what the task needs of it, None when it did (or no task is set).
    A pick of a look-alike is a ``success`` and a "wrong object" failure.
    """

    success: bool
    reason: str
    details: Dict[str, Any] = field(default_factory=dict)
    failure: Optional[str] = None

    def __post_init__(self) -> None:
        self.success = bool(self.success)  # never a numpy bool: results are serialised to JSON


class TabletopWorld:
    """A seeded tabletop episode generator with a physical parallel-jaw gripper and an RGB-D camera.

    Not thread-safe: use it from one thread (EGL contexts and MjData are not shared safely).
    """

    def __init__(
        self,
        seed: int = 0,
        n_distractors: int = 3,
        width: int = 640,
        height: int = 480,
        config: Optional[SceneConfig] = None,
        skills: Sequence[str] = ("pick", "place", "push"),
        limits: Optional[MotionLimits] = None,
        params: Optional[SkillParams] = None,
        on_step: Optional[Callable[[], None]] = None,
    ) -> None:
        cfg = config or SceneConfig()
        if (cfg.camera.width, cfg.camera.height) != (width, height):
            from dataclasses import replace

            cfg = replace(cfg, camera=replace(cfg.camera, width=int(width), height=int(height)))
        self.config = cfg
        self.n_distractors = int(n_distractors)
        self.skills = tuple(skills)
        self.limits = limits or MotionLimits()
        self.params = params or SkillParams()
        self.on_step = on_step
        self._rng = np.random.default_rng(seed)
        self.model = None
        self.data = None
        self.task: Optional[Task] = None
        self._camera: Optional[RgbdCamera] = None
        self.reset(seed=seed)

    # ------------------------------------------------------------------ episode
    def reset(self, seed: Optional[int] = None, skill: Optional[str] = None, task: Optional[Task] = None,
              destination: Optional[str] = None, direction: Optional[str] = None) -> Task:
        """A new random scene (or ``task``'s scene), settled under gravity; returns its task.

        ``skill`` fixes the task's skill (else one of the world's ``skills``), ``destination``
        ("bowl"/"tray") where a place task goes, ``direction`` ("left", ...: push/pull only) the
        direction the command names. Same seed and arguments, same episode.
        """
        if task is None and skill == COMPOUND:
            if seed is None:
                seed = int(self._rng.integers(2**31 - 1))
            task = sample_compound_task(np.random.default_rng(seed), self.n_distractors, self.config, seed)
        if task is None:
            if seed is None:
                seed = int(self._rng.integers(2**31 - 1))
            rng = np.random.default_rng(seed)
            task = sample_task(rng, skills=(skill,) if skill else self.skills, n_distractors=self.n_distractors,
                               config=self.config, seed=seed,
                               destinations=(destination,) if destination else DESTINATIONS, direction=direction)
        self.close()
        self.model = mujoco.MjModel.from_xml_string(build_mjcf(task.layout, self.config))
        self.data = mujoco.MjData(self.model)
        self._camera = RgbdCamera(self.model, self.config.camera)
        self.gripper = Gripper(self.model, self.data, self.limits, on_step=self.on_step)
        self.executor = SkillExecutor(self.gripper, self.params)
        self.chunks = ChunkExecutor(self.gripper, self.params)
        self._index_bodies(task)
        mujoco.mj_forward(self.model, self.data)
        self.gripper.wait(0.3)  # let objects settle onto the table
        self.rest = {n: self.object_pose(n) for n in self.object_names}
        if task.object is not None:
            xyz, yaw = self.rest[task.object]
            task = _with_truth(task, xyz, yaw)
        if task.parts:
            task = replace(task, parts=tuple(_with_truth(p, *self.rest[p.object]) for p in task.parts))
        self.task = task
        self.last: Optional[ExecutionResult] = None
        self._last_push: Optional[Tuple[str, float]] = None  # (object, direction of object motion)
        self._seg_cache: Optional[Tuple[float, np.ndarray]] = None
        return task

    def _index_bodies(self, task: Task) -> None:
        m = self.model
        self.object_names: List[str] = [o.name for o in task.layout.objects]
        self.fixtures: Dict[str, FixtureSpec] = {f.name: f for f in task.layout.fixtures}
        entities = self.object_names + list(self.fixtures) + ["table", "gripper"]
        self.labels: Dict[int, str] = {i + 1: n for i, n in enumerate(entities)}
        self._body: Dict[str, int] = {n: mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, body_name(n)) for n in entities}
        label_of_body = {b: i + 1 for i, b in enumerate(self._body.values())}
        for f in FINGER_BODIES:
            label_of_body[mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, f)] = label_of_body[self._body[GRIPPER_BODY]]
        lut = np.zeros(m.ngeom + 1, dtype=np.int32)  # index -1 (no geom) -> 0
        for gid in range(m.ngeom):
            lut[gid] = label_of_body.get(int(m.geom_bodyid[gid]), 0)
        self._geom_label = lut
        self._radius: Dict[str, float] = {o.name: o.radius for o in task.layout.objects}
        self._qadr = {n: int(m.jnt_qposadr[m.body_jntadr[self._body[n]]]) for n in self.object_names}
        self._vadr = {n: int(m.jnt_dofadr[m.body_jntadr[self._body[n]]]) for n in self.object_names}

    # ------------------------------------------------------------------ camera
    def intrinsics(self, width: Optional[int] = None, height: Optional[int] = None) -> Intrinsics:
        return self.config.camera.intrinsics(width, height)

    def camera_to_base(self) -> np.ndarray:
        """4x4 optical frame -> base frame, read from the simulated camera."""
        return self._camera.camera_to_base(self.data)

    def camera_xyz_rpy(self) -> Tuple[Tuple[float, float, float], Tuple[float, float, float]]:
        """The extrinsics as ``geometry.camera_to_base_xyz`` / ``_rpy`` (R = Rz(yaw) Ry(pitch) Rx(roll))."""
        return self.config.camera.xyz_rpy()

    def observe(self, width: Optional[int] = None, height: Optional[int] = None,
                segmentation: bool = True) -> Observation:
        """Render colour, depth and (unless a camera stream needs none) label segmentation of the current state."""
        rgb, depth, seg = self._camera.render(self.data, width, height, segmentation=segmentation)
        w, h = rgb.shape[1], rgb.shape[0]
        labels = self._geom_label[seg] if seg is not None else None
        if labels is not None and (w, h) == (self.config.camera.width, self.config.camera.height):
            self._seg_cache = (self.data.time, labels)
        return Observation(rgb=rgb, depth=depth, segmentation=labels, labels=dict(self.labels),
                           intrinsics=self.intrinsics(w, h), camera_to_base=self.camera_to_base(),
                           stamp=float(self.data.time))

    def ground_truth_mask(self, name: str) -> np.ndarray:
        """HxW bool: the pixels where the named entity is visible now."""
        if self._seg_cache is None or self._seg_cache[0] != self.data.time:
            _, _, seg = self._camera.render(self.data, rgb=False, depth=False, segmentation=True)
            self._seg_cache = (self.data.time, self._geom_label[seg])
        phrase = phrase_of(name)
        ids = [k for k, v in self.labels.items() if v == phrase]
        if not ids:
            raise KeyError(f"no '{name}' in the scene (known: {sorted(self.labels.values())})")
        return self._seg_cache[1] == ids[0]

    # ------------------------------------------------------------------ state
    def object_pose(self, name: str) -> Tuple[np.ndarray, float]:
        """(centre xyz in the base frame, yaw of the major axis in [-pi/2, pi/2)) of an object or fixture."""
        phrase = phrase_of(name)
        if phrase in self.fixtures:
            f = self.fixtures[phrase]
            return np.array([f.x, f.y, 0.0]), _half_turn(f.yaw)
        if phrase not in self._body:
            raise KeyError(f"no '{name}' in the scene (known: {self.object_names + list(self.fixtures)})")
        b = self._body[phrase]
        xmat = self.data.xmat[b].reshape(3, 3)
        return self.data.xpos[b].copy(), _half_turn(math.atan2(xmat[1, 0], xmat[0, 0]))

    def object_speed(self, name: str) -> float:
        v = self._vadr[phrase_of(name)]
        return float(np.linalg.norm(self.data.qvel[v:v + 3]))

    def held(self, name: str) -> bool:
        """Both fingers touch the object."""
        left, right = self.gripper.touching(self._body[phrase_of(name)])
        return left and right

    def held_object(self) -> Optional[str]:
        for n in self.object_names:
            if self.held(n):
                return n
        return None

    def touching_gripper(self, name: str) -> bool:
        b = self._body[phrase_of(name)]
        gid = self._body[GRIPPER_BODY]
        m, d = self.model, self.data
        left, right = self.gripper.touching(b)
        if left or right:
            return True
        for i in range(d.ncon):
            c = d.contact[i]
            pair = (m.geom_bodyid[c.geom1], m.geom_bodyid[c.geom2])
            if b in pair and gid in pair:
                return True
        return False

    def gripper_pose(self) -> Tuple[np.ndarray, float, float]:
        """(TCP xyz, yaw, finger opening in metres)."""
        return self.gripper.position, self.gripper.yaw, self.gripper.opening

    def nearest_object(self, xy: Sequence[float], max_distance: float = 0.08) -> Optional[str]:
        best, best_d = None, max_distance
        for n in self.object_names:
            p, _ = self.object_pose(n)
            dist = math.hypot(p[0] - xy[0], p[1] - xy[1])
            if dist < best_d:
                best, best_d = n, dist
        return best

    def goal_on(self, xy: Sequence[float], exclude: Optional[str] = None) -> Optional[str]:
        """The object or fixture a goal at ``xy`` is on now, None for the bare table (``tasks.entity_at``).

        ``exclude``: an object that cannot be the goal's, the one held by a place.
        """
        objects = []
        for name in self.object_names:
            if name != exclude:
                xyz, _ = self.object_pose(name)
                objects.append((name, float(xyz[0]), float(xyz[1]), self._radius[name]))
        return entity_at(xy, objects, list(self.fixtures.values()))

    def destination_at(self, xy: Sequence[float]) -> Optional[FixtureSpec]:
        for f in self.fixtures.values():
            if f.footprint_distance(xy[0], xy[1]) <= 0.0:
                return f
        return None

    # ------------------------------------------------------------------ acting
    def execute(self, skill: str, xyz: Optional[Sequence[float]] = None, theta: float = 0.0,
                chunk: Optional[Sequence[Any]] = None) -> ExecutionResult:
        """Run one goal through the physics and judge its effect on the object it acted on.

        With ``chunk`` (the step's action-chunk waypoints, ``ChunkExecutor``) the gripper follows
        the chunk instead of the scripted skill; the goal ``xyz``/``theta`` still say what the step
        acts on, so both are judged by the same rules.
        """
        if skill not in SKILLS:
            return self._done(ExecutionResult(False, f"unknown skill '{skill}' (known: {list(SKILLS)})",
                                              {"skill": skill}))
        if skill in ("open", "close"):
            return self._done(ExecutionResult(False, "unsupported: this scene has no articulated object",
                                              {"skill": skill}))
        if skill == "none":
            return self._done(ExecutionResult(True, "no-op", {"skill": skill}))
        if xyz is None or len(xyz) != 3 or not all(math.isfinite(float(v)) for v in xyz):
            return self._done(ExecutionResult(False, f"'{skill}' needs a finite goal xyz, got {xyz}", {"skill": skill}))
        x, y, z = (float(v) for v in xyz)
        theta = float(theta)
        t0 = time.perf_counter()
        steps0, sim0, blocked0 = self.gripper.steps, float(self.data.time), self.gripper.blocked
        details: Dict[str, Any] = {"skill": skill, "goal": [x, y, z], "theta": theta}

        if skill == "place":
            obj = self.held_object()
            if obj is None:
                return self._done(ExecutionResult(False, "nothing is held: pick something first", details))
            details["goal_on"] = self.goal_on((x, y), exclude=obj)  # before the object moves under it
            if chunk is not None:
                self.chunks.run(chunk)
            else:
                self.executor.place(x, y, z, theta)
            result = self._judge_place(obj, (x, y, z), details)
        else:
            details["goal_on"] = self.goal_on((x, y))
            obj = self.nearest_object((x, y))
            start = self.object_pose(obj)[0] if obj else None
            if chunk is not None:
                self.chunks.run(chunk)
            else:
                getattr(self.executor, skill)(x, y, z, theta)
            details["object"] = obj
            if obj is None:
                result = ExecutionResult(False, "no object within 8 cm of the goal", details)
            elif skill == "pick":
                pos, _ = self.object_pose(obj)
                lift = float(pos[2] - self.rest[obj][0][2])
                ok = lifted(self.rest[obj][0][2], pos[2], self.held(obj))
                details["lift"] = lift
                result = ExecutionResult(ok, "lifted and held" if ok else (
                    "not held" if not self.held(obj) else f"lifted only {lift:.3f} m"), details)
            elif skill in ("push", "pull"):
                direction = theta  # push and pull: theta is the direction the object moves
                end = self.object_pose(obj)[0]
                ok, along = pushed(start, end, direction)
                self._last_push = (obj, direction)
                details["displacement"] = along
                result = ExecutionResult(ok, f"moved {along:.3f} m along the direction", details)
            else:  # point_at
                ok, err = pointed(self.gripper.position, self.object_pose(obj)[0])
                details["xy_error"] = err
                result = ExecutionResult(ok, f"gripper {err:.3f} m (xy) from the object", details)

        details.update(wall_s=time.perf_counter() - t0, sim_s=float(self.data.time) - sim0,
                       steps=self.gripper.steps - steps0, blocked_moves=self.gripper.blocked - blocked0)
        return self._done(result)

    def _judge_place(self, obj: str, goal: Sequence[float], details: Dict[str, Any]) -> ExecutionResult:
        pos, _ = self.object_pose(obj)
        details["object"] = obj
        fixture = self.destination_at(goal[:2])
        speed = self.object_speed(obj)
        if fixture is not None:
            details["destination"] = fixture.name
            ok = placed(fixture, pos, speed, self.touching_gripper(obj))
            return ExecutionResult(ok, f"{obj} {'in' if ok else 'not in'} the {fixture.name}", details)
        err = math.hypot(pos[0] - goal[0], pos[1] - goal[1])
        problems = [why for why, bad in (("more than 5 cm away", err >= 0.05), ("still moving", speed >= 0.05),
                                         ("still touching the gripper", self.touching_gripper(obj))) if bad]
        where = f"{obj} {err:.3f} m from a goal on no bowl or tray"
        return ExecutionResult(not problems, where + (f": {', '.join(problems)}" if problems else ", at rest"),
                               details)

    def _done(self, result: ExecutionResult) -> ExecutionResult:
        result.failure = self.failure_label(result)
        self.last = result
        return result

    def failure_label(self, result: ExecutionResult, task: Optional[Task] = None) -> Optional[str]:
        """Why the goal behind ``result`` did not do what ``task`` (default: the episode's) needs of it.

        One of ``tasks.FAILURE_LABELS``, or None when it did (a pick of the target that lifts it,
        in a place task too) or when there is no task. Judged on the world as it is now, right
        after the goal; what the goal was on comes from ``details["goal_on"]``, taken before it.
        """
        task = task or self.task
        if task is None:
            return None
        details = result.details
        skill = details.get("skill")
        if skill not in task.step_skills:
            return tasks.WRONG_SKILL
        if skill in ("open", "close"):
            return tasks.UNSUPPORTED
        if skill == "none":
            return None  # a no-op cannot undo the task; its success is the task's own check
        if "goal" not in details:
            return tasks.INVALID_GOAL
        if self._achieved(skill, task):
            return None
        on = details.get("goal_on")
        if skill == "place":
            held = details.get("object")
            if held is None:
                return tasks.NOTHING_HELD
            if held != task.object:
                return tasks.WRONG_OBJECT
            if on == task.destination:
                return tasks.NOT_IN_DESTINATION
            if on in self.fixtures:
                return tasks.WRONG_DESTINATION
            return tasks.BESIDE_DESTINATION if on is None else tasks.WRONG_OBJECT
        if on is not None and on != task.object:
            return tasks.WRONG_OBJECT
        if on is None and details.get("object") != task.object:
            return tasks.EMPTY_TABLE
        if skill == "pick":
            return tasks.NOT_LIFTED if self.held(task.object) else tasks.NOT_GRASPED
        if skill in ("push", "pull"):
            moved = float(np.linalg.norm((self.object_pose(task.object)[0] - self.rest[task.object][0])[:2]))
            return tasks.WRONG_DIRECTION if moved > PUSH_MIN_DISPLACEMENT else tasks.MOVED_TOO_LITTLE
        return tasks.OFF_TARGET

    @property
    def time(self) -> float:
        """Simulation time, seconds (the stamp of observations)."""
        return float(self.data.time)

    def advance(self, seconds: float) -> None:
        """Let the physics run with the gripper holding still (e.g. between commands)."""
        self.gripper.wait(seconds)

    def go_home(self) -> None:
        """Park the gripper (open) out of the camera's view."""
        self.gripper.open(settle=0.0)
        self.executor.home(HOME)

    # ------------------------------------------------------------------ judging
    def check_success(self, task: Optional[Task] = None) -> bool:
        """Has the task's command been carried out on its target (not just on some object)?"""
        return bool(self._check_success(task))

    def _check_success(self, task: Optional[Task]) -> bool:
        task = task or self.task
        return task is not None and self._achieved(task.skill, task)

    def step_achieved(self, skill: str, task: Task) -> bool:
        """Is ``skill``, one step of ``task``, carried out on its target now (the pick of a place task:
        the object lifted and held)? A compound task's step is judged on its part (``Task.step_parts``)."""
        return bool(self._achieved(skill, task))

    def _achieved(self, skill: str, task: Task) -> bool:
        """Is ``skill`` carried out on the task's target now (into its destination, for place)?

        The one success rule: the whole task's (``check_success``) and each goal's (no
        ``failure_label``), so a step is never counted a success one way and a failure the other.
        """
        if task.parts and skill == COMPOUND:
            return all(self._achieved(p.skill, p) for p in task.parts)
        if skill == "none":
            return all(np.linalg.norm(self.object_pose(n)[0] - self.rest[n][0]) < 0.01 for n in self.object_names)
        if skill in ("open", "close") or task.object is None:
            return False
        obj = task.object
        pos, _ = self.object_pose(obj)
        rest = self.rest[obj][0]
        if skill == "pick":
            return lifted(rest[2], pos[2], self.held(obj))
        if skill == "place":
            f = self.fixtures.get(task.destination or "")
            return f is not None and placed(f, pos, self.object_speed(obj), self.touching_gripper(obj))
        if skill in ("push", "pull"):
            return pushed(rest, pos, self._push_direction(task))[0]
        if skill == "point_at":
            return pointed(self.gripper.position, pos)[0]
        return False

    def _push_direction(self, task: Task) -> float:
        """The direction a push/pull of the target is judged along: the one the command named,
        else the last push's own theta (when it acted on the target), else the oracle's."""
        if task.named_yaw is not None:
            return task.named_yaw
        if self._last_push is not None and self._last_push[0] == task.object:
            return self._last_push[1]
        return task.theta

    def run_oracle(self, task: Optional[Task] = None) -> Tuple[bool, List[ExecutionResult]]:
        """Execute the task with ground-truth goals (pick then place for "put X in Y"); for baselines."""
        task = task or self.task
        assert task is not None
        results: List[ExecutionResult] = []
        if task.skill in ("none", "open", "close"):
            results.append(self.execute(task.skill))
            return self.check_success(task), results
        xyz, yaw = self.object_pose(task.object)
        if task.skill == "place":
            results.append(self.execute("pick", xyz, yaw))
            dest, dyaw = self.object_pose(task.destination)
            results.append(self.execute("place", dest, dyaw))
        else:
            results.append(self.execute(task.skill, xyz, oracle_theta(task) if task.skill in ("push", "pull") else yaw))
        return self.check_success(task), results

    def close(self) -> None:
        if self._camera is not None:
            self._camera.close()
            self._camera = None

    def __enter__(self) -> "TabletopWorld":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _half_turn(yaw: float) -> float:
    """Yaw of an axis (symmetric by pi) in [-pi/2, pi/2)."""
    return (yaw + math.pi / 2) % math.pi - math.pi / 2


def _with_truth(task: Task, xyz: np.ndarray, yaw: float) -> Task:
    from dataclasses import replace

    return replace(task, object_xyz=tuple(float(v) for v in xyz), object_yaw=float(yaw))
