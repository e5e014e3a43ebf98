"""`sim_node`: the MuJoCo tabletop as a ROS 2 camera + robot, talking to vla_node by topics only.

It publishes what a real RGB-D camera driver publishes and executes the goals vla_node
publishes, so the node under test cannot tell it from a robot:

    publishes  camera/color/image_raw (rgb8), camera/depth/image_raw (32FC1, metres),
               camera/color/camera_info, ~/task (the episode's command and truth, JSON),
               ~/result (one JSON per executed goal: success (the skill worked on the object
               nearest the goal), task_success (the episode's command is carried out on its
               target), failure (why the goal failed the task: a clip_vla.sim.tasks.FAILURE_LABELS
               string, null when it did not), holding_target, reason, details)
               ~/task and ~/result carry "stamp" (s): every camera frame stamped later shows
               the scene after that reset or goal
    subscribes goal (std_msgs/String JSON from vla_node's ~/goal; remap it there),
               ~/reset (std_msgs/String JSON {"seed": int, "skill": str, "destination": "bowl"|"tray",
               "direction": "left"|"right"|... (push/pull commands that name one)},
               every key optional: a new episode)

The world is owned by one worker thread: rendering, physics and resets never race, and the
executor stays free to deliver messages while a pick takes a few seconds of physics.
"""
from __future__ import annotations

import json
import queue
import sys
import threading
import time
from typing import Any, Dict, Optional

from clip_vla.sim.oracle import ObservationLog


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
        node.create_subscription(String, "goal", self._on_goal, reliable)
        node.create_subscription(String, "~/reset", self._on_reset, reliable)
        self._jobs: "queue.Queue[tuple]" = queue.Queue()
        self._stop = threading.Event()
        self.frames_published = 0
        self.busy = threading.Event()  # set while a goal or reset is being executed
        self._thread = threading.Thread(target=self._loop, name="sim_world", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ callbacks (executor thread)
    def _on_goal(self, msg: Any) -> None:
        try:
            goal = json.loads(msg.data)
        except (ValueError, TypeError) as exc:
            self._publish_result({"success": False, "reason": f"goal is not JSON: {exc}"})
            return
        self._jobs.put(("goal", goal))

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
                if kind == "goal":
                    self._execute(payload)
                elif kind == "reset":
                    self._reset(payload)
            except Exception as exc:  # noqa: BLE001 - a bad goal must not kill the simulator
                self.node.get_logger().error(f"simulator failed on {kind}: {exc}")
                self._publish_result({"success": False, "reason": f"simulator error: {exc}"})
            finally:
                self.busy.clear()
            self.publish_frame()
            next_frame = time.monotonic() + self.period

    def _execute(self, goal: Dict[str, Any]) -> None:
        pose = goal.get("pose") or {}
        cmd = goal.get("cmd", "")
        xyz = [pose.get("x"), pose.get("y"), pose.get("z")]
        result = self.world.execute(cmd, xyz if None not in xyz else None, float(pose.get("theta", 0.0)))
        task = self.world.task
        # Judged on the episode's target, not on whatever object was nearest the goal.
        holding = bool(task is not None and task.object and self.world.held(task.object))
        if cmd != "pick" or not result.success:  # a held object stays held for the next "place"
            self.world.go_home()
        self._publish_result({"command_id": goal.get("command_id"), "command": goal.get("command"), "cmd": cmd,
                              "success": bool(result.success), "reason": result.reason,
                              "task_success": self.world.check_success(task) if task is not None else False,
                              "failure": result.failure,
                              "holding_target": holding, "details": _jsonable(result.details)})

    def _reset(self, request: Dict[str, Any]) -> None:
        task = self.world.reset(seed=request.get("seed"), skill=request.get("skill"),
                                destination=request.get("destination"), direction=request.get("direction"))
        self.world.go_home()
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
    """Console script: ``sim_node --ros-args -p seed:=3 -p fps:=10 -r goal:=/clip_vla/goal``."""
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
