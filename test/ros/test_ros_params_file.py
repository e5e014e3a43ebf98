"""A bad ``--params-file`` stops vla_node with one line (file, key, expected) and exit 2; unknown names warn.

Each case runs the real console script as a subprocess: the value errors end the node while it
declares its parameters (before any model loads), so these take a second or two each.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

pytest.importorskip("rclpy")

from clip_vla.core.config import ConfigError, default_config_path  # noqa: E402
from clip_vla.ros import params  # noqa: E402
from clip_vla.testing.harness import NodeProcess, node_executable, unique_domain_id  # noqa: E402


def run_node(tmp_path: Path, text: str) -> subprocess.CompletedProcess:
    path = tmp_path / "params.yaml"
    path.write_text(text)
    env = dict(os.environ, ROS_DOMAIN_ID=str(unique_domain_id(40)), RCUTILS_COLORIZED_OUTPUT="0")
    return subprocess.run(node_executable() + ["--ros-args", "--params-file", str(path)], env=env,
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("text, line", [
    ("/**/clip_vla:\n  ros__parameters:\n    perception:\n      mask_threshold: high\n",
     "perception.mask_threshold: expected a number in [0.0, 1.0] (ROS type double, not string), got 'high'"),
    ("/**:\n  ros__parameters:\n    sync_tolerance: 1\n",
     "sync_tolerance: expected a number in [0.0, 10.0] (ROS type double, not integer; write 1.0, not 1), got 1"),
    ("clip_vla:\n  ros__parameters:\n    max_rate: 0.0\n",
     "max_rate: expected a number in [0.01, 1000.0], got 0.0"),
    ("/**:\n  ros__parameters:\n    command_queue_size: 0\n",
     "command_queue_size: expected an integer in [1, 10000], got 0"),
    ("/**:\n  ros__parameters:\n    mode: fast\n",
     "mode: expected one of: on_command, continuous, got 'fast'"),
    ("/**:\n  ros__parameters:\n    max_rate: [1.0,\n",
     "invalid YAML at line 4, column 1"),
    ("- /**\n- clip_vla\n",
     "expected a mapping (key: value) at the top level of the parameter file, got a list"),
    ("/**:\n  max_rate: 1.0\n",
     "/**/max_rate: expected a node name mapping to 'ros__parameters', got 1.0"),
], ids=["wrong_type", "integer_for_double", "out_of_range", "int_out_of_range", "bad_choice", "bad_yaml",
        "list_top_level", "no_ros_parameters"])
def test_a_bad_parameter_file_is_one_line_and_exit_2(tmp_path, text, line):
    result = run_node(tmp_path, text)
    assert result.returncode == 2, result.stderr[-2000:]
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 1 and errors[0].startswith(f"vla_node: error: {tmp_path / 'params.yaml'}: {line}"), \
        result.stderr
    assert "Traceback" not in result.stdout


def test_a_bad_override_is_one_line_and_exit_2():
    env = dict(os.environ, ROS_DOMAIN_ID=str(unique_domain_id(41)))
    result = subprocess.run(node_executable() + ["--ros-args", "-p", "max_rate:=fast"], env=env,
                            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines() == [
        "vla_node: error: --ros-args -p: max_rate: expected a number in [0.01, 1000.0] (ROS type double, not string), "
        "got 'fast'"]


def test_a_misspelled_name_warns_with_the_close_match_and_the_node_starts(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("/**:\n  ros__parameters:\n    max_frame_agee: 2.0\n    use_sim_time: false\n"
                    "    tf_timeout: 1e-2\n"  # a double to rcl (a string to PyYAML): accepted
                    "    perception:\n      mask_treshold: 0.3\n"
                    "other_node:\n  ros__parameters:\n    whatever: 1\n")
    proc = NodeProcess({"autostart": False}, params_file=str(path), domain_id=unique_domain_id(42)).start()
    try:
        deadline = time.monotonic() + 60
        while "TF:" not in proc.output() and proc.alive() and time.monotonic() < deadline:
            time.sleep(0.1)  # the node logs its TF backend once it is built
        out = proc.output()
        assert proc.alive(), out
    finally:
        rc = proc.stop(signal.SIGINT, timeout=10.0)
    assert rc == 0, out
    warnings = [line for line in out.splitlines() if "is not a parameter of" in line]
    assert len(warnings) == 2, out  # use_sim_time is rclpy's own; other_node's block is not ours
    assert f"{path}: 'max_frame_agee' is not a parameter of /clip_vla: ignored (did you mean 'max_frame_age'?)" \
        in warnings[0]
    assert "'perception.mask_treshold' is not a parameter of /clip_vla: ignored (did you mean " \
        "'perception.mask_threshold'?)" in warnings[1]


# ---- the parts, without a node
def test_params_file_paths_come_from_the_ros_args_sections_only():
    argv = ["vla_node", "--params-file", "not_ros.yaml", "--ros-args", "-p", "a:=1", "--params-file", "a.yaml",
            "--", "--params-file", "app.yaml", "--ros-args", "--params-file", "b.yaml"]
    assert params.params_file_paths(argv) == ["a.yaml", "b.yaml"]


@pytest.mark.parametrize("pattern, fqn, applies", [
    ("/**", "/clip_vla", True), ("/**", "/robot/arm/clip_vla", True),
    ("/**/clip_vla", "/clip_vla", True), ("/**/clip_vla", "/robot/clip_vla", True),
    ("clip_vla", "/clip_vla", True), ("clip_vla", "/robot/clip_vla", False),
    ("/robot/*", "/robot/clip_vla", True), ("/*", "/robot/clip_vla", False),
    ("/robot/clip_vla", "/other/clip_vla", False), ("clip_vla_sim", "/clip_vla", False),
])
def test_node_keys_match_as_rcl_matches_them(pattern, fqn, applies):
    assert params.node_name_matches(pattern, fqn) is applies


def test_the_shipped_parameter_file_gives_declared_names_only():
    (shipped,) = params.read_params_files(["--ros-args", "--params-file", str(default_config_path())])
    names = set(params.declared_parameter_names())
    assert set(shipped.blocks) == {"/**/clip_vla"} and set(shipped.blocks["/**/clip_vla"]) <= names


def test_nested_node_names_and_where_a_value_came_from(tmp_path):
    first, second = tmp_path / "a.yaml", tmp_path / "b.yaml"
    first.write_text("robot:\n  clip_vla:\n    ros__parameters:\n      max_rate: 2.0\n      mode: on_command\n")
    second.write_text("/**:\n  ros__parameters:\n    max_rate: 3.0\n")
    files = params.read_params_files(["--ros-args", "--params-file", str(first), "--params-file", str(second)])
    assert files[0].blocks == {"robot/clip_vla": {"max_rate": 2.0, "mode": "on_command"}}
    assert params.override_source("max_rate", files, "/robot/clip_vla") == str(second)  # the last file wins
    assert params.override_source("mode", files, "/robot/clip_vla") == str(first)
    assert params.override_source("mode", files, "/other/clip_vla") == params.OVERRIDE


def test_overrides_are_checked_as_rcl_parsed_them():
    declared = set(params.declared_parameter_names()).__contains__
    assert params.check_overrides({"tf_timeout": 0.01, "max_rat": 1.0}, [], "/clip_vla", declared) == [
        "--ros-args -p: 'max_rat' is not a parameter of /clip_vla: ignored (did you mean 'max_rate'?)"]
    with pytest.raises(ConfigError, match=r"^--ros-args -p: max_rate: expected a number"):
        params.check_overrides({"max_rate": 5}, [], "/clip_vla", declared)
