"""~/suggest over DDS, ~/suggestions, and "option N" commands, on the simulated graph (oracle perception).

The oracle suggests from the simulator's true masks, so these tests need no model and check the
node's part: the worker runs the round, the service answers with its JSON, the latched topic
carries it, and an option number becomes that suggestion's command (or unknown_option).
"""
from __future__ import annotations

import json
import threading
import time

import pytest

pytest.importorskip("mujoco")
pytest.importorskip("std_srvs")

from clip_vla.ros.vla_node.suggestions import option_number  # noqa: E402

SEED = 8000


@pytest.fixture(scope="module")
def graph():
    from clip_vla.testing.harness import oracle_graph

    with oracle_graph(SEED, "/suggest_test", 11) as g:
        assert g.driver.reset(SEED, "pick") is not None
        yield g


def call_suggest(graph, timeout: float = 30.0):
    from std_srvs.srv import Trigger

    client = graph.driver_node.create_client(Trigger, "clip_vla/suggest")
    try:
        assert client.wait_for_service(timeout_sec=10.0)
        future = client.call_async(Trigger.Request())
        deadline = time.monotonic() + timeout
        while not future.done() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert future.done(), "~/suggest did not answer"
        return future.result()
    finally:
        graph.driver_node.destroy_client(client)


@pytest.mark.parametrize("text, number", [("2", 2), ("option 2", 2), ("do option 12", 12), ("Option 3.", 3),
                                          ("#4", 4), ("pick up the cup", None), ("option", None),
                                          ("2 cups", None)])
def test_option_numbers_are_recognised_only_as_the_whole_command(text, number):
    assert option_number(text) == number


def test_an_option_before_any_list_answers_unknown_option_and_an_inactive_node_no_round():
    from clip_vla.testing.harness import oracle_graph

    with oracle_graph(SEED, "/suggest_test_fresh", 11) as g:
        g.driver.reset(SEED, "pick")
        status = g.driver.command("option 1").status
        g.vla_node.trigger_deactivate()
        response = call_suggest(g)
    assert status["status"] == "unknown_option"
    assert "no suggestion list yet" in status["message"]
    assert not response.success
    assert json.loads(response.message) == {"status": "inactive", "message": "the node is inactive"}


def test_the_trigger_service_answers_the_round_json_over_dds(graph):
    response = call_suggest(graph)
    assert response.success, response.message
    record = json.loads(response.message)
    assert record["suggestions"] and record["suggestions"][0]["rank"] == 1
    truth = set(graph.driver.tasks[-1]["objects"]) if "objects" in graph.driver.tasks[-1] else None
    for s in record["suggestions"]:
        assert s["command"] and s["box"] and s["xyz"] is not None
        if truth:
            assert s["object"] in truth
    assert record["frame_id"] and record["base_frame"] == "base_link"


def test_the_suggestions_topic_is_latched_for_late_subscribers(graph):
    from std_msgs.msg import String

    from clip_vla.ros import qos

    expected = json.loads(call_suggest(graph).message)["round"]
    got = []
    done = threading.Event()

    def on_message(msg):
        got.append(json.loads(msg.data))
        done.set()

    sub = graph.driver_node.create_subscription(String, "clip_vla/suggestions", on_message, qos.latched_qos())
    try:
        assert done.wait(10.0), "a late subscriber got no list"
        assert got[-1]["round"] == expected
    finally:
        graph.driver_node.destroy_subscription(sub)


def test_option_one_runs_suggestion_one_and_its_status_says_which_command(graph):
    record = json.loads(call_suggest(graph).message)
    first = record["suggestions"][0]
    outcome = graph.driver.command("option 1")  # the driver waits for the plan to end
    status, result = outcome.status, (outcome.results[-1] if outcome.results else None)
    assert status["status"] == "accepted", status
    assert status["command"] == "option 1"
    assert status["option"] == {"number": 1, "command": first["command"]}
    assert status["goal"]["command"] == first["command"]
    assert result is not None and result["command"] == first["command"]


def test_an_option_number_out_of_range_answers_unknown_option_with_the_list_size(graph):
    record = json.loads(call_suggest(graph).message)
    n = len(record["suggestions"])
    outcome = graph.driver.command(f"do option {n + 1}")
    status, result = outcome.status, (outcome.results[-1] if outcome.results else None)
    assert status["status"] == "unknown_option"
    assert f"has {n} suggestion(s), not number {n + 1}" in status["message"]
    assert result is None
    assert graph.driver.command("option 0").status["status"] == "unknown_option"


def test_a_round_labels_the_suggested_objects_on_the_markers(graph):
    from visualization_msgs.msg import MarkerArray

    from clip_vla.ros import qos
    from clip_vla.ros.vla_node.suggestions import MARKER_NS

    arrays = []
    got = threading.Event()

    def on_markers(msg):
        if any(m.ns == MARKER_NS for m in msg.markers):
            arrays.append(msg)
            got.set()

    before = graph.vla_node.count_subscribers(f"{graph.vla_node.get_fully_qualified_name()}/markers")
    sub = graph.driver_node.create_subscription(MarkerArray, "clip_vla/markers", on_markers, qos.output_qos())
    try:
        deadline = time.monotonic() + 10.0  # discovery: the node's publisher must see this subscription
        while (graph.vla_node.count_subscribers(sub.topic_name) <= before and time.monotonic() < deadline):
            time.sleep(0.02)
        record = json.loads(call_suggest(graph).message)
        assert got.wait(10.0), "no suggestion markers"
    finally:
        graph.driver_node.destroy_subscription(sub)
    labels = [m.text for m in arrays[-1].markers if m.ns == MARKER_NS and m.action == m.ADD]
    numbers = sorted(int(n) for label in labels for n in label.split(","))
    assert numbers == [s["rank"] for s in record["suggestions"] if s["xyz"] is not None]


def test_suggest_rate_publishes_rounds_without_being_asked(graph):
    from rclpy.parameter import Parameter
    from std_msgs.msg import String

    from clip_vla.ros import qos

    rounds = []
    sub = graph.driver_node.create_subscription(String, "clip_vla/suggestions",
                                                lambda m: rounds.append(json.loads(m.data)["round"]),
                                                qos.latched_qos())
    try:
        assert graph.vla_node.set_parameters([Parameter("suggest_rate", value=4.0)])[0].successful
        deadline = time.monotonic() + 30.0  # 4 Hz; generous for a loaded CI machine
        while len(set(rounds)) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        graph.vla_node.set_parameters([Parameter("suggest_rate", value=0.0)])
        graph.driver_node.destroy_subscription(sub)
    assert len(set(rounds)) >= 3, rounds
