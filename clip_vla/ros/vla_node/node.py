"""``vla_node``: camera + command in, tokenized action goals out (a managed ROS 2 node).

A thin wrapper over ``clip_vla.pipeline.VLAPipeline``: this file wires the parts together,
each of which lives in its own module of this package::

    image, depth, camera_info ─► inputs.CameraInputs ──┐
    command ─► commands.CommandQueue ─────────────────┼─► worker.InferenceWorker ─► outputs.Outputs
    ~/suggest ─► suggestions.SuggestionRounds ────────┤      ("option 2" resolved on arrival)
    execution ─► tasks.TaskTracker (the running plan) ─┘
    parameters ─► settings.NodeSettings     tf.TfLookup ┘                  diagnostics ─► /diagnostics

Topics (all relative, so namespaces and remaps apply)::

    sub  image          sensor_msgs/Image        rgb8|bgr8|rgba8|bgra8|mono8, sensor QoS (latest wins)
    sub  depth          sensor_msgs/Image        16UC1 (mm) | 32FC1 (m), optional, paired by stamp
    sub  camera_info    sensor_msgs/CameraInfo   optional, paired by stamp
    sub  command        std_msgs/String          reliable
    sub  execution      std_msgs/String          JSON: the executor's report of a plan step (core/execution.py)
    pub  ~/goal         std_msgs/String          JSON: the atomic goal record (pose + skill + tokens)
    pub  ~/goal_pose    geometry_msgs/PoseStamped  same stamp, target_frame, yaw quaternion
    pub  ~/status       std_msgs/String          JSON: exactly one answer per command
    pub  ~/plan         std_msgs/String          JSON: the plan, steps grounded so far (goal, tokens, chunk)
    pub  ~/chunk_path   nav_msgs/Path            the current step's chunk waypoints (base_frame)
    pub  ~/task_status  std_msgs/String          JSON: how an accepted command's plan ended (done|failed|cancelled)
    pub  ~/debug_image  sensor_msgs/Image        annotated frame (only while subscribed)
    pub  ~/markers      visualization_msgs/MarkerArray  (goal; numbered suggestion labels)
    pub  ~/suggestions  std_msgs/String          JSON: the latest suggestion round (transient-local)
    srv  ~/suggest      std_srvs/Trigger         one suggestion round now; the message is its JSON
    pub  /diagnostics   diagnostic_msgs/DiagnosticArray

Lifecycle: configure loads the models (slow, once); activate subscribes to the camera;
deactivate pauses inference without unloading; cleanup unloads. With ``autostart`` (default)
the node configures and activates itself at start-up. The state is rclpy's own.
"""
from __future__ import annotations

import threading
import time
from typing import Any, Callable, List, Optional, Sequence

from rcl_interfaces.msg import SetParametersResult
from rclpy.lifecycle import Node as LifecycleNode
from rclpy.lifecycle import State, TransitionCallbackReturn
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import String

from clip_vla.core.config import ConfigError
from clip_vla.core.records import echo
from clip_vla.core.types import NoAction, Reason
from clip_vla.ros import conversions as conv
from clip_vla.ros import params, qos
from clip_vla.ros.vla_node.commands import SHUTDOWN_STATES, SHUTTING_DOWN, CommandQueue, quick_refusal
from clip_vla.ros.vla_node.diagnostics import Stats, Throttle, diagnostic_status
from clip_vla.ros.vla_node.inputs import CameraInputs
from clip_vla.ros.vla_node.outputs import Outputs
from clip_vla.ros.vla_node.settings import NodeSettings
from clip_vla.ros.vla_node.suggestions import SuggestionRounds, SuggestService
from clip_vla.ros.vla_node.tasks import TaskTracker
from clip_vla.ros.vla_node.tf import TfLookup
from clip_vla.ros.vla_node.worker import InferenceWorker, Models

NODE_NAME = "clip_vla"
WARM_UP_SIZE = (640, 480)  # the first real frame's shape is unknown: warm up on the most common one


class VlaNode(LifecycleNode):
    """The clip_vla perception node (see the module docstring)."""

    def __init__(self, node_name: str = NODE_NAME, pipeline_factory: Optional[Callable[[Any], Any]] = None,
                 params_files: Sequence[params.ParamsFile] = (), **kwargs: Any) -> None:
        """``pipeline_factory(config)`` replaces ``VLAPipeline(config)`` (the simulator's oracle uses it);
        ``params_files``: the ``--params-file`` contents, checked before rclpy applies them.

        Raises:
            ConfigError, rclpy.exceptions.ParameterException: an invalid parameter value.
        """
        super().__init__(node_name, **kwargs)
        self._pipeline_factory = pipeline_factory
        self._settings = NodeSettings.from_values(params.declare_parameters(self, params_files))  # replaced whole
        self._cond = threading.Condition(threading.RLock())  # guards the parts' state; wakes the worker
        self._stats = Stats()
        self._log = Throttle(self.get_logger())
        self._models = Models(self._cond)
        self._inputs = CameraInputs(self._cond, self._stats)
        self._commands = CommandQueue(self._cond, self._stats)
        self._camera_subs: List[Any] = []

        self._outputs = Outputs(self, self._cond, self._stats)
        self._suggestions = SuggestionRounds(self, self._cond, self._outputs)
        self._suggest_service = SuggestService(self, self._suggestions, lambda: self.state, lambda: self._settings)
        self._sub_command = self.create_subscription(String, "command", self._on_command, qos.command_qos())
        self._flush_guard = self.create_guard_condition(self._commands.flush)
        self._tasks = TaskTracker(self._cond)
        self.tf = TfLookup(self, self._settings)
        self.get_logger().info(f"image conversion: {conv.backend_description()}")
        for level, line in self.tf.describe(self._settings):
            getattr(self.get_logger(), level)(line)

        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._diag_timer = self.create_timer(self._settings.diagnostics_period, self._publish_diagnostics)
        self._worker = InferenceWorker(
            cond=self._cond, inputs=self._inputs, commands=self._commands, models=self._models,
            outputs=self._outputs, tf=self.tf, settings=lambda: self._settings, state=lambda: self.state,
            topic=self._topic, log=self._log, logger=self.get_logger(), suggestions=self._suggestions,
            tasks=self._tasks, now=lambda: conv.stamp_to_seconds(self.get_clock().now().to_msg()))
        self._worker.start()
        self._sub_execution = self.create_subscription(String, "execution", lambda msg: self._worker.on_execution(
            msg.data), qos.command_qos())

    # ------------------------------------------------------------------ what others read
    @property
    def state(self) -> str:
        """The lifecycle state's label ("unconfigured", "inactive", "active", ...), from rclpy.

        Safe from any thread without our lock: rcl changes the state by pointing at another of its
        states (which live as long as the node), so a reader sees the old or the new one, whole.
        """
        return self._state_machine.current_state[1]

    @property
    def settings(self) -> NodeSettings:
        return self._settings

    @property
    def load_error(self) -> Optional[str]:
        """Why the last configure failed (None when the models are loaded or not yet tried)."""
        return self._models.load_error

    @property
    def tf_backend(self) -> str:
        return self.tf.backend

    @property
    def autostart(self) -> bool:
        return self._settings.autostart

    def _topic(self, name: str) -> str:
        """The resolved (namespaced, remapped) name of a relative topic, for messages."""
        try:
            return self.resolve_topic_name(name)
        except AttributeError:  # resolve_topic_name is newer than Humble's rclpy
            return f"{self.get_namespace().rstrip('/')}/{name}"

    # ------------------------------------------------------------------ lifecycle
    def on_configure(self, state: State) -> TransitionCallbackReturn:
        from clip_vla.perception.segmenter import warm_up
        from clip_vla.pipeline import VLAPipeline

        try:
            config = self._settings.config()
            start = time.perf_counter()
            pipeline = (self._pipeline_factory or VLAPipeline)(config)
        except Exception as exc:  # noqa: BLE001 - any load failure: stay unconfigured, say why
            self._models.failed(f"{type(exc).__name__}: {exc}")
            self.get_logger().error(f"configure failed: {self._models.load_error}")
            return TransitionCallbackReturn.FAILURE
        loaded = time.perf_counter() - start
        start = time.perf_counter()
        try:
            warm_up(pipeline, *WARM_UP_SIZE, all_objects=False)  # both prompt counts; objects load on first use
        except Exception as exc:  # noqa: BLE001 - a warm-up never fails a configure
            self.get_logger().warning(f"warm-up failed (the first command will be slow): {exc}")
        warm = time.perf_counter() - start
        self._models.loaded(pipeline)
        self.get_logger().info(
            f"models loaded in {loaded:.1f} s on {pipeline.device} (warm-up {warm:.2f} s): "
            f"clipseg={pipeline.model_ids.get('clipseg')} clip={pipeline.model_ids.get('clip')}")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: State) -> TransitionCallbackReturn:
        reliability = self._settings.image_reliability
        self._camera_subs = [
            self.create_subscription(Image, "image", self._on_image, qos.sensor_qos(reliability, 1)),
            self.create_subscription(Image, "depth", self._on_depth, qos.sensor_qos(reliability, 5)),
            self.create_subscription(CameraInfo, "camera_info", self._on_camera_info, qos.sensor_qos(reliability, 5)),
        ]
        self.get_logger().info(
            f"active: mode={self._settings.mode}, camera QoS {reliability}; listening on "
            f"{self._topic('image')}, {self._topic('depth')}, "
            f"{self._topic('camera_info')}, {self._topic('command')}")
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state: State) -> TransitionCallbackReturn:
        self._pause(Reason.INACTIVE, "the node was deactivated before this command ran")
        return TransitionCallbackReturn.SUCCESS

    def on_cleanup(self, state: State) -> TransitionCallbackReturn:
        self._models.unload()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: State) -> TransitionCallbackReturn:
        self._pause(Reason.STOPPED, SHUTTING_DOWN)
        self._models.unload()
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: State) -> TransitionCallbackReturn:
        self.get_logger().error(f"lifecycle error in state '{state.label}': unloading")
        self._pause(Reason.INACTIVE, "the node hit a lifecycle error")
        self._models.unload()
        return TransitionCallbackReturn.SUCCESS

    def _pause(self, reason: Reason, message: str) -> None:
        """Stop listening to the camera and answer every waiting command (``inactive``, or ``stopped`` at shutdown)."""
        for sub in self._camera_subs:
            self.destroy_subscription(sub)
        self._camera_subs = []
        pending = self._commands.drain()
        self._inputs.clear()
        for cmd in pending:
            self._outputs.answer(cmd, NoAction(reason, message, command=echo(cmd.text)), self._settings)

    def start(self) -> bool:
        """configure + activate (what ``autostart`` does); False when configure failed."""
        if self.trigger_configure() != TransitionCallbackReturn.SUCCESS:
            return False
        return self.trigger_activate() == TransitionCallbackReturn.SUCCESS

    def close(self, timeout: float = 3.0) -> None:
        """Stop the worker, then shut the lifecycle down: every waiting command is answered ``stopped``.

        The worker goes first so that the inference in flight (waited for up to ``timeout``) ends
        with its own answer; the lifecycle shutdown then answers what is still queued, and every
        command that arrives later is refused ``stopped`` (``quick_refusal``). The caller spins the
        executor a little longer for those, then waits for ``wait_answers_delivered``.
        """
        self._worker.stop(timeout)
        if self.state in SHUTDOWN_STATES:  # shut down over the lifecycle service already
            return
        try:
            self.trigger_shutdown()
        except Exception as exc:  # noqa: BLE001 - e.g. interrupted mid-transition while loading: nothing queued
            self.get_logger().warning(f"lifecycle shutdown from '{self.state}' failed: {exc}")

    def wait_answers_delivered(self, timeout: float) -> bool:
        """Whether every ``~/status`` subscriber acknowledged the answers within ``timeout`` s (before exiting)."""
        return self._outputs.wait_statuses_acked(timeout)

    # ------------------------------------------------------------------ parameters
    def _on_set_parameters(self, parameters: List[Any]) -> SetParametersResult:
        for p in parameters:
            why = params.validate_node_value(p.name, p.value)
            if why:
                return SetParametersResult(successful=False, reason=why)
        settings = self._settings.updated({p.name: p.value for p in parameters})
        core = set(params.core_names())
        config = None
        if any(p.name in core for p in parameters):
            try:  # the config dataclasses validate themselves (ranges, choices, cross-field rules)
                config = settings.config()
            except ConfigError as exc:
                return SetParametersResult(successful=False, reason=str(exc))
        with self._cond:
            self._settings = settings
            if config is not None:
                self._models.reconfigure(config)
            if not settings.continuous:
                self._commands.job = None
            self._cond.notify_all()
        names = ", ".join(f"{p.name}={p.value!r}" for p in parameters)
        self.get_logger().info(f"parameters updated (next frame): {names}")
        return SetParametersResult(successful=True)

    # ------------------------------------------------------------------ subscriptions
    def _on_image(self, msg: Image) -> None:
        with self._cond:
            job_running = self._commands.job is not None
        error = self._inputs.on_image(msg, self._settings.max_image_pixels, job_running)
        if error:
            self._log("bad_image", "warning", f"{error}: dropped")

    def _on_depth(self, msg: Image) -> None:
        error = self._inputs.on_depth(msg, self._settings.max_image_pixels)
        if error:
            self._log("bad_depth", "warning", error)

    def _on_camera_info(self, msg: CameraInfo) -> None:
        error = self._inputs.on_camera_info(msg)
        if error:
            self._log("bad_info", "warning", error)

    def _on_command(self, msg: String) -> None:
        settings = self._settings
        cmd, refusal = self._suggestions.resolve(self._commands.receive(msg.data))  # "option 2" -> its command
        refusal = refusal or quick_refusal(cmd.text, self.state, self._models.load_error,
                                           settings.max_command_length)
        if refusal is not None:
            self._outputs.answer(cmd, refusal, settings)
        elif not self._commands.offer(cmd, settings.command_queue_size):
            self._outputs.answer(cmd, NoAction(Reason.QUEUE_FULL, f"{settings.command_queue_size} commands are "
                                               "already waiting (command_queue_size)", command=echo(cmd.text)),
                                 settings)
        else:
            # Hand over on the next executor turn: camera messages that arrived with this command
            # (same wait set) are processed first, so the command sees the frame sent before it.
            self._flush_guard.trigger()

    # ------------------------------------------------------------------ diagnostics
    def diagnostics_status(self):
        """The node's DiagnosticStatus now (also published every ``diagnostics_period``)."""
        settings = self._settings
        pipeline = self._models.pipeline
        ids = pipeline.model_ids if pipeline is not None else {}
        backends = {"model clipseg": ids.get("clipseg", settings.clipseg), "model clip": ids.get("clip", settings.clip),
                    "device": pipeline.device if pipeline is not None else settings.device,
                    "image conversion": conv.BACKEND, "tf": self.tf.backend}
        name = f"{self.get_namespace().rstrip('/')}/{self.get_name()}: vla"
        with self._cond:
            job = self._commands.job
            return diagnostic_status(name, self.state, settings.mode, self._models.load_error, self._stats,
                                     self._commands.waiting(), None if job is None else job.command.command_id,
                                     self._inputs.health(), settings.max_frame_age, backends)

    def _publish_diagnostics(self) -> None:
        self._outputs.diagnostics(self.diagnostics_status())
