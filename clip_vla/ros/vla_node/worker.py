"""The inference thread: the only place the pipeline runs, so the executor never blocks on a model.

    queue ─► command ─► prepare (parse) ─► freshest frame + synced depth/info ─► pipeline.run
                                                     │                               │
                                 refusal (no_frame, stale, bad_input) ◄──────────────┤
                                                                                     ▼
                                                   ~/goal, ~/goal_pose, ~/markers, ~/status

A command is a plan (``clip_vla.core.plan``): its first step is grounded at once and answers
the command's one status; each later step is grounded here too, on a frame stamped after
the executor reported the previous one (``tasks.TaskTracker``), and its goal, chunk and the
plan go out on ``~/goal``, ``~/chunk_path`` and ``~/plan``. A one-step command is a plan of one
step, answered exactly as before.

In continuous mode the last accepted one-step command becomes a ``Job`` that re-runs on
every newer frame (at most ``max_rate`` Hz) and publishes goals, not statuses, until a new
command or ``stop`` replaces it.
"""
from __future__ import annotations

import dataclasses
import threading
import time
from typing import Any, Callable, Dict, NamedTuple, Optional, Tuple, Union

from clip_vla.core import framesync
from clip_vla.core.framesync import Refusal
from clip_vla.core.plan import GroundedStep, chunk_step, prepare_plan, put_back_goal
from clip_vla.core.records import echo
from clip_vla.core.types import ActionGoal, Frame, NoAction, Reason
from clip_vla.ros import conversions as conv
from clip_vla.ros.vla_node.commands import Command, CommandQueue, Job
from clip_vla.ros.vla_node.diagnostics import Throttle
from clip_vla.ros.vla_node.inputs import CameraInputs
from clip_vla.ros.vla_node.outputs import Outputs, goal_record
from clip_vla.ros.vla_node.settings import NodeSettings
from clip_vla.ros.vla_node.suggestions import SUGGESTION_ROUND, SuggestionRounds
from clip_vla.ros.vla_node.tasks import (EXECUTION_FAILED, PlanRun, TaskTracker, executor_failure, refuted_for,
                                         set_aside_for)
from clip_vla.ros.vla_node.tf import TfLookup

NEXT_STEP_PATIENCE_S = 5.0  # wait this long for a frame stamped after a step's report, then refuse stale_frame


class Seen(NamedTuple):
    """The frame a result was found on and the camera pose then (for drawing the debug image)."""

    frame: Frame
    camera_to_base: Any


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
                 topic: Callable[[str], str], log: Throttle, logger: Any, tasks: TaskTracker,
                 now: Callable[[], float], suggestions: Optional[SuggestionRounds] = None) -> None:
        """``now()``: the node's ROS time in seconds, as camera stamps read (execution reports are timed by it)."""
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
        self._tasks = tasks
        self._now = now
        self._stopping = False
        self._verifier: Any = None  # (pipeline, its Verifier): rebuilt when the pipeline or its verify section changes
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
                elif isinstance(task, PlanRun):
                    self._run_next_step(task)
                elif task is SUGGESTION_ROUND:
                    self._suggestions.run(self._models.pipeline, self._state(), self._settings(), self.latest_frame)
                else:
                    self._run_command(task)
            except Exception as exc:  # noqa: BLE001 - the worker must survive anything
                self._log("worker", "error", f"inference worker error: {type(exc).__name__}: {exc}")
                if isinstance(task, Command):
                    self._outputs.answer(task, NoAction(Reason.MODEL_ERROR, f"{type(exc).__name__}: {exc}",
                                                        command=echo(task.text)), self._settings())
                elif isinstance(task, PlanRun):
                    self._end_step(task, GroundedStep(task.plan.steps[task.next_index], NoAction(
                        Reason.MODEL_ERROR, f"{type(exc).__name__}: {exc}", command=echo(task.command.text))))

    def _next_task(self) -> Union[Command, Job, PlanRun, object, None]:
        """The next command, else a plan's due step, else a suggestion round that is asked for or due,
        else the job when a newer frame is in and max_rate allows; None: stop."""
        with self._cond:
            while True:
                if self._stopping:
                    return None
                cmd = self._commands.pop()
                if cmd is not None:
                    return cmd
                run, plan_wait = self._tasks.due(self._inputs.latest_stamp())
                if run is not None and self._tasks.take(run):
                    return run
                version = self._inputs.version()
                timeout = plan_wait
                if self._suggestions is not None:
                    wait = self._suggestions.wait_time(self._settings().suggest_rate, version)
                    if wait is not None and wait <= 0:
                        return SUGGESTION_ROUND
                    timeout = wait if timeout is None else (timeout if wait is None else min(timeout, wait))
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
        cancelled = self._tasks.cancel(cmd)  # a new command, "stop" included, ends the running plan
        if cancelled is not None:
            self._outputs.task_ended(cancelled)
        try:
            plan, prepared = prepare_plan(pipeline, cmd.text, self._tasks.holding)
        except Exception as exc:  # noqa: BLE001 - a tokenizer/model failure on the text
            self._outputs.answer(cmd, NoAction(Reason.MODEL_ERROR, f"{type(exc).__name__}: {exc}",
                                               command=echo(cmd.text)), settings)
            return
        if isinstance(prepared, NoAction):
            prepared.command = echo(cmd.text)
            if prepared.reason == Reason.STOPPED and previous_job is not None:
                prepared.message = f"stopped continuous goal updates of command {previous_job.command.command_id}"
                self._outputs.clear_markers(settings.goal_frame)
            elif prepared.reason == Reason.STOPPED and cancelled is not None:
                prepared.message = (f"stopped the plan of command {cancelled.run.command.command_id}: "
                                    f"{cancelled.message}")
                self._outputs.clear_markers(settings.goal_frame)
            self._outputs.answer(cmd, prepared, settings)
            return
        assert plan is not None  # a prepared command always comes with its plan
        job = Job(cmd) if settings.continuous and len(plan.steps) == 1 else None
        self._ground(self._tasks.begin(cmd, plan), prepared, job, settings)

    def _run_next_step(self, run: PlanRun) -> None:
        """Verify a reported step, or ground a plan's due step, on the freshest frame, stamped after the report."""
        if run.verifying is not None:
            self._verify_step(run)
            return
        step = run.plan.steps[run.next_index]
        pipeline = self._models.pipeline
        latest = self._inputs.latest_stamp()
        refusal = None
        if pipeline is None or self._state() != "active":
            refusal = NoAction(Reason.INACTIVE, f"the node is {self._state()}", command=echo(run.command.text))
        elif latest is None or run.reported_at is None or latest <= run.reported_at:
            refusal = NoAction(Reason.STALE_FRAME, f"no {self._topic('image')} frame stamped after the report of step "
                                                   f"{step.index - 1} within {NEXT_STEP_PATIENCE_S:.0f} s",
                               command=echo(run.command.text), skill=step.skill, object_phrase=step.object)
        if refusal is not None:
            self._end_step(run, GroundedStep(step, refusal))
            return
        self._ground(run, prepare_step(pipeline, run, step), None, self._settings())

    def _verify_step(self, run: PlanRun) -> None:
        """Judge the reported step on the first frame after its report, publish the verdict, then go on.

        Go on: the next step, the same step again (retry), a pick before a dropped object's
        place (replan), a put-back before a pick retried with a full hand (put_back), all grounded
        at once on the frame just verified on; or the plan's end.
        """
        from clip_vla.perception.verify import UNCERTAIN, Verdict

        settings = self._settings()
        report = run.verifying
        failed = None if report.done else executor_failure(report)  # a missed grasp: retried without a look

        def cannot(reason: str, message: str) -> None:
            if failed is not None:  # the executor's word stands: the step failed, and it cannot be retried
                reason, message = EXECUTION_FAILED, f"the executor reported step {report.step} failed; {message}"
            self._end(run, report.step, reason, message)

        pipeline = self._models.pipeline
        latest = self._inputs.latest_stamp()
        if pipeline is None or self._state() != "active":
            cannot(Reason.INACTIVE.value, f"the node is {self._state()}")
            return
        if latest is None or run.reported_at is None or latest <= run.reported_at:
            cannot(Reason.STALE_FRAME.value, f"no {self._topic('image')} frame stamped after the report of step "
                   f"{report.step} within {NEXT_STEP_PATIENCE_S:.0f} s: it cannot be verified")
            return
        try:
            slot, after, camera_to_base = self.latest_frame(settings)
        except (Refusal, conv.ConversionError, ValueError) as exc:
            cannot(exc.reason.value if isinstance(exc, Refusal) else Reason.BAD_INPUT.value,
                   f"step {report.step} cannot be verified: {exc}")
            return
        goal, before = run.grounded[report.step].result, run.before
        step = run.plan.steps[report.step]
        try:
            verdict = failed or self._verifier_of(pipeline).verify(
                step, goal, before.frame, after, camera_to_base or before.camera_to_base, {"outcome": report.outcome},
                set_aside=set_aside_for(run, step), set_aside_radius_m=pipeline.config.perception.refuted_radius_m)
        except Exception as exc:  # noqa: BLE001 - a verifier fault must not stop the plan: uncertain, said so
            verdict = Verdict(UNCERTAIN, 0.0, "verifier_error", {"error": f"{type(exc).__name__}: {exc}"})
        judgement = self._tasks.judged(run, verdict, settings.max_retries)
        if judgement is None:  # cancelled ("stop", a new command) while it was verified
            return
        self._outputs.verdict(run, judgement, verdict)
        if judgement.ending is not None:
            self._publish_plan(run, None, None, settings)
            self._outputs.task_ended(judgement.ending)
            return
        step = run.plan.steps[run.next_index]
        if step.put_back:
            goal = put_back_goal(pipeline, run.put_back_from[step.index], step)  # kept: a put-back may be retried
            self._ground(run, None, None, settings,
                         given=(goal, slot.msg.header, Seen(after, camera_to_base or before.camera_to_base)))
            return
        self._ground(run, prepare_step(pipeline, run, step), None, settings)

    def _verifier_of(self, pipeline: Any) -> Any:
        """The verifier on ``pipeline``'s perception, built once per pipeline and ``verify`` section (a
        parameter update changes the section in place of the pipeline); only this thread uses it."""
        if (self._verifier is None or self._verifier[0] is not pipeline
                or self._verifier[1].config != pipeline.config.verify):
            from clip_vla.perception.verify import make_verifier

            self._verifier = (pipeline, make_verifier(pipeline))
        return self._verifier[1]

    def _end(self, run: PlanRun, step: int, reason: str, message: str) -> None:
        ending = self._tasks.end(run, step, reason, message)
        if ending is not None:
            self._outputs.task_ended(ending)

    def _refused_before_acting(self, pipeline: Any, grounded: GroundedStep, settings: NodeSettings) -> GroundedStep:
        """A goal no resting object could be at is refused here, before its chunk goes out (issue 13 item 3)."""
        if not settings.verify_steps or pipeline is None or not isinstance(grounded.result, ActionGoal):
            return grounded
        from clip_vla.perception.verify import refuse_goal

        refusal = refuse_goal(grounded.result, pipeline.config)
        if refusal is None:
            return grounded
        result = grounded.result
        return GroundedStep(grounded.step, NoAction(Reason(refusal.reason), f"step {grounded.step.index} "
                                                    f"({grounded.step.text}): {refusal.message}",
                                                    command=result.command, skill=grounded.step.skill,
                                                    object_phrase=grounded.step.object))

    def _ground(self, run: PlanRun, prepared: Any, job: Optional[Job], settings: NodeSettings,
                given: Optional[Tuple[Any, Any, "Seen"]] = None) -> None:
        """Ground ``run``'s next step and publish it: goal, chunk, plan; the first step also answers the command.

        ``given``: (result, header, seen) of a step grounded without perception (a put-back).
        """
        cmd = run.command
        step = run.plan.steps[run.next_index]
        first = not run.answered  # a retried or re-planned step 0 does not answer the command again
        if given is not None:
            result, header, seen = given
        elif isinstance(prepared, NoAction):
            result, header, seen = prepared, None, None
        else:
            result, header, seen = self._infer(cmd, prepared, job, settings)
        pipeline = self._models.pipeline
        grounded = chunk_step(pipeline, step, result) if pipeline is not None else GroundedStep(step, result)
        grounded = self._refused_before_acting(pipeline, grounded, settings)
        if job is not None:
            with self._cond:
                if self._commands.job is None and not self._commands.has_queued() and self._settings().continuous:
                    self._commands.job = job
        goal = self._publish_result(cmd, grounded.result, header, seen, 0, settings, grounded.chunk)
        current, ending = self._tasks.grounded(run, grounded, goal, seen)
        if current and (ending is None or not first):  # a refused first step is the command's refusal, no plan
            self._publish_plan(run, grounded.chunk if ending is None else None, header, settings)
        if first:
            summary = run.plan.summary() if ending is None else None
            self._outputs.answer(cmd, grounded.result, settings, None if header is None else header.stamp, goal,
                                 plan=summary)
        elif ending is not None:
            self._outputs.task_ended(ending)

    def _end_step(self, run: PlanRun, refused: GroundedStep) -> None:
        """A later step that could not even be tried ends its plan (``failed``, with the reason)."""
        _, ending = self._tasks.grounded(run, refused, None)
        if ending is not None:
            self._publish_plan(run, None, None, self._settings())
            self._outputs.task_ended(ending)

    def _publish_plan(self, run: PlanRun, chunk: Any, header: Any, settings: NodeSettings) -> None:
        """``~/plan`` as grounded so far, stamped with the step's image (else now), and the step's chunk."""
        stamp = header.stamp if header is not None else self._outputs.now()
        self._outputs.plan(run.record(conv.stamp_to_seconds(stamp)), chunk, settings.base_frame, stamp)

    def on_execution(self, text: Any) -> None:
        """An ``execution`` message (executor thread): release the next step, end the plan, or log and ignore."""
        verdict = self._tasks.report(text, self._now(), NEXT_STEP_PATIENCE_S, self._settings().verify_steps)
        if verdict.ignored:
            self._log("execution", "warning", f"{verdict.ignored}: ignored")
        elif verdict.ending is not None:
            self._outputs.task_ended(verdict.ending)

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
        result, header, seen = self._infer(job.command, prepared, job, settings)
        with self._cond:
            if self._commands.job is not job:  # replaced or stopped while it ran: its result is obsolete
                return
        job.updates += 1
        if header is not None:
            self._publish_result(job.command, result, header, seen, job.updates, settings)

    # ---- one inference
    def _infer(self, cmd: Command, prepared: Any, job: Optional[Job], settings: NodeSettings) -> Tuple[Any, Any, Any]:
        """(result, colour header or None, what it was seen on or None) for one command on the freshest frame."""
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
        return result, slot.msg.header, Seen(frame, camera_to_base or pipeline.camera_to_base)

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

    def _publish_result(self, cmd: Command, result: Any, header: Any, seen: Optional["Seen"], update: int,
                        settings: NodeSettings, chunk: Any = None) -> Optional[Dict[str, Any]]:
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
                self._outputs.goal(record, header.stamp, chunk)
        elif update == 0:
            self._outputs.clear_markers(settings.goal_frame, header.stamp)
        if seen is not None and self._outputs.wants_debug_image():
            try:
                from clip_vla.core.visualize import annotate, project_chunk

                points = None
                if chunk is not None and seen.frame.intrinsics is not None:
                    points = project_chunk(chunk.decoded, seen.camera_to_base, seen.frame.intrinsics)
                self._outputs.debug_image(conv.rgb_to_image(annotate(seen.frame.rgb, result, chunk=points),
                                                            header.stamp, header.frame_id))
            except Exception as exc:  # noqa: BLE001 - a debug view never breaks the goal path
                self._log("debug", "warning", f"debug image failed: {exc}")
        return record


def prepare_step(pipeline: Any, run: PlanRun, step: Any) -> Any:
    """A plan step's prepared command (or the NoAction refusing it), with the objects the verifier
    refuted as its object set aside (``tasks.refute``), so a retry does not act on them again."""
    prepared = pipeline.prepare_parsed(step.parsed(), run.command.text)
    avoid = refuted_for(run, step)
    if avoid and not isinstance(prepared, NoAction):
        prepared = dataclasses.replace(prepared, avoid_xy=avoid)
    return prepared
