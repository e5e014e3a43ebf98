"""Skills as scripted gripper motions: what an action goal ``(cmd, x, y, z, theta)`` does in the sim.

Each skill is a short sequence of interpolated mocap waypoints with the physics stepped
in between, so the outcome (grasped or not, pushed how far) comes from contacts.

Goal heights: perception's goal z is the object's centre by default
(``geometry.point_estimate: object_centre``) or, with ``surface``, a point on the visible
surface between the centre and the top. The grasp therefore descends to a fingertip height
computed from the goal z and the known table plane: ``tip_z = max(table_z + min_tip_clearance, z - grasp_depth)``. With
8 cm fingers and objects at most 8.5 cm tall this closes on the lower/middle part of
every object whether z is the true centre or the visible top surface, and never drives
the fingertips into the table.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np

from clip_vla.sim.gripper import Gripper


@dataclass
class SkillParams:
    """Geometry of the scripted skills, in metres above the table plane unless stated."""

    table_z: float = 0.0
    travel_height: float = 0.17  # fingertips above the table for free-space moves (objects are < 9 cm)
    grasp_depth: float = 0.03  # fingertips this far below the goal z when closing
    min_tip_clearance: float = 0.008  # fingertips never lower than this above the table
    lift: float = 0.15  # how far a pick raises the object
    # place: object bottom this far above the destination goal z when released: over a tray's
    # rim (2.7 cm), already inside a bowl's wall (4.5 cm), so a tall object drops without toppling.
    release_height: float = 0.035
    push_standoff: float = 0.085  # push starts this far behind the goal point (> largest half length + pad)
    push_through: float = 0.08  # and ends this far past it (object moves ~ through + its half size)
    push_tip_height: float = 0.012  # fingertips above the table while pushing
    point_height: float = 0.05  # point_at hovers this far above the goal point
    settle_time: float = 0.6  # s of physics after a release before judging


class SkillExecutor:
    """Runs the skills on one gripper. Stateless except for how a held object was grasped."""

    def __init__(self, gripper: Gripper, params: Optional[SkillParams] = None) -> None:
        self.g = gripper
        self.p = params or SkillParams()
        # Fingertip height above the object's bottom at the last grasp (the object stood on
        # the table), so place can lower the object's bottom to a chosen height.
        self.grasp_offset: Optional[float] = None

    # ---- helpers
    def _travel_z(self) -> float:
        return self.p.table_z + self.p.travel_height

    def _go_above(self, x: float, y: float, yaw: Optional[float], z: Optional[float] = None) -> None:
        """Rise vertically if low, then move across at travel height (never sweep through objects)."""
        tz = max(self._travel_z(), self.g.position[2]) if z is None else z
        pos = self.g.position
        if pos[2] < tz - 1e-4:
            self.g.move_to((pos[0], pos[1], tz))
        self.g.move_to((x, y, tz), yaw=yaw)

    def grasp_tip_z(self, z: float) -> float:
        return max(self.p.table_z + self.p.min_tip_clearance, z - self.p.grasp_depth)

    # ---- skills
    def pick(self, x: float, y: float, z: float, theta: float) -> None:
        """Open, come down over (x, y) with the jaws closing across theta, close, lift."""
        g, lim = self.g, self.g.limits
        g.open(settle=0.0)
        self._go_above(x, y, theta, z=self._travel_z())
        tip = self.grasp_tip_z(z)
        g.move_to((x, y, tip + 0.03), speed=lim.travel_speed)
        g.move_to((x, y, tip), speed=lim.approach_speed)
        g.close()
        self.grasp_offset = tip - self.p.table_z
        g.move_to((x, y, max(tip + self.p.lift, self._travel_z())), speed=lim.approach_speed)

    def place(self, x: float, y: float, z: float, theta: Optional[float] = None) -> None:
        """Carry over (x, y) (turning the held object's major axis to theta if given), lower, open, retreat."""
        g, lim = self.g, self.g.limits
        offset = self.grasp_offset if self.grasp_offset is not None else self.p.min_tip_clearance
        self._go_above(x, y, theta)
        tip = max(z, self.p.table_z) + self.p.release_height + offset
        g.move_to((x, y, min(tip, g.position[2])), speed=lim.approach_speed)
        g.open()
        self.grasp_offset = None
        g.move_to((x, y, max(g.position[2] + 0.08, self._travel_z())), speed=lim.approach_speed)
        g.wait(self.p.settle_time)

    def push(self, x: float, y: float, z: float, theta: float) -> None:
        """Closed fingers behind the object along theta, then sweep through it along theta."""
        g, lim = self.g, self.g.limits
        d = np.array([math.cos(theta), math.sin(theta)])
        start = np.array([x, y]) - self.p.push_standoff * d
        end = np.array([x, y]) + self.p.push_through * d
        tip = self.p.table_z + self.p.push_tip_height
        g.close(settle=0.0)
        # Yaw = theta: the palm's long side is across the motion, so it cannot overhang (and tip) a tall object.
        self._go_above(start[0], start[1], theta, z=self._travel_z())
        g.move_to((start[0], start[1], tip), speed=lim.travel_speed)
        g.move_to((end[0], end[1], tip), speed=lim.push_speed)
        g.move_to((end[0], end[1], self._travel_z()), speed=lim.approach_speed)
        g.wait(self.p.settle_time)

    def pull(self, x: float, y: float, z: float, theta: float) -> None:
        """Drag the object along theta (its direction of motion, as for push; for a pull that is
        towards the robot, so the fingers land on the far side of the object and sweep back)."""
        self.push(x, y, z, theta)

    def point_at(self, x: float, y: float, z: float, theta: float = 0.0) -> None:
        """Hover with closed fingers ``point_height`` above the point."""
        g = self.g
        g.close(settle=0.0)
        hover = max(z, self.p.table_z) + self.p.point_height
        self._go_above(x, y, theta, z=max(self._travel_z(), hover))
        g.move_to((x, y, hover), speed=g.limits.approach_speed)
        g.wait(0.1)

    def home(self, position, yaw: float = 0.0) -> None:
        """Back to the parking pose (open), above everything."""
        self._go_above(position[0], position[1], yaw, z=max(self._travel_z(), self.g.position[2]))
        self.g.move_to(position, yaw=yaw)


class ChunkExecutor:
    """Moves the gripper through an action chunk's waypoints: the node's motion, not a scripted skill.

    A waypoint is anything with ``x, y, z, theta, gripper`` (a ``clip_vla.core.tokenizer.Waypoint``,
    or the ``~/plan`` JSON's waypoint dicts via ``Waypoint(**w)``); (x, y, z) is the fingertip
    centre, gripper 0 = open, 1 = closed. The hand first takes the first waypoint's gripper
    state, rises to the first waypoint's height if lower (never sweeping low through objects),
    then moves to each waypoint in turn and sets its gripper state there. Level moves with
    closed fingers (pushing) go at ``push_speed``, the rest at ``approach_speed``.
    """

    def __init__(self, gripper: Gripper, params: Optional[SkillParams] = None) -> None:
        self.g = gripper
        self.p = params or SkillParams()

    def run(self, waypoints: Sequence[Any]) -> None:
        """Execute the chunk, then let the physics settle (``settle_time``) before it is judged.

        Raises:
            ValueError: an empty chunk.
        """
        if not waypoints:
            raise ValueError("an action chunk has at least one waypoint")
        g, lim = self.g, self.g.limits
        closed = float(waypoints[0].gripper) >= 0.5
        (g.close if closed else g.open)(settle=0.0)
        first = waypoints[0]
        pos = g.position
        if pos[2] < first.z - 1e-4:
            g.move_to((pos[0], pos[1], first.z))
        g.move_to((first.x, first.y, first.z), yaw=first.theta, speed=lim.travel_speed)
        for w in waypoints[1:]:
            target = np.array([w.x, w.y, w.z], dtype=np.float64)
            delta = target - g.position
            if float(np.linalg.norm(delta)) > 1e-4:
                level = abs(float(delta[2])) < 1e-3
                g.move_to(target, yaw=w.theta, speed=lim.push_speed if closed and level else lim.approach_speed)
            want = float(w.gripper) >= 0.5
            if want != closed:
                (g.close if want else g.open)()
                closed = want
        g.wait(self.p.settle_time)
