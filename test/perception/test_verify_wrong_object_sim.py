"""The verifier catches a wrong-object pick on rendered simulator frames with the shipped compact models.

Real MuJoCo render (EGL) and physics, the real shipped CLIPSeg and CLIP, the simulated world's
settings (`clip_vla.sim.settings`), as `clip-vla verify-eval` runs them. Validation scene 50,499
("lift the blue cup"), found on validation seeds 50,460-50,769 and the demo's recovered failure:
grounding takes a larger blue look-alike; the cup, named as the command names it and smaller,
stays where it rested. The sim's rival area fraction (0.5) counts it; 0.7, the setting before,
did not.
"""
import dataclasses

import pytest

pytest.importorskip("mujoco")

SEED = 50_499


@pytest.fixture(scope="module")
def wrong_pick():
    from clip_vla.tools.verify_eval import Evaluation

    evaluation = Evaluation(perception="model")
    try:
        yield evaluation, evaluation.execute(SEED, "pick")
    finally:
        evaluation.close()


def verdict(evaluation, executed, **verify):
    from clip_vla.tools.verify_eval import verify_step

    config = dataclasses.replace(evaluation.pipeline.config.verify, **verify)
    return verify_step(executed, evaluation.pipeline.config.geometry, config, inner=evaluation.perceive)


def test_the_pick_moved_a_look_alike_and_the_verifier_says_wrong_object(wrong_pick):
    from clip_vla.sim.settings import SIM_RIVAL_MIN_AREA_FRACTION

    evaluation, executed = wrong_pick
    assert executed.outcome.command == "lift the blue cup" and executed.outcome.truth is False
    assert evaluation.pipeline.config.verify.rival_min_area_fraction == SIM_RIVAL_MIN_AREA_FRACTION == 0.5
    out = verdict(evaluation, executed)
    assert (out.verdict, out.reason) == ("failure", "wrong_object"), out.measures.get("evidence")
    rival = out.measures["evidence"]["rival_xyz_base"]
    true_rest = executed.outcome.measures["true_rest_xyz"]
    assert abs(rival[0] - true_rest[0]) < 0.03 and abs(rival[1] - true_rest[1]) < 0.03  # the cup itself


def test_the_former_rival_area_fraction_let_it_pass(wrong_pick):
    evaluation, executed = wrong_pick
    out = verdict(evaluation, executed, rival_min_area_fraction=0.7)
    assert (out.verdict, out.reason) == ("success", "object_lifted")
