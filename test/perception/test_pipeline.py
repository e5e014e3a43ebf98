"""The whole core on tiny generated models, loaded through the real from_pretrained path.

With the ``tiny_config`` fixture every pixel is the target (no distractors, threshold 0),
so the object is the image centre: with 0.8 m depth under the default camera (0.8 m above
base point (0.5, 0, 0), looking straight down) the goal is exactly base (0.5, 0, 0).
"""
import math

import numpy as np
import pytest

from clip_vla.pipeline import VLAPipeline
from clip_vla.core.types import ActionGoal, Frame, Intrinsics, NoAction, Reason

W, H = 640, 480


@pytest.fixture(scope="module")
def pipeline(tiny_models, open_vocabulary_file):
    from clip_vla.core.config import ClipVlaConfig

    from conftest import REPO

    cfg = ClipVlaConfig.from_yaml(REPO / "config" / "clip_vla.yaml").replace(**{
        "models.clipseg": tiny_models["clipseg"], "models.clip": tiny_models["clip"], "models.device": "cpu",
        "perception.mask_threshold": 0.0, "perception.min_confidence": 0.0,
        "geometry.intrinsics": [500.0, 500.0, 319.5, 239.5], "vocabulary_file": open_vocabulary_file,
    })
    return VLAPipeline(cfg)


@pytest.fixture()
def frame():
    rgb = np.random.default_rng(0).integers(0, 255, (H, W, 3), dtype=np.uint8)
    return Frame(rgb=rgb, depth=np.full((H, W), 800, np.uint16), stamp=12.5)


def reconfigure(pipeline, **overrides):
    pipeline.update_config(pipeline.config.replace(**overrides))


@pytest.fixture(autouse=True)
def restore(pipeline):
    cfg = pipeline.config
    yield
    pipeline.update_config(cfg)


def test_pick_goal_geometry_and_tokens(pipeline, frame):
    r = pipeline.run(frame, "Pick up the red cup!")
    assert isinstance(r, ActionGoal), r
    assert r.cmd == "pick" and r.cmd_token == 1 and r.object_phrase == "red cup"
    assert r.pixel == pytest.approx((319.5, 239.5))
    assert r.xyz_camera == pytest.approx((0.0, 0.0, 0.8), abs=1e-6)
    assert r.xyz_base == pytest.approx((0.5, 0.0, 0.0), abs=1e-6)
    assert r.depth_source == "depth" and r.stamp == 12.5
    # Landscape full-frame mask: major axis along image u = base -y -> yaw -pi/2 (pi-symmetric).
    assert r.theta == pytest.approx(-math.pi / 2, abs=1e-3)
    # Tokens decode back to within half a bin of the goal.
    decoded = pipeline.tokenizer.decode(r.tokens)
    for got, want, dim in zip((decoded.x, decoded.y, decoded.z), r.xyz_base, "xyz"):
        assert abs(got - want) <= pipeline.tokenizer.bin_width(dim) / 2 + 1e-9
    assert r.tokens[0] == 1
    assert set(r.skill_probabilities) == set(pipeline.vocabulary.skill_names)
    assert sum(r.skill_probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    for stage in ("preprocess", "image_encoding", "mask_decoding", "skill_scoring", "geometry", "tokenization"):
        assert stage in r.timings_ms
    d = r.to_dict()
    assert d["tokens_text"] == " ".join(map(str, r.tokens)) and d["accepted"] is True


def test_float_depth_in_metres_equals_millimetres(pipeline, frame):
    a = pipeline.run(frame, "pick up the red cup")
    frame.depth = np.full((H, W), 0.8, np.float32)
    b = pipeline.run(frame, "pick up the red cup")
    assert a.xyz_base == pytest.approx(b.xyz_base, abs=1e-6)


def test_without_depth_uses_table_plane(pipeline, frame):
    frame.depth = None
    r = pipeline.run(frame, "pick up the red cup")
    assert isinstance(r, ActionGoal) and r.depth_source == "table_plane"
    assert r.xyz_base == pytest.approx((0.5, 0.0, 0.0), abs=1e-6)


@pytest.mark.parametrize("depth", [
    np.full((H, W), np.nan, np.float32), np.full((H, W), np.inf, np.float32),
    np.zeros((H, W), np.uint16), np.full((H, W), 65535, np.uint16),
], ids=["nan", "inf", "zero", "max_u16"])
def test_paired_depth_without_a_valid_reading_answers_no_depth(pipeline, frame, depth):
    """A failed depth reading over the object must not silently become a table-plane goal."""
    frame.depth = depth
    r = pipeline.run(frame, "pick up the red cup")
    assert isinstance(r, NoAction) and r.reason == Reason.NO_DEPTH, r
    assert "no valid depth over the mask" in r.message and "depth_fallback" in r.message


def test_table_plane_fallback_when_allowed_says_so(pipeline, frame):
    reconfigure(pipeline, **{"geometry.depth_fallback": "table_plane"})
    frame.depth = np.full((H, W), np.nan, np.float32)
    r = pipeline.run(frame, "pick up the red cup")
    assert isinstance(r, ActionGoal) and r.depth_source == "table_plane"
    assert r.message.startswith("goal published; no valid depth over the mask")
    assert "geometry.depth_fallback: table_plane" in r.message and r.to_dict()["message"] == r.message
    frame.depth = None  # no depth image at all: the plane is the plan, nothing to report
    assert pipeline.run(frame, "pick up the red cup").message == "goal published"


def test_frame_intrinsics_override_config(pipeline, frame):
    frame.intrinsics = Intrinsics(500.0, 500.0, 219.5, 239.5)  # principal point 100 px left of centre
    r = pipeline.run(frame, "pick up the red cup")
    # The centre pixel is now 100 px right of the optical axis: x_cam = 100 * 0.8 / 500 = 0.16 m
    assert r.xyz_camera[0] == pytest.approx(0.16, abs=1e-6)
    # Image right is base -y under the default downward camera.
    assert r.xyz_base[1] == pytest.approx(-0.16, abs=1e-6)


def test_place_goal_is_the_destination(pipeline, frame):
    r = pipeline.run(frame, "put the red cup in the bowl")
    assert isinstance(r, ActionGoal) and r.cmd == "place" and r.cmd_token == 2
    assert r.destination_phrase == "bowl" and r.destination is not None and r.destination.found
    # Object and destination compete per pixel: the goal is where "bowl" wins, not the whole image.
    assert r.pixel == pytest.approx(r.destination.centroid)


def test_push_direction_from_command(pipeline, frame):
    assert pipeline.run(frame, "push the box left").theta == pytest.approx(math.pi / 2)
    assert pipeline.run(frame, "push the box to the right").theta == pytest.approx(-math.pi / 2)
    assert pipeline.run(frame, "push the box").theta == pytest.approx(0.0)  # away from the robot


@pytest.mark.parametrize("command, reason", [
    ("", Reason.EMPTY_COMMAND),
    ("   \t ", Reason.EMPTY_COMMAND),
    ("x" * 100_000, Reason.BAD_COMMAND),
    ("?!...", Reason.BAD_COMMAND),
    ("stop", Reason.STOPPED),
    ("pick it up", Reason.NO_OBJECT_NAMED),
    ("put the apple", Reason.NO_DESTINATION),
])
def test_commands_that_cannot_execute(pipeline, frame, command, reason):
    r = pipeline.run(frame, command)
    assert isinstance(r, NoAction) and r.reason == reason, r
    assert r.message and len(r.command) <= 210
    assert r.to_dict()["reason"] == reason.value


def test_not_found_when_threshold_unreachable(pipeline, frame):
    reconfigure(pipeline, **{"perception.mask_threshold": 1.0})
    r = pipeline.run(frame, "pick up the red cup")
    assert isinstance(r, NoAction) and r.reason == Reason.NO_OBJECT and "not found" in r.message
    assert "< threshold 1.00" in r.message


def test_not_found_although_bright_says_the_model_saw_it_but_no_region_won(pipeline, frame):
    """A peak above the threshold with no region kept (here: none as large as min_area_px) is not "below threshold"."""
    reconfigure(pipeline, **{"perception.min_area_px": 10 ** 6})
    r = pipeline.run(frame, "pick up the red cup")
    assert isinstance(r, NoAction) and r.reason == Reason.NO_OBJECT
    assert "its probability reaches" in r.message and "< threshold" not in r.message, r.message
    assert r.detection.peak >= pipeline.config.perception.mask_threshold


def test_low_confidence_is_never_a_goal(pipeline, frame):
    reconfigure(pipeline, **{"perception.min_confidence": 0.99})
    r = pipeline.run(frame, "pick up the red cup")
    assert isinstance(r, NoAction) and r.reason == Reason.LOW_CONFIDENCE


def test_outside_workspace_is_never_a_goal(pipeline, frame):
    reconfigure(pipeline, **{"workspace.x": [0.6, 1.0]})
    r = pipeline.run(frame, "pick up the red cup")
    assert isinstance(r, NoAction) and r.reason == Reason.OUTSIDE_WORKSPACE
    assert "outside the workspace" in r.message


def test_no_intrinsics_is_a_clear_refusal(pipeline, frame):
    reconfigure(pipeline, **{"geometry.intrinsics": [0.0]})
    r = pipeline.run(frame, "pick up the red cup")
    assert isinstance(r, NoAction) and r.reason == Reason.NO_INTRINSICS
    assert "camera_info" in r.message


def test_guessed_skill_needs_probability(pipeline, frame):
    # A hot softmax spreads probability over the 8 skills (~1/8 each), under the 0.5 default.
    reconfigure(pipeline, **{"perception.skill_temperature": 100.0})
    r = pipeline.run(frame, "the red cup")  # no verb: CLIP guesses the skill
    assert isinstance(r, NoAction) and r.reason == Reason.LOW_CONFIDENCE
    assert pipeline.run(frame, "pick up the red cup").accepted  # a spoken verb is not guessed


def test_text_embeddings_are_computed_once(pipeline, frame):
    pipeline.run(frame, "pick up the green cup")
    misses = pipeline.segmenter.text_cache.misses + pipeline.scorer.text_cache.misses
    for _ in range(3):
        pipeline.run(frame, "pick up the green cup")
    assert pipeline.segmenter.text_cache.misses + pipeline.scorer.text_cache.misses == misses


def test_shared_backbone_scores_skills_without_clip(tiny_models, tiny_config, frame):
    cfg = tiny_config.replace(**{"models.share_backbone": True})
    p = VLAPipeline(cfg)
    assert p.models.clip is None and p.model_ids["clip"] == "clipseg-backbone"
    r = p.run(frame, "pick up the red cup")
    assert isinstance(r, ActionGoal) and r.xyz_base == pytest.approx((0.5, 0.0, 0.0), abs=1e-6)


def test_frame_validation():
    with pytest.raises(ValueError, match="HxWx3"):
        Frame(rgb=np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        Frame(rgb=np.zeros((4, 4, 3), np.float32))
    with pytest.raises(ValueError, match="does not match"):
        Frame(rgb=np.zeros((4, 4, 3), np.uint8), depth=np.zeros((2, 2), np.uint16))


def test_oracle_perception_replaces_the_models(tiny_config, frame):
    """Ground-truth masks (as the simulator gives) drive geometry and tokens without any model."""
    from clip_vla.perception.localize import detection_from_mask

    mask = np.zeros((H, W), bool)
    mask[200:280, 400:420] = True  # a bar standing along image v -> base x under the default camera

    def oracle(frame, prepared):
        return {"object": detection_from_mask(prepared.parsed.object, mask)}, {"pick": 1.0}

    p = VLAPipeline(tiny_config, oracle=oracle)
    assert p.models is None and p.model_ids["clipseg"] == "oracle"
    r = p.run(frame, "pick up the green bar")
    assert isinstance(r, ActionGoal) and r.confidence == 1.0
    assert r.pixel == pytest.approx((409.5, 239.5))
    u_off = (409.5 - 319.5) * 0.8 / 500
    assert r.xyz_base == pytest.approx((0.5, -u_off, 0.0), abs=1e-6)
    assert abs(r.theta) == pytest.approx(0.0, abs=1e-3)  # long axis along base x


def test_no_depth_and_ray_parallel_to_table_is_no_depth(pipeline, frame):
    # Camera looking horizontally along base x: the centre ray never meets the table plane.
    reconfigure(pipeline, **{"geometry.camera_to_base_rpy": [-math.pi / 2, 0.0, -math.pi / 2]})
    frame.depth = None
    r = pipeline.run(frame, "pick up the red cup")
    assert isinstance(r, NoAction) and r.reason == Reason.NO_DEPTH, r


def _verb_commands(pipeline):
    """One command per skill that needs an object, with its first verb (place also names a destination)."""
    commands = {}
    for skill in pipeline.vocabulary.skills:
        if skill.name == pipeline.vocabulary.stop_skill:
            continue
        tail = " in the bowl" if skill.needs_destination else ""
        commands[skill.name] = f"{skill.verbs[0]} the red cup{tail}"
    return commands


def test_a_verb_clip_contradicts_is_low_confidence_with_the_scores(pipeline, frame):
    # The tiny random CLIP ranks skills arbitrarily: with a near-zero margin every verb that is not
    # CLIP's top skill is vetoed, and only those.
    reconfigure(pipeline, **{"perception.skill_veto_margin": 1e-6})
    vetoed = 0
    for skill, command in _verb_commands(pipeline).items():
        r = pipeline.run(frame, command)
        top = max(r.skill_probabilities, key=r.skill_probabilities.get)
        if top == skill:
            assert r.accepted, command
        else:
            vetoed += 1
            assert isinstance(r, NoAction) and r.reason == Reason.LOW_CONFIDENCE, command
            assert "CLIP contradicts" in r.message
            assert set(r.skill_probabilities) == set(pipeline.vocabulary.skill_names)
    assert vetoed > 0


def test_with_the_veto_off_a_spoken_verb_always_wins(pipeline, frame):
    reconfigure(pipeline, **{"perception.skill_veto_margin": 0.0})
    assert all(pipeline.run(frame, c).accepted for c in _verb_commands(pipeline).values())


def test_look_alikes_share_a_word_but_never_rename_the_target():
    from clip_vla.perception.localize import look_alikes

    names = ["red block", "red ball", "blue block", "green cup", "block", "big red block", "bowl"]
    assert look_alikes("red block", names, 8) == ["red ball", "blue block"]
    assert look_alikes("red block", names, 1) == ["red ball"]  # catalogue order, at most the limit
    assert look_alikes("red block", names, 0) == [] and look_alikes(None, names, 8) == []
    assert look_alikes("red block", names, 8, exclude=["blue block"]) == ["red ball"]  # the destination, say
    assert look_alikes("mug", names, 8) == []


def test_look_alike_competitors_join_the_prompts_after_the_named_ones(pipeline, frame):
    """Off by default; on, the catalogue's look-alikes compete at every pixel like the distractors."""
    reconfigure(pipeline, **{"suggest.colours": ["red", "blue"], "suggest.shapes": ["cup", "ball"],
                             "suggest.vocabulary_objects": False})
    off = pipeline.prepare("put the red cup in the bowl")
    assert off.prompts[:2] == ["red cup", "bowl"] and "red ball" not in off.prompts
    reconfigure(pipeline, **{"perception.look_alike_competitors": 8})
    on = pipeline.prepare("put the red cup in the bowl")
    assert on.prompts[:4] == ["red cup", "bowl", "red ball", "blue cup"]
    assert on.prompts[4:] == list(pipeline.vocabulary.distractors)
    assert (on.object_index, on.destination_index) == (0, 1)
    r = pipeline.run(frame, "put the red cup in the bowl")  # the goal still comes from the named prompts
    assert isinstance(r, (ActionGoal, NoAction))


def _two_blobs():
    """KxHxW maps: prompt 0 ('red cup') lights a large blob on the left and a smaller one on the right."""
    probs = np.zeros((2, 40, 80), np.float32)
    probs[1] = 0.3  # a distractor everywhere
    probs[0, 10:30, 5:30] = 0.9   # 500 px
    probs[0, 10:25, 50:70] = 0.9  # 300 px
    return probs


def test_without_a_ranker_the_largest_mass_is_the_object(pipeline):
    from clip_vla.pipeline import detect_roles

    prepared = pipeline.prepare("pick up the red cup")
    prepared = type(prepared)(prepared.text, prepared.parsed, prepared.skill, ["red cup", "background"], 0, None)
    det = detect_roles(_two_blobs(), prepared, pipeline.config.perception)["object"]
    assert det.area == 500 and det.other_instances == 1


def test_a_ranker_chooses_among_the_components_and_is_asked_only_when_there_is_a_choice(pipeline):
    from clip_vla.pipeline import detect_roles

    prepared = pipeline.prepare("pick up the red cup")
    prepared = type(prepared)(prepared.text, prepared.parsed, prepared.skill, ["red cup", "background"], 0, None)
    asked = []

    def smallest_first(by_name):
        asked.extend((name, [c.area for c in comps]) for name, comps in by_name.items())
        return {name: sorted(comps, key=lambda c: c.area) for name, comps in by_name.items()}

    det = detect_roles(_two_blobs(), prepared, pipeline.config.perception, smallest_first)["object"]
    assert det.area == 300 and asked == [("red cup", [500, 300])]
    one = _two_blobs()
    one[0, :, 40:] = 0.0
    asked.clear()
    assert detect_roles(one, prepared, pipeline.config.perception, smallest_first)["object"].area == 500
    assert asked == []  # one component: nothing to choose


def test_clips_ranker_runs_on_the_tiny_models_and_keeps_every_component(pipeline, frame):
    """The real path (crops -> one batched CLIP pass -> votes -> ranking) on the tiny generated CLIP."""
    reconfigure(pipeline, **{"perception.identity_weight": 1.0, "perception.identity_candidates": 2})
    rank = pipeline._identity_rank(frame)
    masks = []
    for u in (10, 200, 400):
        m = np.zeros((H, W), bool)
        m[100:160, u:u + 60] = True
        masks.append(m)
    from clip_vla.core.types import Detection

    comps = [Detection(phrase="red cup", found=True, confidence=0.9, mask=m, centroid=(0.0, 0.0), bbox=(0, 0, 1, 1),
                       area=int(m.sum()), peak=0.9) for m in masks]
    ranked = rank({"red cup": comps, "red ball": comps[:1]})
    assert sorted(map(id, ranked["red cup"][:2])) == sorted(map(id, comps[:2]))  # only 2 asked
    assert ranked["red cup"][2] is comps[2] and ranked["red ball"] == comps[:1]
    assert isinstance(pipeline.run(frame, "pick up the red cup"), (ActionGoal, NoAction))
    reconfigure(pipeline, **{"perception.ground_by_naming": True, "perception.look_alike_competitors": 8,
                             "suggest.colours": ["red", "blue"], "suggest.shapes": ["cup", "ball"],
                             "suggest.vocabulary_objects": False})
    prepared = pipeline.prepare("pick up the red cup")
    assert prepared.prompt_names == ("red cup", "red ball", "blue cup")
    assert isinstance(pipeline.run(frame, "pick up the red cup"), (ActionGoal, NoAction))


def test_a_destination_filter_trims_the_mask_before_the_component_is_chosen(pipeline):
    """perception.low_destination: the gripper's half of a bowl+gripper component goes, the bowl stays."""
    from clip_vla.pipeline import detect_roles

    prepared = pipeline.prepare("put the red cup in the bowl")
    prepared = type(prepared)(prepared.text, prepared.parsed, prepared.skill, ["red cup", "bowl", "background"], 0, 1)
    probs = np.zeros((3, 40, 80), np.float32)
    probs[2] = 0.3
    probs[0, 2:6, 2:6] = 0.9
    probs[1, 10:30, 10:50] = 0.9  # one component: the bowl (u < 30) and the gripper beside it (u >= 30)

    def drop_the_gripper(mask):
        out = mask.copy()
        out[:, 30:] = False
        return out

    perception = pipeline.config.perception
    assert detect_roles(probs, prepared, perception)["destination"].centroid[0] == pytest.approx(29.5)
    trimmed = detect_roles(probs, prepared, perception, destination_filter=drop_the_gripper)["destination"]
    assert trimmed.area == 400 and trimmed.centroid[0] == pytest.approx(19.5)
    assert detect_roles(probs, prepared, perception, destination_filter=drop_the_gripper)["object"].area == 16


def test_low_destination_runs_on_the_real_path_and_keeps_a_table_level_destination(pipeline, frame):
    reconfigure(pipeline, **{"perception.low_destination": True})
    low = pipeline._low(frame.depth, Intrinsics(500.0, 500.0, 319.5, 239.5), pipeline.camera_to_base)
    mask = np.zeros((H, W), bool)
    mask[200:280, 280:360] = True
    assert (low(mask) == mask).all()  # 0.8 m under the default camera: on the table plane
    r = pipeline.run(frame, "put the red cup in the bowl")
    assert isinstance(r, ActionGoal) and r.xyz_base[2] == pytest.approx(0.0, abs=1e-6)
