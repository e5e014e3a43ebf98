"""Drive a real ``vla_node`` over DDS: start it as a process, feed it, watch what it answers.

Used by the node's tests and by ``clip-vla soak``; handy in a notebook too::

    with NodeProcess(overrides={"models.device": "cpu"}, namespace="/lab") as proc, \\
            Client("/lab") as client:
        client.wait_ready()
        client.publish_frame(rgb, depth, intrinsics)
        print(client.ask("pick up the red cup"))

Everything waits on events with timeouts; nothing sleeps for a fixed time.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from clip_vla.core.config import default_config_path
from clip_vla.core.types import Intrinsics

READY_TIMEOUT = 60.0
# Fast DDS's default shared-memory segment (512 KB) loses best-effort 640x480 frames between
# processes; its LARGE_DATA builtin transports (Fast DDS >= 2.12: Iron, Jazzy) carry them over
# SHM/TCP instead. Older Fast DDS ignores the variable (use an XML profile with a larger segment).
# LARGE_DATA needs the default discovery: with ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST (set for
# every other test) the node still answers, but no 640x480 frame arrives.
LARGE_DATA_ENV = {"FASTDDS_BUILTIN_TRANSPORTS": "LARGE_DATA", "ROS_AUTOMATIC_DISCOVERY_RANGE": "SUBNET"}
DOMAIN_ID_RANGE = (1, 101)  # inclusive; 0 is the default domain a developer's own nodes use


class _environ:
    """Temporarily set environment variables (Fast DDS reads them when a participant is created)."""

    def __init__(self, values: Mapping[str, str]) -> None:
        self.values, self.saved = dict(values), {}

    def __enter__(self) -> None:
        for key, value in self.values.items():
            self.saved[key] = os.environ.get(key)
            os.environ[key] = value

    def __exit__(self, *exc: Any) -> None:
        for key, value in self.saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


# --------------------------------------------------------------------------- the node process
def node_executable() -> List[str]:
    """How to start vla_node: its console script, else ``python -m``."""
    found = shutil.which("vla_node")
    if found:
        return [found]
    beside = Path(sys.executable).parent / "vla_node"
    if beside.is_file():
        return [str(beside)]
    return [sys.executable, "-m", "clip_vla.ros.vla_node"]


def format_param(value: Any) -> str:
    """A value as the YAML that ``-p name:=value`` expects."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(format_param(float(v) if isinstance(v, int) else v) for v in value) + "]"
    text = str(value)
    if text == "" or any(c in text for c in ":#{}[],&*!|>'\"%@`") or text.strip() != text:
        return json.dumps(text)  # a double-quoted YAML string
    return text


# Drawn once per process: pids repeat across containers (every CI run may be pid 1's child
# number 40), so a pid-derived id would put two concurrent runs on one domain.
_DOMAIN_BASE = random.SystemRandom().randrange(DOMAIN_ID_RANGE[1] - DOMAIN_ID_RANGE[0] + 1)


def unique_domain_id(offset: int = 0) -> int:
    """A ROS_DOMAIN_ID for this process (+offset), so concurrent test runs do not talk to each other.

    Within 1..101: on Linux, DDS ports of higher domains fall into the ephemeral port range,
    where another program's socket can take them (ROS 2 "The ROS_DOMAIN_ID" concept page).
    """
    low, high = DOMAIN_ID_RANGE
    return low + (_DOMAIN_BASE + offset * 17) % (high - low + 1)


class NodeProcess:
    """``vla_node`` as a subprocess with a params file, overrides and a namespace."""

    def __init__(self, overrides: Optional[Mapping[str, Any]] = None, namespace: str = "",
                 domain_id: Optional[int] = None, params_file: Optional[str] = None,
                 extra_args: Sequence[str] = (), env: Optional[Mapping[str, str]] = None,
                 large_data: bool = False) -> None:
        self.overrides = dict(overrides or {})
        self.namespace = namespace
        self.domain_id = domain_id
        self.params_file = str(params_file or default_config_path())
        self.extra_args = list(extra_args)
        self.env = dict(LARGE_DATA_ENV if large_data else {})
        self.env.update(env or {})
        self.proc: Optional[subprocess.Popen] = None
        self._out = tempfile.NamedTemporaryFile(prefix="vla_node_", suffix=".log", delete=False)
        self.returncode: Optional[int] = None
        self.stop_seconds: Optional[float] = None

    def command(self) -> List[str]:
        cmd = node_executable() + ["--ros-args", "--params-file", self.params_file]
        for name, value in self.overrides.items():
            cmd += ["-p", f"{name}:={format_param(value)}"]
        if self.namespace:
            cmd += ["-r", f"__ns:={self.namespace}"]
        return cmd + self.extra_args

    def start(self) -> "NodeProcess":
        env = dict(os.environ)
        env.setdefault("HF_HUB_OFFLINE", "1")
        env.setdefault("TRANSFORMERS_VERBOSITY", "error")
        env["PYTHONUNBUFFERED"] = "1"
        env["RCUTILS_COLORIZED_OUTPUT"] = "0"
        if self.domain_id is not None:
            env["ROS_DOMAIN_ID"] = str(self.domain_id)
        env.update(self.env)
        self.proc = subprocess.Popen(self.command(), stdout=self._out, stderr=subprocess.STDOUT, env=env,
                                     stdin=subprocess.DEVNULL)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def output(self) -> str:
        try:
            return Path(self._out.name).read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    def stop(self, sig: int = signal.SIGINT, timeout: float = 5.0) -> Optional[int]:
        """Send ``sig`` and wait up to ``timeout`` s; kills it after that. Returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            start = time.monotonic()
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
                self.stop_seconds = time.monotonic() - start
            except subprocess.TimeoutExpired:
                self.stop_seconds = None
                self.proc.kill()
                self.proc.wait(5)
        self.returncode = self.proc.returncode
        return self.returncode

    def close(self) -> None:
        self.stop()
        try:
            self._out.close()
            os.unlink(self._out.name)
        except OSError:
            pass

    def __enter__(self) -> "NodeProcess":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


# --------------------------------------------------------------------------- the peer
class Client:
    """An rclpy peer in its own context: publishes camera + commands, records every output."""

    def __init__(self, namespace: str = "", domain_id: Optional[int] = None, node_name: str = "clip_vla",
                 camera_reliability: str = "reliable", debug_image: bool = False, large_data: bool = False) -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from geometry_msgs.msg import PoseStamped
        from nav_msgs.msg import Path
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CameraInfo, Image
        from std_msgs.msg import String
        from visualization_msgs.msg import MarkerArray

        self.namespace = namespace.rstrip("/")
        self.node_fqn = f"{self.namespace}/{node_name}"
        self.context = rclpy.Context()
        with _environ(LARGE_DATA_ENV if large_data else {}):
            rclpy.init(args=[], context=self.context, domain_id=domain_id)  # not this process's argv
            self.node = rclpy.create_node(f"clip_vla_peer_{os.getpid()}_{id(self) % 10000}", context=self.context)
        self._cond = threading.Condition()
        self.statuses: List[Dict[str, Any]] = []
        self.goals: List[Dict[str, Any]] = []
        self.poses: List[Any] = []
        self.markers: List[Any] = []
        self.debug_images: List[Any] = []
        self.diagnostics: List[Dict[str, str]] = []
        self.status_times: List[float] = []
        self.plans: List[Dict[str, Any]] = []
        self.task_statuses: List[Dict[str, Any]] = []
        self.chunk_paths: List[Any] = []

        camera = QoSProfile(depth=5)
        camera.reliability = (ReliabilityPolicy.RELIABLE if camera_reliability == "reliable"
                              else ReliabilityPolicy.BEST_EFFORT)
        ns = self.namespace
        self.pub_image = self.node.create_publisher(Image, f"{ns}/image", camera)
        self.pub_depth = self.node.create_publisher(Image, f"{ns}/depth", camera)
        self.pub_info = self.node.create_publisher(CameraInfo, f"{ns}/camera_info", camera)
        self.pub_command = self.node.create_publisher(String, f"{ns}/command", 100)
        self.pub_execution = self.node.create_publisher(String, f"{ns}/execution", 100)
        self._subs = [
            self.node.create_subscription(String, f"{self.node_fqn}/status", self._on_status, 100),
            self.node.create_subscription(String, f"{self.node_fqn}/goal", self._on_goal, 100),
            self.node.create_subscription(PoseStamped, f"{self.node_fqn}/goal_pose",
                                          lambda m: self._add(self.poses, m), 100),
            self.node.create_subscription(MarkerArray, f"{self.node_fqn}/markers",
                                          lambda m: self._add(self.markers, m), 100),
            self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 100),
            self.node.create_subscription(String, f"{self.node_fqn}/plan",
                                          lambda m: self._add(self.plans, json.loads(m.data)), 100),
            self.node.create_subscription(String, f"{self.node_fqn}/task_status",
                                          lambda m: self._add(self.task_statuses, json.loads(m.data)), 100),
            self.node.create_subscription(Path, f"{self.node_fqn}/chunk_path",
                                          lambda m: self._add(self.chunk_paths, m), 100),
        ]
        if debug_image:
            self._subs.append(self.node.create_subscription(Image, f"{self.node_fqn}/debug_image",
                                                            lambda m: self._add(self.debug_images, m), 10))
        self._image_cls, self._info_cls, self._string_cls = Image, CameraInfo, String
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._running = True
        self._thread = threading.Thread(target=self._spin, name="clip_vla_peer", daemon=True)
        self._thread.start()

    # ---- recording
    def _spin(self) -> None:
        while self._running and self.context.ok():
            try:
                self.executor.spin_once(timeout_sec=0.05)
            except Exception:  # noqa: BLE001 - shutting down
                if not self._running:
                    return

    def _add(self, bucket: List[Any], item: Any) -> None:
        with self._cond:
            bucket.append(item)
            self._cond.notify_all()

    def _on_status(self, msg) -> None:
        with self._cond:
            self.statuses.append(json.loads(msg.data))
            self.status_times.append(time.monotonic())
            self._cond.notify_all()

    def _on_goal(self, msg) -> None:
        self._add(self.goals, json.loads(msg.data))

    def _on_diagnostics(self, msg) -> None:
        for status in msg.status:
            if status.name.startswith(self.node_fqn + ":"):
                values = {kv.key: kv.value for kv in status.values}
                values["_level"] = int.from_bytes(status.level, "little") if isinstance(status.level, bytes) \
                    else int(status.level)
                values["_message"] = status.message
                values["_t"] = time.monotonic()
                self._add(self.diagnostics, values)

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 10.0) -> Any:
        """Wait until ``predicate()`` is truthy (checked on every message); returns it or raises TimeoutError."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                value = predicate()
                if value:
                    return value
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"timed out after {timeout} s waiting for {getattr(predicate, '__name__', '')}")
                self._cond.wait(min(left, 0.05))

    # ---- readiness
    def wait_ready(self, timeout: float = READY_TIMEOUT, state: str = "active") -> Dict[str, str]:
        """Until the node reports ``state`` on /diagnostics and every topic is matched both ways."""
        diag = self.wait_for(lambda: next((d for d in reversed(self.diagnostics) if d.get("state") == state), None),
                             timeout)
        self.wait_connected(timeout)
        return diag

    def wait_connected(self, timeout: float = 10.0, camera: bool = True) -> None:
        pubs = [self.pub_command, self.pub_execution]
        if camera:
            pubs += [self.pub_image, self.pub_depth, self.pub_info]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(p.get_subscription_count() > 0 for p in pubs) and \
                    all(s.get_publisher_count() > 0 for s in self._subs):
                return
            time.sleep(0.02)
        raise TimeoutError("the node's topics did not match in time")

    # ---- publishing
    def make_image(self, array: np.ndarray, encoding: str, stamp, frame_id: str = "camera_color_optical_frame"):
        from clip_vla.ros.conversions import numpy_to_image

        return numpy_to_image(array, encoding, stamp, frame_id, image_cls=self._image_cls)

    def make_camera_info(self, intrinsics: Intrinsics, width: int, height: int, stamp,
                         frame_id: str = "camera_color_optical_frame"):
        msg = self._info_cls()
        msg.header.stamp = stamp
        msg.header.frame_id = frame_id
        msg.width, msg.height = int(width), int(height)
        msg.k = [intrinsics.fx, 0.0, intrinsics.cx, 0.0, intrinsics.fy, intrinsics.cy, 0.0, 0.0, 1.0]
        msg.p = [intrinsics.fx, 0.0, intrinsics.cx, 0.0, 0.0, intrinsics.fy, intrinsics.cy, 0.0, 0.0, 0.0, 1.0, 0.0]
        msg.distortion_model = "plumb_bob"
        msg.d = [0.0] * 5
        return msg

    def now(self):
        return self.node.get_clock().now().to_msg()

    def publish_frame(self, rgb: np.ndarray, depth: Optional[np.ndarray] = None,
                      intrinsics: Optional[Intrinsics] = None, stamp=None, encoding: str = "rgb8",
                      depth_stamp=None, info_stamp=None, wait_acked: float = 0.0):
        """Publish colour (and depth, camera_info) with one stamp; returns the stamp."""
        stamp = stamp or self.now()
        h, w = rgb.shape[:2]
        if depth is not None:
            enc = "32FC1" if depth.dtype == np.float32 else "16UC1"
            self.pub_depth.publish(self.make_image(depth, enc, depth_stamp or stamp))
        if intrinsics is not None:
            self.pub_info.publish(self.make_camera_info(intrinsics, w, h, info_stamp or stamp))
        self.publish_image(self.make_image(rgb, encoding, stamp), wait_acked=wait_acked)
        return stamp

    def publish_image(self, msg, wait_acked: float = 0.0) -> None:
        from rclpy.duration import Duration

        self.pub_image.publish(msg)
        if wait_acked and hasattr(self.pub_image, "wait_for_all_acked"):
            for pub in (self.pub_depth, self.pub_info, self.pub_image):
                pub.wait_for_all_acked(Duration(seconds=wait_acked))

    def send(self, text: str) -> int:
        """Publish a command; returns how many statuses had arrived before it."""
        with self._cond:
            n = len(self.statuses)
        self.pub_command.publish(self._string_cls(data=text))
        return n

    def send_raw(self, serialized: bytes) -> int:
        with self._cond:
            n = len(self.statuses)
        self.pub_command.publish(serialized)
        return n

    def report(self, command_id: Any, step: Any, outcome: Any = "done", holding: Optional[str] = None) -> None:
        """Publish an executor's step report on ``execution`` (``clip_vla.core.execution``)."""
        self.report_raw(json.dumps({"command_id": command_id, "step": step, "outcome": outcome, "holding": holding}))

    def report_raw(self, text: str) -> None:
        """Publish anything on ``execution`` (malformed reports included)."""
        self.pub_execution.publish(self._string_cls(data=text))

    def plan_of(self, command_id: int, grounded: int, timeout: float = 10.0) -> Dict[str, Any]:
        """The first ``~/plan`` record of ``command_id`` with ``grounded`` steps grounded (goal or refusal)."""
        def found() -> Optional[Dict[str, Any]]:
            return next((p for p in self.plans if p["command_id"] == command_id and
                         sum(s["goal"] is not None or s["refusal"] is not None for s in p["steps"]) == grounded), None)
        if timeout <= 0:
            with self._cond:
                return found()
        return self.wait_for(found, timeout)

    def task_status_of(self, command_id: int, timeout: float = 10.0) -> Dict[str, Any]:
        """The final ``~/task_status`` of ``command_id`` (how its plan ended; verdicts are not final)."""
        return self.wait_for(lambda: next((t for t in self.task_statuses
                                           if t["command_id"] == command_id and t.get("final", True)), None), timeout)

    def verdicts_of(self, command_id: int) -> List[Dict[str, Any]]:
        """The step verdicts published so far on ``~/task_status`` for ``command_id`` (``"final": false``)."""
        with self._cond:
            return [t for t in self.task_statuses if t["command_id"] == command_id and not t.get("final", True)]

    def status_after(self, n: int, timeout: float = 10.0) -> Dict[str, Any]:
        return self.wait_for(lambda: self.statuses[n] if len(self.statuses) > n else None, timeout)

    def ask(self, text: str, timeout: float = 10.0) -> Dict[str, Any]:
        """Send a command and return its status (commands answer in order)."""
        return self.status_after(self.send(text), timeout)

    # ---- services
    def _call(self, srv_type, name: str, request, timeout: float = 10.0):
        client = self.node.create_client(srv_type, name)
        try:
            if not client.wait_for_service(timeout_sec=timeout):
                raise TimeoutError(f"service {name} not available")
            future = client.call_async(request)
            done = threading.Event()
            future.add_done_callback(lambda _f: done.set())
            if not done.wait(timeout):
                raise TimeoutError(f"service {name} did not answer")
            return future.result()
        finally:
            self.node.destroy_client(client)

    def set_parameters(self, values: Mapping[str, Any], timeout: float = 10.0) -> List[Any]:
        """SetParameters on the node; returns the SetParametersResult list."""
        from rcl_interfaces.srv import SetParameters
        from rclpy.parameter import Parameter

        request = SetParameters.Request()
        request.parameters = [Parameter(name, value=value).to_parameter_msg() for name, value in values.items()]
        return list(self._call(SetParameters, f"{self.node_fqn}/set_parameters", request, timeout).results)

    def get_parameters(self, names: Iterable[str], timeout: float = 10.0) -> Dict[str, Any]:
        from rcl_interfaces.srv import GetParameters
        from rclpy.parameter import parameter_value_to_python

        names = list(names)
        request = GetParameters.Request(names=names)
        values = self._call(GetParameters, f"{self.node_fqn}/get_parameters", request, timeout).values
        return {n: parameter_value_to_python(v) for n, v in zip(names, values)}

    def change_state(self, transition_id: int, timeout: float = 30.0) -> bool:
        from lifecycle_msgs.msg import Transition
        from lifecycle_msgs.srv import ChangeState

        request = ChangeState.Request(transition=Transition(id=transition_id))
        return bool(self._call(ChangeState, f"{self.node_fqn}/change_state", request, timeout).success)

    def forget_frames(self, timeout: float = 30.0) -> None:
        """Deactivate and re-activate the node: it drops every camera message it holds (models stay).

        For a test that needs a node that has seen no frame yet, whatever ran before it.
        """
        from lifecycle_msgs.msg import Transition

        if not self.change_state(Transition.TRANSITION_DEACTIVATE, timeout):
            raise RuntimeError("the node did not deactivate")
        # Until discovery has seen the old camera subscriptions go, they would count as connected.
        deadline = time.monotonic() + timeout
        while self.pub_image.get_subscription_count() > 0:
            if time.monotonic() > deadline:
                raise TimeoutError("the node's camera subscriptions did not go away")
            time.sleep(0.02)
        if not self.change_state(Transition.TRANSITION_ACTIVATE, timeout):
            raise RuntimeError("the node did not activate")
        self.wait_connected(timeout)

    def get_state(self, timeout: float = 10.0) -> str:
        from lifecycle_msgs.srv import GetState

        return self._call(GetState, f"{self.node_fqn}/get_state", GetState.Request(), timeout).current_state.label

    # ---- teardown
    def close(self) -> None:
        self._running = False
        self._thread.join(2.0)
        try:
            self.executor.shutdown(timeout_sec=1.0)
            self.node.destroy_node()
        finally:
            if self.context.ok():
                self.context.try_shutdown()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def tiny_model_overrides(models: Mapping[str, str], vocabulary_file: str, **extra: Any) -> Dict[str, Any]:
    """Overrides that make a node on tiny random models see the whole image as the target."""
    overrides: Dict[str, Any] = {
        "models.clipseg": models["clipseg"],
        "models.clip": models["clip"],
        "models.device": "cpu",
        "perception.mask_threshold": 0.0,
        "perception.min_confidence": 0.0,
        "vocabulary_file": vocabulary_file,
        "diagnostics_period": 0.25,
    }
    overrides.update(extra)
    return overrides


# --------------------------------------------------------------------------- scenes
def tabletop_scene(width: int = 640, height: int = 480, distance: float = 0.8,
                   focal: Optional[float] = None) -> Tuple[np.ndarray, np.ndarray, Intrinsics]:
    """A synthetic frame for the default mounting: grey table, a red blob at the centre.

    Depth is ``distance`` metres everywhere (float32); intrinsics have fx = fy = width*500/640 and
    the principal point at the image centre, so the centre pixel maps to base (0.5, 0, 0).
    """
    f = focal if focal is not None else width * 500.0 / 640.0
    rgb = np.full((height, width, 3), 120, dtype=np.uint8)
    cv = (width // 2, height // 2)
    r = max(2, min(width, height) // 10)
    yy, xx = np.mgrid[0:height, 0:width]
    blob = (xx - cv[0]) ** 2 + (yy - cv[1]) ** 2 <= r * r
    rgb[blob] = (200, 30, 30)
    depth = np.full((height, width), distance, dtype=np.float32)
    return rgb, depth, Intrinsics(fx=f, fy=f, cx=(width - 1) / 2.0, cy=(height - 1) / 2.0)


def publish_tabletop(client: "Client", size: Tuple[int, int] = (64, 48)) -> Any:
    """Publish one ``tabletop_scene`` frame (colour, depth, camera_info) of ``size`` (w, h); returns its stamp."""
    rgb, depth, k = tabletop_scene(*size)
    return client.publish_frame(rgb, depth, k)


def stream_until(client: "Client", predicate: Callable[[], Any], timeout: float = 15.0,
                 size: Tuple[int, int] = (64, 48)) -> Any:
    """Publish a tabletop frame every 0.2 s, as a camera does, until ``predicate()`` is truthy; returns it.

    Why: a plan's next step (and a step's verification) waits for a frame stamped after the
    executor's report, so a test must keep the camera running while it waits.
    """
    deadline = time.monotonic() + timeout
    while True:
        publish_tabletop(client, size)
        try:
            return client.wait_for(predicate, 0.2)
        except TimeoutError:
            if time.monotonic() > deadline:
                raise


def start_ready(overrides: Optional[Mapping[str, Any]], namespace: str, domain_id: int, timeout: float = 60.0,
                client_kwargs: Optional[Mapping[str, Any]] = None, **node_kwargs: Any) -> Tuple["NodeProcess", Client]:
    """``vla_node`` as a subprocess and a ``Client`` on it, once the node is active.

    Raises RuntimeError with the node's output when it does not become ready (both are closed).
    """
    proc = NodeProcess(overrides, namespace=namespace, domain_id=domain_id, **node_kwargs).start()
    client = Client(namespace, domain_id=domain_id, **dict(client_kwargs or {}))
    try:
        client.wait_ready(timeout)
    except TimeoutError:
        client.close()
        proc.stop()
        raise RuntimeError(f"vla_node did not become ready:\n{proc.output()[-4000:]}") from None
    return proc, client


def oracle_graph(seed: int, namespace: str, domain_offset: int) -> Any:
    """The simulated graph (``SimGraph``) with ground-truth perception, on a ROS domain of its own.

    What the graph tests share: no models to load, and a domain no other graph on the machine
    answers on (``unique_domain_id(domain_offset)``).
    """
    from clip_vla.tools.sim_eval import SimGraph, sim_model_overrides

    return SimGraph(sim_model_overrides("oracle"), perception="oracle", seed=seed, namespace=namespace,
                    domain_id=unique_domain_id(domain_offset))
