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


# --------------------------------------------------------------------------- one clear line per bad input
BAD_CONFIGS = {
    "mask_threshold_word": ("perception: {mask_threshold: high}\n", "perception.mask_threshold", "a number in"),
    "bins_word": ("workspace: {bins: many}\n", "workspace.bins", "an integer in"),
    "axis_scalar": ("workspace: {x: 5}\n", "workspace.x", "2 numbers"),
    "top_level_list": ("- perception\n- workspace\n", "top level", "mapping"),
    "yaml_syntax": ("perception: {mask_threshold: 0.3\nworkspace: [\n", "invalid YAML at line", "expected"),
    "device_number": ("models: {device: 5}\n", "models.device", "a string"),
    "share_backbone_no": ('models: {share_backbone: "no"}\n', "models.share_backbone", "true or false"),
    "intrinsics_words": ("geometry: {intrinsics: [a, b, c, d]}\n", "geometry.intrinsics", "4 numbers"),
    "depth_range_inverted": ("geometry: {depth_min: 5.0, depth_max: 1.0}\n", "geometry.depth_min", "less than"),
    "unknown_key": ("perception: {mask_treshold: 0.3}\n", "perception.mask_treshold", "unknown setting"),
}


def one_error_line(out, prog="clip-vla infer"):
    """Exit 2 and exactly one line on stderr, starting with the sub-command's name."""
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2, (out.returncode, out.stderr)
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    assert lines[0].startswith(f"{prog}: error: "), lines[0]
    return lines[0]


@pytest.mark.parametrize("case", list(BAD_CONFIGS))
def test_bad_config_file_is_one_line_naming_file_key_and_expectation(tmp_path, scene, case):
    text, key, expected = BAD_CONFIGS[case]
    config = tmp_path / f"{case}.yaml"
    config.write_text(text)
    line = one_error_line(run("infer", "--image", str(scene[0]), "--command", "pick up the cup",
                              "--config", str(config)))
    assert str(config) in line and key in line and expected in line


def test_bad_device_flag_names_the_flag_and_the_choices(scene):
    line = one_error_line(run("infer", "--image", str(scene[0]), "--command", "pick up the cup",
                              "--device", "banana"))
    assert "--device" in line and "models.device" in line and "'banana'" in line and "cuda:N" in line


@pytest.mark.parametrize("content", ["pick up things\nand more\n", "skills: [\n", "skills: [{name: pick}]\n"],
                         ids=["text_file", "invalid_yaml", "skill_without_token"])
@pytest.mark.parametrize("sub", ["infer", "parse"])
def test_bad_vocabulary_file_is_one_line(tmp_path, scene, content, sub):
    vocabulary = tmp_path / "vocabulary.yaml"
    vocabulary.write_text(content)
    args = (["infer", "--image", str(scene[0]), "--command", "pick up the cup"] if sub == "infer"
            else ["parse", "pick up the cup"])
    line = one_error_line(run(*args, "--vocabulary", str(vocabulary)), prog=f"clip-vla {sub}")
    assert str(vocabulary) in line


def test_replay_reads_config_through_the_same_validator(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("perception: {mask_threshold: high}\n")
    line = one_error_line(run("replay", str(tmp_path / "no-bag"), "--config", str(config)), prog="clip-vla replay")
    assert str(config) in line and "perception.mask_threshold" in line


def damaged_png(tmp_path):
    data = bytearray(cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))[1].tobytes())
    data[29] ^= 0xFF  # the IHDR chunk's CRC: libpng prints "libpng error: IHDR: CRC error" itself
    path = tmp_path / "damaged.png"
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("which", ["damaged", "missing", "text"])
def test_unreadable_image_is_exactly_one_line(tmp_path, which):
    path = damaged_png(tmp_path) if which == "damaged" else tmp_path / "notes.png"
    if which == "text":
        path.write_text("hello")
    line = one_error_line(run("infer", "--image", str(path), "--command", "pick up the cup"))
    assert f"'{path}'" in line and "image" in line


def test_unreadable_depth_is_exactly_one_line(tmp_path, scene):
    line = one_error_line(run("infer", "--image", str(scene[0]), "--depth", str(damaged_png(tmp_path)),
                              "--command", "pick up the cup"))
    assert "depth" in line and "damaged.png" in line


def test_config_flags_come_from_the_schema():
    """--help of infer shows the parameter each flag sets, with the schema's description."""
    out = run("infer", "--help")
    assert out.returncode == 0
    for flag, key in (("--clipseg", "models.clipseg"), ("--device", "models.device"),
                      ("--vocabulary", "vocabulary_file")):
        assert flag in out.stdout and key in out.stdout
