"""The planner: implicit picks, the hand's state, grounding through the pipeline, the plan record."""
from __future__ import annotations

import json
from typing import Dict

import numpy as np
import pytest

from clip_vla.core.config import ClipVlaConfig, Vocabulary, default_vocabulary_path
from clip_vla.core.language import InstructionParser
from clip_vla.core.plan import Plan, PlanStep, ground_plan, ground_step, plan_command, plan_record
from clip_vla.core.types import ActionGoal, Frame, NoAction
from clip_vla.perception.localize import detection_from_mask
from clip_vla.pipeline import VLAPipeline

INTRINSICS = [500.0, 500.0, 319.5, 239.5]


@pytest.fixture(scope="module")
def parser() -> InstructionParser:
    return InstructionParser(Vocabulary.from_yaml(default_vocabulary_path()))


def steps_of(plan: Plan):
    return [(s.index, s.skill, s.object, s.destination, s.implicit) for s in plan.steps]


# --------------------------------------------------------------------------- preconditions
def test_a_place_gets_an_implicit_pick_of_what_it_places(parser):
    plan = plan_command(parser, "put the red cup in the bowl")
    assert steps_of(plan) == [(0, "pick", "red cup", None, True), (1, "place", "red cup", "bowl", False)]
    assert plan.steps[0].text == "pick red cup" and plan.steps[1].text == "put the red cup in the bowl"


def test_no_pick_is_inserted_when_the_hand_already_holds_it(parser):
    plan = plan_command(parser, "put the red cup in the bowl", holding="red cup")
    assert steps_of(plan) == [(0, "place", "red cup", "bowl", False)]
    assert plan.holding == "red cup"


def test_holding_something_else_still_needs_the_pick(parser):
    plan = plan_command(parser, "put the red cup in the bowl", holding="apple")
    assert steps_of(plan)[0] == (0, "pick", "red cup", None, True)


def test_put_it_places_what_the_hand_holds(parser):
    plan = plan_command(parser, "put it in the bowl", holding="apple")
    assert steps_of(plan) == [(0, "place", "apple", "bowl", False)]
    assert plan.steps[0].parsed().object == "apple"
    assert steps_of(plan_command(parser, "put it in the bowl")) == [(0, "place", None, "bowl", False)]


def test_an_explicit_pick_satisfies_the_place(parser):
    plan = plan_command(parser, "take the red cube and put it in the blue bin")
    assert steps_of(plan) == [(0, "pick", "red cube", None, False), (1, "place", "red cube", "blue bin", False)]


def test_after_a_place_the_hand_is_empty(parser):
    plan = plan_command(parser, "put the apple in the bowl, then put it on the tray", holding="apple")
    assert steps_of(plan) == [(0, "place", "apple", "bowl", False), (1, "pick", "apple", None, True),
                              (2, "place", "apple", "tray", False)]


def test_step_dicts():
    step = PlanStep(0, "pick", "cup", implicit=True)
    assert step.to_dict() == {"skill": "pick", "object": "cup", "destination": None, "direction": None}
    assert step.to_full_dict()["implicit"] is True


# --------------------------------------------------------------------------- grounding on the tiny models
@pytest.fixture(scope="module")
def tiny_loaded(tiny_models):
    """The tiny models loaded once for this module (loading is the slow part on CPU)."""
    from clip_vla.core.config import ModelConfig
    from clip_vla.perception.loading import load_models

    return load_models(ModelConfig(clipseg=tiny_models["clipseg"], clip=tiny_models["clip"], device="cpu"))


@pytest.fixture()
def tiny_pipeline(tiny_config, tiny_loaded) -> VLAPipeline:
    return VLAPipeline(tiny_config, models=tiny_loaded)


def blank_frame(stamp: float = 1.5) -> Frame:
    return Frame(rgb=np.full((120, 160, 3), 128, np.uint8), stamp=stamp)


def test_a_step_is_grounded_like_the_same_single_command(tiny_pipeline, parser):
    plan = plan_command(parser, "pick up the red cup and push it left")
    grounded = ground_step(tiny_pipeline, blank_frame(), plan.steps[0])
    single = tiny_pipeline.run(blank_frame(), "pick up the red cup")
    assert isinstance(grounded.result, ActionGoal) and grounded.accepted and grounded.reason is None
    assert grounded.result.tokens == single.tokens
    assert grounded.chunk.skill == "pick" and grounded.chunk.tokens[0] == single.cmd_token
    assert grounded.result.stamp == 1.5


def test_an_implicit_pick_is_grounded_without_text_to_parse(tiny_pipeline, parser):
    plan = plan_command(parser, "put the red cup in the bowl")
    result = ground_plan(tiny_pipeline, blank_frame(), plan)
    assert result.complete and result.stopped_at is None
    assert [g.chunk.skill for g in result.grounded] == ["pick", "place"]
    assert result.grounded[0].result.cmd == "pick"


def test_a_refused_step_stops_the_plan_with_its_reason(tiny_config, tiny_loaded, parser):
    nothing_found = tiny_config.replace(**{"perception.mask_threshold": 1.0})
    pipeline = VLAPipeline(nothing_found, models=tiny_loaded)
    result = ground_plan(pipeline, blank_frame(), plan_command(parser, "pick up the cup, then push the box"))
    assert len(result.grounded) == 1 and result.stopped_at == 0 and not result.complete
    assert result.grounded[0].reason == "no_object"


def test_open_and_stop_steps_are_refused_with_their_reasons(tiny_pipeline, parser):
    assert ground_step(tiny_pipeline, blank_frame(), plan_command(parser, "open the drawer").steps[0]).reason \
        == "no_motion"
    assert ground_step(tiny_pipeline, blank_frame(), plan_command(parser, "stop").steps[0]).reason == "stopped"


# --------------------------------------------------------------------------- grounding with known masks
def masked_oracle(masks: Dict[str, np.ndarray]):
    """Perception from known masks (the pipeline's oracle interface, as the simulator uses it)."""
    def perceive(frame, prepared):
        detections = {}
        for role, phrase in (("object", prepared.parsed.object), ("destination", prepared.parsed.destination)):
            if phrase:
                detections[role] = detection_from_mask(phrase, masks.get(phrase, np.zeros((120, 160), bool)))
        return detections, {prepared.skill.name: 1.0}
    return perceive


def centred_square(half: int = 6) -> np.ndarray:
    """A mask at the image centre: the default camera looks straight down at (0.5, 0, 0) of the base."""
    mask = np.zeros((480, 640), bool)
    mask[240 - half:240 + half, 320 - half:320 + half] = True
    return mask


def oracle_pipeline(masks: Dict[str, np.ndarray], max_command_length: int = 512, **overrides) -> VLAPipeline:
    config = ClipVlaConfig.from_yaml().replace(**{"geometry.intrinsics": INTRINSICS, **overrides})
    return VLAPipeline(config, oracle=masked_oracle(masks), max_command_length=max_command_length)


def camera_frame() -> Frame:
    return Frame(rgb=np.zeros((480, 640, 3), np.uint8), stamp=2.0)


def test_grounding_stops_at_the_step_whose_destination_is_missing(parser):
    pipeline = oracle_pipeline({"red cube": centred_square()})
    plan = plan_command(parser, "take the red cube and put it in the blue bin, then push the box left")
    result = ground_plan(pipeline, camera_frame(), plan)
    assert [g.accepted for g in result.grounded] == [True, False]  # the push is never grounded
    assert result.stopped_at == 1 and result.grounded[1].reason == "no_object"
    assert "'blue bin' not found" in result.grounded[1].result.message
    goal = result.grounded[0].result
    np.testing.assert_allclose(goal.xyz_base, (0.5, 0.0, 0.0), atol=2e-3)


def test_a_chunk_leaving_the_workspace_refuses_its_step(parser):
    pipeline = oracle_pipeline({"box": centred_square()}, **{"workspace.x": [0.45, 0.6]})  # (0.5, 0, 0) fits
    result = ground_plan(pipeline, camera_frame(), plan_command(parser, "pick up the box and then push it forward"))
    assert result.grounded[0].accepted  # the pick stays within x [0.45, 0.6]
    refused = result.grounded[1]
    assert (result.stopped_at, refused.reason) == (1, "outside_workspace")  # starts 8.5 cm behind: x = 0.415
    assert "push chunk waypoint 0 (above_start)" in refused.result.message and refused.chunk is None
    assert refused.result.stamp == 2.0


# --------------------------------------------------------------------------- the record
def test_plan_record_carries_goal_tokens_chunk_and_waypoints(tiny_pipeline, parser):
    plan = plan_command(parser, "put the red cup in the bowl, then push the box left")
    frame = blank_frame()
    grounded = [ground_step(tiny_pipeline, frame, plan.steps[0])]
    goal_records = [grounded[0].result.to_dict()]  # the caller's ~/goal record
    record = plan_record("cmd-7", 12.5, plan, grounded, goal_records)
    json.dumps(record)  # JSON-able
    assert (record["command_id"], record["stamp"], record["command"]) == ("cmd-7", 12.5, plan.command)
    first, second, third = record["steps"]
    assert (first["skill"], first["implicit"], second["skill"], third["skill"]) == ("pick", True, "place", "push")
    assert first["goal"] == goal_records[0] and first["tokens"] == list(grounded[0].result.tokens)
    assert first["chunk_tokens"] == list(grounded[0].chunk.tokens)
    assert tiny_pipeline.tokenizer.chunk_from_text(first["chunk_text"]) == grounded[0].chunk.tokens
    assert [w["label"] for w in first["waypoints"]] == ["above", "grasp", "close", "lift"]
    assert second["goal"] is None and second["chunk_tokens"] is None  # not grounded yet


def test_plan_record_of_a_refused_step_says_why(tiny_pipeline, parser):
    plan = plan_command(parser, "open the drawer")
    grounded = [ground_step(tiny_pipeline, blank_frame(), plan.steps[0])]
    step = plan_record(1, 0.0, plan, grounded, [None])["steps"][0]
    assert step["refusal"]["reason"] == "no_motion" and step["goal"] is None
    with pytest.raises(ValueError, match="goal records"):
        plan_record(1, 0.0, plan, grounded, [None, None])


# --------------------------------------------------------------------------- the command length limit
def test_the_callers_command_limit_is_the_only_one():
    """Issue 11 item 3: the parser had its own hidden 512-character limit under the node's 1000."""
    command = "pick up the red cup " + "very " * 120  # 620 characters
    long_command = "pick up the red cup " + "very " * 800  # 4020: past the parser's old raw guard (4 x 512 + 1024)
    for limit, text in ((1000, command), (5000, long_command)):
        prepared = oracle_pipeline({}, max_command_length=limit).prepare(text)
        assert not isinstance(prepared, NoAction), prepared.message
        assert prepared.parsed.object.startswith("red cup")
    refused = oracle_pipeline({}, max_command_length=100).prepare(command)
    assert isinstance(refused, NoAction) and refused.reason.value == "bad_command"
    assert refused.message == "command is 619 characters long; the limit is 100"


def test_the_command_limit_can_be_set_after_construction():
    """A pipeline factory takes only the config: the node sets its parameter's limit afterwards."""
    command = "pick up the red cup " + "very " * 120
    pipeline = oracle_pipeline({})
    assert isinstance(pipeline.prepare(command), NoAction)  # 619 > the standalone default of 512
    pipeline.set_command_limit(1000)
    assert not isinstance(pipeline.prepare(command), NoAction)
    pipeline.set_command_limit(100)
    assert pipeline.prepare("pick up the red cup").parsed.object == "red cup"
    assert isinstance(pipeline.prepare(command), NoAction)
    with pytest.raises(ValueError, match="max_length"):
        pipeline.set_command_limit(0)
