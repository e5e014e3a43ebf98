"""The `clip-vla` console script, run as a user runs it (a subprocess)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

CLI = str(Path(sys.executable).parent / "clip-vla")


def run(*args, env=None, timeout=120):
    full_env = dict(os.environ, HF_HUB_OFFLINE="1", **(env or {}))
    return subprocess.run([CLI, *args], capture_output=True, text=True, timeout=timeout, env=full_env)


def test_parse_prints_json():
    out = run("parse", "Put the red cup into the bowl, please.")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"skill": "place", "object": "red cup", "destination": "bowl", "steps": [
        {"skill": "pick", "object": "red cup", "destination": None, "direction": None},
        {"skill": "place", "object": "red cup", "destination": "bowl", "direction": None}]}
    out = run("parse", "pick up the apple")
    assert json.loads(out.stdout) == {"skill": "pick", "object": "apple", "destination": None, "steps": [
        {"skill": "pick", "object": "apple", "destination": None, "direction": None}]}


def test_parse_lists_the_steps_of_a_compound_command():
    out = run("parse", "Take the red cube and put it in the blue bin, then push the box left")
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert (got["skill"], got["object"]) == ("pick", "red cube")  # the main (first) step's fields
    assert [(s["skill"], s["object"], s["destination"], s["direction"]) for s in got["steps"]] == [
        ("pick", "red cube", None, None), ("place", "red cube", "blue bin", None), ("push", "box", None, "left")]
    out = run("parse", "pick up the cup, then the ball")
    assert out.returncode == 2 and "'the ball'" in json.loads(out.stdout)["error"]


def test_parse_rejects_empty_command():
    out = run("parse", "   ")
    assert out.returncode == 2 and "empty" in json.loads(out.stdout)["error"]


@pytest.fixture()
def scene(tmp_path):
    rgb = np.random.default_rng(1).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    image = tmp_path / "scene.png"
    depth = tmp_path / "depth.png"
    cv2.imwrite(str(image), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(depth), np.full((120, 160), 800, np.uint16))
    return image, depth


def test_infer_prints_goal_json(tiny_models, open_vocabulary_file, scene, tmp_path):
    image, depth = scene
    config = tmp_path / "params.yaml"
    config.write_text(
        "clip_vla:\n  ros__parameters:\n    perception: {mask_threshold: 0.0, min_confidence: 0.0}\n"
    )
    annotated = tmp_path / "annotated.png"
    out = run("infer", "--image", str(image), "--depth", str(depth), "--intrinsics", "100,100,79.5,59.5",
              "--command", "pick up the red cup", "--config", str(config), "--clipseg", tiny_models["clipseg"],
              "--clip", tiny_models["clip"], "--vocabulary", open_vocabulary_file, "--device", "cpu",
              "--annotate", str(annotated))
    assert out.returncode == 0, out.stderr
    goal = json.loads(out.stdout)
    assert goal["accepted"] and goal["cmd"] == "pick" and goal["object"] == "red cup"
    assert goal["xyz_base"] == pytest.approx([0.5, 0.0, 0.0], abs=1e-4)
    assert len(goal["tokens"]) == 5 and goal["tokens_text"] == " ".join(map(str, goal["tokens"]))
    assert goal["models"]["clipseg"] == tiny_models["clipseg"] and goal["device"] == "cpu"
    assert cv2.imread(str(annotated)).shape == (120, 160, 3)


def test_infer_no_action_exit_code(tiny_models, scene):
    image, depth = scene
    out = run("infer", "--image", str(image), "--command", "stop", "--clipseg", tiny_models["clipseg"],
              "--clip", tiny_models["clip"], "--intrinsics", "100,100,79.5,59.5")
    assert out.returncode == 3, out.stderr
    assert json.loads(out.stdout)["reason"] == "stopped"


def test_infer_missing_weights_says_what_to_do(scene, tmp_path):
    image, _ = scene
    out = run("infer", "--image", str(image), "--command", "pick up the cup",
              env={"HF_HOME": str(tmp_path / "empty-cache")})
    assert out.returncode == 2
    assert "CIDAS/clipseg-rd64-refined" in out.stderr and "download-models" in out.stderr
    assert "Traceback" not in out.stderr


def test_infer_unreadable_image_is_a_clear_error(tmp_path):
    out = run("infer", "--image", str(tmp_path / "nope.png"), "--command", "pick up the cup")
    assert out.returncode == 2 and "cannot read image" in out.stderr


def test_help_lists_subcommands():
    out = run("--help")
    assert out.returncode == 0
    for name in ("infer", "parse", "download-models"):
        assert name in out.stdout
