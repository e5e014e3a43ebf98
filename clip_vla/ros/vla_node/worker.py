"""The inference thread: the only place the pipeline runs, so the executor never blocks on a model.

    queue ─► command ─► prepare (parse) ─► freshest frame + synced depth/info ─► pipeline.run
                                                     │                               │
                                 refusal (no_frame, stale, bad_input) ◄──────────────┤
                                                                                     ▼
                                                   ~/goal, ~/goal_pose, ~/markers, ~/status

In continuous mode the last accepted command becomes a ``Job`` that re-runs on every newer
frame (at most ``max_rate`` Hz) and publishes goals, not statuses, until a new command or
``stop`` replaces it.
"""
from __future__ import annotations

import threading
import time
from typing import Any, Callable, Dict, Optional, Tuple, Union

from clip_vla.core import framesync
from clip_vla.core.framesync import Refusal
from clip_vla.core.records import echo
from clip_vla.core.types import ActionGoal, NoAction, Reason
from clip_vla.ros import conversions as conv
from clip_vla.ros.vla_node.commands import Command, CommandQueue, Job
from clip_vla.ros.vla_node.diagnostics import Throttle
from clip_vla.ros.vla_node.inputs import CameraInputs
from clip_vla.ros.vla_node.outputs import Outputs, goal_record
from clip_vla.ros.vla_node.settings import NodeSettings
from clip_vla.ros.vla_node.suggestions import SUGGESTION_ROUND, SuggestionRounds
from clip_vla.ros.vla_node.tf import TfLookup


class Models:
    """The loaded pipeline, a configuration waiting to reach it, and why loading failed; under ``cond``."""

    def __init__(self, cond: threading.Condition) -> None:
        self._cond = cond
        self._pipeline: Any = None
        self._pending: Any = None
        self._load_error: Optional[str] = None

    @property
    def pipeline(self) -> Any:
        with self._cond:
            return self._pipeline

    @property
    def load_error(self) -> Optional[str]:
        with self._cond:
            return self._load_error

    def loaded(self, pipeline: Any) -> None:
        with self._cond:
            self._pipeline, self._pending, self._load_error = pipeline, None, None

    def failed(self, error: str) -> None:
        with self._cond:
            self._load_error = error

    def unload(self) -> None:
        """Drop the pipeline and give its memory back (CUDA included)."""
        with self._cond:
            self._pipeline = None
        import gc

        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except Exception:  # noqa: BLE001 - no torch, or no CUDA driver: nothing to free
            pass

    def reconfigure(self, config: Any) -> None:
        """Apply ``config`` before the next inference (parameters changed at runtime)."""
        with self._cond:
            self._pending = config

    def take_reconfiguration(self) -> Tuple[Any, Any]:
        """(pending config or None, pipeline), clearing the pending one."""
        with self._cond:
            config, self._pending = self._pending, None
            return config, self._pipeline


class InferenceWorker:
    """Runs queued commands and the continuous job on the pipeline, in its own thread."""

    def __init__(self, *, cond: threading.Condition, inputs: CameraInputs, commands: CommandQueue, models: Models,
                 outputs: Outputs, tf: TfLookup, settings: Callable[[], NodeSettings], state: Callable[[], str],
                 topic: Callable[[str], str], log: Throttle, logger: Any,
                 suggestions: Optional[SuggestionRounds] = None) -> None:
        self._cond = cond
        self._suggestions = suggestions
        self._inputs = inputs
        self._commands = commands
        self._models = models
        self._outputs = outputs
        self._tf = tf
        self._settings = settings
        self._state = state
        self._topic = topic
        self._log = log
        self._logger = logger
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="clip_vla_inference", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float) -> None:
        """Stop after the inference in flight (waits up to ``timeout`` s)."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._thread.join(timeout)

    def stopping(self) -> bool:
        with self._cond:
            return self._stopping

    # ---- the loop
    def _run(self) -> None:
        while True:
            task = self._next_task()
            if task is None:
                return
            try:
                self._apply_reconfiguration()
                if isinstance(task, Job):
                    self._run_job_update(task)
                elif task is SUGGESTION_ROUND:
                    self._suggestions.run(self._models.pipeline, self._state(), self._settings(), self.latest_frame)
                else:
                    self._run_command(task)
            except Exception as exc:  # noqa: BLE001 - the worker must survive anything
                self._log("worker", "error", f"inference worker error: {type(exc).__name__}: {exc}")
                if isinstance(task, Command):
                    self._outputs.answer(task, NoAction(Reason.MODEL_ERROR, f"{type(exc).__name__}: {exc}",
                                                        command=echo(task.text)), self._settings())

    def _next_task(self) -> Union[Command, Job, object, None]:
        """The next command, else a suggestion round that is asked for or due, else the job when a newer
        frame is in and max_rate allows; None: stop."""
        with self._cond:
            while True:
                if self._stopping:
                    return None
                cmd = self._commands.pop()
                if cmd is not None:
                    return cmd
                version = self._inputs.version()
                timeout = None
                if self._suggestions is not None:
                    timeout = self._suggestions.wait_time(self._settings().suggest_rate, version)
                    if timeout is not None and timeout <= 0:
                        return SUGGESTION_ROUND
                job = self._commands.job
                if job is not None and version is not None and version != job.last_version:
                    wait = job.last_run + 1.0 / self._settings().max_rate - time.monotonic()
                    if wait <= 0:
                        return job
                    timeout = wait if timeout is None else min(timeout, wait)
                self._cond.wait(timeout)

    def _apply_reconfiguration(self) -> None:
        """New parameters reach the pipeline here, in the only thread that runs it."""
        config, pipeline = self._models.take_reconfiguration()
        if config is not None and pipeline is not None:
            try:
                pipeline.update_config(config)
            except Exception as exc:  # noqa: BLE001 - keep the previous configuration
                self._logger.error(f"could not apply the new parameters: {exc}")
        limit = self._settings().max_command_length  # one limit: the parameter's, also in the parser
        if pipeline is not None and pipeline.max_command_length != limit:
            pipeline.set_command_limit(limit)

    # ---- a command and a job update
    def _run_command(self, cmd: Command) -> None:
        settings = self._settings()
        with self._cond:
            pipeline = self._models.pipeline
            previous_job, self._commands.job = self._commands.job, None  # a new command ends continuous updates
        state = self._state()
        if pipeline is None or state != "active":
            self._outputs.answer(cmd, NoAction(Reason.INACTIVE, f"the node is {state}", command=echo(cmd.text)),
                                 settings)
            return
        try:
            prepared = pipeline.prepare(cmd.text)
        except Exception as exc:  # noqa: BLE001 - a tokenizer/model failure on the text
            self._outputs.answer(cmd, NoAction(Reason.MODEL_ERROR, f"{type(exc).__name__}: {exc}",
                                               command=echo(cmd.text)), settings)
            return
        if isinstance(prepared, NoAction):
            prepared.command = echo(cmd.text)
            if prepared.reason == Reason.STOPPED and previous_job is not None:
                prepared.message = f"stopped continuous goal updates of command {previous_job.command.command_id}"
                self._outputs.clear_markers(settings.goal_frame)
            self._outputs.answer(cmd, prepared, settings)
            return
        job = Job(cmd) if settings.continuous else None
        result, header, rgb = self._infer(cmd, prepared, job, settings)
        if job is not None:
            with self._cond:
                if self._commands.job is None and not self._commands.has_queued() and self._settings().continuous:
                    self._commands.job = job
        goal = self._publish_result(cmd, result, header, rgb, 0, settings)
        self._outputs.answer(cmd, result, settings, None if header is None else header.stamp, goal)

    def _run_job_update(self, job: Job) -> None:
        pipeline = self._models.pipeline
        if pipeline is None:
            return
        prepared = pipeline.prepare(job.command.text)
        if isinstance(prepared, NoAction):  # the vocabulary changed under it
            with self._cond:
                if self._commands.job is job:
                    self._commands.job = None
            return
        settings = self._settings()
        result, header, rgb = self._infer(job.command, prepared, job, settings)
        with self._cond:
            if self._commands.job is not job:  # replaced or stopped while it ran: its result is obsolete
                return
        job.updates += 1
        if header is not None:
            self._publish_result(job.command, result, header, rgb, job.updates, settings)

    # ---- one inference
    def _infer(self, cmd: Command, prepared: Any, job: Optional[Job], settings: NodeSettings) -> Tuple[Any, Any, Any]:
        """(result, colour header or None, rgb or None) for one command on the freshest frame."""
        if job is not None:  # a job re-runs only on a newer frame, whatever this run answers
            version = self._inputs.version()
            job.last_version = -1 if version is None else version
            job.last_run = time.monotonic()
        try:
            slot, frame, camera_to_base = self.latest_frame(settings)
        except Refusal as refusal:
            return framesync.refused(refusal, cmd.text, prepared), None, None
        except (conv.ConversionError, ValueError) as exc:
            return framesync.refused(Refusal(Reason.BAD_INPUT, str(exc)), cmd.text, prepared), None, None
        start = time.perf_counter()
        pipeline = self._models.pipeline
        if pipeline is None:
            return framesync.refused(Refusal(Reason.INACTIVE, "models were unloaded"), cmd.text, prepared), None, None
        try:
            result = pipeline.run(frame, prepared, camera_to_base)
        except Exception as exc:  # noqa: BLE001 - VLAPipeline.run should not raise; never let it kill the node
            result = NoAction(Reason.MODEL_ERROR, f"{type(exc).__name__}: {exc}", command=echo(cmd.text))
        self._inputs.used(slot, (time.perf_counter() - start) * 1e3)
        result.command = echo(cmd.text)
        if isinstance(result, NoAction) and result.reason == Reason.NO_INTRINSICS:
            why = self._inputs.why_no_camera_info(slot, settings)
            if why:
                result.message += f" ({why})"
        return result, slot.msg.header, frame.rgb

    def latest_frame(self, settings: NodeSettings) -> Tuple[Any, Any, Any]:
        """(slot, Frame, camera_to_base) of the freshest frame with its synced depth and camera_info.

        Raises:
            Refusal: no frame, a stale one, or no transform (framesync's reasons).
            ConversionError, ValueError: a message that cannot become a frame.
        """
        slot = self._inputs.select(settings, self._topic("image"))
        depth, info = self._inputs.match(slot, settings, self.stopping)
        frame = self._inputs.frame(slot, depth, info, settings)
        camera_to_base = self._tf.camera_to_base(slot.msg.header, settings,
                                                 lambda m: self._log("no_frame_id", "warning", m))
        return slot, frame, camera_to_base

    def _publish_result(self, cmd: Command, result: Any, header: Any, rgb: Any, update: int,
                        settings: NodeSettings) -> Optional[Dict[str, Any]]:
        """Publish a goal (or clear the markers) and the debug image; returns the goal record if published."""
        if header is None:
            return None
        record = None
        if isinstance(result, ActionGoal):
            try:
                record = goal_record(cmd, result, header, update, settings, self._tf)
            except Refusal as refusal:
                self._log("target_tf", "warning", refusal.message)
            if record is not None:
                self._outputs.goal(record, header.stamp)
        elif update == 0:
            self._outputs.clear_markers(settings.goal_frame, header.stamp)
        if rgb is not None and self._outputs.wants_debug_image():
            try:
                from clip_vla.core.visualize import annotate

                self._outputs.debug_image(conv.rgb_to_image(annotate(rgb, result), header.stamp, header.frame_id))
            except Exception as exc:  # noqa: BLE001 - a debug view never breaks the goal path
                self._log("debug", "warning", f"debug image failed: {exc}")
        return record

