"""The node's parameters: every ``ClipVlaConfig.to_flat()`` name plus the node's own.

``parameter_specs()`` is ROS-free (the launch-file test and the README table use it);
``declare_parameters(node)`` declares them all on an rclpy node with descriptors:
a description, a range for every threshold, and ``read_only`` for what needs a re-configure
(the models) or a restart (QoS, autostart).

ROS parameters have no "None" and no empty arrays, so the core's unset values are spelled:
``""`` for an unset string (models.cache_dir, models.revision, vocabulary_file, target_frame),
``[0.0]`` for an unset number list (geometry.intrinsics, geometry.camera_to_base_matrix) and
``[""]`` for an empty string list (suggest.colours, suggest.shapes, suggest.objects).
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from clip_vla.core.framesync import MAX_CAMERA_INFO_AGE
from clip_vla.core.language import DEFAULT_MAX_LENGTH
from clip_vla.core.config import (UNSET_ARRAY, UNSET_STRINGS, ClipVlaConfig, ConfigError, check_setting, flatten,
                                  invalid, load_yaml_mapping, settings)

MODES = ("on_command", "continuous")
RELIABILITIES = ("best_effort", "reliable")


@dataclass(frozen=True)
class ParamSpec:
    name: str
    default: Any
    description: str
    range: Optional[Tuple[float, float]] = None  # inclusive; int range for int parameters
    read_only: bool = False
    choices: Optional[Sequence[str]] = None
    core: bool = True  # part of ClipVlaConfig (else the node's own)

    @property
    def constraints(self) -> str:
        parts = []
        if self.range is not None:
            parts.append(f"in [{self.range[0]}, {self.range[1]}]")
        if self.choices:
            parts.append("one of: " + ", ".join(self.choices))
        if self.read_only:
            parts.append("read-only at runtime")
        return "; ".join(parts)


# --------------------------------------------------------------------------- parameters
# The core's parameters (descriptions, ranges, choices) come from the config schema
# (``clip_vla.core.config.settings``); these are the node's own.
NODE_PARAMETERS: Tuple[ParamSpec, ...] = (
    ParamSpec("mode", "on_command", "on_command: one goal per command from the freshest frame; continuous: "
              "re-localise the last command's object on every new frame (visual servoing) until a new "
              "command or 'stop'", choices=MODES, core=False),
    ParamSpec("max_frame_age", 1.0, "seconds: a command answers stale_frame when the latest colour frame "
              "arrived longer ago than this", (0.0, 3600.0), core=False),
    ParamSpec("max_rate", 5.0, "Hz: most goal updates per second in continuous mode", (0.01, 1000.0), core=False),
    ParamSpec("sync_tolerance", 0.05, "seconds: depth and camera_info are paired with a colour frame only when "
              "their stamps are this close", (0.0, 10.0), core=False),
    ParamSpec("max_camera_info_age", MAX_CAMERA_INFO_AGE, "seconds: without a camera_info of the frame's stamp, "
              "the latest one of its size stands in for it only if it arrived at most this long before the frame "
              "(a stopped camera_info stream may describe another calibration); 0: no bound, for a camera_info "
              "published once", (0.0, 1e6), core=False),
    ParamSpec("depth_registered", False, "depth is registered to the colour camera: depth at another resolution "
              "is resized to it; when false such depth is refused (bad_input)", core=False),
    ParamSpec("image_reliability", "best_effort", "reliability of the image/depth/camera_info subscriptions "
              "(best_effort also receives from reliable publishers)", choices=RELIABILITIES, read_only=True,
              core=False),
    ParamSpec("command_queue_size", 8, "commands waiting for inference; more answer queue_full", (1, 10000),
              core=False),
    ParamSpec("max_command_length", DEFAULT_MAX_LENGTH, "characters; longer commands answer bad_command", (1, 1 << 20),
              core=False),
    ParamSpec("verify_steps", True, "after the executor reports a step done, check it on the first frame stamped "
              "after the report (clip_vla.perception.verify) and retry or re-plan a failed step (one the "
              "executor reports failed too); false: the executor's report is final", core=False),
    ParamSpec("max_retries", 2, "a step that fails verification (or that the executor reports failed) is "
              "re-grounded and retried at most this often (re-picking a dropped object, or putting a held one "
              "back before a pick, is part of its retry)", (0, 100), core=False),
    ParamSpec("target_frame", "", "frame of ~/goal_pose and ~/markers; empty: base_frame (TF needed otherwise)",
              core=False),
    ParamSpec("use_tf", True, "look up camera frame -> base_frame in TF at the image stamp when tf2_ros is "
              "importable; false (or no tf2_ros): static geometry.camera_to_base_*", read_only=True, core=False),
    ParamSpec("tf_timeout", 0.1, "seconds to wait for a transform", (0.0, 10.0), core=False),
    ParamSpec("max_image_pixels", 8192 * 8192, "width*height above which an image is refused before "
              "allocating", (1, 1 << 31), core=False),
    ParamSpec("autostart", True, "configure and activate at start-up (no lifecycle manager needed); false: "
              "wait for lifecycle transitions", read_only=True, core=False),
    ParamSpec("suggest_rate", 0.0, "Hz: suggestion rounds published on ~/suggestions per second (on new "
              "frames); 0: only when ~/suggest is called", (0.0, 100.0), core=False),
    ParamSpec("suggest_timeout", 10.0, "seconds ~/suggest waits for its round before answering that it timed out",
              (0.1, 600.0), core=False),
    ParamSpec("diagnostics_period", 1.0, "seconds between /diagnostics messages", (0.05, 3600.0), read_only=True,
              core=False),
)


def _ros_value(value: Any, kind: str) -> Any:
    """A core default of schema ``kind`` as a ROS parameter value (no None, no empty arrays)."""
    if value is None:
        return ""
    if kind == "strs":
        return [str(v) for v in value] or list(UNSET_STRINGS)
    if isinstance(value, (list, tuple)):
        if not value:
            return list(UNSET_ARRAY)
        return [float(v) for v in value]
    return value


def core_defaults() -> Dict[str, Any]:
    """``ClipVlaConfig.to_flat()`` of the defaults, as ROS values, without reading any vocabulary file."""
    return {key: _ros_value(s.default, s.kind) for key, s in settings().items()}


def parameter_specs() -> Dict[str, ParamSpec]:
    """Every parameter the node declares, by name, in declaration order."""
    specs: Dict[str, ParamSpec] = {}
    for key, s in settings().items():
        specs[key] = ParamSpec(key, _ros_value(s.default, s.kind), s.doc, s.range, read_only=key.startswith("models."),
                               choices=s.choices)
    for spec in NODE_PARAMETERS:
        specs[spec.name] = spec
    return specs


def declared_parameter_names() -> List[str]:
    return list(parameter_specs())


def core_names() -> List[str]:
    return [name for name, spec in parameter_specs().items() if spec.core]


def markdown_table() -> str:
    """The parameter table of the README."""
    rows = ["| parameter | default | description |", "|---|---|---|"]
    for spec in parameter_specs().values():
        extra = f" ({spec.constraints})" if spec.constraints else ""
        if isinstance(spec.default, bool):
            default = f"`{str(spec.default).lower()}`"
        else:
            default = "`\"\"`" if spec.default == "" else f"`{spec.default}`"
        text = f"{spec.description}{extra}".replace("|", "\\|")
        rows.append(f"| `{spec.name}` | {default} | {text} |")
    return "\n".join(rows)


# --------------------------------------------------------------------------- rclpy
def descriptor(spec: ParamSpec):
    from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor

    d = ParameterDescriptor(description=spec.description, read_only=spec.read_only)
    if spec.constraints:
        d.additional_constraints = spec.constraints
    if spec.range is not None:
        lo, hi = spec.range
        if isinstance(spec.default, bool):
            pass
        elif isinstance(spec.default, int):
            d.integer_range = [IntegerRange(from_value=int(lo), to_value=int(hi), step=0)]
        elif isinstance(spec.default, float):
            d.floating_point_range = [FloatingPointRange(from_value=float(lo), to_value=float(hi), step=0.0)]
    return d


def declare_parameters(node: Any, files: Sequence[ParamsFile] = ()) -> Dict[str, Any]:
    """Declare every parameter on ``node`` (overrides from --params-file/-p apply); returns the values.

    The overrides are checked first (``check_overrides``; ``files``: ``read_params_files``), so
    a bad value is one line, not rclpy's traceback; names the node does not declare are logged
    as warnings.

    Raises:
        ConfigError: an override (file or ``-p``) has the wrong type or is out of range.
    """
    specs = parameter_specs()

    def known(name: str) -> bool:  # rclpy's own (use_sim_time, qos_overrides.*) are known too
        return name in specs or node.has_parameter(name) or name.startswith("qos_overrides.")

    # rclpy keeps what rcl parsed for this node (files and -p, node-name wildcards applied) here,
    # under this name since Foxy; it has no public accessor before declaring.
    overrides = {name: p.value for name, p in getattr(node, "_parameter_overrides", {}).items()}
    for warning in check_overrides(overrides, files, node.get_fully_qualified_name(), known):
        node.get_logger().warning(warning)
    node.declare_parameters("", [(name, spec.default, descriptor(spec)) for name, spec in specs.items()])
    return {name: node.get_parameter(name).value for name in specs}


def config_from_values(values: Mapping[str, Any], vocabulary=None) -> ClipVlaConfig:
    """The core config of parameter values (node-only names are ignored).

    Raises:
        ConfigError: an invalid value or rule between values (the config schema's one validator).
    """
    return ClipVlaConfig.from_flat({name: values[name] for name in core_names() if name in values},
                                   vocabulary=vocabulary)


def ros_type(value: Any) -> str:
    """The ROS parameter type rcl gives a YAML/Python value ("double", "integer[]", ...).

    rclpy refuses a value of another type than the declared default's (``1`` for a double), so
    this is checked before anything else.
    """
    if hasattr(value, "tolist"):  # array.array and numpy values from rclpy
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        kinds = {ros_type(v) for v in value}
        return f"{kinds.pop()}[]" if len(kinds) == 1 else "a list of mixed types" if kinds else "an empty list"
    return {bool: "bool", int: "integer", float: "double", str: "string"}.get(type(value), type(value).__name__)


def expected(spec: ParamSpec) -> str:
    """What a valid value of ``spec`` is, in words (the end of its error message)."""
    if spec.core:
        return settings()[spec.name].expected
    if spec.choices:
        return "one of: " + ", ".join(spec.choices)
    if isinstance(spec.default, bool):
        return "true or false"
    noun = {int: "an integer", float: "a number"}.get(type(spec.default), "a string")
    return f"{noun} in [{spec.range[0]}, {spec.range[1]}]" if spec.range else noun


def validate_node_value(name: str, value: Any) -> Optional[str]:
    """Why ``value`` is not acceptable for parameter ``name`` alone (None when it is).

    The one check of a single value, for ``ros2 param set`` and for parameter files: its ROS
    type, then core parameters by the config schema, node parameters by their choices and range.
    Rules between core values need the whole set: ``config_from_values``.
    """
    spec = parameter_specs().get(name)
    if spec is None:
        return None
    declared, given = ros_type(spec.default), ros_type(value)
    if given != declared:
        hint = "; write 1.0, not 1" if (declared, given) in (("double", "integer"), ("double[]", "integer[]")) else ""
        return str(invalid(name, value, f"{expected(spec)} (ROS type {declared}, not {given}{hint})"))
    if spec.core:
        try:
            check_setting(name, value)
        except ConfigError as exc:
            return str(exc)
        return None
    out_of_range = spec.range is not None and not spec.range[0] <= value <= spec.range[1]
    if (spec.choices and str(value) not in spec.choices) or out_of_range:
        return str(invalid(name, value, expected(spec)))
    return None


# --------------------------------------------------------------------------- parameter files
# rcl reads ``--params-file`` itself: a YAML error ends rclpy.init, a wrong type or range ends
# declare_parameters, each with a traceback, and a misspelled name is ignored. The node reads
# the files first (YAML errors in one line), then checks what rcl parsed before declaring.

@dataclass(frozen=True)
class ParamsFile:
    """One ``--params-file``: its path and its ``ros__parameters`` blocks by node name pattern."""

    path: str
    blocks: Mapping[str, Mapping[str, Any]]  # "/**/clip_vla" -> {"max_rate": 5.0, "perception.x": ...}


def node_blocks(tree: Mapping[str, Any], path: str, prefix: str = "") -> Dict[str, Dict[str, Any]]:
    """The ``ros__parameters`` blocks of a parameter file's top level, by node name pattern, flattened.

    Node names may nest (``robot: {clip_vla: {ros__parameters: ...}}`` is ``/robot/clip_vla``).

    Raises:
        ConfigError: a value where rcl expects a node name or ``ros__parameters`` (rcl's own
            error would end rclpy.init with a traceback); the message names the file.
    """
    blocks: Dict[str, Dict[str, Any]] = {}
    for key, value in tree.items():
        name = f"{prefix}/{str(key).strip('/')}" if prefix else str(key)
        if not isinstance(value, Mapping):
            what = "a mapping of parameters" if key == "ros__parameters" else "a node name mapping to 'ros__parameters'"
            raise ConfigError(f"{name}: expected {what}, got {value!r}", source=path)
        if key == "ros__parameters":
            blocks[prefix or "/"] = flatten(value)
        else:
            blocks.update(node_blocks(value, path, name))
    return blocks


def params_file_paths(argv: Sequence[str]) -> List[str]:
    """The ``--params-file`` paths in ``argv``'s ``--ros-args`` sections (ended by ``--``), in order."""
    paths: List[str] = []
    inside = False
    args = iter(argv)
    for arg in args:
        if arg in ("--ros-args", "--"):
            inside = arg == "--ros-args"
        elif inside and arg == "--params-file":
            path = next(args, None)
            if path is not None:
                paths.append(path)
    return paths


def read_params_files(argv: Sequence[str]) -> List[ParamsFile]:
    """Every ``--params-file`` of ``argv``, parsed (before rclpy.init, which would fail with a traceback).

    Raises:
        ConfigError: a file cannot be read, is not valid YAML, or is not node names over
            ``ros__parameters`` mappings (the message names the file, and the line of a syntax error).
    """
    return [ParamsFile(path, node_blocks(load_yaml_mapping(path, "parameter file"), path))
            for path in params_file_paths(argv)]


def node_name_matches(pattern: str, fqn: str) -> bool:
    """Whether a parameter file's node key applies to the node ``fqn`` (rcl's rules).

    ``/**`` stands for any namespaces, ``*`` for one name; a key without a leading ``/`` is absolute.
    """
    tokens = str(pattern).strip("/").split("/")
    regex = "".join("(/[^/]+)*" if t == "**" else "/[^/]+" if t == "*" else "/" + re.escape(t) for t in tokens)
    return re.fullmatch(regex, fqn) is not None


OVERRIDE = "--ros-args -p"  # the source named for a value that no parameter file gives


def override_source(name: str, files: Sequence[ParamsFile], fqn: str) -> str:
    """Where the node ``fqn``'s value of ``name`` came from: the last file that gives it (rcl applies
    files in order, ``-p`` last), else ``OVERRIDE``."""
    source = OVERRIDE
    for f in files:
        if any(name in values and node_name_matches(pattern, fqn) for pattern, values in f.blocks.items()):
            source = f.path
    return source


def check_overrides(overrides: Mapping[str, Any], files: Sequence[ParamsFile], fqn: str,
                    declared: Callable[[str], bool]) -> List[str]:
    """Check the values rcl parsed for the node ``fqn`` (``overrides``, from ``files`` and ``-p``).

    rcl's own parse is judged, not PyYAML's (they differ: ``1e-3`` is a double to rcl, a string
    to PyYAML); ``files`` only say where a value came from. Returns a warning per name the node
    does not declare, with the closest declared name.

    Raises:
        ConfigError: a value of the wrong type or out of range; one line naming its file (or
            ``-p``), the parameter and what was expected.
    """
    warnings: List[str] = []
    names = declared_parameter_names()
    for name, value in overrides.items():
        if not declared(name):
            close = difflib.get_close_matches(name, names, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            warnings.append(f"{override_source(name, files, fqn)}: '{name}' is not a parameter of {fqn}: "
                            f"ignored{hint}")
            continue
        why = validate_node_value(name, value)
        if why:
            raise ConfigError(why, source=override_source(name, files, fqn))
    return warnings
