"""The running plan: which step is out, which report it waits for, when the next step is due.

A command is a plan of steps (``clip_vla.core.plan``). The node releases one step at a time
and waits for the executor's report on ``execution`` (``clip_vla.core.execution``) before
grounding the next on a fresh frame::

    command ─► begin(plan) ─► step 0 grounded ─► awaiting 0 ──report done──► next due after t_report
                                                    │                          │ frame stamped > t_report
                                                    │                          ▼
                                                    │                 step 1 grounded ─► awaiting 1 ─► ...
                                                    └─report failed / refusal / stop / new command─► ended

With verification on (issue 13), a "done" report does not release the next step: the step
waits (``verifying``) for a frame stamped after the report, the worker runs the verifier on
it, and ``judged`` applies the verdict: the next step, the same step again (``retry``), a pick
inserted before a place whose object fell (``replan``), a put-back inserted before a failed pick
retried while the hand holds something (``put_back``), or the plan's end::

    awaiting 0 ──done──► verifying 0 ──frame > t_report, verdict──► next | retry | replan | put_back | ended

Every way a plan ends is one ``Ending`` (outcome ``done``, ``failed`` or ``cancelled``), which
the node publishes once on ``~/task_status``. ``judge_step`` reads the executor's report (with
verification off, a "failed" report ends the plan; with it on, the step is retried like one
that failed verification, without a look: ``executor_failure``). No ROS here: the state machine is tested alone.
All methods lock ``cond`` (the node's one lock), so the executor thread (reports) and the
worker thread (grounding) never see half a transition.
"""
from __future__ import annotations

import dataclasses
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from clip_vla.core.execution import DONE, FAILED, ExecutionReport, ReportError
from clip_vla.core.plan import GroundedStep, Plan, PlanStep, plan_record
from clip_vla.ros.vla_node.commands import Command

CANCELLED = "cancelled"
# Place verdicts that mean the object fell: it is neither held nor in the destination, so a
# retried place would release an empty hand; the plan picks it up again first.
DROPPED_REASONS = ("object_beside_destination", "object_not_in_destination")
NEXT, RETRY, REPLAN, PUT_BACK = "next", "retry", "replan", "put_back"
EXECUTION_FAILED = "execution_failed"  # the ending's (and verdict's) reason when the executor reported a step failed
WRONG_OBJECT = "wrong_object"  # a verdict that refutes the object acted on: its retries set it aside (``refuted``)


@dataclass
class PlanRun:
    """One accepted command's plan while it executes."""

    command: Command
    plan: Plan
    grounded: List[GroundedStep] = field(default_factory=list)
    goal_records: List[Optional[Dict[str, Any]]] = field(default_factory=list)
    awaiting: Optional[int] = None  # the step whose report is awaited
    due_after: Optional[float] = None  # ROS seconds: the next step needs a frame stamped later than this
    due_by: float = 0.0  # time.monotonic(): give up waiting for such a frame after this
    reported_at: Optional[float] = None  # ROS seconds: when the last report released a step
    before: Any = None  # what the awaited step was grounded on (worker.Seen): the verifier's "before" frame
    verifying: Optional[ExecutionReport] = None  # a "done" report whose step waits for its verdict
    attempt: int = 1  # the attempt of the step being grounded or awaited (1: the first try)
    answered: bool = False  # the command's ~/status went out (with the first grounding of step 0)
    resume: Dict[int, int] = field(default_factory=dict)  # step -> the attempt it starts at (a re-planned place)
    put_back_from: Dict[int, Any] = field(default_factory=dict)  # put-back step -> the failed pick's ActionGoal
    # object name -> base (x, y) of the objects the verifier judged not to be it (wrong_object): a step naming
    # it is grounded again with them set aside (``PreparedCommand.avoid_xy``), not on the same wrong object
    refuted: Dict[str, List[Tuple[float, float]]] = field(default_factory=dict)
    # object name -> base (x, y) where a place or push the verifier passed left it: that object is not the one
    # a later step names otherwise, so the verifier does not take it for that step's object or its rival
    settled: Dict[str, Tuple[float, float]] = field(default_factory=dict)

    @property
    def next_index(self) -> int:
        """The index of the step to ground next."""
        return len(self.grounded)

    def record(self, stamp: float) -> Dict[str, Any]:
        """The ``~/plan`` JSON of the steps grounded so far (``clip_vla.core.plan.plan_record``)."""
        return plan_record(self.command.command_id, stamp, self.plan, self.grounded, self.goal_records, self.attempt)


@dataclass(frozen=True)
class Ending:
    """How a plan ended; published once on ``~/task_status``."""

    run: PlanRun
    outcome: str  # done | failed | cancelled
    step: Optional[int]
    reason: str
    message: str


@dataclass(frozen=True)
class Judgement:
    """What a verdict did to its plan: ``action`` next | retry | replan (ground ``run.next_index``), or an ending."""

    step: int
    attempt: int
    action: Optional[str] = None
    ending: Optional[Ending] = None


def insert_step(plan: Plan, step: PlanStep) -> Plan:
    """``plan`` with ``step`` inserted at ``step.index``; the steps from there on move one index on."""
    at = step.index
    later = tuple(dataclasses.replace(s, index=s.index + 1) for s in plan.steps[at:])
    return dataclasses.replace(plan, steps=plan.steps[:at] + (step,) + later)


def replan_from_pick(plan: Plan, place_index: int) -> Plan:
    """``plan`` with a pick of the place's object inserted before step ``place_index`` (a dropped object)."""
    return insert_step(plan, PlanStep(place_index, "pick", plan.steps[place_index].object, implicit=True))


def put_back_before(plan: Plan, pick_index: int, held: str) -> Plan:
    """``plan`` with a put-back of ``held`` inserted before the pick at ``pick_index`` (retried with a full hand).

    Why: a pick that failed verification while the executor reports the hand full (a look-alike
    was lifted, or the verifier is wrong) cannot be retried as is: the fingers would open over
    the next goal and drop what they hold. Setting it down where it was picked undoes the step.
    """
    return insert_step(plan, PlanStep(pick_index, "place", held, implicit=True, put_back=True))


@dataclass(frozen=True)
class ReportVerdict:
    """What one ``execution`` message did: ignored (``ignored`` says why), released the next step, or ended the plan."""

    ignored: Optional[str] = None
    ending: Optional[Ending] = None
    released: Optional[int] = None  # the step index now due
    verifying: Optional[int] = None  # the step whose verification is now due


def judge_step(run: PlanRun, report: ExecutionReport) -> Tuple[bool, str]:
    """(the executor says the step succeeded, reason) for a report on ``run``'s awaited step.

    Without ``verify_steps`` the report is final. With it, a "done" one is checked by the verifier
    on the next frame, and a "failed" one (a missed grasp) is a failure verdict without a look
    (``executor_failure``): both go through ``TaskTracker.judged``, so a failed step is retried.
    """
    if report.outcome == DONE:
        return True, DONE
    return False, EXECUTION_FAILED


def executor_failure(report: ExecutionReport) -> Any:
    """The verdict on a step the executor reported failed: a failure, sure, no perception asked."""
    from clip_vla.perception.verify import FAILURE, Verdict

    return Verdict(FAILURE, 1.0, EXECUTION_FAILED, {"executor_outcome": report.outcome, "holding": report.holding})


def refute(run: PlanRun, step: PlanStep, verdict: Any) -> None:
    """Remember where the object a ``wrong_object`` verdict refuted was (``evidence["acted_xyz_base"]``)
    and, for a push, where it went (``"acted_after_xyz_base"``), under the name it was not. Why: the
    retry is grounded by the same models on nearly the same frame, and without this it chooses the
    same wrong object again."""
    evidence = getattr(verdict, "evidence", None) or {}
    if verdict.reason != WRONG_OBJECT or not step.object:
        return
    for key in ("acted_xyz_base", "acted_after_xyz_base"):
        if evidence.get(key) is not None:
            run.refuted.setdefault(step.object, []).append((float(evidence[key][0]), float(evidence[key][1])))


def refuted_for(run: PlanRun, step: PlanStep) -> Tuple[Tuple[float, float], ...]:
    """Where the objects refuted as ``step``'s object are (``PreparedCommand.avoid_xy``); () for none."""
    return tuple(run.refuted.get(step.object or "", ()))


def settle(run: PlanRun, step: PlanStep, verdict: Any) -> None:
    """Remember where a step that passed verification left its object (``evidence["object_xyz_base"]``);
    a picked object is in the hand, no longer anywhere on the table."""
    if not step.object or step.put_back:
        return
    if step.skill == "pick":
        run.settled.pop(step.object, None)
        return
    xyz = (getattr(verdict, "evidence", None) or {}).get("object_xyz_base")
    if xyz is not None:
        run.settled[step.object] = (float(xyz[0]), float(xyz[1]))


def set_aside_for(run: PlanRun, step: PlanStep) -> Tuple[Tuple[float, float], ...]:
    """What the verifier sets aside when it judges ``step`` (``Verifier.verify(set_aside=...)``): the
    objects refuted as its object, and where the plan's verified steps left the objects of other names.

    Why the second: "first put the red bar on the tray, then grab the red ball" (fresh seed 16,960):
    the bar in the tray still took the name "red ball" better than the ball, and as the ball's rival
    it refuted a right pick. The plan knows that object is the bar. Grounding is not given these
    places: objects put side by side in one tray would set each other aside.
    """
    others = tuple(xy for name, xy in run.settled.items() if name != step.object)
    return refuted_for(run, step) + others


class TaskTracker:
    """The one running plan and what the hand holds; every method locks ``cond`` and notifies it."""

    def __init__(self, cond: threading.Condition) -> None:
        self._cond = cond
        self._run: Optional[PlanRun] = None
        self._holding: Optional[str] = None

    @property
    def holding(self) -> Optional[str]:
        """What the executor last reported holding (None: empty hand, or no report yet)."""
        with self._cond:
            return self._holding

    @property
    def run(self) -> Optional[PlanRun]:
        with self._cond:
            return self._run

    def begin(self, command: Command, plan: Plan) -> PlanRun:
        """Make ``plan`` the running one (the caller cancelled the previous one first)."""
        with self._cond:
            self._run = PlanRun(command, plan)
            return self._run

    def cancel(self, by: Command) -> Optional[Ending]:
        """End the running plan because of command ``by`` ("stop" or a new one); None when none runs."""
        with self._cond:
            run, self._run = self._run, None
            self._cond.notify_all()
        if run is None:
            return None
        step = run.awaiting if run.awaiting is not None else run.next_index
        return Ending(run, CANCELLED, step, "cancelled",
                      f"cancelled at step {step} of {len(run.plan.steps)} by command {by.command_id}")

    def grounded(self, run: PlanRun, step: GroundedStep, goal: Optional[Dict[str, Any]],
                 seen: Any = None) -> Tuple[bool, Optional[Ending]]:
        """Record a grounded step of ``run``: (still the running plan, the Ending a refused step caused).

        (True, None): the step is out and its report awaited. (False, None): ``run`` was
        cancelled while the step was grounded, so nothing of it may be published.
        """
        with self._cond:
            if self._run is not run:
                return False, None
            run.grounded.append(step)
            run.goal_records.append(goal if step.accepted else None)
            run.due_after, run.before, run.answered = None, seen, True
            if step.accepted and goal is not None:
                run.awaiting = step.step.index
                return True, None
            self._run = None
        reason = step.reason or "bad_input"
        message = step.result.message if not step.accepted else "the goal could not be expressed in target_frame"
        return True, Ending(run, FAILED, step.step.index, reason, message)

    def report(self, text: Any, now: float, patience: float, verify: bool = False) -> ReportVerdict:
        """Take one ``execution`` message received at ROS time ``now`` (seconds).

        ``patience`` (s) bounds the wait for a fresh frame for the next step (or the verification).
        ``verify``: a "done" step is not trusted yet; it waits for ``judged`` on a frame after the report. Never raises:
        a malformed report, or one about another command or step, is ignored with the reason.
        """
        try:
            report = ExecutionReport.from_json(text)
        except ReportError as exc:
            return ReportVerdict(ignored=f"malformed execution report: {exc}")
        with self._cond:
            if report.about_hand_only:
                self._holding = report.holding
                return ReportVerdict()
            run = self._run
            if run is None or run.command.command_id != report.command_id:
                return ReportVerdict(ignored=f"execution report for command {report.command_id}, which is not "
                                             "running a plan")
            if run.awaiting != report.step:
                return ReportVerdict(ignored=f"execution report for step {report.step} of command "
                                             f"{report.command_id}, which awaits "
                                             f"{'no report' if run.awaiting is None else f'step {run.awaiting}'}")
            self._holding = report.holding
            ok, reason = judge_step(run, report)
            run.awaiting = None
            last = report.step == len(run.plan.steps) - 1
            if verify:  # a "failed" report is retried too: it waits for a frame to re-ground the step on
                run.verifying = report
                run.due_after, run.reported_at, run.due_by = now, now, time.monotonic() + patience
                self._cond.notify_all()
                return ReportVerdict(verifying=report.step)
            if ok and not last:
                run.due_after, run.reported_at, run.due_by = now, now, time.monotonic() + patience
                self._cond.notify_all()
                return ReportVerdict(released=run.next_index)
            self._run = None
            self._cond.notify_all()
        if ok:
            return ReportVerdict(ending=Ending(run, DONE, report.step, DONE, f"all {len(run.plan.steps)} steps done"))
        step_text = run.plan.steps[report.step].text
        return ReportVerdict(ending=Ending(run, FAILED, report.step, reason,
                                           f"the executor reported step {report.step} ({step_text}) {FAILED}"))

    def judged(self, run: PlanRun, verdict: Any, max_retries: int) -> Optional[Judgement]:
        """Apply a verifier's verdict (``perception.verify.Verdict``) on ``run``'s verifying step.

        None: ``run`` was cancelled meanwhile (publish nothing). ``uncertain`` proceeds as a
        success (not found is not evidence of failure; the verdict on ~/task_status says so).
        A failure re-grounds the step (attempt + 1), and a ``wrong_object`` one with the object acted on set
        aside (``refuted``); for a dropped object it re-plans from a pick,
        and a pick retried while the executor reports the hand full is preceded by a put-back of
        what it holds (the put-back and the retried pick are both attempt + 1); a put-back reported
        failed with the hand empty goes on to the pick. After ``max_retries`` retries the plan fails
        with the verdict's reason.
        """
        with self._cond:
            if self._run is not run or run.verifying is None:
                return None
            index, attempt = run.verifying.step, run.attempt
            run.verifying = None
            last = index == len(run.plan.steps) - 1
            emptied = run.plan.steps[index].put_back and self._holding is None  # all a put-back has to do
            if verdict.verdict != "failure" or emptied:
                if verdict.verdict == "success":
                    settle(run, run.plan.steps[index], verdict)
                if last:
                    self._run = None
                    self._cond.notify_all()
                    return Judgement(index, attempt, ending=Ending(run, DONE, index, DONE,
                                                                   f"all {len(run.plan.steps)} steps done"))
                run.attempt = run.resume.pop(index + 1, 1)
                return Judgement(index, attempt, NEXT)
            if attempt > max_retries:
                self._run = None
                self._cond.notify_all()
                text = run.plan.steps[index].text
                why = ("the executor reported it failed" if verdict.reason == EXECUTION_FAILED
                       else f"failed verification: {verdict.reason}")
                return Judgement(index, attempt, ending=Ending(
                    run, FAILED, index, verdict.reason, f"step {index} ({text}) {why} after {attempt} attempts"))
            failed = run.grounded.pop()
            run.goal_records.pop()
            run.attempt = attempt + 1
            refute(run, run.plan.steps[index], verdict)
            if run.plan.steps[index].skill == "pick" and self._holding is not None:
                run.plan = put_back_before(run.plan, index, self._holding)
                run.put_back_from[index] = failed.result
                run.resume[index + 1] = attempt + 1
                return Judgement(index, attempt, PUT_BACK)
            fell = verdict.reason == EXECUTION_FAILED and self._holding is None  # a failed place, the hand empty
            dropped = verdict.reason in DROPPED_REASONS or fell
            if run.plan.steps[index].skill == "place" and dropped:
                run.plan = replan_from_pick(run.plan, index)
                run.resume[index + 1] = attempt + 1  # the place keeps its count: a hand that keeps dropping ends
                return Judgement(index, attempt, REPLAN)
            return Judgement(index, attempt, RETRY)

    def end(self, run: PlanRun, step: int, reason: str, message: str) -> Optional[Ending]:
        """End ``run`` as failed (a verification that could not be made); None when it no longer runs."""
        with self._cond:
            if self._run is not run:
                return None
            self._run = None
            self._cond.notify_all()
        return Ending(run, FAILED, step, reason, message)

    def due(self, latest_stamp: Optional[float]) -> Tuple[Optional[PlanRun], Optional[float]]:
        """(the run whose next step is due now, else None; seconds until its patience runs out, else None).

        Due once a frame stamped after the report is in (``latest_stamp``), or when the
        patience has run out (the worker then refuses the step ``stale_frame``: a step is never
        grounded on a frame from before the report). Call with ``cond`` held (the worker's wait loop).
        """
        run = self._run
        if run is None or run.due_after is None:
            return None, None
        if latest_stamp is not None and latest_stamp > run.due_after:
            return run, None
        left = run.due_by - time.monotonic()
        return (run, None) if left <= 0 else (None, left)

    def take(self, run: PlanRun) -> bool:
        """Claim ``run``'s due step for grounding (False: cancelled meanwhile). Call with ``cond`` held."""
        if self._run is not run or run.due_after is None:
            return False
        run.due_after = None
        return True
