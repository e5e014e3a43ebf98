"""The README's example executor (examples/minimal_executor.py) runs a released step once and reports it."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

pytest.importorskip("rclpy")

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "minimal_executor.py"


def _plan_json() -> str:
    from clip_vla.core.chunks import build_chunk
    from clip_vla.core.config import ClipVlaConfig
    from clip_vla.core.language import ParsedInstruction
    from clip_vla.core.plan import GroundedStep, make_plan, plan_record
    from clip_vla.core.tokenizer import ActionTokenizer
    from clip_vla.core.types import ActionGoal

    config = ClipVlaConfig()
    plan = make_plan([ParsedInstruction(text="put the cup in the bowl", skill="place", object="cup",
                                        destination="bowl")])
    goal = ActionGoal(cmd="pick", cmd_token=1, skill_probabilities={"pick": 1.0}, object_phrase="cup",
                      destination_phrase=None, pixel=None, detection=None, xyz_camera=None, xyz_base=(0.5, 0.0, 0.03),
                      theta=0.0, tokens=(1, 128, 128, 60, 128), confidence=1.0, depth_source="depth")
    chunk = build_chunk("pick", 1, goal.xyz_base, 0.0, config.motion, ActionTokenizer.from_config(config.workspace))
    return json.dumps(plan_record(7, 1.0, plan, [GroundedStep(plan.steps[0], goal, chunk)], [{"cmd": "pick"}]))


def test_the_example_executor_runs_the_released_step_once_and_reports_it():
    import rclpy
    from std_msgs.msg import String

    spec = importlib.util.spec_from_file_location("minimal_executor", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    context = rclpy.Context()
    rclpy.init(context=context)
    moved = []
    try:
        node = module.MinimalExecutor(move=lambda waypoints: moved.append(len(waypoints)) or True, context=context)
        report = node.on_plan(String(data=_plan_json()))
        assert report.to_dict() == {"command_id": 7, "step": 0, "outcome": "done", "holding": "cup"}
        assert moved == [4]
        assert node.on_plan(String(data=_plan_json())) is None  # the same step republished: not run twice
        retry = dict(json.loads(_plan_json()), attempt=2)  # the node's verifier failed it: a new try, same index
        assert node.on_plan(String(data=json.dumps(retry))).step == 0 and moved == [4, 4]
        node.destroy_node()
    finally:
        rclpy.shutdown(context=context)
