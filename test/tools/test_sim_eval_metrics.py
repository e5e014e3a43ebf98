"""`clip-vla sim`'s verify-loop figures: first try against after retries, executions per step, and
the verifier's verdicts counted against the simulator's ground truth."""
from typing import Optional

from clip_vla.ros.sim_node import task_step_of
from clip_vla.tools.sim_eval import (Episode, StepRecord, attempts_mean, caught_and_flagged, summarise,
                                     verifier_confusion)


def _exec(skill: str, task_step: int, attempt: int, ok: bool, verdict: Optional[str]) -> StepRecord:
    return StepRecord(command=f"{skill} it", expected_skill=skill, status="accepted", cmd=skill, executed=True,
                      step_ok=ok, attempt=attempt, task_step=task_step, verdict=verdict)


def _place_recovered_by_a_retry() -> Episode:
    """A pick that missed, caught and retried; then a place that worked."""
    steps = [_exec("pick", 0, 1, False, "failure"), _exec("pick", 0, 2, True, "success"),
             _exec("place", 1, 1, True, "success")]
    return Episode(seed=1, skill="place", command="put it in the bowl", steps=steps, success=True)


def _place_first_try() -> Episode:
    steps = [_exec("pick", 0, 1, True, "success"), _exec("place", 1, 1, True, "uncertain")]
    return Episode(seed=2, skill="place", command="put it in the bowl", steps=steps, success=True)


def _place_missed_by_the_verifier() -> Episode:
    """The place failed but the verifier said success; a successful pick was flagged and retried."""
    steps = [_exec("pick", 0, 1, True, "failure"), _exec("pick", 0, 2, True, "success"),
             _exec("place", 1, 1, False, "success")]
    return Episode(seed=3, skill="place", command="put it in the bowl", steps=steps, success=False)


def test_first_try_success_excludes_episodes_that_needed_a_retry():
    episodes = [_place_recovered_by_a_retry(), _place_first_try(), _place_missed_by_the_verifier()]
    s = summarise(episodes)["place"]
    assert s["success_after_retries"] == s["success_rate"] == 2 / 3
    assert s["first_try_success"] == 1 / 3
    assert s["attempts_mean"] == 8 / 6  # 8 executions of 6 steps (2 per episode)


def test_the_verifier_is_counted_against_the_ground_truth():
    episodes = [_place_recovered_by_a_retry(), _place_first_try(), _place_missed_by_the_verifier()]
    c = summarise(episodes)["place"]["verifier"]
    assert c == {"true_success": 5, "true_failure": 1, "false_success": 1, "false_failure": 1,
                 "uncertain": 1, "unverified": 0}
    assert caught_and_flagged(c) == (0.5, 1 / 6)


def test_steps_without_a_verdict_are_unverified_not_successes():
    c = verifier_confusion([_exec("pick", 0, 1, False, None), _exec("push", 0, 1, True, None)])
    assert c["unverified"] == 2 and sum(c[k] for k in ("true_success", "false_success")) == 0
    assert caught_and_flagged(c) == (None, None)


def test_attempts_mean_is_one_without_retries_and_none_without_executions():
    assert attempts_mean([_place_first_try()]) == 1.0
    assert attempts_mean([Episode(seed=0, skill="pick", command="pick it")]) is None


def test_a_retried_step_is_judged_as_the_same_task_step():
    skills = ("pick", "place")
    assert task_step_of(None, 0, "pick", skills) == 0
    assert task_step_of((0, "pick", 0), 0, "pick", skills) == 0  # the pick again: not the place
    assert task_step_of((0, "pick", 0), 1, "place", skills) == 1


def test_a_re_planned_pick_is_the_dropped_places_pick():
    skills = ("pick", "place", "push")
    # place (plan index 1) dropped; the node inserts a pick under index 1, the place moves to 2
    assert task_step_of((1, "place", 1), 1, "pick", skills) == 0
    assert task_step_of((1, "pick", 0), 2, "place", skills) == 1
    assert task_step_of((2, "place", 1), 3, "push", skills) == 2
    assert task_step_of((3, "push", 2), 4, "push", skills) == 2  # never past the task's last step


def test_a_result_is_matched_to_the_verdict_on_its_own_try():
    from clip_vla.tools.sim_eval import CommandOutcome

    first = {"step": 0, "attempt": 1, "verdict": "failure"}
    retry = {"step": 0, "attempt": 2, "verdict": "success"}
    outcome = CommandOutcome(None, [], None, 0.0, [first, retry])
    assert outcome.verdict_for(0, 1) is first and outcome.verdict_for(0, 2) is retry
    assert outcome.verdict_for(1, 1) is None
