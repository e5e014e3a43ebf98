"""The running-plan state machine alone (no ROS): release on reports, end once, ignore the rest."""
from __future__ import annotations

import json
import threading
import time

from clip_vla.core.language import ParsedInstruction
from clip_vla.core.plan import GroundedStep, make_plan
from clip_vla.core.types import NoAction, Reason
from clip_vla.ros.vla_node.commands import Command
from clip_vla.ros.vla_node.tasks import PUT_BACK, REPLAN, RETRY, TaskTracker, executor_failure, judge_step


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


def test_judging_a_report_reads_the_executors_word():
    tracker, plan = TaskTracker(threading.Condition()), two_step_plan()
    run = running(tracker, plan)
    from clip_vla.core.execution import ExecutionReport

    assert judge_step(run, ExecutionReport(1, 0, "done")) == (True, "done")
    assert judge_step(run, ExecutionReport(1, 0, "failed"))[0] is False


# ---- verification (issue 13): a "done" report waits for the verdict on a frame after it
def verdict(kind, reason="r"):
    from clip_vla.perception.verify import Verdict

    return Verdict(kind, 0.9, reason)


def verifying(tracker, plan, step=0, cid=1, holding=None):
    run = running(tracker, plan, cid) if step == 0 else tracker.run
    result = tracker.report(report(cid, step, holding=holding), now=10.0, patience=5.0, verify=True)
    assert result.verifying == step and result.released is None and result.ending is None
    assert run.verifying is not None and tracker.due(10.5)[0] is run  # due on a frame after the report
    return run


def test_a_verified_step_releases_the_next_and_uncertain_proceeds_too():
    tracker, plan = TaskTracker(threading.Condition()), two_step_plan()
    run = verifying(tracker, plan)
    judged = tracker.judged(run, verdict("uncertain"), max_retries=2)
    assert judged.action == "next" and judged.ending is None and run.next_index == 1 and run.attempt == 1
    tracker.grounded(run, Accepted(plan.steps[1]), {"cmd": "place"})
    verifying(tracker, plan, step=1)
    judged = tracker.judged(run, verdict("success"), max_retries=2)
    assert judged.ending.outcome == "done" and tracker.run is None


def test_a_failed_step_is_retried_up_to_max_retries_then_fails_with_the_verdicts_reason():
    tracker, plan = TaskTracker(threading.Condition()), two_step_plan()
    run = verifying(tracker, plan)
    judged = tracker.judged(run, verdict("failure", "object_still_on_table"), max_retries=1)
    assert (judged.action, judged.attempt, run.attempt, run.next_index) == (RETRY, 1, 2, 0)  # step 0 again
    tracker.grounded(run, Accepted(plan.steps[0]), {"cmd": "pick"})
    tracker.report(report(1, 0), now=11.0, patience=5.0, verify=True)
    judged = tracker.judged(run, verdict("failure", "object_still_on_table"), max_retries=1)
    assert judged.ending.outcome == "failed" and judged.ending.reason == "object_still_on_table"
    assert judged.ending.step == 0 and judged.attempt == 2 and tracker.run is None


def test_a_dropped_object_re_plans_from_a_pick_before_the_place():
    tracker, plan = TaskTracker(threading.Condition()), two_step_plan()
    run = verifying(tracker, plan)
    tracker.judged(run, verdict("success"), max_retries=2)
    tracker.grounded(run, Accepted(plan.steps[1]), {"cmd": "place"})
    verifying(tracker, plan, step=1)
    judged = tracker.judged(run, verdict("failure", "object_beside_destination"), max_retries=2)
    assert judged.action == REPLAN and run.next_index == 1
    assert [(s.index, s.skill, s.object) for s in run.plan.steps] == [(0, "pick", "cup"), (1, "pick", "cup"),
                                                                      (2, "place", "cup")]
    tracker.grounded(run, Accepted(run.plan.steps[1]), {"cmd": "pick"})
    verifying(tracker, plan, step=1)
    assert tracker.judged(run, verdict("success"), max_retries=2).action == "next"
    assert run.attempt == 2  # the re-planned place keeps its count: a hand that keeps dropping ends
    tracker.grounded(run, Accepted(run.plan.steps[2]), {"cmd": "place"})
    verifying(tracker, plan, step=2)
    again = tracker.judged(run, verdict("failure", "object_not_in_destination"), max_retries=1)
    assert again.ending.outcome == "failed"


class PickGoal:
    """A stand-in for the failed pick's ActionGoal: the tracker keeps it for the put-back's goal."""


def test_a_failed_pick_with_a_full_hand_puts_the_object_back_before_the_retry():
    tracker, plan = TaskTracker(threading.Condition()), two_step_plan()
    run = running(tracker, plan)
    pick_goal = PickGoal()
    run.grounded[0] = GroundedStep(plan.steps[0], pick_goal)  # what the pick was sent to
    tracker.report(report(1, 0, holding="cup"), now=10.0, patience=5.0, verify=True)
    judged = tracker.judged(run, verdict("failure", "wrong_object"), max_retries=2)
    assert (judged.action, judged.attempt, run.attempt, run.next_index) == (PUT_BACK, 1, 2, 0)
    steps = [(s.index, s.skill, s.object, s.put_back) for s in run.plan.steps]
    assert steps == [(0, "place", "cup", True), (1, "pick", "cup", False), (2, "place", "cup", False)]
    assert run.plan.steps[0].text == "put back cup" and run.put_back_from == {0: pick_goal}
    tracker.grounded(run, Accepted(run.plan.steps[0]), {"cmd": "place"})
    tracker.report(report(1, 0, "failed", holding=None), now=11.0, patience=5.0, verify=True)
    # reported failed, but the hand is empty: all a put-back has to do, so the pick comes next
    assert tracker.judged(run, executor_failure(run.verifying), max_retries=2).action == "next"
    assert run.attempt == 2 and run.next_index == 1  # the retried pick is attempt 2, after the put-back
    tracker.grounded(run, Accepted(run.plan.steps[1]), {"cmd": "pick"})
    tracker.report(report(1, 1, holding="cup"), now=12.0, patience=5.0, verify=True)
    assert tracker.judged(run, verdict("success"), max_retries=2).action == "next"
    assert run.attempt == 1 and run.next_index == 2  # the place starts at its first try


def test_a_put_back_reported_failed_with_the_hand_still_full_is_retried_from_the_same_goal():
    tracker, plan = TaskTracker(threading.Condition()), two_step_plan()
    run = running(tracker, plan)
    pick_goal = PickGoal()
    run.grounded[0] = GroundedStep(plan.steps[0], pick_goal)
    tracker.report(report(1, 0, holding="cup"), now=10.0, patience=5.0, verify=True)
    tracker.judged(run, verdict("failure", "wrong_object"), max_retries=2)
    tracker.grounded(run, Accepted(run.plan.steps[0]), {"cmd": "place"})
    tracker.report(report(1, 0, "failed", holding="cup"), now=11.0, patience=5.0, verify=True)
    judged = tracker.judged(run, executor_failure(run.verifying), max_retries=2)
    assert judged.action == RETRY and run.next_index == 0 and run.plan.steps[0].put_back
    assert run.put_back_from[0] is pick_goal  # the worker grounds the retried put-back on it again


def test_a_failed_pick_with_an_empty_hand_is_retried_without_a_put_back():
    tracker, plan = TaskTracker(threading.Condition()), two_step_plan()
    run = verifying(tracker, plan, holding=None)
    judged = tracker.judged(run, verdict("failure", "object_still_on_table"), max_retries=2)
    assert judged.action == RETRY and len(run.plan.steps) == 2 and not run.put_back_from


def test_with_verification_a_failed_report_waits_for_a_frame_and_is_judged_like_a_failed_step():
    tracker, plan = TaskTracker(threading.Condition()), two_step_plan()
    run = running(tracker, plan)
    result = tracker.report(report(1, 0, "failed"), now=10.0, patience=5.0, verify=True)
    assert result.verifying == 0 and result.ending is None and tracker.due(10.5)[0] is run
    failed = executor_failure(run.verifying)
    assert (failed.verdict, failed.reason, failed.confidence) == ("failure", "execution_failed", 1.0)
    assert tracker.judged(run, failed, max_retries=2).action == RETRY  # a missed grasp: the hand is empty
    tracker.grounded(run, Accepted(plan.steps[0]), {"cmd": "pick"})
    tracker.report(report(1, 0, holding="cup"), now=11.0, patience=5.0, verify=True)
    tracker.judged(run, verdict("success"), max_retries=2)
    tracker.grounded(run, Accepted(plan.steps[1]), {"cmd": "place"})
    tracker.report(report(1, 1, "failed", holding=None), now=12.0, patience=5.0, verify=True)
    judged = tracker.judged(run, executor_failure(run.verifying), max_retries=2)
    assert judged.action == REPLAN and run.plan.steps[1].skill == "pick"  # a failed place, the hand empty: it fell


def test_a_verdict_on_a_cancelled_plan_is_dropped():
    tracker, plan = TaskTracker(threading.Condition()), two_step_plan()
    run = verifying(tracker, plan)
    ending = tracker.cancel(Command(2, "stop", time.monotonic()))
    assert ending.outcome == "cancelled" and tracker.judged(run, verdict("failure"), max_retries=2) is None


def test_a_wrong_object_verdict_sets_the_object_acted_on_aside_for_the_steps_naming_it():
    """Only ``wrong_object`` refutes, and only with where the object was; the retry of the pick and the later
    place name "cup" and are grounded with it set aside (``worker.prepare_step``)."""
    from clip_vla.perception.verify import Verdict
    from clip_vla.ros.vla_node.tasks import refuted_for
    from clip_vla.ros.vla_node.worker import prepare_step

    tracker, plan = TaskTracker(threading.Condition()), two_step_plan()
    run = verifying(tracker, plan)
    tracker.judged(run, verdict("failure", "object_still_on_table"), max_retries=9)
    assert run.refuted == {} and refuted_for(run, plan.steps[0]) == ()
    tracker.grounded(run, Accepted(plan.steps[0]), {"cmd": "pick"})
    tracker.report(report(1, 0), now=11.0, patience=5.0, verify=True)
    tracker.judged(run, Verdict("failure", 0.9, "wrong_object", {"acted_xyz_base": [0.4, -0.1, 0.03]}), 9)
    tracker.grounded(run, Accepted(plan.steps[0]), {"cmd": "pick"})
    tracker.report(report(1, 0), now=12.0, patience=5.0, verify=True)
    tracker.judged(run, Verdict("failure", 0.9, "wrong_object", {}), 9)  # no position: nothing to set aside
    assert run.refuted == {"cup": [(0.4, -0.1)]}
    assert refuted_for(run, plan.steps[1]) == ((0.4, -0.1),)  # the place names the cup too
    tracker.grounded(run, Accepted(plan.steps[0]), {"cmd": "pick"})
    tracker.report(report(1, 0), now=13.0, patience=5.0, verify=True)
    pushed = {"acted_xyz_base": [0.5, 0.2, 0.03], "acted_after_xyz_base": [0.6, 0.2, 0.03]}  # where it went
    tracker.judged(run, Verdict("failure", 0.9, "wrong_object", pushed), 9)
    assert run.refuted == {"cup": [(0.4, -0.1), (0.5, 0.2), (0.6, 0.2)]}
    run.refuted["cup"] = [(0.4, -0.1)]

    class Pipeline:
        def prepare_parsed(self, parsed, text):
            from clip_vla.pipeline import PreparedCommand

            return PreparedCommand(text, parsed, None, [parsed.object], 0, None)

    prepared = prepare_step(Pipeline(), run, plan.steps[0])
    assert prepared.avoid_xy == ((0.4, -0.1),) and prepared.parsed.object == "cup"
    other = ParsedInstruction(text="pick up the bowl", skill="pick", object="bowl")
    assert prepare_step(Pipeline(), run, make_plan([other], command=other.text).steps[0]).avoid_xy == ()


def judged_step(tracker, run, index, outcome, evidence=None, now=20.0):
    """Ground step ``index`` of ``run``, report it done and judge it ``outcome`` with ``evidence``."""
    from clip_vla.perception.verify import Verdict

    tracker.grounded(run, Accepted(run.plan.steps[index]), {"cmd": run.plan.steps[index].skill})
    tracker.report(report(run.command.command_id, index), now=now + index, patience=5.0, verify=True)
    return tracker.judged(run, Verdict(outcome, 0.9, "r", evidence or {}), 2)


def test_a_verified_place_says_where_its_object_rests_for_the_verifier_of_other_objects_steps():
    """The tray's red bar is not the red ball's rival (``tasks.set_aside_for``): where a passed place
    left its object is set aside for steps naming other objects, not for its own; a pick of it takes it
    off the table, and an uncertain verdict settles nothing."""
    from clip_vla.ros.vla_node.tasks import set_aside_for

    steps = [ParsedInstruction(text="put the bar in the tray", skill="place", object="bar", destination="tray"),
             ParsedInstruction(text="pick up the ball", skill="pick", object="ball"),
             ParsedInstruction(text="pick up the bar", skill="pick", object="bar")]
    tracker, plan = TaskTracker(threading.Condition()), make_plan(steps, command="put the bar in the tray, ...")
    skills = [(s.skill, s.object) for s in plan.steps]
    assert skills == [("pick", "bar"), ("place", "bar"), ("pick", "ball"), ("pick", "bar")]
    run = running(tracker, plan)
    tracker.report(report(1, 0), now=10.0, patience=5.0, verify=True)
    tracker.judged(run, verdict("success"), 2)
    assert run.settled == {}
    judged_step(tracker, run, 1, "success", {"object_xyz_base": [0.5, 0.2, 0.01]})
    assert run.settled == {"bar": (0.5, 0.2)}
    run.refuted["ball"] = [(0.3, -0.1)]
    assert set_aside_for(run, plan.steps[2]) == ((0.3, -0.1), (0.5, 0.2))  # the ball's: refuted, and the bar
    assert set_aside_for(run, plan.steps[3]) == ()  # the bar's own pick: it is where the bar is
    judged_step(tracker, run, 2, "success")
    assert judged_step(tracker, run, 3, "success").ending.outcome == "done"
    assert run.settled == {}  # the bar picked again: in the hand

    tracker, plan = TaskTracker(threading.Condition()), two_step_plan()
    run = running(tracker, plan)
    tracker.report(report(1, 0), now=10.0, patience=5.0, verify=True)
    tracker.judged(run, verdict("success"), 2)
    judged_step(tracker, run, 1, "uncertain", {"object_xyz_base": [0.5, 0.2, 0.01]})
    assert run.settled == {}
