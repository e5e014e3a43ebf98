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

from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from clip_vla.core.language import DEFAULT_MAX_LENGTH
from clip_vla.core.config import (UNSET_ARRAY, UNSET_STRINGS, ClipVlaConfig, ConfigError, check_setting, invalid,
                                  settings)

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
    ParamSpec("depth_registered", False, "depth is registered to the colour camera: depth at another resolution "
              "is resized to it; when false such depth is refused (bad_input)", core=False),
    ParamSpec("image_reliability", "best_effort", "reliability of the image/depth/camera_info subscriptions "
              "(best_effort also receives from reliable publishers)", choices=RELIABILITIES, read_only=True,
              core=False),
    ParamSpec("command_queue_size", 8, "commands waiting for inference; more answer queue_full", (1, 10000),
              core=False),
    ParamSpec("max_command_length", DEFAULT_MAX_LENGTH, "characters; longer commands answer bad_command", (1, 1 << 20),
              core=False),
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


def declare_parameters(node: Any) -> Dict[str, Any]:
    """Declare every parameter on ``node`` (overrides from --params-file/-p apply); returns the values."""
    specs = parameter_specs()
    node.declare_parameters("", [(name, spec.default, descriptor(spec)) for name, spec in specs.items()])
    return {name: node.get_parameter(name).value for name in specs}


def config_from_values(values: Mapping[str, Any], vocabulary=None) -> ClipVlaConfig:
    """The core config of parameter values (node-only names are ignored).

    Raises:
        ConfigError: an invalid value or rule between values (the config schema's one validator).
    """
    return ClipVlaConfig.from_flat({name: values[name] for name in core_names() if name in values},
                                   vocabulary=vocabulary)


def validate_node_value(name: str, value: Any) -> Optional[str]:
    """Why ``value`` is not acceptable for parameter ``name`` alone (None when it is).

    Core parameters are judged by the config schema (``ros2 param set`` gets its one-line
    message), node parameters by their choices. Rules between core values need the whole set:
    ``config_from_values``.
    """
    spec = parameter_specs().get(name)
    if spec is None:
        return None
    if spec.core:
        try:
            check_setting(name, value)
        except ConfigError as exc:
            return str(exc)
        return None
    if spec.choices and str(value) not in spec.choices:
        return str(invalid(name, value, "one of: " + ", ".join(spec.choices)))
    return None
