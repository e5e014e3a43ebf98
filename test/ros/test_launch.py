"""Launch files: they compile, every parameter/argument they set exists where it is set, and
they do what their arguments and docstrings say.

launch/launch_ros cannot be installed here (they come with a ROS distribution, not from PyPI),
so the files are checked two ways: as source (ast), and by running ``generate_launch_description``
against a stand-in of the launch API (``StandIn`` below) whose classes only record how they were
built. The stand-in has behaviour in three places only, each what launch itself does:
``LaunchConfiguration.perform`` reads the context's value, ``IfCondition``/``UnlessCondition``
read it as launch reads booleans (true/false/1/0, any case), and the context says whether the
launch is shutting down. Event callbacks and opaque functions are then called with that context,
so what happens when ``ros2 bag play`` exits is tested, not only that a handler exists. Where
launch_ros is importable the launch descriptions are also built for real.
"""
from __future__ import annotations

import ast
import importlib.util
import re
import sys
import types
from pathlib import Path
from typing import Any, Dict, Iterator, List, Set

import pytest
import yaml

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


# --------------------------------------------------------------------------- the launch API stand-in
class Recorded:
    """Any launch/launch_ros class: keeps its constructor arguments, does nothing else."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args, self.kwargs = args, kwargs

    def __repr__(self) -> str:
        return f"{type(self).__name__}{self.args}"


class LaunchConfiguration(Recorded):
    def perform(self, context: "Context") -> str:
        return context.launch_configurations[self.args[0]]


class IfCondition(Recorded):
    """launch.conditions.IfCondition: the spellings of launch's evaluate_condition_expression."""

    def evaluate(self, context: "Context") -> bool:
        value = self.args[0].perform(context).strip().lower()
        if value not in ("true", "1", "false", "0"):
            raise ValueError(f"not a launch boolean: {value!r}")
        return value in ("true", "1")


class UnlessCondition(IfCondition):
    def evaluate(self, context: "Context") -> bool:
        return not super().evaluate(context)


class Context:
    """The part of launch.LaunchContext the launch files read."""

    def __init__(self, is_shutdown: bool = False, **configurations: str) -> None:
        self.launch_configurations = dict(configurations)
        self.is_shutdown = is_shutdown


SPECIAL = {cls.__name__: cls for cls in (LaunchConfiguration, IfCondition, UnlessCondition)}
MODULES = ("launch", "launch.actions", "launch.conditions", "launch.event_handlers", "launch.events",
           "launch.events.process", "launch.launch_description_sources", "launch.substitutions",
           "launch_ros", "launch_ros.actions", "launch_ros.parameter_descriptions", "launch_ros.substitutions")


def _stand_in_module(name: str) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__path__ = []  # a package, so "launch.actions" imports through it
    classes: Dict[str, type] = {}

    def getattr_(attr: str) -> type:
        if attr.startswith("__"):
            raise AttributeError(attr)
        return SPECIAL.get(attr) or classes.setdefault(attr, type(attr, (Recorded,), {}))

    module.__getattr__ = getattr_
    return module


@pytest.fixture()
def load(monkeypatch):
    """``load("replay")`` -> (the launch file as a module, its LaunchDescription's entities)."""
    for name in MODULES:
        monkeypatch.setitem(sys.modules, name, _stand_in_module(name))

    def _load(stem: str):
        path = REPO / "launch" / f"{stem}.launch.py"
        spec = importlib.util.spec_from_file_location(f"stand_in_{stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        description = module.generate_launch_description()
        assert type(description).__name__ == "LaunchDescription"
        return module, list(description.args[0])

    return _load


def _walk(value: Any) -> Iterator[Recorded]:
    """Every recorded entity in a tree of entities, lists, tuples, dicts and dict items."""
    if isinstance(value, Recorded):
        yield value
        for item in list(value.args) + list(value.kwargs.values()):
            yield from _walk(item)
    elif isinstance(value, dict):
        for item in value.items():
            yield from _walk(item)
    elif isinstance(value, (list, tuple, type({}.items()))):
        for item in value:
            yield from _walk(item)


def _find(entities: Any, kind: str) -> List[Recorded]:
    """Each entity of a kind once (a handler's target_action is also reached through the handler)."""
    unique = {id(e): e for e in _walk(entities) if type(e).__name__ == kind}
    return list(unique.values())


def _declared(entities: Any) -> Dict[str, Any]:
    """name -> default of every DeclareLaunchArgument."""
    return {d.args[0]: d.kwargs.get("default_value") for d in _find(entities, "DeclareLaunchArgument")}


def _include_of_main(entities: Any) -> Recorded:
    includes = [i for i in _find(entities, "IncludeLaunchDescription") if "clip_vla.launch.py" in repr(i.args)]
    assert len(includes) == 1
    return includes[0]


def _bag_process(entities: Any, verb: str) -> Recorded:
    found = [p for p in _find(entities, "ExecuteProcess") if p.kwargs["cmd"][:3] == ["ros2", "bag", verb]]
    assert len(found) == 1, f"one 'ros2 bag {verb}' process, found {found}"
    return found[0]


def _exit_handler(entities: Any, target: Recorded):
    """The on_exit callback registered for ``target``'s exit (OnProcessExit inside RegisterEventHandler)."""
    handlers = [h for r in _find(entities, "RegisterEventHandler") for h in _find(r, "OnProcessExit")
                if h.kwargs.get("target_action") is target]
    assert len(handlers) == 1, "one OnProcessExit handler per ros2 bag process"
    return handlers[0].kwargs["on_exit"]


def _exited(code: int) -> types.SimpleNamespace:
    return types.SimpleNamespace(returncode=code)  # launch.events.process.ProcessExited, as read


# --------------------------------------------------------------------------- clip_vla.launch.py
def test_params_file_key_applies_under_a_namespace(load):
    module, _ = load("clip_vla")
    doc = next(d for name, _, d in module.ARGUMENTS if name == "params_file")
    assert "/**/clip_vla:" in doc, "a file keyed 'clip_vla:' is ignored once namespace is set"
    assert "clip_vla: ros__parameters" not in doc.replace("/**/clip_vla:", "")
    shipped = yaml.safe_load((REPO / "config" / "clip_vla.yaml").read_text(encoding="utf-8"))
    assert list(shipped) == ["/**/clip_vla"], "the description names the key the shipped file uses"


def test_lifecycle_command_in_the_docstring_shows_the_namespace(load):
    module, _ = load("clip_vla")
    assert re.search(r"ros2 lifecycle set /\w+/clip_vla (configure|activate)", module.__doc__), \
        "the node's lifecycle name includes the namespace when one is set"


# --------------------------------------------------------------------------- included arguments
@pytest.mark.parametrize("stem", ["sim", "replay"])
def test_arguments_given_to_the_node_launch_file_are_settable(load, stem):
    """``ros2 launch -s`` lists the included file's arguments: a literal in the include drops the user's value."""
    _, entities = load(stem)
    declared = _declared(entities)
    for name, value in _include_of_main(entities).kwargs["launch_arguments"]:
        assert isinstance(value, LaunchConfiguration), f"{stem}.launch.py fixes '{name}' to {value!r}"
        assert value.args[0] in declared, f"{stem}.launch.py passes undeclared '{value.args[0]}'"


def test_sim_defaults_are_the_bridged_topics_and_sim_time_reaches_every_node(load):
    _, entities = load("sim")
    declared = _declared(entities)
    bridged = {t["ros_topic_name"] for t in yaml.safe_load((REPO / "config" / "gz_bridge.yaml").read_text())}
    for name in ("image_topic", "depth_topic", "camera_info_topic"):
        assert declared[name] in bridged, f"sim.launch.py's {name} default is not a bridged topic"
    assert declared["use_sim_time"] == "true"
    for node in _find(entities, "Node"):
        values = [p["use_sim_time"] for p in node.kwargs["parameters"] if "use_sim_time" in p]
        follows = [[c.args[0] for c in _find(v, "LaunchConfiguration")] == ["use_sim_time"] for v in values]
        assert follows and all(follows), f"{node.kwargs['name']} ignores use_sim_time"


def test_replay_passes_image_reliability_with_best_effort_by_default(load):
    _, entities = load("replay")
    assert _declared(entities)["image_reliability"] == "best_effort"
    arguments = dict(_include_of_main(entities).kwargs["launch_arguments"])
    assert arguments["image_reliability"].args == ("image_reliability",)


# --------------------------------------------------------------------------- replay: the bag processes
def test_replay_ends_after_playback_and_fails_with_the_player(load):
    module, entities = load("replay")
    on_exit = _exit_handler(entities, _bag_process(entities, "play"))
    # Playback finished: shut down after stop_delay, so the node answers the last commands.
    actions = on_exit(_exited(0), Context())
    timers = _find(actions, "TimerAction")
    assert len(timers) == 1 and timers[0].kwargs["period"].args == ("stop_delay",)
    assert _find(timers[0].kwargs["actions"], "Shutdown")
    assert "stop_delay" in _declared(entities)
    # The player failed: launch-level error (ros2 launch exits 1), naming the player's code.
    with pytest.raises(module.BagToolFailed, match="ros2 bag play exited with code 3"):
        on_exit(_exited(3), Context())
    # Exits caused by our own shutdown mean nothing.
    assert on_exit(_exited(-2), Context(is_shutdown=True)) is None


@pytest.mark.parametrize("debug, recorded", [("1", True), ("True", True), ("true", True), ("0", False),
                                             ("FALSE", False)])
def test_replay_records_the_namespaced_outputs_and_stops_with_the_recorder(load, debug, recorded):
    module, entities = load("replay")
    opaque = _find(entities, "OpaqueFunction")
    assert len(opaque) == 1 and opaque[0].kwargs["condition"].args[0].args == ("record",)
    context = Context(namespace="/robot1", output="out", record_debug_image=debug)
    actions = opaque[0].kwargs["function"](context)
    record = _bag_process(actions, "record")
    topics = record.kwargs["cmd"][5:]
    assert record.kwargs["cmd"][3:5] == ["--output", "out"]
    assert "/robot1/clip_vla/status" in topics and "/diagnostics" in topics
    assert ("/robot1/clip_vla/debug_image" in topics) is recorded
    on_exit = _exit_handler(actions, record)
    assert _find(on_exit(_exited(0), Context()), "Shutdown"), "a recorder that stops ends the replay"
    with pytest.raises(module.BagToolFailed, match="ros2 bag record exited with code 1"):
        on_exit(_exited(1), Context())
    assert on_exit(_exited(0), Context(is_shutdown=True)) is None
