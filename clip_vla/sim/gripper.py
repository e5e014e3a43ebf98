"""A floating parallel-jaw gripper: its MJCF and the low-level motions the skills are made of.

The hand is a free body (gravity compensated) welded to a mocap target that the skills
move, like a stiff Cartesian impedance controller. It must not be the mocap body itself:
a mocap body has no velocity in the dynamics, so its fingers would slide along an object
without dragging it by friction. The two fingers are slide joints,
each driven by a position actuator with the same command and a capped force, so a closed grasp squeezes
with a bounded force and the object is held by contact friction only. No object weld, no
teleport: if the fingers miss, the object stays on the table.

Gripper frame: origin (the TCP) at the fingertips, midway between the fingers; z up along
the wrist; the fingers close along local y. With yaw = theta the closing direction is
perpendicular to the object's major axis theta, i.e. the jaws close across it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Tuple

import numpy as np

GRIPPER_BODY = "gripper"
TARGET_BODY = "gripper_target"  # the mocap body the hand is welded to
FINGER_BODIES = ("finger_left", "finger_right")
PAD_HALF = (0.022, 0.006, 0.04)  # half sizes of a finger pad: width (local x), thickness (y), length (z)
FINGER_OPEN_Y = 0.058  # pad centre offset at full opening: 10.4 cm between the pads
STROKE = 0.05  # travel of each finger from open to closed
GRIP_FORCE = 15.0  # N, force cap of the finger actuator
FINGER_LENGTH = 2 * PAD_HALF[2]
HOME = (0.12, 0.0, 0.40)  # parked above the robot base, outside the table region


def gripper_mjcf(home: Sequence[float] = HOME) -> Tuple[str, str]:
    """(world-body XML, top-level XML) of the gripper: its bodies, and its equality, exclusion and actuator."""
    px, py, pz = PAD_HALF
    pos = " ".join(f"{v:.4f}" for v in home)
    body = f"""
    <body name="{TARGET_BODY}" mocap="true" pos="{pos}"/>
    <body name="{GRIPPER_BODY}" pos="{pos}" gravcomp="1">
      <freejoint name="gripper_joint"/>
      <site name="tcp" pos="0 0 0" size="0.004" rgba="1 1 1 0" group="4"/>
      <geom name="palm" class="gripper" type="box" size="0.022 0.075 0.012" pos="0 0 {FINGER_LENGTH + 0.012:.4f}"/>
      <geom name="wrist" class="gripper" type="cylinder" size="0.026 0.06" pos="0 0 {FINGER_LENGTH + 0.084:.4f}"/>
      <body name="{FINGER_BODIES[0]}" pos="0 {FINGER_OPEN_Y:.4f} {pz:.4f}" gravcomp="1">
        <joint name="finger_left_joint" type="slide" axis="0 -1 0" range="0 {STROKE:.4f}"
               damping="100" armature="0.01"/>
        <geom name="pad_left" class="pad" type="box" size="{px} {py} {pz}" mass="0.05"/>
      </body>
      <body name="{FINGER_BODIES[1]}" pos="0 {-FINGER_OPEN_Y:.4f} {pz:.4f}" gravcomp="1">
        <joint name="finger_right_joint" type="slide" axis="0 1 0" range="0 {STROKE:.4f}"
               damping="100" armature="0.01"/>
        <geom name="pad_right" class="pad" type="box" size="{px} {py} {pz}" mass="0.05"/>
      </body>
    </body>"""
    extra = f"""
  <equality>
    <weld name="hand_to_target" body1="{GRIPPER_BODY}" body2="{TARGET_BODY}" solref="0.01 1"/>
  </equality>
  <contact>
    <exclude body1="{FINGER_BODIES[0]}" body2="{FINGER_BODIES[1]}"/>
  </contact>
  <actuator>
    <position name="finger_left" joint="finger_left_joint" kp="2000" ctrlrange="0 {STROKE:.4f}"
              forcerange="-{GRIP_FORCE} {GRIP_FORCE}"/>
    <position name="finger_right" joint="finger_right_joint" kp="2000" ctrlrange="0 {STROKE:.4f}"
              forcerange="-{GRIP_FORCE} {GRIP_FORCE}"/>
  </actuator>"""
    return body, extra


def yaw_quat(yaw: float) -> np.ndarray:
    """MuJoCo (w, x, y, z) quaternion of a rotation by ``yaw`` about z."""
    return np.array([math.cos(yaw / 2.0), 0.0, 0.0, math.sin(yaw / 2.0)])


def wrap_half_turn(angle: float, reference: float = 0.0) -> float:
    """The angle equal to ``angle`` modulo pi closest to ``reference``: a parallel gripper is symmetric by pi."""
    return reference + (angle - reference + math.pi / 2.0) % math.pi - math.pi / 2.0


def _smoothstep(s: float) -> float:
    """Zero velocity at both ends, so carried objects are not flung by the start/stop."""
    return s * s * (3.0 - 2.0 * s)


@dataclass
class MotionLimits:
    """Speeds of the scripted motions; they set the CPU cost of a skill (time / timestep steps)."""

    travel_speed: float = 0.40  # m/s, free-space moves
    approach_speed: float = 0.15  # m/s, the last centimetres to and from a grasp
    push_speed: float = 0.12  # m/s, while in contact for push/pull
    yaw_speed: float = 3.0  # rad/s
    min_duration: float = 0.05  # s, the shortest segment
    finger_time: float = 0.35  # s, to close or open the fingers and let contacts settle
    # A move stops (the target freezes where the hand is) when the hand lags its target by more
    # than this: it is blocked, and pressing on would build up unbounded weld forces.
    max_tracking_error: float = 0.015


class Gripper:
    """Moves the mocap hand through interpolated waypoints, stepping the physics at every timestep."""

    def __init__(self, model, data, limits: Optional[MotionLimits] = None,
                 on_step: Optional[Callable[[], None]] = None, callback_period: float = 0.1) -> None:
        from clip_vla.sim._mujoco import mujoco

        self._mj = mujoco
        self.model = model
        self.data = data
        self.limits = limits or MotionLimits()
        self.on_step = on_step
        self._callback_every = max(1, int(round(callback_period / model.opt.timestep)))
        self.body_id = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, GRIPPER_BODY)
        self.mocap_id = int(model.body_mocapid[mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, TARGET_BODY)])
        self.hand_qpos = int(model.jnt_qposadr[model.body_jntadr[self.body_id]])
        self.finger_ids = tuple(mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, n) for n in FINGER_BODIES)
        self.finger_qpos = [int(model.jnt_qposadr[mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, f"{f}_joint")])
                            for f in FINGER_BODIES]
        self.actuators = [mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_ACTUATOR, f)
                          for f in ("finger_left", "finger_right")]
        self.steps = 0
        self.blocked = 0  # moves stopped early because the hand was blocked

    # ---- state
    @property
    def position(self) -> np.ndarray:
        """The commanded TCP (fingertip centre) in the base frame: where the mocap target is."""
        return self.data.mocap_pos[self.mocap_id].copy()

    @property
    def actual_position(self) -> np.ndarray:
        """Where the TCP really is (lags the target by a few mm, more when blocked by contact)."""
        return self.data.xpos[self.body_id].copy()

    @property
    def yaw(self) -> float:
        w, _, _, z = self.data.mocap_quat[self.mocap_id]
        return 2.0 * math.atan2(float(z), float(w))

    @property
    def opening(self) -> float:
        """Distance between the finger pads, metres."""
        q = self.data.qpos[self.finger_qpos]
        return float(2.0 * (FINGER_OPEN_Y - PAD_HALF[1]) - q.sum())

    def touching(self, body_id: int) -> Tuple[bool, bool]:
        """Whether the left and right finger are in contact with body ``body_id``."""
        left = right = False
        d, m = self.data, self.model
        for i in range(d.ncon):
            c = d.contact[i]
            b1, b2 = m.geom_bodyid[c.geom1], m.geom_bodyid[c.geom2]
            if body_id not in (b1, b2):
                continue
            other = b2 if b1 == body_id else b1
            left |= bool(other == self.finger_ids[0])
            right |= bool(other == self.finger_ids[1])
        return left, right

    # ---- motions
    def step(self, n: int = 1) -> None:
        for _ in range(n):
            self._mj.mj_step(self.model, self.data)
            self.steps += 1
            if self.on_step is not None and self.steps % self._callback_every == 0:
                self.on_step()

    def wait(self, seconds: float) -> None:
        self.step(max(1, int(round(seconds / self.model.opt.timestep))))

    def set_pose(self, position: Sequence[float], yaw: float) -> None:
        """Teleport the (empty) hand and its target: only for resets, never while touching anything."""
        self.data.mocap_pos[self.mocap_id] = position
        self.data.mocap_quat[self.mocap_id] = yaw_quat(yaw)
        self.data.qpos[self.hand_qpos:self.hand_qpos + 3] = position
        self.data.qpos[self.hand_qpos + 3:self.hand_qpos + 7] = yaw_quat(yaw)
        self.data.qvel[self.model.body_dofadr[self.body_id]:self.model.body_dofadr[self.body_id] + 6] = 0.0

    def move_to(self, position: Sequence[float], yaw: Optional[float] = None, speed: Optional[float] = None) -> bool:
        """Straight-line move with a smooth time profile; yaw turns the short way (modulo pi).

        Returns False when the hand was blocked (it then stays where it got to).
        """
        lim = self.limits
        speed = lim.travel_speed if speed is None else speed
        start = self.position
        goal = np.asarray(position, dtype=np.float64)
        yaw0 = self.yaw
        yaw1 = yaw0 if yaw is None else wrap_half_turn(yaw, yaw0)
        duration = max(float(np.linalg.norm(goal - start)) / speed, abs(yaw1 - yaw0) / lim.yaw_speed, lim.min_duration)
        n = max(1, int(math.ceil(duration / self.model.opt.timestep)))
        for i in range(1, n + 1):
            s = _smoothstep(i / n)
            self.data.mocap_pos[self.mocap_id] = start + s * (goal - start)
            self.data.mocap_quat[self.mocap_id] = yaw_quat(yaw0 + s * (yaw1 - yaw0))
            self.step()
            actual = self.data.xpos[self.body_id]
            if np.linalg.norm(actual - self.data.mocap_pos[self.mocap_id]) > lim.max_tracking_error:
                self.data.mocap_pos[self.mocap_id] = actual
                self.data.mocap_quat[self.mocap_id] = self.data.xquat[self.body_id]
                self.blocked += 1
                return False
        return True

    def open(self, settle: Optional[float] = None) -> None:
        self.data.ctrl[self.actuators] = 0.0
        self.wait(self.limits.finger_time if settle is None else settle)

    def close(self, settle: Optional[float] = None) -> None:
        self.data.ctrl[self.actuators] = STROKE
        self.wait(self.limits.finger_time if settle is None else settle)
