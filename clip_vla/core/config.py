"""Configuration of the ROS-free core, as plain dataclasses.

One ``ClipVlaConfig`` describes everything the pipeline needs: which models,
the skill/object vocabulary, camera geometry, workspace bounds and the
thresholds of the safety envelope. It loads from the same YAML file the ROS
node reads (``clip_vla: ros__parameters:``), so a notebook, the CLI and the
node all see identical settings.

Units and frames follow REP-103/REP-105: metres and radians; the base frame is
x forward, y left, z up; the camera optical frame is z forward, x right, y down.
"""
from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import yaml

INSTANCE_SCORES = ("mass", "mean")  # how the target mask's connected components are ranked (clip_vla.perception.localize)

PACKAGE_NAME = "clip_vla"
DEFAULT_CLIPSEG = "CIDAS/clipseg-rd64-refined"
DEFAULT_CLIP = "openai/clip-vit-base-patch32"


# What ``geometry.locate`` returns for a detection with depth (see GeometryConfig.point_estimate).
POINT_ESTIMATES: Tuple[str, ...] = ("object_centre", "surface")


class ConfigError(ValueError):
    """A configuration value is missing or inconsistent; the message says which."""


def share_dir() -> Path:
    """The package's share directory: ament index when installed by colcon, else the source tree."""
    try:  # On a robot the package is installed by colcon into <prefix>/share/clip_vla.
        from ament_index_python.packages import get_package_share_directory  # type: ignore

        return Path(get_package_share_directory(PACKAGE_NAME))
    except Exception:  # noqa: BLE001 - any failure means "not installed through ament"
        pass
    package = Path(__file__).resolve().parents[1]  # clip_vla/
    for candidate in (package.parent, package / "share"):
        if (candidate / "config" / "clip_vla.yaml").is_file():
            return candidate
    prefix_share = Path(os.sys.prefix) / "share" / PACKAGE_NAME
    return prefix_share


def default_config_path() -> Path:
    return share_dir() / "config" / "clip_vla.yaml"


def default_vocabulary_path() -> Path:
    return share_dir() / "config" / "vocabulary.yaml"


# --------------------------------------------------------------------------- vocabulary
@dataclass
class Skill:
    """A discrete command the robot can execute, with how people say it and how CLIP sees it."""

    name: str
    token: int
    verbs: List[str] = field(default_factory=list)
    templates: List[str] = field(default_factory=list)
    needs_object: bool = True
    needs_destination: bool = False

    def prompts(self, obj: Optional[str]) -> List[str]:
        """CLIP prompts for this skill, with ``{object}`` filled (``"object"`` when unknown)."""
        target = obj if obj else "object"
        return [t.replace("{object}", target) for t in self.templates] or [self.name.replace("_", " ")]


@dataclass
class Vocabulary:
    skills: List[Skill]
    objects: List[str] = field(default_factory=list)
    distractors: List[str] = field(default_factory=list)
    stop_skill: str = "none"

    def __post_init__(self) -> None:
        names = [s.name for s in self.skills]
        tokens = [s.token for s in self.skills]
        if not self.skills:
            raise ConfigError("vocabulary: at least one skill is required")
        if len(set(names)) != len(names):
            raise ConfigError(f"vocabulary: duplicate skill names in {names}")
        if len(set(tokens)) != len(tokens):
            raise ConfigError(f"vocabulary: duplicate skill tokens in {tokens}")
        if self.stop_skill not in names:
            raise ConfigError(f"vocabulary: stop_skill '{self.stop_skill}' is not one of {names}")

    def skill(self, name: str) -> Skill:
        for s in self.skills:
            if s.name == name:
                return s
        raise KeyError(f"unknown skill '{name}' (known: {[s.name for s in self.skills]})")

    def skill_by_token(self, token: int) -> Skill:
        for s in self.skills:
            if s.token == token:
                return s
        raise KeyError(f"no skill with token {token}")

    @property
    def skill_names(self) -> List[str]:
        return [s.name for s in self.skills]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Vocabulary":
        skills = [Skill(**dict(s)) for s in data.get("skills", [])]
        return cls(
            skills=skills,
            objects=list(data.get("objects", [])),
            distractors=list(data.get("distractors", [])),
            stop_skill=str(data.get("stop_skill", "none")),
        )

    @classmethod
    def from_yaml(cls, path: os.PathLike | str) -> "Vocabulary":
        with open(path, "r", encoding="utf-8") as fh:
            data = yaml.safe_load(fh) or {}
        try:
            return cls.from_dict(data)
        except TypeError as exc:
            raise ConfigError(f"{path}: {exc}") from exc


# --------------------------------------------------------------------------- sections
@dataclass
class ModelConfig:
    clipseg: str = DEFAULT_CLIPSEG
    clip: str = DEFAULT_CLIP
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: str = "auto"  # auto (fp16 on CUDA, fp32 on CPU) | float32 | float16 | bfloat16
    # Reuse CLIPSeg's own CLIP backbone for skill scoring (one vision pass per frame, less accurate).
    share_backbone: bool = False
    cache_dir: Optional[str] = None
    local_files_only: bool = False
    revision: Optional[str] = None


@dataclass
class PerceptionConfig:
    mask_threshold: float = 0.4  # per-pixel probability a target pixel must clear
    min_confidence: float = 0.5  # object confidence under which nothing is published
    min_area_px: int = 16  # at input resolution: smaller components are noise
    instance_score: str = "mass"  # ranks the target's connected components: mass | mean (clip_vla.perception.localize)
    min_skill_probability: float = 0.5  # a skill guessed by CLIP (no verb) needs this probability
    skill_temperature: float = 0.01  # softmax temperature over cosine similarities
    text_weight: float = 0.7  # instruction <-> skill text similarity weight
    image_weight: float = 0.3  # image <-> skill prompt similarity weight
    prompt_template: str = "{object}"  # how an object phrase becomes a CLIPSeg prompt

    def __post_init__(self) -> None:
        for name in ("mask_threshold", "min_confidence", "min_skill_probability"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"perception.{name} must be in [0, 1], got {value}")
        if not self.skill_temperature > 0:
            raise ConfigError(f"perception.skill_temperature must be > 0, got {self.skill_temperature}")
        if self.text_weight < 0 or self.image_weight < 0 or self.text_weight + self.image_weight <= 0:
            raise ConfigError("perception.text_weight and image_weight must be >= 0 and not both 0")
        if self.min_area_px < 1:
            raise ConfigError(f"perception.min_area_px must be >= 1, got {self.min_area_px}")
        if self.instance_score not in INSTANCE_SCORES:
            raise ConfigError(f"perception.instance_score must be one of {INSTANCE_SCORES}, "
                              f"got {self.instance_score!r}")
        if "{object}" not in self.prompt_template:
            raise ConfigError(f"perception.prompt_template must contain '{{object}}', got {self.prompt_template!r}")


@dataclass
class GeometryConfig:
    # Camera intrinsics used when no CameraInfo is available: fx, fy, cx, cy (pixels). Empty = none.
    intrinsics: List[float] = field(default_factory=list)
    # Camera optical frame -> base frame. Either a 4x4 row-major matrix (16 numbers) or xyz+rpy.
    camera_to_base_matrix: List[float] = field(default_factory=list)
    camera_to_base_xyz: List[float] = field(default_factory=lambda: [0.5, 0.0, 0.8])
    camera_to_base_rpy: List[float] = field(default_factory=lambda: [3.141592653589793, 0.0, -1.5707963267948966])
    # Table plane in the base frame: points p with normal . p = offset (offset = table height for z-up).
    table_normal: List[float] = field(default_factory=lambda: [0.0, 0.0, 1.0])
    table_height: float = 0.0
    depth_scale: float = 0.001  # metres per unit of 16UC1 depth
    depth_min: float = 0.05  # metres; closer readings are invalid
    depth_max: float = 10.0  # metres; farther readings are invalid
    depth_statistic: str = "median"  # median | percentile_25 | min_valid: robust depth over the mask
    # object_centre: centre of an object resting on the table (from the mask's 3D points);
    # surface: the centroid pixel at the robust depth (a visible-surface point).
    point_estimate: str = "object_centre"

    def __post_init__(self) -> None:
        if self.point_estimate not in POINT_ESTIMATES:
            raise ConfigError(f"geometry.point_estimate must be one of {', '.join(POINT_ESTIMATES)}, "
                              f"got {self.point_estimate!r}")


@dataclass
class WorkspaceConfig:
    """Axis-aligned bounds of the base frame that goals must lie in; also the tokenizer's range."""

    x: List[float] = field(default_factory=lambda: [0.0, 1.0])
    y: List[float] = field(default_factory=lambda: [-0.5, 0.5])
    z: List[float] = field(default_factory=lambda: [-0.1, 0.6])
    bins: int = 256

    def bounds(self) -> Tuple[Tuple[float, float], Tuple[float, float], Tuple[float, float]]:
        return (tuple(self.x), tuple(self.y), tuple(self.z))  # type: ignore[return-value]

    def validate(self) -> None:
        for axis in ("x", "y", "z"):
            lo_hi = getattr(self, axis)
            if len(lo_hi) != 2 or not lo_hi[0] < lo_hi[1]:
                raise ConfigError(f"workspace.{axis} must be [min, max] with min < max, got {lo_hi}")
        if not 2 <= self.bins <= 65536:
            raise ConfigError(f"workspace.bins must be in [2, 65536], got {self.bins}")


@dataclass
class MotionConfig:
    """Geometry of the action chunks (``clip_vla.core.chunks``): metres, fingertip centre (TCP).

    Heights are above the step's goal point unless they say "table" (``geometry.table_height``).
    The defaults match the simulated gripper (8 cm fingers, objects at most 8.5 cm tall,
    ``clip_vla.sim.executor.SkillParams``), so its scripted skills and these chunks agree.
    """

    approach_height: float = 0.12  # above the goal point before descending (pick, place, point_at)
    grasp_depth: float = 0.03  # pick: fingertips this far below the goal point (object centre) when closing
    min_tip_clearance: float = 0.008  # pick: fingertips never lower than this above the table
    lift_height: float = 0.15  # pick: raise the grasped object this far above the grasp
    release_height: float = 0.045  # place: fingertips above the destination point when opening
    retreat_height: float = 0.08  # place: rise this far after opening
    push_standoff: float = 0.085  # push/pull: start this far behind the goal point, against the motion direction
    push_follow_through: float = 0.08  # push/pull: end this far past the goal point, along the motion direction
    push_height: float = 0.012  # push/pull: fingertips above the table while in contact
    point_height: float = 0.05  # point_at: hover this far above the goal point

    def __post_init__(self) -> None:
        positive = ("approach_height", "lift_height", "push_standoff", "push_follow_through", "point_height")
        for name, value in dataclasses.asdict(self).items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ConfigError(f"motion.{name} must be a finite number of metres, got {value!r}")
            if value < 0 or (name in positive and value == 0):
                bound = "> 0" if name in positive else ">= 0"
                raise ConfigError(f"motion.{name} must be {bound} (metres), got {value}")


@dataclass
class ClipVlaConfig:
    models: ModelConfig = field(default_factory=ModelConfig)
    perception: PerceptionConfig = field(default_factory=PerceptionConfig)
    geometry: GeometryConfig = field(default_factory=GeometryConfig)
    workspace: WorkspaceConfig = field(default_factory=WorkspaceConfig)
    motion: MotionConfig = field(default_factory=MotionConfig)
    vocabulary_file: str = ""  # empty: the package's config/vocabulary.yaml
    base_frame: str = "base_link"
    vocabulary: Optional[Vocabulary] = None

    def __post_init__(self) -> None:
        self.workspace.validate()
        if self.vocabulary is None:
            path = self.vocabulary_file or str(default_vocabulary_path())
            if not Path(path).is_file():
                raise ConfigError(f"vocabulary file not found: {path}")
            self.vocabulary = Vocabulary.from_yaml(path)

    # ---- flat parameter view (the ROS node declares exactly these names)
    def to_flat(self) -> Dict[str, Any]:
        """Flatten to ``section.key`` names: the node's parameter names."""
        flat: Dict[str, Any] = {}
        for section in ("models", "perception", "geometry", "workspace", "motion"):
            for key, value in dataclasses.asdict(getattr(self, section)).items():
                flat[f"{section}.{key}"] = value
        flat["vocabulary_file"] = self.vocabulary_file
        flat["base_frame"] = self.base_frame
        return flat

    @classmethod
    def from_flat(cls, flat: Mapping[str, Any], vocabulary: Optional[Vocabulary] = None) -> "ClipVlaConfig":
        """Build from ``section.key`` values, ignoring names that belong to the node only."""
        sections: Dict[str, Dict[str, Any]] = {"models": {}, "perception": {}, "geometry": {}, "workspace": {},
                                               "motion": {}}
        top: Dict[str, Any] = {}
        types = {
            "models": ModelConfig,
            "perception": PerceptionConfig,
            "geometry": GeometryConfig,
            "workspace": WorkspaceConfig,
            "motion": MotionConfig,
        }
        for name, value in flat.items():
            section, _, key = name.partition(".")
            if key and section in sections:
                known = {f.name for f in dataclasses.fields(types[section])}
                if key in known:
                    sections[section][key] = _from_param(value)
            elif name in ("vocabulary_file", "base_frame"):
                top[name] = value
        return cls(
            models=ModelConfig(**sections["models"]),
            perception=PerceptionConfig(**sections["perception"]),
            geometry=GeometryConfig(**sections["geometry"]),
            workspace=WorkspaceConfig(**sections["workspace"]),
            motion=MotionConfig(**sections["motion"]),
            vocabulary=vocabulary,
            **top,
        )

    @classmethod
    def from_yaml(cls, path: os.PathLike | str | None = None, node_name: str = "clip_vla") -> "ClipVlaConfig":
        """Read the node's parameter file (``<node>: ros__parameters: {...}``) or a plain mapping."""
        path = Path(path) if path else default_config_path()
        with open(path, "r", encoding="utf-8") as fh:
            data = yaml.safe_load(fh) or {}
        params = _ros_parameters(data, node_name)
        flat = _flatten(params)
        cfg = cls.from_flat(flat)
        return cfg

    def replace(self, **overrides: Any) -> "ClipVlaConfig":
        """A copy with ``section.key`` overrides applied (``{"models.device": "cpu"}``)."""
        flat = self.to_flat()
        for key, value in overrides.items():
            if key not in flat:
                raise ConfigError(f"unknown setting '{key}'")
            flat[key] = value
        vocab = self.vocabulary if flat["vocabulary_file"] == self.vocabulary_file else None
        return ClipVlaConfig.from_flat(flat, vocabulary=vocab)


def _from_param(value: Any) -> Any:
    """ROS parameters cannot be None: an empty string means "not set"."""
    if isinstance(value, tuple):
        return list(value)
    return value


def _ros_parameters(data: Mapping[str, Any], node_name: str) -> Mapping[str, Any]:
    """Find the ``ros__parameters`` block for ``node_name`` (or the wildcard ``/**``)."""
    for key in (node_name, f"/{node_name}", "/**", "**"):
        block = data.get(key)
        if isinstance(block, Mapping) and "ros__parameters" in block:
            return block["ros__parameters"] or {}
    for key, block in data.items():  # namespaced node names: /robot/clip_vla
        if isinstance(block, Mapping) and "ros__parameters" in block and str(key).endswith(node_name):
            return block["ros__parameters"] or {}
    if any(isinstance(v, Mapping) and "ros__parameters" in v for v in data.values()):
        raise ConfigError(f"no 'ros__parameters' block for node '{node_name}' in parameter file")
    return data


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> Dict[str, Any]:
    flat: Dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def parse_floats(text: str | Sequence[float], count: int, what: str) -> List[float]:
    """Parse ``"a,b,c"`` (or a sequence) into exactly ``count`` floats, with a clear error."""
    if isinstance(text, str):
        parts = [p for p in text.replace(" ", ",").split(",") if p]
    else:
        parts = list(text)
    try:
        values = [float(p) for p in parts]
    except ValueError as exc:
        raise ConfigError(f"{what}: expected {count} numbers, got {text!r}") from exc
    if len(values) != count:
        raise ConfigError(f"{what}: expected {count} numbers, got {len(values)} in {text!r}")
    return values
