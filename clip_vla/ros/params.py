"""The node's parameters: every ``ClipVlaConfig.to_flat()`` name plus the node's own.

``parameter_specs()`` is ROS-free (the launch-file test and the README table use it);
``declare_parameters(node)`` declares them all on an rclpy node with descriptors:
a description, a range for every threshold, and ``read_only`` for what needs a re-configure
(the models) or a restart (QoS, autostart).

ROS parameters have no "None" and no empty arrays, so the core's unset values are spelled:
``""`` for an unset string (models.cache_dir, models.revision, vocabulary_file, target_frame)
and ``[0.0]`` for an unset number list (geometry.intrinsics, geometry.camera_to_base_matrix).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from clip_vla.core.config import INSTANCE_SCORES, ClipVlaConfig, GeometryConfig, ModelConfig, PerceptionConfig, WorkspaceConfig

MODES = ("on_command", "continuous")
RELIABILITIES = ("best_effort", "reliable")
UNSET_ARRAY = [0.0]


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


# --------------------------------------------------------------------------- descriptions
_CORE_DOC: Dict[str, Tuple[str, Optional[Tuple[float, float]]]] = {
    "models.clipseg": ("CLIPSeg model: Hugging Face id or local from_pretrained directory", None),
    "models.clip": ("CLIP model for skill scoring: Hugging Face id or local directory", None),
    "models.device": ("auto (CUDA when available) | cpu | cuda | cuda:N", None),
    "models.dtype": ("auto (float16 on CUDA, float32 on CPU) | float32 | float16 | bfloat16", None),
    "models.share_backbone": ("score skills with CLIPSeg's own CLIP backbone (one vision pass per frame)", None),
    "models.cache_dir": ("Hugging Face cache directory; empty: HF_HOME", None),
    "models.local_files_only": ("never contact the hub (offline robots)", None),
    "models.revision": ("model revision (branch, tag or commit); empty: default", None),
    "perception.mask_threshold": ("per-pixel probability a target pixel must clear", (0.0, 1.0)),
    "perception.min_confidence": ("object confidence under which the answer is low_confidence", (0.0, 1.0)),
    "perception.min_area_px": ("smallest connected component kept, pixels at input resolution", (0, 1 << 30)),
    "perception.instance_score": ("which connected component of the target mask is the object: mass (sum of "
                                  "probability, the object covered whole) | mean (most certain per pixel)", None),
    "perception.min_skill_probability": ("a skill guessed by CLIP (no verb) needs this probability", (0.0, 1.0)),
    "perception.skill_temperature": ("softmax temperature over cosine similarities", (1e-6, 100.0)),
    "perception.text_weight": ("weight of instruction-to-skill-text similarity", (0.0, 1.0)),
    "perception.image_weight": ("weight of image-to-skill-prompt similarity", (0.0, 1.0)),
    "perception.prompt_template": ("how an object phrase becomes a CLIPSeg prompt ({object} is replaced)", None),
    "geometry.intrinsics": ("fx, fy, cx, cy (pixels) used when no camera_info arrives; [0.0] = unset", None),
    "geometry.camera_to_base_matrix": ("camera optical frame -> base frame as 16 row-major numbers; "
                                       "[0.0] = use camera_to_base_xyz/rpy (static extrinsics, used without TF)",
                                       None),
    "geometry.camera_to_base_xyz": ("camera optical frame origin in the base frame, metres (static extrinsics)",
                                    None),
    "geometry.camera_to_base_rpy": ("camera optical frame roll, pitch, yaw in the base frame, radians", None),
    "geometry.table_normal": ("table plane normal in the base frame (used without valid depth)", None),
    "geometry.table_height": ("table plane offset along its normal, metres", (-100.0, 100.0)),
    "geometry.depth_scale": ("metres per unit of 16UC1 depth (0.001 for millimetres)", (1e-9, 1000.0)),
    "geometry.depth_min": ("closer depth readings are invalid, metres", (0.0, 1000.0)),
    "geometry.depth_max": ("farther depth readings are invalid, metres", (0.0, 1000.0)),
    "geometry.depth_statistic": ("robust depth over the mask: median | percentile_25 | min_valid", None),
    "geometry.point_estimate": ("3D point when depth is valid: object_centre (centre of an object resting on "
                                "the table) | surface (mask centroid at the robust depth)", None),
    "workspace.x": ("[min, max] of goal x in base_frame, metres; also the token range", None),
    "workspace.y": ("[min, max] of goal y in base_frame, metres; also the token range", None),
    "workspace.z": ("[min, max] of goal z in base_frame, metres; also the token range", None),
    "workspace.bins": ("token bins per dimension", (2, 65536)),
    "vocabulary_file": ("skills/objects vocabulary YAML; empty: the package's config/vocabulary.yaml", None),
    "base_frame": ("robot base frame: workspace bounds and tokens are expressed in it", None),
}
_CORE_CHOICES = {
    "perception.instance_score": INSTANCE_SCORES,
    "geometry.depth_statistic": ("median", "percentile_25", "min_valid"),
    "geometry.point_estimate": ("object_centre", "surface"),
}

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
    ParamSpec("max_command_length", 1000, "characters; longer commands answer bad_command", (1, 1 << 20),
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
    ParamSpec("diagnostics_period", 1.0, "seconds between /diagnostics messages", (0.05, 3600.0), read_only=True,
              core=False),
)


def _ros_value(value: Any) -> Any:
    """A core default as a ROS parameter value (no None, no empty arrays)."""
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        if not value:
            return list(UNSET_ARRAY)
        return [float(v) for v in value]
    return value


def core_defaults() -> Dict[str, Any]:
    """``ClipVlaConfig.to_flat()`` of the defaults, without reading any vocabulary file."""
    flat: Dict[str, Any] = {}
    for section, cls in (("models", ModelConfig), ("perception", PerceptionConfig),
                         ("geometry", GeometryConfig), ("workspace", WorkspaceConfig)):
        for key, value in dataclasses.asdict(cls()).items():
            flat[f"{section}.{key}"] = _ros_value(value)
    flat["vocabulary_file"] = ""
    flat["base_frame"] = "base_link"
    return flat


def parameter_specs() -> Dict[str, ParamSpec]:
    """Every parameter the node declares, by name, in declaration order."""
    specs: Dict[str, ParamSpec] = {}
    for name, default in core_defaults().items():
        description, rng = _CORE_DOC.get(name, (name, None))
        specs[name] = ParamSpec(name, default, description, rng, read_only=name.startswith("models."),
                                choices=_CORE_CHOICES.get(name))
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
    """The core config of parameter values (node-only names are ignored). Raises ConfigError/ValueError."""
    flat = {name: values[name] for name in core_names() if name in values}
    flat = {k: (list(v) if isinstance(v, (tuple, list)) or hasattr(v, "tolist") else v) for k, v in flat.items()}
    return ClipVlaConfig.from_flat(flat, vocabulary=vocabulary)


def validate_node_value(name: str, value: Any) -> Optional[str]:
    """Why ``value`` is not acceptable for node parameter ``name`` (None when it is)."""
    spec = parameter_specs().get(name)
    if spec is None:
        return None
    if spec.choices and str(value) not in spec.choices:
        return f"{name} must be one of {', '.join(spec.choices)}, got '{value}'"
    return None
