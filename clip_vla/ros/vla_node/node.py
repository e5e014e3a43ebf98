"""``vla_node``: camera + command in, tokenized action goals out (a managed ROS 2 node).

A thin wrapper over ``clip_vla.pipeline.VLAPipeline``: messages are validated and converted
(``conversions``), inference runs in one worker thread (never in the executor), and results
are published. Topics (all relative, so namespaces and remaps apply)::

    sub  image          sensor_msgs/Image        rgb8|bgr8|rgba8|bgra8|mono8, sensor QoS (latest wins)
    sub  depth          sensor_msgs/Image        16UC1 (mm) | 32FC1 (m), optional, paired by stamp
    sub  camera_info    sensor_msgs/CameraInfo   optional, paired by stamp
    sub  command        std_msgs/String          reliable
    pub  ~/goal         std_msgs/String          JSON: the atomic goal record (pose + skill + tokens)
    pub  ~/goal_pose    geometry_msgs/PoseStamped  same stamp, target_frame, yaw quaternion
    pub  ~/status       std_msgs/String          JSON: exactly one answer per command
    pub  ~/debug_image  sensor_msgs/Image        annotated frame (only while subscribed)
    pub  ~/markers      visualization_msgs/MarkerArray
    pub  /diagnostics   diagnostic_msgs/DiagnosticArray

Lifecycle: configure loads the models (slow, once); activate subscribes to the camera;
deactivate pauses inference without unloading; cleanup unloads. With ``autostart`` (default)
the node configures and activates itself at start-up.
"""
from __future__ import annotations

import json
import math
import os
import signal
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseStamped
from rcl_interfaces.msg import SetParametersResult
from rclpy.lifecycle import Node as LifecycleNode
from rclpy.lifecycle import State, TransitionCallbackReturn
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import String
from visualization_msgs.msg import Marker, MarkerArray

from clip_vla.core import geometry
from clip_vla.core.config import ConfigError
from clip_vla.core.types import ActionGoal, Frame, Intrinsics, NoAction, Reason
from clip_vla.ros import conversions as conv
from clip_vla.ros import params as P
from clip_vla.ros import qos

NODE_NAME = "clip_vla"
ECHO_LIMIT = 200
SYNC_WAIT_MAX = 0.2  # seconds the worker waits for the depth/camera_info of a fresh frame


# --------------------------------------------------------------------------- optional ROS pieces
def _load_tf2():
    try:
        import tf2_ros  # type: ignore

        return tf2_ros
    except Exception:  # noqa: BLE001 - not installed, or built for another Python
        return None


TF2 = _load_tf2()


def echo(text: Any, limit: int = ECHO_LIMIT) -> str:
    """A command echoed in a status: bounded and printable, whatever was sent."""
    s = str(text)
    out = "".join(ch if ch.isprintable() else "\ufffd" for ch in s[:limit])
    return out + ("..." if len(s) > limit else "")


def rotation_to_quaternion(r: np.ndarray) -> Tuple[float, float, float, float]:
    """(x, y, z, w) of a 3x3 rotation matrix."""
    m = np.asarray(r, dtype=np.float64)
    trace = m[0, 0] + m[1, 1] + m[2, 2]
    if trace > 0:
        s = 2.0 * math.sqrt(trace + 1.0)
        w, x, y, z = 0.25 * s, (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s
    elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
        s = 2.0 * math.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2])
        w, x, y, z = (m[2, 1] - m[1, 2]) / s, 0.25 * s, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s
    elif m[1, 1] > m[2, 2]:
        s = 2.0 * math.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2])
        w, x, y, z = (m[0, 2] - m[2, 0]) / s, (m[0, 1] + m[1, 0]) / s, 0.25 * s, (m[1, 2] + m[2, 1]) / s
    else:
        s = 2.0 * math.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1])
        w, x, y, z = (m[1, 0] - m[0, 1]) / s, (m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, 0.25 * s
    q = np.array([x, y, z, w])
    q /= np.linalg.norm(q)
    if q[3] < 0:
        q = -q
    return tuple(float(v) for v in q)  # type: ignore[return-value]


def _rss_mb() -> float:
    try:
        with open("/proc/self/statm", "r", encoding="ascii") as fh:
            pages = int(fh.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 1e6
    except (OSError, ValueError, IndexError):
        return float("nan")


# --------------------------------------------------------------------------- state records
@dataclass
class _FrameSlot:
    msg: Any
    stamp: float
    received: float  # time.monotonic()
    version: int
    used: bool = False


@dataclass
class _Stamped:
    stamp: float
    received: float
    msg: Any = None  # the raw message when valid
    value: Any = None  # converted value (Intrinsics for camera_info)
    error: Optional[str] = None
    size: Tuple[int, int] = (0, 0)  # (width, height)


@dataclass
class _Command:
    command_id: int
    text: str
    received: float


@dataclass
class _Job:
    """A continuous-mode command: re-localised on every new frame until replaced or stopped."""

    command: _Command
    last_version: int = -1
    last_run: float = 0.0
    updates: int = 0
    answered: bool = False


@dataclass
class _Stats:
    frames_received: int = 0
    frames_bad: int = 0
    frames_processed: int = 0
    frames_dropped: int = 0
    depth_received: int = 0
    depth_bad: int = 0
    camera_info_received: int = 0
    camera_info_bad: int = 0
    commands_received: int = 0
    commands_answered: int = 0
    commands_accepted: int = 0
    queue_full: int = 0
    goals_published: int = 0
    inference_ms: Deque[float] = field(default_factory=lambda: deque(maxlen=200))
    answer_ms: Deque[float] = field(default_factory=lambda: deque(maxlen=200))
    statuses: Dict[str, int] = field(default_factory=dict)


class _Refusal(Exception):
    """A reason to answer a command without running the pipeline."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def _percentile(values, q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if len(values) else float("nan")


# --------------------------------------------------------------------------- the node
class VlaNode(LifecycleNode):
    """The clip_vla perception node (see the module docstring)."""

    def __init__(self, node_name: str = NODE_NAME,
                 pipeline_factory: Optional[Callable[[Any], Any]] = None, **kwargs: Any) -> None:
        """``pipeline_factory(config)`` replaces ``VLAPipeline(config)`` (the simulator's oracle uses it)."""
        super().__init__(node_name, **kwargs)
        self._pipeline_factory = pipeline_factory
        self._values: Dict[str, Any] = P.declare_parameters(self)
        self._cond = threading.Condition(threading.RLock())
        self._publish_lock = threading.Lock()
        self._stats = _Stats()
        self._state = "unconfigured"
        self._pipeline = None
        self._load_error: Optional[str] = None
        self._pending_config = None
        self._frame: Optional[_FrameSlot] = None
        self._frame_error: Optional[Tuple[str, float]] = None
        self._depths: Deque[_Stamped] = deque(maxlen=10)
        self._infos: Deque[_Stamped] = deque(maxlen=10)
        self._incoming: List[_Command] = []
        self._queue: Deque[_Command] = deque()
        self._job: Optional[_Job] = None
        self._next_id = 0
        self._version = 0
        self._stopping = False
        self._camera_subs: List[Any] = []
        self._log_times: Dict[str, float] = {}

        # Outputs exist in every state, so every command gets its answer (even "inactive").
        out = qos.output_qos()
        self._pub_goal = self.create_publisher(String, "~/goal", out)
        self._pub_pose = self.create_publisher(PoseStamped, "~/goal_pose", out)
        self._pub_status = self.create_publisher(String, "~/status", qos.output_qos(100))  # bursts of answers
        self._pub_markers = self.create_publisher(MarkerArray, "~/markers", out)
        self._pub_debug = self.create_publisher(Image, "~/debug_image", qos.output_qos(1))
        self._pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", out)
        self._sub_command = self.create_subscription(String, "command", self._on_command, qos.command_qos())
        self._flush_guard = self.create_guard_condition(self._flush_incoming)

        # TF: camera frame -> base_frame at the image stamp, when tf2_ros is importable.
        self._tf_buffer = None
        self._tf_listener = None
        if TF2 is not None and self._values["use_tf"]:
            self._tf_buffer = TF2.Buffer()
            self._tf_listener = TF2.TransformListener(self._tf_buffer, self)
        self._log_backends()

        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._diag_timer = self.create_timer(float(self._values["diagnostics_period"]), self._publish_diagnostics)
        self._worker = threading.Thread(target=self._work, name="clip_vla_inference", daemon=True)
        self._worker.start()

    # ------------------------------------------------------------------ start-up info
    def _log_backends(self) -> None:
        log = self.get_logger()
        log.info(f"image conversion: {conv.backend_description()}")
        if self._tf_buffer is not None:
            log.info(f"TF: tf2_ros, looking up <image frame_id> -> '{self._values['base_frame']}' at each image "
                     f"stamp (timeout {self._values['tf_timeout']} s)")
        elif TF2 is None:
            log.info("TF: tf2_ros not importable: static extrinsics from geometry.camera_to_base_matrix / "
                     "camera_to_base_xyz + camera_to_base_rpy")
        else:
            log.info("TF: use_tf is false: static extrinsics from geometry.camera_to_base_*")
        target = self._values["target_frame"]
        if target and target != self._values["base_frame"] and self._tf_buffer is None:
            log.warning(f"target_frame '{target}' differs from base_frame '{self._values['base_frame']}' but TF is "
                        "not available: goals are published in base_frame")

    def _topic(self, name: str) -> str:
        """The resolved (namespaced, remapped) name of a relative topic, for messages."""
        try:
            return self.resolve_topic_name(name)
        except Exception:  # noqa: BLE001 - resolve_topic_name is not in every supported rclpy
            return f"{self.get_namespace().rstrip('/')}/{name}"

    def _fqn(self) -> str:
        ns = self.get_namespace().rstrip("/")
        return f"{ns}/{self.get_name()}"

    @property
    def load_error(self) -> Optional[str]:
        """Why the last configure failed (None when the models are loaded or not yet tried)."""
        return self._load_error

    @property
    def tf_backend(self) -> str:
        return "tf2_ros" if self._tf_buffer is not None else "static_extrinsics"

    @property
    def autostart(self) -> bool:
        return bool(self._values["autostart"])

    def _throttled(self, key: str, level: str, message: str, period: float = 5.0) -> None:
        now = time.monotonic()
        if now - self._log_times.get(key, -1e9) >= period:
            self._log_times[key] = now
            getattr(self.get_logger(), level)(message)

    # ------------------------------------------------------------------ lifecycle
    def on_configure(self, state: State) -> TransitionCallbackReturn:
        from clip_vla.pipeline import VLAPipeline

        self._state = "configuring"
        try:
            config = P.config_from_values(self._values)
            start = time.perf_counter()
            pipeline = (self._pipeline_factory or VLAPipeline)(config)
        except Exception as exc:  # noqa: BLE001 - any load failure: stay unconfigured, say why
            self._load_error = f"{type(exc).__name__}: {exc}"
            self._state = "unconfigured"
            self.get_logger().error(f"configure failed: {self._load_error}")
            return TransitionCallbackReturn.FAILURE
        loaded = time.perf_counter() - start
        warm = self._warm_up(pipeline, config)
        with self._cond:
            self._pipeline = pipeline
            self._pending_config = None
            self._load_error = None
        self._state = "inactive"
        self.get_logger().info(
            f"models loaded in {loaded:.1f} s on {pipeline.device} (warm-up {warm:.2f} s): "
            f"clipseg={pipeline.model_ids.get('clipseg')} clip={pipeline.model_ids.get('clip')}")
        return TransitionCallbackReturn.SUCCESS

    @staticmethod
    def _warm_up(pipeline, config) -> float:
        """One inference on a blank 640x480 frame, so the first real command does not pay for lazy init."""
        start = time.perf_counter()
        try:
            vocab = config.vocabulary
            skill = next((s for s in vocab.skills if s.verbs and s.needs_object and not s.needs_destination), None)
            if skill is None:
                return 0.0
            text = f"{skill.verbs[0]} {vocab.objects[0] if vocab.objects else 'object'}"
            frame = Frame(rgb=np.zeros((480, 640, 3), np.uint8), intrinsics=Intrinsics(500.0, 500.0, 319.5, 239.5))
            pipeline.run(frame, text)
        except Exception:  # noqa: BLE001 - a warm-up never fails a configure
            pass
        return time.perf_counter() - start

    def on_activate(self, state: State) -> TransitionCallbackReturn:
        reliability = str(self._values["image_reliability"])
        self._camera_subs = [
            self.create_subscription(Image, "image", self._on_image, qos.sensor_qos(reliability, 1)),
            self.create_subscription(Image, "depth", self._on_depth, qos.sensor_qos(reliability, 5)),
            self.create_subscription(CameraInfo, "camera_info", self._on_camera_info, qos.sensor_qos(reliability, 5)),
        ]
        with self._cond:
            self._state = "active"
            self._cond.notify_all()
        self.get_logger().info(
            f"active: mode={self._values['mode']}, camera QoS {reliability}; listening on "
            f"{self._topic('image')}, {self._topic('depth')}, "
            f"{self._topic('camera_info')}, {self._topic('command')}")
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state: State) -> TransitionCallbackReturn:
        self._pause("inactive", "the node was deactivated before this command ran")
        self._state = "inactive"
        return TransitionCallbackReturn.SUCCESS

    def on_cleanup(self, state: State) -> TransitionCallbackReturn:
        self._unload()
        self._state = "unconfigured"
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: State) -> TransitionCallbackReturn:
        self._pause("finalized", "the node is shutting down")
        self._unload()
        self._state = "finalized"
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: State) -> TransitionCallbackReturn:
        self.get_logger().error(f"lifecycle error in state '{state.label}': unloading")
        self._pause("unconfigured", "the node hit a lifecycle error")
        self._unload()
        self._state = "unconfigured"
        return TransitionCallbackReturn.SUCCESS

    def _pause(self, state: str, message: str) -> None:
        for sub in self._camera_subs:
            self.destroy_subscription(sub)
        self._camera_subs = []
        with self._cond:
            self._state = state
            pending = list(self._incoming) + list(self._queue)
            self._incoming.clear()
            self._queue.clear()
            self._job = None
            self._frame = None
            self._frame_error = None
            self._depths.clear()
            self._infos.clear()
            self._cond.notify_all()
        for cmd in pending:
            self._answer(cmd, NoAction(Reason.INACTIVE, message, command=echo(cmd.text)))

    def _unload(self) -> None:
        with self._cond:
            self._pipeline = None
        import gc

        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except Exception:  # noqa: BLE001
            pass

    def start(self) -> bool:
        """configure + activate (what ``autostart`` does); False when configure failed."""
        if self.trigger_configure() != TransitionCallbackReturn.SUCCESS:
            return False
        return self.trigger_activate() == TransitionCallbackReturn.SUCCESS

    def close(self, timeout: float = 3.0) -> None:
        """Stop the worker thread (waits for the inference in flight, up to ``timeout``)."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._worker.join(timeout)

    # ------------------------------------------------------------------ parameters
    def _on_set_parameters(self, parameters) -> SetParametersResult:
        new = dict(self._values)
        for p in parameters:
            new[p.name] = p.value
            why = P.validate_node_value(p.name, p.value)
            if why:
                return SetParametersResult(successful=False, reason=why)
        core = set(P.core_names())
        config = None
        if any(p.name in core for p in parameters):
            try:
                config = P.config_from_values(new)
                geometry.camera_to_base_from_config(config.geometry)
                config.workspace.validate()
                g = config.geometry
                if g.depth_min >= g.depth_max:
                    raise ConfigError(f"geometry.depth_min {g.depth_min} must be < depth_max {g.depth_max}")
                if g.depth_statistic not in geometry.DEPTH_STATISTICS:
                    raise ConfigError(f"geometry.depth_statistic must be one of {geometry.DEPTH_STATISTICS}")
            except (ConfigError, ValueError, TypeError, KeyError) as exc:
                return SetParametersResult(successful=False, reason=str(exc))
        with self._cond:
            self._values = new
            if config is not None:
                self._pending_config = config
            if new["mode"] != "continuous":
                self._job = None
            self._cond.notify_all()
        names = ", ".join(f"{p.name}={p.value!r}" for p in parameters)
        self.get_logger().info(f"parameters updated (next frame): {names}")
        return SetParametersResult(successful=True)

    # ------------------------------------------------------------------ camera callbacks
    def _on_image(self, msg: Image) -> None:
        now = time.monotonic()
        try:
            conv.validate_image(msg, conv.COLOR_ENCODINGS, int(self._values["max_image_pixels"]))
        except conv.ConversionError as exc:
            with self._cond:
                self._stats.frames_received += 1
                self._stats.frames_bad += 1
                self._frame_error = (f"invalid colour image: {exc}", now)
            self._throttled("bad_image", "warning", f"invalid colour image dropped: {exc}")
            return
        with self._cond:
            self._stats.frames_received += 1
            old = self._frame
            if old is not None and not old.used and self._job is not None:
                self._stats.frames_dropped += 1  # continuous mode could not keep up: latest wins
            self._version += 1
            self._frame = _FrameSlot(msg, conv.stamp_to_seconds(msg.header.stamp), now, self._version)
            self._cond.notify_all()

    def _on_depth(self, msg: Image) -> None:
        now = time.monotonic()
        error = None
        try:
            conv.validate_image(msg, conv.DEPTH_ENCODINGS, int(self._values["max_image_pixels"]))
        except conv.ConversionError as exc:
            error = f"invalid depth image: {exc}"
            self._throttled("bad_depth", "warning", error)
        with self._cond:
            self._stats.depth_received += 1
            self._stats.depth_bad += error is not None
            self._depths.append(_Stamped(conv.stamp_to_seconds(msg.header.stamp), now,
                                         msg=None if error else msg, error=error,
                                         size=(int(msg.width), int(msg.height))))
            self._cond.notify_all()

    def _on_camera_info(self, msg: CameraInfo) -> None:
        now = time.monotonic()
        value, error = None, None
        try:
            value = conv.camera_info_to_intrinsics(msg)
        except (conv.ConversionError, ValueError) as exc:
            error = f"invalid camera_info: {exc}"
            self._throttled("bad_info", "warning", error)
        with self._cond:
            self._stats.camera_info_received += 1
            self._stats.camera_info_bad += error is not None
            self._infos.append(_Stamped(conv.stamp_to_seconds(msg.header.stamp), now, value=value, error=error,
                                        size=(int(msg.width), int(msg.height))))
            self._cond.notify_all()

    # ------------------------------------------------------------------ commands
    def _on_command(self, msg: String) -> None:
        now = time.monotonic()
        text = msg.data
        with self._cond:
            self._next_id += 1
            cmd = _Command(self._next_id, text, now)
            self._stats.commands_received += 1
        refusal = self._quick_refusal(cmd)
        if refusal is not None:
            self._answer(cmd, refusal)
            return
        with self._cond:
            if len(self._incoming) + len(self._queue) >= int(self._values["command_queue_size"]):
                self._stats.queue_full += 1
                full = True
            else:
                full = False
                self._incoming.append(cmd)
        if full:
            self._answer(cmd, NoAction(Reason.QUEUE_FULL, f"{self._values['command_queue_size']} commands are "
                                       "already waiting (command_queue_size)", command=echo(text)))
            return
        # Hand over on the next executor turn: camera messages that arrived with this command
        # (same wait set) are processed first, so the command sees the frame sent before it.
        self._flush_guard.trigger()

    def _flush_incoming(self) -> None:
        with self._cond:
            self._queue.extend(self._incoming)
            self._incoming.clear()
            self._cond.notify_all()

    def _quick_refusal(self, cmd: _Command) -> Optional[NoAction]:
        text = cmd.text
        if self._state != "active":
            if self._load_error:
                return NoAction(Reason.MODEL_ERROR, f"models are not loaded: {self._load_error}",
                                command=echo(text))
            return NoAction(Reason.INACTIVE, f"the node is {self._state}: activate it (lifecycle) first",
                            command=echo(text))
        limit = int(self._values["max_command_length"])
        if len(text) > limit:
            return NoAction(Reason.BAD_COMMAND, f"command has {len(text)} characters; the limit is {limit} "
                            "(max_command_length)", command=echo(text))
        if "\ufffd" in text:
            return NoAction(Reason.BAD_COMMAND, "command is not valid UTF-8 text", command=echo(text))
        if any(0xD800 <= ord(ch) <= 0xDFFF for ch in text):
            return NoAction(Reason.BAD_COMMAND, "command contains unpaired surrogate code points", command=echo(text))
        if not text.strip():
            return NoAction(Reason.EMPTY_COMMAND, "command is empty", command=echo(text))
        return None

    # ------------------------------------------------------------------ worker
    def _work(self) -> None:
        while True:
            task = self._next_task()
            if task is None:
                return
            kind, payload = task
            try:
                self._apply_pending_config()
                if kind == "command":
                    self._run_command(payload)
                else:
                    self._run_job_update(payload)
            except Exception as exc:  # noqa: BLE001 - the worker must survive anything
                self._throttled("worker", "error", f"inference worker error: {type(exc).__name__}: {exc}")
                if kind == "command":
                    self._answer(payload, NoAction(Reason.MODEL_ERROR, f"{type(exc).__name__}: {exc}",
                                                   command=echo(payload.text)))

    def _next_task(self) -> Optional[Tuple[str, Any]]:
        with self._cond:
            while True:
                if self._stopping:
                    return None
                if self._queue:
                    return "command", self._queue.popleft()
                job = self._job
                timeout = None
                if job is not None and self._frame is not None and self._frame.version != job.last_version:
                    wait = job.last_run + 1.0 / float(self._values["max_rate"]) - time.monotonic()
                    if wait <= 0:
                        return "job", job
                    timeout = wait
                self._cond.wait(timeout)

    def _apply_pending_config(self) -> None:
        with self._cond:
            config, self._pending_config = self._pending_config, None
            pipeline = self._pipeline
        if config is not None and pipeline is not None:
            try:
                pipeline.update_config(config)
            except Exception as exc:  # noqa: BLE001 - keep the previous configuration
                self.get_logger().error(f"could not apply the new parameters: {exc}")

    def _run_command(self, cmd: _Command) -> None:
        with self._cond:
            pipeline = self._pipeline
            previous_job, self._job = self._job, None  # a new command ends continuous updates
            continuous = self._values["mode"] == "continuous"
        if pipeline is None or self._state != "active":
            self._answer(cmd, NoAction(Reason.INACTIVE, f"the node is {self._state}", command=echo(cmd.text)))
            return
        try:
            prepared = pipeline.prepare(cmd.text)
        except Exception as exc:  # noqa: BLE001 - a tokenizer/model failure on the text
            self._answer(cmd, NoAction(Reason.MODEL_ERROR, f"{type(exc).__name__}: {exc}", command=echo(cmd.text)))
            return
        if isinstance(prepared, NoAction):
            prepared.command = echo(cmd.text)
            if prepared.reason == Reason.STOPPED and previous_job is not None:
                prepared.message = (f"stopped continuous goal updates of command {previous_job.command.command_id}")
                self._publish_clear_markers()
            self._answer(cmd, prepared)
            return
        job = _Job(cmd) if continuous else None
        result, frame_msg, rgb = self._infer(cmd, prepared, job)
        if job is not None:
            with self._cond:
                if self._job is None and not self._queue and self._values["mode"] == "continuous":
                    job.answered = True
                    self._job = job
        self._publish_result(cmd, result, frame_msg, rgb, update=0)
        self._answer(cmd, result, frame_msg)

    def _run_job_update(self, job: _Job) -> None:
        with self._cond:
            pipeline = self._pipeline
        if pipeline is None:
            return
        prepared = pipeline.prepare(job.command.text)
        if isinstance(prepared, NoAction):  # the vocabulary changed under it
            with self._cond:
                if self._job is job:
                    self._job = None
            return
        result, frame_msg, rgb = self._infer(job.command, prepared, job)
        with self._cond:
            if self._job is not job:  # replaced or stopped while it ran: its result is obsolete
                return
        job.updates += 1
        if frame_msg is not None:
            self._publish_result(job.command, result, frame_msg, rgb, update=job.updates)

    # ------------------------------------------------------------------ one inference
    def _infer(self, cmd: _Command, prepared, job: Optional[_Job]):
        """(result, colour message or None, rgb or None) for one command on the freshest frame."""
        if job is not None:  # a job re-runs only on a newer frame, whatever this run answers
            with self._cond:
                job.last_version = self._frame.version if self._frame is not None else -1
            job.last_run = time.monotonic()
        try:
            slot = self._select_frame()
            depth_rec, info_rec = self._match(slot)
            rgb = conv.image_to_rgb(slot.msg, int(self._values["max_image_pixels"]))
            frame = Frame(rgb=rgb, depth=self._depth_for(depth_rec, rgb), intrinsics=self._intrinsics_for(info_rec, rgb),
                          stamp=slot.stamp, frame_id=slot.msg.header.frame_id or "camera_color_optical_frame")
            camera_to_base = self._camera_to_base(slot.msg)
        except _Refusal as refusal:
            return self._refused(cmd, prepared, refusal.reason, refusal.message), None, None
        except (conv.ConversionError, ValueError) as exc:
            return self._refused(cmd, prepared, Reason.BAD_INPUT, str(exc)), None, None
        start = time.perf_counter()
        try:
            result = self._pipeline_run(frame, prepared, camera_to_base)
        except Exception as exc:  # noqa: BLE001 - VLAPipeline.run should not raise; never let it kill the node
            result = NoAction(Reason.MODEL_ERROR, f"{type(exc).__name__}: {exc}", command=echo(cmd.text))
        elapsed = (time.perf_counter() - start) * 1e3
        with self._cond:
            slot.used = True
            self._stats.frames_processed += 1
            self._stats.inference_ms.append(elapsed)
        result.command = echo(cmd.text)
        if isinstance(result, NoAction) and result.reason == Reason.NO_INTRINSICS:
            with self._cond:
                sizes = sorted({f"{r.size[0]}x{r.size[1]}" for r in self._infos})
            if sizes:
                w, h = _size(slot.msg)
                result.message += f" (camera_info received only for {', '.join(sizes)}, not for this {w}x{h} image)"
        return result, slot.msg, rgb

    @staticmethod
    def _refused(cmd: _Command, prepared, reason: Reason, message: str) -> NoAction:
        parsed = getattr(prepared, "parsed", None)
        return NoAction(reason, message, command=echo(cmd.text), skill=getattr(parsed, "skill", None),
                        object_phrase=getattr(parsed, "object", None))

    def _pipeline_run(self, frame: Frame, prepared, camera_to_base):
        with self._cond:
            pipeline = self._pipeline
        if pipeline is None:
            raise _Refusal(Reason.INACTIVE, "models were unloaded")
        return pipeline.run(frame, prepared, camera_to_base)

    def _select_frame(self) -> _FrameSlot:
        with self._cond:
            slot, error = self._frame, self._frame_error
        if slot is None and error is None:
            raise _Refusal(Reason.NO_FRAME, f"no colour frame received yet on {self._topic('image')}")
        if error is not None and (slot is None or error[1] >= slot.received):
            raise _Refusal(Reason.BAD_INPUT, error[0])
        age = time.monotonic() - slot.received
        max_age = float(self._values["max_frame_age"])
        if age > max_age:
            raise _Refusal(Reason.STALE_FRAME, f"the latest colour frame arrived {age:.2f} s ago "
                           f"(max_frame_age {max_age:.2f} s)")
        return slot

    def _match(self, slot: _FrameSlot) -> Tuple[Optional[_Stamped], Optional[_Stamped]]:
        """Depth and camera_info whose stamps are within sync_tolerance of the frame's (closest wins).

        When a stream is live but its message for this frame has not arrived yet, wait for it up to
        sync_tolerance (bounded): drivers publish colour and depth a few milliseconds apart.
        """
        tol = float(self._values["sync_tolerance"])
        deadline = time.monotonic() + min(tol, SYNC_WAIT_MAX)
        live_window = max(1.0, 2.0 * float(self._values["max_frame_age"]))
        with self._cond:
            while True:
                depth = self._closest(self._depths, slot.stamp, tol)
                # camera_info of this image size first (a resized stream may share stamps)
                info = self._closest(self._infos, slot.stamp, tol, size=_size(slot.msg))
                now = time.monotonic()
                missing = [q for q, m in ((self._depths, depth), (self._infos, info))
                           if m is None and q and now - q[-1].received < live_window
                           and q[-1].stamp < slot.stamp + tol]
                if not missing or now >= deadline or self._stopping:
                    break
                self._cond.wait(deadline - now)
            if info is None:  # intrinsics are static: the latest valid camera_info of the same size will do
                info = next((r for r in reversed(self._infos) if r.error is None and r.size == _size(slot.msg)),
                            None)
        return depth, info

    @staticmethod
    def _closest(records: Deque[_Stamped], stamp: float, tol: float,
                 size: Optional[Tuple[int, int]] = None) -> Optional[_Stamped]:
        best, best_dt = None, None
        for rec in records:
            if size is not None and rec.size not in (size, (0, 0)):
                continue
            dt = abs(rec.stamp - stamp)
            if dt <= tol + 1e-9 and (best_dt is None or dt < best_dt):
                best, best_dt = rec, dt
        return best

    def _depth_for(self, rec: Optional[_Stamped], rgb: np.ndarray) -> Optional[np.ndarray]:
        if rec is None:
            return None
        if rec.error:
            raise _Refusal(Reason.BAD_INPUT, rec.error)
        depth = conv.depth_to_array(rec.msg, int(self._values["max_image_pixels"]))
        h, w = rgb.shape[:2]
        if depth.shape != (h, w):
            if not self._values["depth_registered"]:
                raise _Refusal(Reason.BAD_INPUT, f"depth is {depth.shape[1]}x{depth.shape[0]} but colour is {w}x{h}; "
                               "set depth_registered:=true if depth is registered to the colour camera, or "
                               "publish aligned depth")
            depth = conv.resize_depth(depth, w, h)
        return depth

    def _intrinsics_for(self, rec: Optional[_Stamped], rgb: np.ndarray) -> Optional[Intrinsics]:
        if rec is None:
            return None
        if rec.error:
            raise _Refusal(Reason.BAD_INPUT, rec.error)
        h, w = rgb.shape[:2]
        if rec.size != (0, 0) and rec.size != (w, h):
            raise _Refusal(Reason.BAD_INPUT, f"camera_info is for {rec.size[0]}x{rec.size[1]} but the colour image is "
                           f"{w}x{h}")
        return rec.value

    def _camera_to_base(self, msg: Image):
        """TF camera frame -> base_frame at the image stamp; None = the static extrinsics."""
        if self._tf_buffer is None or not self._values["use_tf"]:
            return None
        source = msg.header.frame_id
        if not source:
            self._throttled("no_frame_id", "warning", "image has no frame_id: using the static extrinsics")
            return None
        base = str(self._values["base_frame"])
        t = self._lookup(base, source, msg.header.stamp)
        return geometry.RigidTransform.from_xyz_quat(
            [t.translation.x, t.translation.y, t.translation.z],
            [t.rotation.x, t.rotation.y, t.rotation.z, t.rotation.w])

    def _lookup(self, target: str, source: str, stamp):
        from rclpy.duration import Duration
        from rclpy.time import Time

        try:
            tf = self._tf_buffer.lookup_transform(target, source, Time.from_msg(stamp),
                                                  timeout=Duration(seconds=float(self._values["tf_timeout"])))
        except Exception as exc:  # noqa: BLE001 - tf2 lookup/extrapolation/connectivity errors
            raise _Refusal(Reason.BAD_INPUT, f"no transform '{source}' -> '{target}' at the image stamp: {exc}")
        return tf.transform

    def _base_to_target(self, stamp) -> Tuple[str, Optional[geometry.RigidTransform]]:
        base = str(self._values["base_frame"])
        target = str(self._values["target_frame"]) or base
        if target == base or self._tf_buffer is None:
            return base, None
        t = self._lookup(target, base, stamp)
        return target, geometry.RigidTransform.from_xyz_quat(
            [t.translation.x, t.translation.y, t.translation.z],
            [t.rotation.x, t.rotation.y, t.rotation.z, t.rotation.w])

    # ------------------------------------------------------------------ outputs
    def _goal_record(self, cmd: _Command, goal: ActionGoal, header, update: int) -> Tuple[Dict[str, Any], Any]:
        frame_id, tf = self._base_to_target(header.stamp)
        xyz = np.asarray(goal.xyz_base, dtype=np.float64)
        c, s_ = math.cos(float(goal.theta)), math.sin(float(goal.theta))
        rot = np.array([[c, -s_, 0.0], [s_, c, 0.0], [0.0, 0.0, 1.0]])  # yaw about base z
        obj = None if goal.object_xyz_base is None else np.asarray(goal.object_xyz_base, dtype=np.float64)
        if tf is not None:
            xyz = tf.apply(xyz)
            rot = tf.rotation @ rot
            obj = None if obj is None else tf.apply(obj)
        quat = rotation_to_quaternion(rot)
        theta = math.atan2(rot[1, 0], rot[0, 0])
        record = {
            "stamp": conv.stamp_to_dict(header.stamp),
            "frame_id": frame_id,
            "cmd": goal.cmd,
            "cmd_token": int(goal.cmd_token),
            "tokens": [int(t) for t in goal.tokens],
            "tokens_text": goal.tokens_text,
            "token_frame": str(self._values["base_frame"]),
            "pose": {"x": float(xyz[0]), "y": float(xyz[1]), "z": float(xyz[2]), "theta": float(theta)},
            "orientation": {"x": quat[0], "y": quat[1], "z": quat[2], "w": quat[3]},
            "confidence": round(float(goal.confidence), 4),
            "object": goal.object_phrase,
            "destination": goal.destination_phrase,
            "object_position": None if obj is None else [float(v) for v in obj],
            "command": echo(cmd.text),
            "command_id": cmd.command_id,
            "update": update,
            "depth_source": goal.depth_source,
            "pixel": None if goal.pixel is None else [round(float(v), 2) for v in goal.pixel],
            "camera_frame": header.frame_id,
        }
        return record, quat

    def _publish_result(self, cmd: _Command, result, frame_msg, rgb, update: int) -> None:
        if frame_msg is None:
            return
        header = frame_msg.header
        record = None
        if isinstance(result, ActionGoal):
            try:
                record, quat = self._goal_record(cmd, result, header, update)
            except _Refusal as refusal:
                self._throttled("target_tf", "warning", refusal.message)
                record = None
            if record is not None:
                result.goal_record = record  # type: ignore[attr-defined]
                pose = PoseStamped()
                pose.header.stamp = header.stamp
                pose.header.frame_id = record["frame_id"]
                pose.pose.position.x, pose.pose.position.y, pose.pose.position.z = (
                    record["pose"]["x"], record["pose"]["y"], record["pose"]["z"])
                (pose.pose.orientation.x, pose.pose.orientation.y, pose.pose.orientation.z,
                 pose.pose.orientation.w) = quat
                with self._publish_lock:
                    self._pub_goal.publish(String(data=json.dumps(record)))
                    self._pub_pose.publish(pose)
                    self._pub_markers.publish(self._markers(record, header, quat))
                with self._cond:
                    self._stats.goals_published += 1
        elif update == 0:
            self._publish_clear_markers(header)
        if rgb is not None and self._pub_debug.get_subscription_count() > 0:
            try:
                from clip_vla.core.visualize import annotate

                image = conv.rgb_to_image(annotate(rgb, result), header.stamp, header.frame_id)
                with self._publish_lock:
                    self._pub_debug.publish(image)
            except Exception as exc:  # noqa: BLE001 - a debug view never breaks the goal path
                self._throttled("debug", "warning", f"debug image failed: {exc}")

    def _markers(self, record: Dict[str, Any], header, quat) -> MarkerArray:
        stamp, frame_id = header.stamp, record["frame_id"]
        p = record["pose"]
        markers = MarkerArray()

        def base(ns: str, mid: int, mtype: int) -> Marker:
            m = Marker()
            m.header.stamp = stamp
            m.header.frame_id = frame_id
            m.ns, m.id, m.type, m.action = ns, mid, mtype, Marker.ADD
            m.pose.orientation.w = 1.0
            m.frame_locked = False
            return m

        arrow = base("clip_vla_goal", 0, Marker.ARROW)
        arrow.pose.position.x, arrow.pose.position.y, arrow.pose.position.z = p["x"], p["y"], p["z"]
        arrow.pose.orientation.x, arrow.pose.orientation.y, arrow.pose.orientation.z, arrow.pose.orientation.w = quat
        arrow.scale.x, arrow.scale.y, arrow.scale.z = 0.12, 0.012, 0.012
        arrow.color.r, arrow.color.g, arrow.color.b, arrow.color.a = 0.1, 0.85, 0.2, 1.0
        markers.markers.append(arrow)

        point = base("clip_vla_object", 1, Marker.SPHERE)
        point.pose.position.x, point.pose.position.y, point.pose.position.z = p["x"], p["y"], p["z"]
        point.scale.x = point.scale.y = point.scale.z = 0.03
        point.color.r, point.color.g, point.color.b, point.color.a = 1.0, 0.8, 0.1, 0.9
        markers.markers.append(point)

        obj = record.get("object_position")
        second = base("clip_vla_object", 2, Marker.SPHERE)
        if obj is not None:
            second.pose.position.x, second.pose.position.y, second.pose.position.z = obj
            second.scale.x = second.scale.y = second.scale.z = 0.03
            second.color.r, second.color.g, second.color.b, second.color.a = 0.2, 0.5, 1.0, 0.9
        else:
            second.action = Marker.DELETE
        markers.markers.append(second)

        label = base("clip_vla_label", 3, Marker.TEXT_VIEW_FACING)
        label.pose.position.x, label.pose.position.y, label.pose.position.z = p["x"], p["y"], p["z"] + 0.08
        label.scale.z = 0.03
        label.color.r = label.color.g = label.color.b = label.color.a = 1.0
        label.text = f"{record['cmd']} {record['object'] or ''} [{record['tokens_text']}]".strip()
        markers.markers.append(label)
        return markers

    def _publish_clear_markers(self, header=None) -> None:
        m = Marker()
        m.action = Marker.DELETEALL
        if header is not None:
            m.header.stamp = header.stamp
        m.header.frame_id = str(self._values["target_frame"] or self._values["base_frame"])
        with self._publish_lock:
            self._pub_markers.publish(MarkerArray(markers=[m]))

    def _answer(self, cmd: _Command, result, frame_msg=None) -> None:
        """Publish the one status of a command."""
        status = "accepted" if isinstance(result, ActionGoal) else result.reason.value
        if frame_msg is not None:
            stamp = frame_msg.header.stamp
        else:
            stamp = self.get_clock().now().to_msg()
        latency = (time.monotonic() - cmd.received) * 1e3
        out: Dict[str, Any] = {
            "command_id": cmd.command_id,
            "command": echo(cmd.text),
            "status": status,
            "message": "goal published" if isinstance(result, ActionGoal) else str(result.message),
            "stamp": conv.stamp_to_dict(stamp),
            "latency_ms": round(latency, 2),
            "mode": str(self._values["mode"]),
        }
        if isinstance(result, ActionGoal):
            record = getattr(result, "goal_record", None)
            out["goal"] = record
            if record is None:  # the goal could not be expressed in target_frame
                out["status"] = Reason.BAD_INPUT.value
                out["message"] = f"no transform to target_frame '{self._values['target_frame']}'"
        else:
            out["skill"] = result.skill
            out["object"] = result.object_phrase
            if result.detection is not None:
                out["detection"] = result.detection.to_dict()
        with self._publish_lock:
            self._pub_status.publish(String(data=json.dumps(out)))
        with self._cond:
            self._stats.commands_answered += 1
            self._stats.commands_accepted += out["status"] == "accepted"
            self._stats.answer_ms.append(latency)
            self._stats.statuses[out["status"]] = self._stats.statuses.get(out["status"], 0) + 1

    # ------------------------------------------------------------------ diagnostics
    def diagnostics_status(self) -> DiagnosticStatus:
        with self._cond:
            s = self._stats
            pipeline = self._pipeline
            values = {
                "state": self._state,
                "mode": str(self._values["mode"]),
                "frames received": s.frames_received,
                "frames bad": s.frames_bad,
                "frames processed": s.frames_processed,
                "frames dropped": s.frames_dropped,
                "depth received": s.depth_received,
                "camera_info received": s.camera_info_received,
                "commands received": s.commands_received,
                "commands answered": s.commands_answered,
                "commands accepted": s.commands_accepted,
                "commands queued": len(self._queue) + len(self._incoming),
                "queue full": s.queue_full,
                "goals published": s.goals_published,
                "continuous job": "none" if self._job is None else str(self._job.command.command_id),
                "inference latency last ms": round(s.inference_ms[-1], 2) if s.inference_ms else float("nan"),
                "inference latency p50 ms": round(_percentile(s.inference_ms, 50), 2),
                "inference latency p95 ms": round(_percentile(s.inference_ms, 95), 2),
                "inference latency max ms": round(max(s.inference_ms), 2) if s.inference_ms else float("nan"),
                "statuses": json.dumps(s.statuses, sort_keys=True),
                "last frame error": self._frame_error[0] if self._frame_error else "",
                "last frame age s": (round(time.monotonic() - self._frame.received, 3) if self._frame
                                     else float("nan")),
            }
        ids = pipeline.model_ids if pipeline is not None else {}
        device = pipeline.device if pipeline is not None else str(self._values["models.device"])
        values.update({
            "model clipseg": ids.get("clipseg", str(self._values["models.clipseg"])),
            "model clip": ids.get("clip", str(self._values["models.clip"])),
            "device": device,
            "image conversion": conv.BACKEND,
            "tf": self.tf_backend,
            "pid": os.getpid(),
            "rss mb": round(_rss_mb(), 1),
        })
        st = DiagnosticStatus()
        st.name = f"{self._fqn()}: vla"
        st.hardware_id = device
        if self._load_error:
            st.level, st.message = DiagnosticStatus.ERROR, f"model load failed: {self._load_error}"[:500]
        elif self._state != "active":
            st.level, st.message = DiagnosticStatus.WARN, f"node is {self._state}"
        elif values["last frame error"] and (self._frame is None or self._frame_error[1] >= self._frame.received):
            st.level, st.message = DiagnosticStatus.WARN, "latest colour frame is invalid"
        elif self._frame is None or time.monotonic() - self._frame.received > max(
                2.0, float(self._values["max_frame_age"])):
            st.level, st.message = DiagnosticStatus.WARN, "no recent colour frame"
        else:
            st.level, st.message = DiagnosticStatus.OK, "active"
        st.values = [KeyValue(key=k, value=str(v)) for k, v in values.items()]
        return st

    def _publish_diagnostics(self) -> None:
        array = DiagnosticArray()
        array.header.stamp = self.get_clock().now().to_msg()
        array.status = [self.diagnostics_status()]
        with self._publish_lock:
            self._pub_diag.publish(array)


def _size(msg) -> Tuple[int, int]:
    return int(msg.width), int(msg.height)


# --------------------------------------------------------------------------- entry point
def main(argv: Optional[List[str]] = None) -> int:
    """``vla_node [--ros-args ...]``: exits cleanly (code 0, no traceback) on SIGINT/SIGTERM."""
    args = sys.argv if argv is None else argv
    stop = threading.Event()
    phase = {"name": "startup"}

    def on_signal(signum, frame):  # noqa: ARG001
        stop.set()
        if phase["name"] == "startup":  # interrupt a slow model load too
            raise KeyboardInterrupt

    try:
        from rclpy.signals import SignalHandlerOptions

        rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    except (ImportError, TypeError):
        rclpy.init(args=args)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    from rclpy.executors import SingleThreadedExecutor

    try:
        from rclpy.executors import ExternalShutdownException
    except ImportError:  # pragma: no cover - older rclpy
        ExternalShutdownException = RuntimeError  # type: ignore[misc,assignment]  # noqa: N806

    node: Optional[VlaNode] = None
    executor = None
    code = 0
    try:
        node = VlaNode()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        if node.autostart and not node.start():
            node.get_logger().error("autostart failed: staying up to report the error on ~/status and "
                                    "/diagnostics; fix the parameters and trigger configure again")
        phase["name"] = "running"
        failures = 0
        while not stop.is_set() and rclpy.ok():
            try:
                executor.spin_once(timeout_sec=0.1)
                failures = 0
            except (KeyboardInterrupt, ExternalShutdownException):
                break
            except Exception as exc:  # noqa: BLE001 - e.g. a message rclpy cannot take: log and go on
                failures += 1
                node._throttled("spin", "error", f"executor error: {type(exc).__name__}: {exc}")
                if failures > 1000:
                    code = 1
                    break
    except KeyboardInterrupt:
        pass
    finally:
        phase["name"] = "stopping"
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if node is not None:
            try:
                node.close()
                if executor is not None:
                    executor.remove_node(node)
                node.destroy_node()
            except Exception:  # noqa: BLE001 - best effort at exit
                pass
        if executor is not None:
            try:
                executor.shutdown(timeout_sec=1.0)
            except Exception:  # noqa: BLE001
                pass
        try:
            if rclpy.ok():
                rclpy.shutdown()
        except Exception:  # noqa: BLE001
            pass
    return code


if __name__ == "__main__":
    sys.exit(main())
