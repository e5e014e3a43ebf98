"""Plans over real Fast DDS: steps released one at a time on ``execution`` reports, ended once on ``~/task_status``.

One node process (tiny models: the whole image is the target, base (0.5, 0, 0)) serves the
module; the test client plays the executor, reporting on ``execution`` as the README's
executor contract says. ``verify_steps`` is off here: these tests pin the plan mechanics on the
executor's word; verification, retries and re-plans are test_ros_verify.py's.
"""
from __future__ import annotations

import os
from collections import Counter

import pytest

pytest.importorskip("rclpy")

from clip_vla.testing.harness import (publish_tabletop, start_ready, stream_until, tiny_model_overrides,  # noqa: E402
                                      unique_domain_id)

SMALL = (64, 48)
COMPOUND = "pick up the red cup and put it in the bowl"


@pytest.fixture(scope="module")
def client(tiny_models, open_vocabulary_file):
    domain = unique_domain_id(7)
    try:
        proc, client = start_ready(tiny_model_overrides(tiny_models, open_vocabulary_file, verify_steps=False),
                                   f"/test_plan_{os.getpid()}", domain)
    except RuntimeError as exc:
        pytest.fail(str(exc))
    yield client
    client.close()
    proc.stop()


def frame(client):
    return publish_tabletop(client, SMALL)


def ask(client, text):
    frame(client)
    return client.ask(text)


def test_a_compound_command_is_one_accepted_status_with_its_plan(client):
    status = ask(client, COMPOUND)
    assert status["status"] == "accepted", status
    assert status["plan"] == {"steps": 2, "texts": ["pick up the red cup", "put it in the bowl"]}
    assert status["goal"]["cmd"] == "pick"  # the current (first) step's goal on ~/goal, as before

    plan = client.plan_of(status["command_id"], grounded=1)
    first, second = plan["steps"]
    assert first["goal"]["cmd"] == "pick" and first["tokens"] == status["goal"]["tokens"]
    assert [round(w["gripper"]) for w in first["waypoints"]] == [0, 0, 1, 1]  # decoded: bin centres
    assert len(first["chunk_tokens"]) == 1 + 6 * 4 and first["chunk_text"]
    assert second["goal"] is None and second["waypoints"] is None  # not grounded before the report
    path = client.wait_for(lambda: next((p for p in reversed(client.chunk_paths)
                                         if p.header.stamp == frame_stamp(status)), None))
    assert [round(p.pose.position.z, 3) for p in path.poses] == [round(w["z"], 3) for w in first["waypoints"]]
    client.report(status["command_id"], 0, "failed")  # leave nothing running for the next test
    client.task_status_of(status["command_id"])


def frame_stamp(status):
    from builtin_interfaces.msg import Time

    return Time(sec=status["stamp"]["sec"], nanosec=status["stamp"]["nanosec"])


def test_steps_are_released_one_at_a_time_on_execution_reports(client):
    status = ask(client, COMPOUND)
    cid = status["command_id"]
    client.plan_of(cid, grounded=1)
    client.report(cid, 0, "done", holding="red cup")
    plan = stream_until(client, lambda: client.plan_of(cid, grounded=2, timeout=0.0))  # a frame after the report
    place = plan["steps"][1]
    assert place["goal"]["cmd"] == "place" and place["goal"]["command_id"] == cid
    assert [w["label"] for w in place["waypoints"]] == ["above", "release", "open", "retreat"]
    assert client.wait_for(lambda: any(g["command_id"] == cid and g["cmd"] == "place" for g in client.goals))
    client.report(cid, 1, "done", holding=None)
    ended = client.task_status_of(cid)
    assert ended["outcome"] == "done" and ended["step"] == 1 and ended["steps"] == 2


def test_a_failed_report_stops_the_plan_with_a_task_status(client):
    status = ask(client, COMPOUND)
    cid = status["command_id"]
    client.plan_of(cid, grounded=1)
    client.report(cid, 0, "failed", holding=None)
    ended = client.task_status_of(cid)
    assert ended["outcome"] == "failed" and ended["step"] == 0 and ended["reason"] == "execution_failed"
    frame(client)
    assert client.ask("pick up the red cup")["status"] == "accepted"  # the node still serves
    assert not any(p["command_id"] == cid and p["steps"][1]["goal"] is not None for p in client.plans)


def test_stop_cancels_the_running_plan_and_a_new_command_does_too(client):
    first = ask(client, COMPOUND)
    client.plan_of(first["command_id"], grounded=1)
    stop = client.ask("stop")
    assert stop["status"] == "stopped" and f"plan of command {first['command_id']}" in stop["message"]
    cancelled = client.task_status_of(first["command_id"])
    assert cancelled["outcome"] == "cancelled" and cancelled["step"] == 0

    second = ask(client, COMPOUND)
    client.plan_of(second["command_id"], grounded=1)
    third = ask(client, "pick up the red cup")
    assert third["status"] == "accepted"
    assert client.task_status_of(second["command_id"])["outcome"] == "cancelled"
    client.report(second["command_id"], 0, "done")  # about a cancelled plan: ignored
    client.report(third["command_id"], 0, "done")
    assert client.task_status_of(third["command_id"])["outcome"] == "done"


def test_malformed_and_unknown_execution_reports_are_ignored(client):
    status = ask(client, COMPOUND)
    cid = status["command_id"]
    client.plan_of(cid, grounded=1)
    for junk in ("", "not json", "[1, 2]", '{"command_id": "x", "step": 0, "outcome": "done"}',
                 '{"command_id": 1, "step": -1, "outcome": "done"}', '{"command_id": 1, "step": 0, "outcome": "maybe"}',
                 '{"command_id": 1, "step": 0, "outcome": "done", "holding": 5}', "{" * 10000):
        client.report_raw(junk)
    client.report(cid + 1000, 0, "done")  # unknown command
    client.report(cid, 1, "done")  # a step that is not out
    frame(client)
    assert client.ask("pick up the red cup and put it in the bowl")["status"] == "accepted"  # alive
    assert client.task_status_of(cid)["outcome"] == "cancelled"  # ended by the new command, not by junk
    assert not any(p["command_id"] == cid and p["steps"][1]["goal"] is not None for p in client.plans)


def test_every_command_got_exactly_one_status(client):
    frame(client)
    client.ask("pick up the red cup")
    counts = Counter(s["command_id"] for s in client.statuses)
    assert counts and set(counts.values()) == {1}, counts
    ended = Counter(t["command_id"] for t in client.task_statuses if t["final"])
    assert set(ended.values()) == {1}, ended
