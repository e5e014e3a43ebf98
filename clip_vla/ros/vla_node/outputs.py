"""Everything the node publishes: goal, goal pose, markers, debug image, status and diagnostics.

The JSON comes from ``clip_vla.core.records`` (shared with ``clip-vla replay``); this module
turns a record into messages and publishes them under one lock, because the worker thread and
the executor both publish.

    ActionGoal ─► goal_record() ─► ~/goal (JSON), ~/goal_pose, ~/markers
    any result ─► answer() ─────► ~/status (JSON), exactly once per command
    plan record ─► plan() ──────► ~/plan (JSON); the current step's chunk ─► ~/chunk_path, ~/markers
    plan ending ─► task_status() ► ~/task_status (JSON), once per accepted command
"""
from __future__ import annotations

import json
import math
import threading
import time
from typing import Any, Dict, Optional

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from geometry_msgs.msg import Point, PoseStamped
from nav_msgs.msg import Path
from sensor_msgs.msg import Image
from std_msgs.msg import String
from visualization_msgs.msg import Marker, MarkerArray

from clip_vla.core import records
from clip_vla.core.chunks import Chunk
from clip_vla.core.tokenizer import GRIPPER_CLOSED
from clip_vla.core.types import ActionGoal
from clip_vla.ros import conversions as conv
from clip_vla.ros import qos
from clip_vla.ros.vla_node.commands import Command
from clip_vla.ros.vla_node.diagnostics import Stats
from clip_vla.ros.vla_node.settings import NodeSettings
from clip_vla.ros.vla_node.tasks import Ending
from clip_vla.ros.vla_node.tf import TfLookup


def goal_record(cmd: Command, goal: ActionGoal, header: Any, update: int, settings: NodeSettings,
                tf: TfLookup) -> Dict[str, Any]:
    """The ``~/goal`` record of ``goal`` found on the image with ``header``, in the goal frame.

    Raises:
        Refusal: the goal frame differs from base_frame and TF has no transform to it.
    """
    frame_id, base_to_target = tf.base_to_target(header.stamp, settings)
    return records.goal_record(goal, stamp=conv.stamp_to_dict(header.stamp), frame_id=frame_id,
                               token_frame=settings.base_frame, camera_frame=header.frame_id, command=cmd.text,
                               command_id=cmd.command_id, update=update, base_to_target=base_to_target)


def goal_markers(record: Dict[str, Any], stamp: Any) -> MarkerArray:
    """RViz markers of a goal record: an arrow at the pose, spheres at the target and object, a label."""
    frame_id, p, q = record["frame_id"], record["pose"], record["orientation"]

    def marker(ns: str, mid: int, mtype: int) -> Marker:
        m = Marker()
        m.header.stamp = stamp
        m.header.frame_id = frame_id
        m.ns, m.id, m.type, m.action = ns, mid, mtype, Marker.ADD
        m.pose.orientation.w = 1.0
        m.frame_locked = False
        return m

    arrow = marker("clip_vla_goal", 0, Marker.ARROW)
    arrow.pose.position.x, arrow.pose.position.y, arrow.pose.position.z = p["x"], p["y"], p["z"]
    arrow.pose.orientation.x, arrow.pose.orientation.y, arrow.pose.orientation.z, arrow.pose.orientation.w = (
        q["x"], q["y"], q["z"], q["w"])
    arrow.scale.x, arrow.scale.y, arrow.scale.z = 0.12, 0.012, 0.012
    arrow.color.r, arrow.color.g, arrow.color.b, arrow.color.a = 0.1, 0.85, 0.2, 1.0

    point = marker("clip_vla_object", 1, Marker.SPHERE)
    point.pose.position.x, point.pose.position.y, point.pose.position.z = p["x"], p["y"], p["z"]
    point.scale.x = point.scale.y = point.scale.z = 0.03
    point.color.r, point.color.g, point.color.b, point.color.a = 1.0, 0.8, 0.1, 0.9

    obj = record.get("object_position")
    second = marker("clip_vla_object", 2, Marker.SPHERE)
    if obj is not None:
        second.pose.position.x, second.pose.position.y, second.pose.position.z = obj
        second.scale.x = second.scale.y = second.scale.z = 0.03
        second.color.r, second.color.g, second.color.b, second.color.a = 0.2, 0.5, 1.0, 0.9
    else:
        second.action = Marker.DELETE

    label = marker("clip_vla_label", 3, Marker.TEXT_VIEW_FACING)
    label.pose.position.x, label.pose.position.y, label.pose.position.z = p["x"], p["y"], p["z"] + 0.08
    label.scale.z = 0.03
    label.color.r = label.color.g = label.color.b = label.color.a = 1.0
    label.text = f"{record['cmd']} {record['object'] or ''} [{record['tokens_text']}]".strip()
    return MarkerArray(markers=[arrow, point, second, label])


def _yaw_orientation(pose: Any, theta: float) -> None:
    pose.orientation.z, pose.orientation.w = math.sin(theta / 2.0), math.cos(theta / 2.0)


def chunk_path(chunk: Chunk, frame_id: str, stamp: Any) -> Path:
    """``~/chunk_path``: one pose per decoded waypoint (TCP, base frame, yaw about z); the gripper is in ``~/plan``."""
    path = Path()
    path.header.stamp, path.header.frame_id = stamp, frame_id
    for w in chunk.decoded:
        pose = PoseStamped()
        pose.header = path.header
        pose.pose.position.x, pose.pose.position.y, pose.pose.position.z = w.x, w.y, w.z
        _yaw_orientation(pose.pose, w.theta)
        path.poses.append(pose)
    return path


def chunk_markers(chunk: Chunk, frame_id: str, stamp: Any) -> MarkerArray:
    """RViz markers of a chunk: the path as a line, a sphere per waypoint (magenta closed, green open), its number."""
    markers = []

    def marker(mid: int, mtype: int) -> Marker:
        m = Marker()
        m.header.stamp, m.header.frame_id = stamp, frame_id
        m.ns, m.id, m.type, m.action = "clip_vla_chunk", mid, mtype, Marker.ADD
        m.pose.orientation.w = 1.0
        return m

    line = marker(0, Marker.LINE_STRIP)
    line.scale.x = 0.004
    line.color.r, line.color.g, line.color.b, line.color.a = 0.9, 0.9, 0.9, 0.8
    for w in chunk.decoded:
        line.points.append(Point(x=w.x, y=w.y, z=w.z))
    markers.append(line)
    for i, w in enumerate(chunk.decoded):
        dot = marker(1 + 2 * i, Marker.SPHERE)
        dot.pose.position.x, dot.pose.position.y, dot.pose.position.z = w.x, w.y, w.z
        dot.scale.x = dot.scale.y = dot.scale.z = 0.015
        closed = w.gripper >= GRIPPER_CLOSED
        rgba = (0.92, 0.24, 0.82, 1.0) if closed else (0.24, 0.9, 0.35, 1.0)
        dot.color.r, dot.color.g, dot.color.b, dot.color.a = rgba
        text = marker(2 + 2 * i, Marker.TEXT_VIEW_FACING)
        text.pose.position.x, text.pose.position.y, text.pose.position.z = w.x, w.y, w.z + 0.02
        text.scale.z = 0.02
        text.color.r = text.color.g = text.color.b = text.color.a = 1.0
        text.text = str(i)
        markers += [dot, text]
    return MarkerArray(markers=markers)


class Outputs:
    """The node's publishers; they exist in every lifecycle state, so every command gets its answer."""

    def __init__(self, node: Any, cond: threading.Condition, stats: Stats) -> None:
        out = qos.output_qos()
        self._node = node
        self._cond = cond
        self._stats = stats
        self._lock = threading.Lock()
        self._goal = node.create_publisher(String, "~/goal", out)
        self._pose = node.create_publisher(PoseStamped, "~/goal_pose", out)
        self._status = node.create_publisher(String, "~/status", qos.output_qos(100))  # bursts of answers
        self._markers = node.create_publisher(MarkerArray, "~/markers", out)
        self._debug = node.create_publisher(Image, "~/debug_image", qos.output_qos(1))
        self._diagnostics = node.create_publisher(DiagnosticArray, "/diagnostics", out)
        self._plan = node.create_publisher(String, "~/plan", out)
        self._chunk_path = node.create_publisher(Path, "~/chunk_path", out)
        self._task_status = node.create_publisher(String, "~/task_status", qos.output_qos(100))

    def goal(self, record: Dict[str, Any], stamp: Any, chunk: Optional[Chunk] = None) -> None:
        """Publish a goal record on ``~/goal``, ``~/goal_pose`` and ``~/markers`` (``stamp``: the image's).

        The step's ``chunk`` joins the goal's markers in one MarkerArray (in ``base_frame``, the chunk's).
        """
        pose = PoseStamped()
        pose.header.stamp = stamp
        pose.header.frame_id = record["frame_id"]
        p, q = record["pose"], record["orientation"]
        pose.pose.position.x, pose.pose.position.y, pose.pose.position.z = p["x"], p["y"], p["z"]
        pose.pose.orientation.x, pose.pose.orientation.y, pose.pose.orientation.z, pose.pose.orientation.w = (
            q["x"], q["y"], q["z"], q["w"])
        markers = goal_markers(record, stamp)
        if chunk is not None:
            markers.markers += chunk_markers(chunk, record["token_frame"], stamp).markers
        with self._lock:
            self._goal.publish(String(data=json.dumps(record)))
            self._pose.publish(pose)
            self._markers.publish(markers)
        with self._cond:
            self._stats.goals_published += 1

    def plan(self, record: Dict[str, Any], chunk: Optional[Chunk], frame_id: str, stamp: Any) -> None:
        """Publish a ``~/plan`` record and the current step's chunk on ``~/chunk_path`` (in ``frame_id``)."""
        with self._lock:
            self._plan.publish(String(data=json.dumps(record)))
            if chunk is not None:
                self._chunk_path.publish(chunk_path(chunk, frame_id, stamp))

    def now(self) -> Any:
        """The node's clock now, as a message stamp (outputs that have no image to carry the stamp of)."""
        return self._node.get_clock().now().to_msg()

    def task_ended(self, ending: Ending) -> None:
        """Publish how a plan ended on ``~/task_status`` (``records.task_status_record``), stamped now."""
        run = ending.run
        record = records.task_status_record(
            command_id=run.command.command_id, command=run.command.text, outcome=ending.outcome, step=ending.step,
            steps=len(run.plan.steps), reason=ending.reason, message=ending.message,
            stamp=conv.stamp_to_dict(self.now()))
        with self._lock:
            self._task_status.publish(String(data=json.dumps(record)))

    def verdict(self, run: Any, judgement: Any, verdict: Any) -> None:
        """Publish one step's verdict on ``~/task_status`` (``records.task_verdict_record``), stamped now."""
        record = records.task_verdict_record(
            command_id=run.command.command_id, command=run.command.text, step=judgement.step,
            attempt=judgement.attempt, verdict=verdict.verdict, confidence=verdict.confidence, reason=verdict.reason,
            action=judgement.action, stamp=conv.stamp_to_dict(self.now()))
        with self._lock:
            self._task_status.publish(String(data=json.dumps(record)))

    def clear_markers(self, frame_id: str, stamp: Any = None) -> None:
        """Remove the goal markers (a command without a goal, or ``stop``)."""
        m = Marker()
        m.action = Marker.DELETEALL
        if stamp is not None:
            m.header.stamp = stamp
        m.header.frame_id = frame_id
        with self._lock:
            self._markers.publish(MarkerArray(markers=[m]))

    def markers(self, markers: MarkerArray) -> None:
        """Publish other markers on ``~/markers`` (the suggestions' numbers)."""
        with self._lock:
            self._markers.publish(markers)

    def wants_debug_image(self) -> bool:
        """Whether anyone subscribes to ``~/debug_image`` (drawing it costs time)."""
        return self._debug.get_subscription_count() > 0

    def debug_image(self, image: Image) -> None:
        with self._lock:
            self._debug.publish(image)

    def answer(self, cmd: Command, result: Any, settings: NodeSettings, stamp: Optional[Any] = None,
               goal: Optional[Dict[str, Any]] = None, plan: Optional[Dict[str, Any]] = None) -> None:
        """Publish the one ``~/status`` of ``cmd`` (``stamp``: its image's, else now)."""
        latency = (time.monotonic() - cmd.received) * 1e3
        if stamp is None:
            stamp = self._node.get_clock().now().to_msg()
        record = records.status_record(result, command_id=cmd.command_id, command=cmd.said or cmd.text,
                                       stamp=conv.stamp_to_dict(stamp), latency_ms=latency, mode=settings.mode,
                                       goal=goal, target_frame=settings.target_frame, plan=plan)
        if cmd.option is not None:  # which command the option number became
            record["option"] = {"number": cmd.option, "command": cmd.text}
        with self._lock:
            self._status.publish(String(data=json.dumps(record)))
        with self._cond:
            self._stats.answered(record["status"], latency)

    def diagnostics(self, status: DiagnosticStatus) -> None:
        array = DiagnosticArray()
        array.header.stamp = self._node.get_clock().now().to_msg()
        array.status = [status]
        with self._lock:
            self._diagnostics.publish(array)

    def wait_statuses_acked(self, timeout: float) -> bool:
        """Whether every reliable ``~/status`` subscriber acknowledged what was published, within ``timeout`` s.

        At shutdown: a message still in the writer's history when the process exits never arrives.
        """
        from rclpy.duration import Duration

        return self._status.wait_for_all_acked(Duration(seconds=timeout))
