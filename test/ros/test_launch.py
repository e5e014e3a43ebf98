"""Launch files: they compile, and every parameter/argument they set exists where it is set.

launch/launch_ros are not installed here, so the files are inspected as source (ast); where
launch_ros is importable the launch descriptions are also built for real.
"""
from __future__ import annotations

import ast
import importlib.util
from pathlib import Path
from typing import Dict, List, Set

import pytest

from clip_vla.ros.params import declared_parameter_names

REPO = Path(__file__).resolve().parents[2]
LAUNCH = sorted((REPO / "launch").glob("*.launch.py"))
BUILTIN_PARAMETERS = {"use_sim_time"}  # declared by rclpy itself on every node


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _name(func: ast.expr) -> str:
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return ""


def _kw(call: ast.Call, name: str):
    return next((k.value for k in call.keywords if k.arg == name), None)


def _const(node) -> object:
    return node.value if isinstance(node, ast.Constant) else None


def _calls(tree: ast.AST, name: str) -> List[ast.Call]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call) and _name(n.func) == name]


def _declared_arguments(tree: ast.AST) -> Set[str]:
    names = {_const(c.args[0]) for c in _calls(tree, "DeclareLaunchArgument") if c.args}
    # clip_vla.launch.py declares from an ARGUMENTS table of (name, default, doc) tuples
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "ARGUMENTS" for t in node.targets):
            for elt in getattr(node.value, "elts", []):
                if isinstance(elt, ast.Tuple) and elt.elts:
                    names.add(_const(elt.elts[0]))
    return {n for n in names if isinstance(n, str)}


def _vla_nodes(tree: ast.AST) -> List[ast.Call]:
    return [c for c in _calls(tree, "Node") + _calls(tree, "LifecycleNode")
            if _const(_kw(c, "package")) == "clip_vla"]


def test_there_are_the_three_launch_files():
    assert {p.name for p in LAUNCH} >= {"clip_vla.launch.py", "sim.launch.py", "replay.launch.py"}


@pytest.mark.parametrize("path", LAUNCH, ids=lambda p: p.name)
def test_compiles_and_defines_generate_launch_description(path):
    code = compile(path.read_text(encoding="utf-8"), str(path), "exec")
    assert code is not None
    tree = _tree(path)
    assert any(isinstance(n, ast.FunctionDef) and n.name == "generate_launch_description" for n in tree.body)


@pytest.mark.parametrize("path", LAUNCH, ids=lambda p: p.name)
def test_parameter_names_exist_in_the_node(path):
    declared = set(declared_parameter_names()) | BUILTIN_PARAMETERS
    for node in _vla_nodes(_tree(path)):
        assert _const(_kw(node, "executable")) == "vla_node"
        assert _const(_kw(node, "name")) == "clip_vla", "the params file key is clip_vla"
        parameters = _kw(node, "parameters")
        assert isinstance(parameters, ast.List)
        for item in parameters.elts:
            if isinstance(item, ast.Dict):
                for key in item.keys:
                    name = _const(key)
                    assert isinstance(name, str), f"{path.name}: parameter names must be literal strings"
                    assert name in declared, f"{path.name} sets '{name}', which vla_node does not declare"


def test_main_launch_file_remaps_every_input():
    nodes = _vla_nodes(_tree(REPO / "launch" / "clip_vla.launch.py"))
    assert len(nodes) == 1
    remapped = {_const(t.elts[0]) for t in _kw(nodes[0], "remappings").elts}
    assert remapped == {"image", "depth", "camera_info", "command"}
    args = _declared_arguments(_tree(REPO / "launch" / "clip_vla.launch.py"))
    assert {"namespace", "params_file", "image_topic", "depth_topic", "camera_info_topic", "device",
            "clipseg_model", "clip_model"} <= args


@pytest.mark.parametrize("path", LAUNCH, ids=lambda p: p.name)
def test_every_launch_configuration_is_declared(path):
    tree = _tree(path)
    used = {_const(c.args[0]) for c in _calls(tree, "LaunchConfiguration") if c.args}
    missing = {u for u in used if isinstance(u, str)} - _declared_arguments(tree)
    assert not missing, f"{path.name} uses undeclared launch arguments {missing}"


@pytest.mark.parametrize("path", LAUNCH, ids=lambda p: p.name)
def test_included_clip_vla_launch_arguments_exist(path):
    main_args = _declared_arguments(_tree(REPO / "launch" / "clip_vla.launch.py"))
    for call in _calls(_tree(path), "IncludeLaunchDescription"):
        if "clip_vla.launch.py" not in ast.dump(call):
            continue
        args = _kw(call, "launch_arguments")
        mapping = args.func.value if isinstance(args, ast.Call) else args  # {...}.items()
        assert isinstance(mapping, ast.Dict)
        keys: Dict[str, ast.expr] = {_const(k): v for k, v in zip(mapping.keys, mapping.values)}
        unknown = set(keys) - main_args
        assert not unknown, f"{path.name} passes {unknown} to clip_vla.launch.py, which does not declare them"


@pytest.mark.parametrize("path", LAUNCH, ids=lambda p: p.name)
def test_referenced_package_files_exist(path):
    tree = _tree(path)
    for call in _calls(tree, "PathJoinSubstitution"):
        parts = call.args[0].elts if call.args and isinstance(call.args[0], ast.List) else []
        if len(parts) != 3:
            continue
        head = ast.dump(parts[0])
        ours = ("FindPackageShare" in head and "'clip_vla'" in head) or (
            isinstance(parts[0], ast.Name) and parts[0].id == "share")  # share = FindPackageShare("clip_vla")
        if ours:
            folder, name = _const(parts[1]), _const(parts[2])
            if isinstance(folder, str) and isinstance(name, str):
                assert (REPO / folder / name).is_file(), f"{path.name} refers to {folder}/{name}, which is missing"


def test_replay_plays_and_records():
    source = (REPO / "launch" / "replay.launch.py").read_text(encoding="utf-8")
    assert '"ros2", "bag", "play"' in source and '"ros2", "bag", "record"' in source


def test_sim_bridges_gazebo():
    source = (REPO / "launch" / "sim.launch.py").read_text(encoding="utf-8")
    assert "ros_gz_bridge" in source and "parameter_bridge" in source and "ros_gz_sim" in source


@pytest.mark.skipif(importlib.util.find_spec("launch_ros") is None, reason="launch_ros not installed here")
@pytest.mark.parametrize("path", LAUNCH, ids=lambda p: p.name)
def test_builds_with_launch_ros(path):
    from launch import LaunchDescription

    spec = importlib.util.spec_from_file_location(path.stem.replace(".", "_"), path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert isinstance(module.generate_launch_description(), LaunchDescription)
