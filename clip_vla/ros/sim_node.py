"""`sim_node`: the MuJoCo tabletop as a ROS 2 camera + robot, talking to vla_node by topics only.

It publishes what a real RGB-D camera driver publishes and executes the plan steps vla_node
publishes, as the executor of the README's executor contract, so the node under test cannot
tell it from a robot:

    publishes  camera/color/image_raw (rgb8), camera/depth/image_raw (32FC1, metres),
               camera/color/camera_info, ~/task (the episode's command and truth, JSON),
               execution (the step report vla_node waits for: clip_vla.core.execution; after a
               reset a hand report, {"holding": null}),
               ~/result (one JSON per executed step: command_id, step, attempt (1: the first try;
               a retried step comes again under its index), expected_skill, success (the
               skill worked on the object nearest the goal), step_ok (the step did what the
               episode's task needs of it, by the world's ground truth), task_success (every clause
               of the episode's command carried out on its target, each judged at its last step),
               failure (why the step failed the task: a clip_vla.sim.tasks.FAILURE_LABELS string,
               null when it did not), holding_target, reason, goal, details; a put-back, the
               node's undo of a failed pick, is no step of the task: "put_back": true and none
               of the judged fields)
               ~/task and ~/result carry "stamp" (s): every camera frame stamped later shows
               the scene after that reset or step
    subscribes plan (std_msgs/String JSON from vla_node's ~/plan; remap it there): the newest
               grounded step is executed once, the gripper following its chunk's waypoints,
               ~/reset (std_msgs/String JSON {"seed": int, "skill": str ("compound": a 2-3 clause
               command), "destination": "bowl"|"tray", "direction": "left"|"right"|... (push/pull
               commands that name one)}, every key optional: a new episode)

The world is owned by one worker thread: rendering, physics and resets never race, and the
executor stays free to deliver messages while a pick takes a few seconds of physics.
"""
from __future__ import annotations

import json
import queue
import sys
import threading
import time
from typing import Any, Dict, Optional, Tuple

from clip_vla.core.plan import current_step
from clip_vla.sim.oracle import ObservationLog


def task_step_of(last: Optional[Tuple[int, str, int]], index: int, skill: str, skills: Tuple[str, ...]) -> int:
    """Which of the task's steps (``Task.step_skills``) plan step ``index`` (``skill``) is an attempt at.

    ``last``: (plan index, skill, task step) of the step executed before, None for the first.
    In order, one after the other, except that a retried step (the same index and skill again)
    is the same task step, and a pick the node inserted before a place whose object fell (a
    re-plan: a pick under the place's index) is that place's pick. Counting executions instead
    judged a retried pick as the place that follows it. A put-back is not judged; the pick it
    precedes moves one index on, and the caller moves ``last`` with it.
    """
    if last is None:
        return 0
    if (index, skill) == last[:2]:
        return last[2]
    if skill == "pick" and index == last[0] and skills[last[2]] == "place":
        return max(last[2] - 1, 0)
    return min(last[2] + 1, len(skills) - 1)


class SimBridge:
    """The ROS-facing simulator, built on an existing rclpy node (so tools can embed it)."""

    def __init__(self, node: Any, world: Any, fps: float = 10.0, log: Optional[ObservationLog] = None) -> None:
        from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
        from sensor_msgs.msg import CameraInfo, Image
        from std_msgs.msg import String

        self.node = node
        self.world = world
        self.period = 1.0 / max(fps, 0.1)
        self.log = log  # only the oracle reads it: without one, frames are not kept
        sensor = qos_profile_sensor_data
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.pub_image = node.create_publisher(Image, "camera/color/image_raw", sensor)
        self.pub_depth = node.create_publisher(Image, "camera/depth/image_raw", sensor)
        self.pub_info = node.create_publisher(CameraInfo, "camera/color/camera_info", sensor)
        self.pub_task = node.create_publisher(String, "~/task", reliable)
        self.pub_result = node.create_publisher(String, "~/result", reliable)
        self.pub_execution = node.create_publisher(String, "execution", reliable)
        node.create_subscription(String, "plan", self._on_plan, reliable)
        node.create_subscription(String, "~/reset", self._on_reset, reliable)
        self._jobs: "queue.Queue[tuple]" = queue.Queue()
        self._stop = threading.Event()
        self._taken: set = set()  # (command_id, step) already queued: a plan is republished as it grows
        self._last_judged: Optional[Tuple[int, str, int]] = None  # (plan index, skill, task step) (world thread)
        self._parts_ok: Dict[int, bool] = {}  # clause index -> achieved at its last step (world thread)
        self.frames_published = 0
        self.busy = threading.Event()  # set while a goal or reset is being executed
        self._thread = threading.Thread(target=self._loop, name="sim_world", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ callbacks (executor thread)
    def _on_plan(self, msg: Any) -> None:
        try:
            record = json.loads(msg.data)
            step = current_step(record)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            self._publish_result({"success": False, "reason": f"plan is not a plan record: {exc}"})
            return
        if step is None:
            return
        key = (record.get("command_id"), step["index"], record.get("attempt", 1))  # a retry is a new step
        if key not in self._taken:
            self._taken.add(key)
            self._jobs.put(("step", (record, step)))

    def _on_reset(self, msg: Any) -> None:
        try:
            request = json.loads(msg.data) if msg.data.strip() else {}
        except ValueError:
            request = {}
        self._jobs.put(("reset", request))

    # ------------------------------------------------------------------ world thread
    def _loop(self) -> None:
        try:
            self._serve()
        finally:
            self.world.close()  # EGL contexts belong to the thread that made them: release them here

    def _serve(self) -> None:
        next_frame = time.monotonic()
        while not self._stop.is_set():
            try:
                kind, payload = self._jobs.get(timeout=max(0.0, next_frame - time.monotonic()))
            except queue.Empty:
                self.publish_frame()
                next_frame = time.monotonic() + self.period
                continue
            self.busy.set()
            try:
                if kind == "step":
                    self._execute_step(*payload)
                elif kind == "reset":
                    self._reset(payload)
            except Exception as exc:  # noqa: BLE001 - a bad goal must not kill the simulator
                self.node.get_logger().error(f"simulator failed on {kind}: {exc}")
                self._publish_result({"success": False, "reason": f"simulator error: {exc}"})
            finally:
                self.busy.clear()
            self.publish_frame()
            next_frame = time.monotonic() + self.period

    def _execute_step(self, record: Dict[str, Any], step: Dict[str, Any]) -> None:
        """Follow one step's chunk, judge it on the episode's ground truth, report it on ``execution``."""
        from clip_vla.core.execution import DONE, FAILED, ExecutionReport
        from clip_vla.core.tokenizer import Waypoint

        goal = step["goal"]
        pose, cmd = goal["pose"], goal["cmd"]
        waypoints = [Waypoint(*(float(w[k]) for k in ("x", "y", "z", "theta", "gripper"))) for w in step["waypoints"]]
        result = self.world.execute(cmd, [pose["x"], pose["y"], pose["z"]], float(pose["theta"]), chunk=waypoints)
        task = self.world.task
        skill = str(step.get("skill") or cmd)
        if step.get("put_back"):  # the node's undo of a failed pick: no step of the task, nothing to judge
            judged: Dict[str, Any] = {"put_back": True}
            if self._last_judged is not None and self._last_judged[0] == int(step["index"]):
                self._last_judged = (self._last_judged[0] + 1,) + self._last_judged[1:]  # the pick, moved one on
        else:
            judged = self._judge(task, result, int(step["index"]), skill) if task is not None else {}
        held = self.world.held_object()
        holding = step.get("object") if cmd == "pick" and held else held
        if cmd != "pick" or not result.success:  # a held object stays held for the next step
            self.world.go_home()
        self._publish_result(dict(judged, command_id=record.get("command_id"), command=record.get("command"),
                                  step=step["index"], attempt=int(record.get("attempt", 1)),
                                  steps=len(record.get("steps", [])), cmd=cmd,
                                  success=bool(result.success), reason=result.reason,
                                  goal={"pose": pose, "tokens": goal.get("tokens"), "cmd": cmd,
                                        "stamp": goal.get("stamp")},
                                  chunk=step["waypoints"],
                                  details=_jsonable(result.details)))
        report = ExecutionReport(int(record["command_id"]), int(step["index"]),
                                 DONE if result.success else FAILED, holding)
        self.pub_execution.publish(self._string(report.to_json()))

    def _judge(self, task: Any, result: Any, index: int, skill: str) -> Dict[str, Any]:
        """This step against the episode's task: the clause it belongs to, by position in the plan."""
        skills, parts = task.step_skills, task.step_parts
        k = task_step_of(self._last_judged, index, skill, skills)
        self._last_judged = (index, skill, k)
        part, expected = parts[k], skills[k]
        clause = (task.parts or (task,)).index(part)
        ok = self.world.step_achieved(expected, part)
        if k == len(skills) - 1 or parts[k + 1] is not part:  # the clause's last step: judge the clause
            self._parts_ok[clause] = ok
        n_parts = len(task.parts or (task,))
        return {"expected_skill": expected, "task_step": k, "step_ok": ok,
                "task_success": len(self._parts_ok) == n_parts and all(self._parts_ok.values()),
                "failure": None if ok else self.world.failure_label(result, part),
                "holding_target": bool(part.object and self.world.held(part.object))}

    def _reset(self, request: Dict[str, Any]) -> None:
        task = self.world.reset(seed=request.get("seed"), skill=request.get("skill"),
                                destination=request.get("destination"), direction=request.get("direction"))
        self.world.go_home()
        self._last_judged, self._parts_ok = None, {}
        from clip_vla.core.execution import ExecutionReport

        self.pub_execution.publish(self._string(ExecutionReport.hand(None).to_json()))  # a new episode: empty hand
        task_msg = dict(_jsonable(task.to_dict()), stamp=self._now())
        self.pub_task.publish(self._string(json.dumps(task_msg)))

    def publish_frame(self) -> None:
        from clip_vla.ros.conversions import numpy_to_image, stamp_to_seconds
        from sensor_msgs.msg import CameraInfo

        obs = self.world.observe(segmentation=self.log is not None)  # only the oracle reads the labels
        stamp = self.node.get_clock().now().to_msg()  # after every change to the world: later than _now()
        seconds = stamp_to_seconds(stamp)
        if self.log is not None:
            self.log.add(obs, stamp=seconds)  # the oracle looks frames up by the stamp vla_node sees
        image = numpy_to_image(obs.rgb, "rgb8", stamp=stamp, frame_id=obs.frame_id)
        depth = numpy_to_image(obs.depth.astype("float32"), "32FC1", stamp=stamp, frame_id=obs.frame_id)
        info = CameraInfo()
        info.header = image.header
        info.width, info.height = int(obs.rgb.shape[1]), int(obs.rgb.shape[0])
        k = obs.intrinsics
        info.k = [k.fx, 0.0, k.cx, 0.0, k.fy, k.cy, 0.0, 0.0, 1.0]
        info.p = [k.fx, 0.0, k.cx, 0.0, 0.0, k.fy, k.cy, 0.0, 0.0, 0.0, 1.0, 0.0]
        info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
        info.distortion_model = "plumb_bob"
        info.d = [0.0] * 5
        self.pub_image.publish(image)
        self.pub_depth.publish(depth)
        self.pub_info.publish(info)
        self.frames_published += 1

    def _publish_result(self, result: Dict[str, Any]) -> None:
        self.pub_result.publish(self._string(json.dumps(dict(result, stamp=self._now()))))

    def _now(self) -> float:
        """The node's clock in seconds, as vla_node reads a header stamp."""
        from clip_vla.ros.conversions import stamp_to_seconds

        return stamp_to_seconds(self.node.get_clock().now().to_msg())

    @staticmethod
    def _string(text: str):
        from std_msgs.msg import String

        return String(data=text)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10.0)


def _jsonable(value: Any) -> Any:
    """numpy scalars/arrays and tuples -> plain JSON types."""
    import numpy as np

    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items() if k != "layout"}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def main(args: Optional[list] = None) -> int:
    """Console script: ``sim_node --ros-args -p seed:=3 -p fps:=10 -r plan:=/clip_vla/plan``."""
    import rclpy
    from rclpy.executors import ExternalShutdownException

    from clip_vla.sim.world import TabletopWorld

    rclpy.init(args=args if args is not None else sys.argv)
    node = rclpy.create_node("sim")
    for name, default in (("seed", 0), ("n_distractors", 3), ("width", 640), ("height", 480), ("fps", 10.0)):
        node.declare_parameter(name, default)
    p = {n: node.get_parameter(n).value for n in ("seed", "n_distractors", "width", "height", "fps")}
    world = TabletopWorld(seed=int(p["seed"]), n_distractors=int(p["n_distractors"]),
                          width=int(p["width"]), height=int(p["height"]))
    xyz, rpy = world.camera_xyz_rpy()
    node.get_logger().info(f"simulated camera: camera_to_base_xyz {list(xyz)}, camera_to_base_rpy {list(rpy)}; "
                           f"task: {world.task.command}")
    bridge = SimBridge(node, world, fps=float(p["fps"]))
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        bridge.close()
        world.close()
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
