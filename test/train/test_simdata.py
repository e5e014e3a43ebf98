"""Training frames from the simulator: the gripper in view (empty, holding, over a fixture), labelled.

Real MuJoCo renders (EGL), no model.
"""
import numpy as np
import pytest

pytest.importorskip("mujoco")

from clip_vla.train.simdata import GRIPPER_VIEWS, parse_views, render_sample  # noqa: E402

SEED = 5_000_123


def _pixels(obs, phrase):
    ids = [k for k, v in obs.labels.items() if v == phrase]
    return int(np.isin(obs.segmentation, ids).sum())


def test_the_default_frame_parks_the_gripper_out_of_view():
    obs, _ = render_sample(SEED, width=160, height=120)
    assert _pixels(obs, "gripper") == 0


@pytest.mark.parametrize("view", [v for v in GRIPPER_VIEWS if v != "home"])
def test_every_gripper_view_shows_the_gripper_and_keeps_the_scene(view):
    base, task0 = render_sample(SEED, width=160, height=120)
    obs, task = render_sample(SEED, width=160, height=120, gripper_views={view: 1.0})
    assert _pixels(obs, "gripper") > 50
    assert task.command == task0.command and sorted(obs.labels.values()) == sorted(base.labels.values())


def test_a_holding_frame_shows_the_target_lifted_in_the_hand():
    """The place step's view: the object up in the gripper, still labelled as itself."""
    from clip_vla.sim.world import TabletopWorld

    obs, task = render_sample(SEED, width=160, height=120, gripper_views={"holding": 1.0})
    assert _pixels(obs, task.object) > 0
    with TabletopWorld(seed=SEED, n_distractors=1, width=160, height=120) as world:
        from clip_vla.train import simdata

        rng = np.random.default_rng(0)
        simdata._pose_gripper(world, rng, "approach")
        assert world.held_object() == world.task.object
        xyz, _ = world.object_pose(world.task.object)
        assert xyz[2] > world.rest[world.task.object][0][2] + 0.05


def test_gripper_views_are_parsed_with_clear_errors():
    assert parse_views("home=0.4,holding=0.6") == {"home": 0.4, "holding": 0.6}
    assert parse_views("") is None and parse_views(None) is None
    for bad in ("arm=1", "home", "home=-1", "home=0,hover=0"):
        with pytest.raises(ValueError):
            parse_views(bad)


def test_generate_records_its_views_and_refuses_unknown_ones(tmp_path, capsys):
    import json

    from clip_vla.train.cli import main

    args = ["--task", "generate", "--out", str(tmp_path / "d"), "--count", "2", "--quiet", "--seed-base", str(SEED)]
    assert main(args + ["--gripper-views", "arm=1"]) == 2
    assert "--gripper-views" in capsys.readouterr().err
    assert main(args + ["--gripper-views", "holding=1", "--look-alikes", "1"]) == 0
    meta = json.loads((tmp_path / "d" / "dataset.json").read_text())
    assert meta["gripper_views"] == {"holding": 1.0} and meta["look_alikes"] == 1.0
    rows = [json.loads(line) for line in (tmp_path / "d" / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all("gripper" in r["labels"].values() for r in rows)
