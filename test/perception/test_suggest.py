"""Scene suggestions: finding, merging and ranking on constructed maps; the whole path on tiny models; the CLI.

The decisions (``find_objects``, ``merge_objects``, ``rank_suggestions``) are checked on
probability maps drawn by hand, so every expectation is exact. The model path runs the real
tiny CLIPSeg/CLIP with threshold 0 and no distractors: every name covers the whole image,
which makes the merge outcome (one object) deterministic whatever the random weights say.
"""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from clip_vla.core.config import ConfigError, Vocabulary, default_vocabulary_path
from clip_vla.core.language import InstructionParser
from clip_vla.core.types import Frame, Intrinsics
from clip_vla.perception.localize import all_components, select_component, target_mask
from clip_vla.perception.suggest import (Candidate, SceneObject, SuggestConfig, Suggester, compose_command,
                                         find_objects, merge_objects, rank_suggestions)

H, W = 60, 80
VOCAB = Vocabulary.from_yaml(default_vocabulary_path())
PERCEPTION_MIN_AREA = 4


def disc(cx: int, cy: int, r: int, value: float, shape=(H, W)) -> np.ndarray:
    """A probability map: ``value`` on a disc, 0.02 elsewhere."""
    m = np.full(shape, 0.02, np.float32)
    cv2.circle(m, (cx, cy), r, float(value), -1)
    return m


def maps_of(probs: np.ndarray, n_candidates: int, threshold: float = 0.4):
    """(prob, mask) per candidate: the pipeline's rule, every candidate against the distractors after it."""
    distractors = list(range(n_candidates, probs.shape[0]))
    return {i: (probs[i], target_mask(probs, i, distractors, threshold)) for i in range(n_candidates)}


def found_scene(layers, candidates, min_confidence=0.5):
    probs = np.stack(layers + [np.full((H, W), 0.1, np.float32)])  # one flat distractor
    maps = maps_of(probs, len(candidates))
    found = find_objects(maps, candidates, PERCEPTION_MIN_AREA, min_confidence)
    return found, {c.name: probs[i] for i, c in enumerate(candidates)}


def scene_object(name: str, confidence: float, fixture: bool = False, u: int = 20, v: int = 20) -> SceneObject:
    mask = np.zeros((H, W), bool)
    mask[v - 3:v + 4, u - 3:u + 4] = True
    det = select_component(mask, mask * np.float32(confidence), name)
    return SceneObject(name, fixture, det)


# --------------------------------------------------------------------------- finding and merging
def test_overlapping_names_are_one_object_under_the_best_name_with_look_alikes():
    cands = [Candidate("red ball"), Candidate("red cup"), Candidate("red block")]
    found, probs = found_scene([disc(20, 20, 8, 0.7), disc(20, 20, 8, 0.9), disc(21, 20, 7, 0.6)], cands)
    objects = merge_objects(found, probs, overlap=0.3)
    assert len(objects) == 1
    assert objects[0].name == "red cup" and objects[0].look_alikes == ["red ball", "red block"]
    assert objects[0].detection.bbox == (12, 12, 28, 28)


def test_separate_objects_stay_separate_entries_most_confident_first():
    cands = [Candidate("red cup"), Candidate("blue ball")]
    found, probs = found_scene([disc(15, 15, 6, 0.7), disc(60, 40, 6, 0.9)], cands)
    objects = merge_objects(found, probs, overlap=0.3)
    assert [o.name for o in objects] == ["blue ball", "red cup"]
    assert all(not o.look_alikes for o in objects)
    assert objects[1].detection.centroid == pytest.approx((15.0, 15.0))


def test_the_name_is_judged_on_the_shared_region_not_on_its_own_component():
    # "red bar" is very sure of a small patch; "red cup" covers the whole object and is the better name there.
    small = disc(20, 20, 3, 0.99)
    cands = [Candidate("red bar"), Candidate("red cup")]
    found, probs = found_scene([small, disc(20, 20, 9, 0.8)], cands)
    objects = merge_objects(found, probs, overlap=0.3)
    assert [(o.name, o.look_alikes) for o in objects] == [("red cup", ["red bar"])]


def test_every_component_of_a_name_is_found_not_only_its_best():
    # "red ball" is brightest on the block (left) and weaker on the ball (right): both patches are found.
    two = np.maximum(disc(15, 30, 7, 0.95), disc(60, 30, 7, 0.7))
    found, _ = found_scene([two], [Candidate("red ball")])
    assert [(f.detection.centroid[0] < 40, f.grounded) for f in found] == [(True, True), (False, False)]


def test_a_name_that_would_ground_elsewhere_does_not_name_an_object_it_only_partly_covers():
    # The right object is lit by "red ball" (weakly: its best patch is the left one) and by "red cup".
    left = disc(15, 30, 7, 0.95)
    right_ball = disc(60, 30, 7, 0.9)
    cands = [Candidate("red ball"), Candidate("red cup")]
    found, probs = found_scene([np.maximum(left, right_ball * 0.8), disc(60, 30, 7, 0.6)], cands)
    objects = {o.detection.centroid[0] > 40: o for o in merge_objects(found, probs, overlap=0.3)}
    assert objects[False].name == "red ball" and objects[False].grounded
    assert objects[True].name == "red cup" and objects[True].look_alikes == ["red ball"]


def test_clips_vote_on_the_region_can_rename_an_object_clipseg_misnames():
    """CLIPSeg prefers "red cup" on the object, CLIP's crop says "red ball": weighed, the name changes."""
    from clip_vla.perception.identity import IdentityVote

    cands = [Candidate("red ball"), Candidate("red cup")]
    found, probs = found_scene([disc(20, 20, 8, 0.7), disc(20, 20, 8, 0.8)], cands)
    asked = []

    def votes(regions):
        asked.append(len(regions))
        return [IdentityVote("red ball", {"red ball": 0.9, "red cup": 0.1}, 0.0) for _ in regions]

    assert merge_objects(found, probs, overlap=0.3)[0].name == "red cup"
    assert merge_objects(found, probs, overlap=0.3, votes=votes, identity_weight=0.0)[0].name == "red cup"
    assert asked == []  # weight 0: CLIP is not asked
    renamed = merge_objects(found, probs, overlap=0.3, votes=votes, identity_weight=1.0)
    assert [(o.name, o.look_alikes) for o in renamed] == [("red ball", ["red cup"])] and asked == [1]


def test_a_ranker_decides_which_component_of_a_name_is_grounded():
    two = np.maximum(disc(15, 30, 7, 0.95), disc(60, 30, 7, 0.7))
    probs = np.stack([two, np.full((H, W), 0.1, np.float32)])

    def right_first(by_name):
        return {name: sorted(comps, key=lambda d: -d.centroid[0]) for name, comps in by_name.items()}

    found = find_objects(maps_of(probs, 1), [Candidate("red ball")], PERCEPTION_MIN_AREA, 0.5, "mass", right_first)
    assert [(f.detection.centroid[0] > 40, f.grounded) for f in found] == [(True, True), (False, False)]
    fixture = find_objects(maps_of(probs, 1), [Candidate("bowl", fixture=True)], PERCEPTION_MIN_AREA, 0.5, "mass",
                           right_first)
    assert [(f.detection.centroid[0] > 40, f.grounded) for f in fixture] == [(False, True), (True, False)]


def test_low_confidence_and_tiny_components_are_not_objects():
    cands = [Candidate("red cup"), Candidate("blue cup")]
    found, _ = found_scene([disc(20, 20, 8, 0.45), disc(60, 40, 0, 0.99)], cands, min_confidence=0.5)
    assert found == []


def test_all_components_puts_first_what_select_component_picks():
    probs = np.maximum(disc(15, 30, 4, 0.99), disc(60, 30, 9, 0.6))
    mask = probs >= 0.4
    for score in ("mass", "mean"):
        first = all_components(mask, probs, "x", 1, score)[0]
        assert first.centroid == select_component(mask, probs, "x", 1, score).centroid
        assert first.other_instances == 1


# --------------------------------------------------------------------------- ranking
FITS = {"red cup": {"pick": 0.6, "place": 0.3, "push": 0.1}, "green ball": {"pick": 0.2, "place": 0.2, "push": 0.6}}


def test_a_fixture_is_a_destination_and_never_picked():
    objects = [scene_object("red cup", 0.9), scene_object("bowl", 0.8, fixture=True, u=50)]
    ranked = rank_suggestions(objects, FITS, SuggestConfig(min_score=0.0), VOCAB)
    assert [s.command for s in ranked] == ["pick up the red cup", "put the red cup in the bowl", "push the red cup"]
    assert all(s.object.name == "red cup" for s in ranked)
    assert ranked[1].destination.name == "bowl" and ranked[1].score == pytest.approx(0.9 * 0.3 * 0.8)


def test_every_object_gets_its_best_suggestion_before_any_second_one():
    objects = [scene_object("red cup", 0.9), scene_object("green ball", 0.7, u=50),
               scene_object("tray", 0.8, fixture=True, u=70)]
    ranked = rank_suggestions(objects, FITS, SuggestConfig(min_score=0.0), VOCAB)
    assert [s.rank for s in ranked] == list(range(1, len(ranked) + 1))
    assert [s.command for s in ranked[:2]] == ["pick up the red cup", "push the green ball"]
    assert ranked[2].command == "put the red cup on the tray"  # the better second one


def test_max_suggestions_and_min_score_cut_the_list():
    objects = [scene_object("red cup", 0.9), scene_object("green ball", 0.7, u=50)]
    assert len(rank_suggestions(objects, FITS, SuggestConfig(max_suggestions=3, min_score=0.0), VOCAB)) == 3
    kept = rank_suggestions(objects, FITS, SuggestConfig(min_score=0.3), VOCAB)
    assert [(s.command, round(s.score, 2)) for s in kept] == [("pick up the red cup", 0.54),
                                                              ("push the green ball", 0.42)]


def test_an_object_named_by_a_command_that_grounds_elsewhere_gets_no_suggestion():
    obj = scene_object("red cup", 0.9)
    obj.grounded = False
    assert rank_suggestions([obj], FITS, SuggestConfig(min_score=0.0), VOCAB) == []


def test_every_suggested_command_parses_back_to_its_skill_object_and_destination():
    parser = InstructionParser(VOCAB)
    objects = [scene_object(n, 0.9, u=10 + 12 * i) for i, n in enumerate(["yellow cup", "green ball", "red block"])]
    objects.append(scene_object("bowl", 0.9, fixture=True, u=70))
    config = SuggestConfig(min_score=0.0, max_suggestions=50, skills=("pick", "place", "push", "pull", "point_at"))
    fits = {o.name: dict.fromkeys(config.skills, 0.5) for o in objects}
    ranked = rank_suggestions(objects, fits, config, VOCAB)
    assert len(ranked) == 3 * 5
    for s in ranked:
        parsed = parser.parse(s.command)
        dest = s.destination.name if s.destination else None
        assert (parsed.skill, parsed.object, parsed.destination) == (s.skill, s.object.name, dest), s.command


def test_a_skill_without_a_phrasing_is_said_with_its_first_verb():
    config = SuggestConfig(phrasings={})
    assert compose_command("place", "red cup", "tray", config, VOCAB) == "put down the red cup on the tray"
    assert compose_command("point_at", "red cup", None, config, VOCAB) == "point at the red cup"


# --------------------------------------------------------------------------- settings
def test_candidates_are_colours_by_shapes_user_names_and_vocabulary_objects_fixtures_apart():
    config = SuggestConfig(colours=("red", "blue"), shapes=("cup", "ball"), objects=("Mug",))
    names = [(c.name, c.fixture) for c in config.candidates(VOCAB)]
    assert names[:5] == [("red cup", False), ("red ball", False), ("blue cup", False), ("blue ball", False),
                         ("mug", False)]
    assert names[-2:] == [("bowl", True), ("tray", True)]
    assert [n for n, _ in names].count("red cup") == 1  # also a vocabulary object: listed once
    assert not any(n in ("bowl", "tray") for n, fixture in names if not fixture)


@pytest.mark.parametrize("bad", [dict(max_suggestions=0), dict(min_score=1.5), dict(merge_overlap=0.0),
                                 dict(skills=()), dict(colours=("red",)), dict(min_confidence=-0.1)])
def test_invalid_settings_are_refused(bad):
    with pytest.raises(ConfigError):
        SuggestConfig(**bad)


# --------------------------------------------------------------------------- the model path
@pytest.fixture(scope="module")
def pipeline(tiny_models, open_vocabulary_file):
    from clip_vla.core.config import ClipVlaConfig
    from clip_vla.pipeline import VLAPipeline

    cfg = ClipVlaConfig.from_yaml().replace(**{
        "models.clipseg": tiny_models["clipseg"], "models.clip": tiny_models["clip"], "models.device": "cpu",
        "perception.mask_threshold": 0.0, "perception.min_confidence": 0.0, "vocabulary_file": open_vocabulary_file})
    return VLAPipeline(cfg)


TINY = SuggestConfig(vocabulary_objects=False, colours=("red", "blue"), shapes=("cup", "block"), fixtures=(),
                     min_score=0.0, skills=("pick", "push"))


def test_the_model_path_merges_what_covers_the_same_pixels_and_locates_it(pipeline):
    rgb = np.random.default_rng(0).integers(0, 255, (H, W, 3), dtype=np.uint8)
    frame = Frame(rgb=rgb, depth=np.full((H, W), 800, np.uint16), intrinsics=Intrinsics(100.0, 100.0, 39.5, 29.5))
    suggester = Suggester(pipeline, TINY)
    assert len(suggester.prompts) == 4  # the open vocabulary has no distractors
    result = suggester.suggest(frame)
    assert len(result.objects) == 1  # every name is the whole image: one object
    obj = result.objects[0]
    assert sorted([obj.name, *obj.look_alikes]) == sorted(c.name for c in suggester.candidates)
    assert obj.detection.bbox == (0, 0, W - 1, H - 1) and obj.xyz is not None
    assert [s.skill for s in result.suggestions] in (["pick", "push"], ["push", "pick"])
    parser = pipeline.parser
    for s in result.suggestions:
        parsed = parser.parse(s.command)
        assert (parsed.skill, parsed.object) == (s.skill, obj.name)
    again = suggester.suggest(frame)  # deterministic, and the text is cached in the pipeline
    assert again.to_dict()["suggestions"] == result.to_dict()["suggestions"]
    assert {"image_encoding", "mask_decoding", "skill_scoring", "total"} <= set(result.timings_ms)


def test_the_segmenter_shares_the_distractor_maximum_without_changing_the_rule(pipeline):
    import torch

    logits = torch.randn(6, 20, 20, generator=torch.Generator().manual_seed(3)) * 3
    maps = pipeline.segmenter.target_maps(logits, (40, 40), [0, 1, 2], 0.4, competitors=[3, 4, 5])
    probs = pipeline.segmenter.probabilities(logits, (40, 40))
    for t in range(3):
        assert np.array_equal(maps[t][1], target_mask(probs, t, [3, 4, 5], 0.4))


def test_suggestions_need_models_and_known_skills(pipeline):
    with pytest.raises(ConfigError, match="teleport"):
        Suggester(pipeline, SuggestConfig(skills=("teleport",)))
    with pytest.raises(ConfigError, match="none"):
        Suggester(pipeline, SuggestConfig(skills=("none",)))

    class Oracle:
        models = None

    with pytest.raises(ValueError, match="oracle"):
        Suggester(Oracle(), SuggestConfig())


# --------------------------------------------------------------------------- the command line
@pytest.fixture()
def cli_args(tiny_models, open_vocabulary_file, tmp_path):
    image = tmp_path / "scene.png"
    cv2.imwrite(str(image), np.random.default_rng(1).integers(0, 255, (H, W, 3), dtype=np.uint8))
    depth = tmp_path / "depth.png"
    cv2.imwrite(str(depth), np.full((H, W), 800, np.uint16))
    params = tmp_path / "params.yaml"
    params.write_text("clip_vla:\n  ros__parameters:\n    perception: {mask_threshold: 0.0, min_confidence: 0.0}\n")
    return ["--image", str(image), "--depth", str(depth), "--intrinsics", "100,100,39.5,29.5", "--config",
            str(params), "--clipseg", tiny_models["clipseg"], "--clip", tiny_models["clip"], "--device", "cpu",
            "--vocabulary", open_vocabulary_file, "--objects", "red cup,blue block", "--fixtures", "",
            "--min-score", "0", "--skills", "pick,push"]


def test_cli_json_has_the_documented_schema(cli_args, capsys):
    from clip_vla.tools.cli import main

    assert main(["suggest", *cli_args, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {"suggestions", "objects"} <= set(out)
    assert out["suggestions"], out
    for rank, s in enumerate(out["suggestions"], 1):
        assert set(s) == {"rank", "command", "skill", "object", "destination", "score", "pixel", "xyz", "box"}
        assert s["rank"] == rank and s["skill"] in ("pick", "push") and s["destination"] is None
        assert len(s["pixel"]) == 2 and len(s["xyz"]) == 3 and len(s["box"]) == 4
    assert {"name", "kind", "confidence", "pixel", "xyz", "box", "look_alikes"} <= set(out["objects"][0])


def test_cli_prints_a_table_without_json(cli_args, capsys):
    from clip_vla.tools.suggest import main

    assert main(cli_args) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[:2] == ["#", "command"]
    assert out.splitlines()[1].lstrip().startswith("1 ") and "objects:" in out


def test_cli_bad_input_is_one_clear_line_and_exit_2(cli_args, tmp_path, capsys):
    from clip_vla.tools.suggest import main

    missing = list(cli_args)
    missing[missing.index("--image") + 1] = str(tmp_path / "nope.png")
    assert main(missing) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cannot read image" in err

    no_weights = list(cli_args)
    no_weights[no_weights.index("--clipseg") + 1] = str(tmp_path / "no-such-model")
    assert main(no_weights) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("clip-vla suggest: error:") and "Traceback" not in err

    bad_skill = cli_args + ["--skills", "fly"]
    assert main(bad_skill) == 2 and "fly" in capsys.readouterr().err


def test_clip_is_not_asked_to_name_a_group_with_a_fixture():
    cands = [Candidate("red cup"), Candidate("bowl", fixture=True)]
    found, probs = found_scene([disc(20, 20, 8, 0.7), disc(20, 20, 8, 0.8)], cands)
    asked = []
    objects = merge_objects(found, probs, overlap=0.3, votes=lambda regions: asked.append(regions) or [],
                            identity_weight=1.0)
    assert [o.name for o in objects] == ["bowl"] and asked == []


# --------------------------------------------------------------------------- grounding by naming
def _cup_and_ball_scene():
    """Left: a red cup that "red ball" outshines (0.95 against 0.9); right: the red ball, lit by "red ball" only."""
    cup = disc(18, 30, 8, 0.9)
    ball = np.maximum(disc(18, 30, 8, 0.95), disc(60, 30, 6, 0.7))
    return np.stack([ball, cup, np.full((H, W), 0.1, np.float32)])  # names: red ball, red cup; one distractor


class _Perception:
    mask_threshold, min_area_px, min_confidence, instance_score, identity_weight = 0.4, 4, 0.5, "mass", 1.0


def test_a_name_outshone_on_a_look_alike_grounds_where_clip_agrees():
    from clip_vla.perception.identity import IdentityVote
    from clip_vla.perception.suggest import named_objects

    probs, names = _cup_and_ball_scene(), ["red ball", "red cup"]
    component_rule = select_component(target_mask(probs, 0, [1, 2], 0.4), probs[0], "red ball")
    assert component_rule.centroid[0] < 40  # the pixel-wise winner takes the cup
    without_clip = named_objects(probs, names, 0, [], [2], _Perception(), 0.3)
    # by mean probability alone the cup is named "red ball" too, and comes first
    assert len(without_clip) == 2 and without_clip[0].centroid[0] < 40

    def votes(regions):  # CLIP on the left object's crop: a cup
        return [IdentityVote("red ball", {"red cup": 0.9, "red ball": 0.1}, 0.0) for _ in regions]

    with_clip = named_objects(probs, names, 0, [], [2], _Perception(), 0.3, votes=votes)
    assert len(with_clip) == 1 and with_clip[0].centroid[0] > 40 and with_clip[0].phrase == "red ball"


def test_no_object_takes_the_name_and_grounding_by_naming_says_so():
    from clip_vla.perception.suggest import named_objects

    probs = _cup_and_ball_scene()
    probs[0, :, 40:] = 0.02  # no ball on the right: "red ball" lights only the cup, which "red cup" names
    probs[0, 22:39, 10:27] = np.where(probs[0, 22:39, 10:27] > 0.5, 0.6, probs[0, 22:39, 10:27])
    assert named_objects(probs, ["red ball", "red cup"], 0, [], [2], _Perception(), 0.3) == []


def test_of_two_objects_taking_the_name_the_better_fit_comes_first_not_the_larger():
    """Both discs take "red ball"; the left is larger and brighter, CLIP's crop of the right fits the name better."""
    from clip_vla.perception.identity import IdentityVote
    from clip_vla.perception.suggest import named_objects

    probs = np.stack([np.maximum(disc(18, 30, 10, 0.95), disc(60, 30, 6, 0.93)), np.full((H, W), 0.1, np.float32)])
    without_clip = named_objects(probs, ["red ball"], 0, [], [1], _Perception(), 0.3)
    assert [d.centroid[0] < 40 for d in without_clip] == [True, False]

    def votes(regions):  # p_CLIP("red ball"): 0.2 on the left crop, 0.9 on the right one
        return [IdentityVote("red ball", {"red ball": 0.2 if np.nonzero(r)[1].mean() < 40 else 0.9}, 0.0)
                for r in regions]

    with_clip = named_objects(probs, ["red ball"], 0, [], [1], _Perception(), 0.3, votes=votes)
    assert [d.centroid[0] < 40 for d in with_clip] == [False, True]
