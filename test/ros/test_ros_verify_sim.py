"""Verification in the simulated graph over DDS (oracle perception): clean steps pass first try, a drop is re-picked.

The simulator is the executor. For the dropped-object test its world's ``execute`` is wrapped
by a test double that, once, releases the place 15 cm beside the bowl and still reports the
step done: the executor's word is wrong, and only the node's verification can notice. The
ROS graph itself (topics, the node, the simulator node) is real, not mocked.
"""
from __future__ import annotations

import dataclasses

import pytest

pytest.importorskip("rclpy")
pytest.importorskip("mujoco")

SEED = 3000


@pytest.fixture(scope="module")
def graph():
    from clip_vla.testing.harness import oracle_graph

    with oracle_graph(SEED, "/verify_sim_test", 16) as g:
        yield g


def put_in_bowl(graph):
    task = graph.driver.reset(SEED, "place", destination="bowl")
    assert task is not None
    return graph.driver.command(f"put the {task['object']} in the bowl")


def test_oracle_steps_verify_success_on_the_first_try(graph):
    outcome = put_in_bowl(graph)
    assert outcome.ending["final"] is True and outcome.ending["outcome"] == "done", outcome.ending
    first_tries = [(0, 1, "success"), (1, 1, "success")]
    assert [(v["step"], v["attempt"], v["verdict"]) for v in outcome.verdicts] == first_tries
    assert outcome.results[-1]["task_success"]


def test_a_place_that_drops_the_object_beside_the_bowl_is_re_planned_from_a_pick(graph):
    world = graph.world
    execute = world.execute
    dropped = []

    def drop_once_beside(skill, xyz=None, theta=0.0, chunk=None):
        """The test double: the first place lands 15 cm off in y, and is reported done whatever happened."""
        if skill != "place" or dropped:
            return execute(skill, xyz, theta, chunk=chunk)
        dropped.append(True)
        shift = [xyz[0], xyz[1] + 0.15, xyz[2]]
        moved = None if chunk is None else [dataclasses.replace(w, y=w.y + 0.15) for w in chunk]
        return dataclasses.replace(execute(skill, shift, theta, chunk=moved), success=True)

    world.execute = drop_once_beside
    try:
        outcome = put_in_bowl(graph)
    finally:
        world.execute = execute
    verdicts = [(v["step"], v["attempt"], v["verdict"], v["action"]) for v in outcome.verdicts]
    assert dropped and outcome.ending is not None and outcome.ending["outcome"] == "done", (
        outcome.ending, outcome.verdicts, [(r["cmd"], r["success"], r["reason"]) for r in outcome.results])
    assert verdicts[:2] == [(0, 1, "success", "next"), (1, 1, "failure", "replan")], outcome.verdicts
    assert outcome.verdicts[1]["reason"] in ("object_beside_destination", "object_not_in_destination")
    assert verdicts[2:] == [(1, 2, "success", "next"), (2, 2, "success", None)]  # the re-pick, the place's 2nd try
    assert [r["cmd"] for r in outcome.results] == ["pick", "place", "pick", "place"]
    assert outcome.results[-1]["task_success"]
    # the simulator's ground truth follows the re-plan: the re-pick is judged as the task's pick
    assert [(r["task_step"], r["attempt"], r["step_ok"]) for r in outcome.results] == [
        (0, 1, True), (1, 1, False), (0, 2, True), (1, 2, True)]


def test_the_verifier_confusion_of_the_re_planned_place(graph):
    """`clip-vla sim`'s records of the same kind of episode: every verdict paired with its execution."""
    from clip_vla.tools.sim_eval import _records, verifier_confusion

    task = graph.driver.reset(SEED, "place", destination="bowl")
    outcome = graph.driver.command(f"put the {task['object']} in the bowl")
    records = _records(task["command"], task, outcome)
    assert [(r.attempt, r.verdict, r.step_ok) for r in records] == [(1, "success", True), (1, "success", True)]
    assert verifier_confusion(records)["true_success"] == 2


def test_a_pick_that_lifted_a_look_alike_puts_it_back_then_picks_again(graph):
    """The first grounding of the object takes a look-alike's true mask (the test double: the compact
    models' typical mistake). The executor lifts the look-alike and reports the hand full and the
    step done; the verifier sees the named object still on the table, so the node sets the
    look-alike down where it was picked (a put-back, no step of the task) and picks again."""
    log = graph.log
    mask_of = log.mask
    task = graph.driver.reset(SEED, "place", destination="bowl")
    target, look_alike = task["object"], task["distractors"][0]
    mistaken = []

    def look_alike_once(stamp, phrase):
        """The test double: the first time the target is looked for, the look-alike's mask answers."""
        if phrase == target and not mistaken:
            mistaken.append(stamp)
            return mask_of(stamp, look_alike)
        return mask_of(stamp, phrase)

    log.mask = look_alike_once
    try:
        outcome = graph.driver.command(f"put the {target} in the bowl")
    finally:
        log.mask = mask_of
    verdicts = [(v["step"], v["attempt"], v["verdict"], v["action"]) for v in outcome.verdicts]
    executed = [(r["step"], r.get("attempt"), r["cmd"], bool(r.get("put_back"))) for r in outcome.results]
    assert mistaken and outcome.ending is not None and outcome.ending["outcome"] == "done", (
        outcome.ending, verdicts, executed)
    assert verdicts[0] == (0, 1, "failure", "put_back"), verdicts
    assert outcome.verdicts[0]["reason"] in ("object_still_on_table", "wrong_object")
    assert verdicts[1:] == [(0, 2, "success", "next"), (1, 2, "success", "next"), (2, 1, "success", None)]
    assert executed == [(0, 1, "pick", False), (0, 2, "place", True), (1, 2, "pick", False), (2, 1, "place", False)]
    assert outcome.results[0]["failure"] == "wrong object" and outcome.results[-1]["task_success"]
    # the put-back is not judged as a step of the task; the retried pick is judged as the task's pick
    assert [(r.get("task_step"), r.get("step_ok")) for r in outcome.results] == [
        (0, False), (None, None), (0, True), (1, True)]
    assert not graph.world.held(look_alike)  # set down again
