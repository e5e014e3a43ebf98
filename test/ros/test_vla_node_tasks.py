"""The running-plan state machine alone (no ROS): release on reports, end once, ignore the rest."""
from __future__ import annotations

import json
import threading
import time

from clip_vla.core.language import ParsedInstruction
from clip_vla.core.plan import GroundedStep, make_plan
from clip_vla.core.types import NoAction, Reason
from clip_vla.ros.vla_node.commands import Command
from clip_vla.ros.vla_node.tasks import TaskTracker, judge_step


def two_step_plan():
    place = ParsedInstruction(text="put the cup in the bowl", skill="place", object="cup", destination="bowl")
    return make_plan([place], command="put the cup in the bowl")  # an implicit pick, then the place


class Accepted:
    """A stand-in for an accepted GroundedStep (the tracker only reads these fields)."""

    def __init__(self, step):
        self.step, self.accepted, self.reason = step, True, None


def running(tracker, plan, cid=1):
    run = tracker.begin(Command(cid, plan.command, time.monotonic()), plan)
    assert tracker.grounded(run, Accepted(plan.steps[0]), {"cmd": "pick"}) == (True, None)
    return run


def report(cid, step, outcome="done", holding=None):
    return json.dumps({"command_id": cid, "step": step, "outcome": outcome, "holding": holding})


def test_a_done_report_releases_the_next_step_after_a_newer_frame():
    tracker, plan = TaskTracker(threading.Condition()), two_step_plan()
    run = running(tracker, plan)
    verdict = tracker.report(report(1, 0, holding="cup"), now=100.0, patience=5.0)
    assert verdict.released == 1 and tracker.holding == "cup"
    assert tracker.due(99.9)[0] is None  # a frame from before the report does not release it
    assert tracker.due(100.1)[0] is run and tracker.take(run) and not tracker.take(run)


def test_the_last_done_report_ends_the_plan_done_and_a_failed_one_failed():
    tracker, plan = TaskTracker(threading.Condition()), two_step_plan()
    run = running(tracker, plan)
    tracker.report(report(1, 0), 1.0, 5.0)
    tracker.take(run)
    tracker.grounded(run, Accepted(plan.steps[1]), {"cmd": "place"})
    ending = tracker.report(report(1, 1), 2.0, 5.0).ending
    assert ending.outcome == "done" and ending.step == 1 and tracker.run is None

    run = running(tracker, plan, cid=2)
    ending = tracker.report(report(2, 0, "failed"), 3.0, 5.0).ending
    assert ending.outcome == "failed" and ending.reason == "execution_failed" and tracker.run is None


def test_reports_about_other_commands_or_steps_and_junk_are_ignored_with_a_reason():
    tracker, plan = TaskTracker(threading.Condition()), two_step_plan()
    run = running(tracker, plan)
    for text in ("junk", report(9, 0), report(1, 1), '{"command_id": 1}'):
        verdict = tracker.report(text, 1.0, 5.0)
        assert verdict.ignored and verdict.ending is None and verdict.released is None
    assert tracker.run is run and run.awaiting == 0


def test_a_refused_step_ends_the_plan_failed_with_its_reason_and_cancel_ends_it_once():
    tracker, plan = TaskTracker(threading.Condition()), two_step_plan()
    run = running(tracker, plan)
    tracker.report(report(1, 0), 1.0, 5.0)
    refusal = GroundedStep(plan.steps[1], NoAction(Reason.NO_OBJECT, "no bowl"))
    current, ending = tracker.grounded(run, refusal, None)
    assert current and ending.outcome == "failed" and ending.reason == "no_object" and ending.step == 1

    running(tracker, plan, cid=2)
    cancelled = tracker.cancel(Command(3, "stop", time.monotonic()))
    assert cancelled.outcome == "cancelled" and "command 3" in cancelled.message
    assert tracker.cancel(Command(4, "stop", time.monotonic())) is None


def test_a_step_grounded_after_its_plan_was_cancelled_is_not_published():
    tracker, plan = TaskTracker(threading.Condition()), two_step_plan()
    run = tracker.begin(Command(1, plan.command, time.monotonic()), plan)
    tracker.cancel(Command(2, "stop", time.monotonic()))
    assert tracker.grounded(run, Accepted(plan.steps[0]), {"cmd": "pick"}) == (False, None)


def test_judging_a_step_trusts_the_executor_until_verification_exists():
    tracker, plan = TaskTracker(threading.Condition()), two_step_plan()
    run = running(tracker, plan)
    from clip_vla.core.execution import ExecutionReport

    assert judge_step(run, ExecutionReport(1, 0, "done")) == (True, "done")
    assert judge_step(run, ExecutionReport(1, 0, "failed"))[0] is False
