"""``clip-vla suggest --eval-option``: "option 1" and its command typed, scene by scene, over the graph."""
from __future__ import annotations

import pytest

pytest.importorskip("mujoco")
pytest.importorskip("std_srvs")


def test_choosing_suggestion_one_and_typing_it_are_both_run_on_the_same_scene():
    from clip_vla.testing.harness import oracle_graph
    from clip_vla.tools.suggest_sim import evaluate_option_one

    with oracle_graph(8000, "/option_eval", 13) as graph:
        report = evaluate_option_one(graph, [8000, 8001])
    assert report["seeds"] == "8000-8001" and report["scenes"] == 2 and report["with_suggestion"] == 2
    for scene in report["per_scene"]:
        assert scene["chosen"]["command"] == "option 1"
        assert scene["typed"]["command"] == scene["suggestion"]
        assert scene["chosen"]["status"] == scene["typed"]["status"] == "accepted"
    # On the simulator's truth both arms carry the suggestion out on its own object.
    assert report["option_1_success"] == report["typed_success"] == 1.0
    assert report["agree"] == 2
