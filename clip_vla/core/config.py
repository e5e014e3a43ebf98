"""Configuration of the ROS-free core, as plain dataclasses that validate themselves.

One ``ClipVlaConfig`` describes everything the pipeline needs: which models,
the skill/object vocabulary, camera geometry, workspace bounds and the
thresholds of the safety envelope. It loads from the same YAML file the ROS
node reads (``clip_vla: ros__parameters:``), so a notebook, the CLI and the
node all see identical settings.

Every field is declared with ``setting(...)``: its description, range and choices live
beside it, and ``__post_init__`` checks types, ranges, choices and the rules between
fields. This one schema is what the YAML loader, the node's parameters
(``clip_vla.ros.params``: descriptors, ``ros2 param set``) and the command-line flags
(``clip_vla.tools.cli.add_config_flags``) all use, so a value is judged the same way
wherever it comes from::

    YAML file ──┐
    ROS params ─┼──► ClipVlaConfig(...) ──► every section's validate() ──► ConfigError
    CLI flags ──┘        (one line: [file: ]key: expected ..., got ...)

Units and frames follow REP-103/REP-105: metres and radians; the base frame is
x forward, y left, z up; the camera optical frame is z forward, x right, y down.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import (Any, ClassVar, Dict, List, Mapping, Optional, Sequence, Tuple, Type, Union, get_args,
                    get_origin, get_type_hints)

import yaml

from clip_vla.core.types import Intrinsics

# how the target mask's connected components are ranked (clip_vla.perception.localize)
INSTANCE_SCORES = ("mass", "mean")

PACKAGE_NAME = "clip_vla"
DEFAULT_CLIPSEG = "CIDAS/clipseg-rd64-refined"
DEFAULT_CLIP = "openai/clip-vit-base-patch32"

# What ``geometry.locate`` returns for a detection with depth (see GeometryConfig.point_estimate).
POINT_ESTIMATES: Tuple[str, ...] = ("object_centre", "surface")
# Robust depth over a mask (clip_vla.core.geometry.robust_depth).
DEPTH_STATISTICS: Tuple[str, ...] = ("median", "percentile_25", "min_valid")
# A paired depth image with no valid reading over the object: refuse (no_depth) or use the table plane.
DEPTH_FALLBACKS: Tuple[str, ...] = ("refuse", "table_plane")
# Names clip_vla.perception.loading.resolve_dtype understands.
DTYPES: Tuple[str, ...] = ("auto", "float32", "float16", "bfloat16", "fp32", "fp16", "bf16")
DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")
# perception.skill_veto_margin that turns the veto off: a spoken verb then always wins over CLIP.
SKILL_VETO_OFF = 0.0
# ROS parameters cannot be empty arrays: a number list of just [0.0] means "not set".
UNSET_ARRAY: List[float] = [0.0]
UNSET_STRINGS: List[str] = [""]  # the same for a string list


class ConfigError(ValueError):
    """A configuration value is missing or inconsistent; the message says which, in one line.

    ``source`` is the file the value came from (None when it did not come from a file); the
    message then starts with it, so a user knows which file to open.
    """

    def __init__(self, message: str, source: Optional[os.PathLike | str] = None) -> None:
        self.source = None if source is None else str(source)
        self.detail = message
        super().__init__(f"{self.source}: {message}" if self.source else message)

    def in_file(self, path: os.PathLike | str) -> "ConfigError":
        """This error as raised while reading ``path`` (kept as is when it already names a file)."""
        return self if self.source else ConfigError(self.detail, source=path)


def invalid(key: str, value: Any, expected: str) -> ConfigError:
    """The one error format for a bad value: ``key: expected EXPECTED, got VALUE``."""
    shown = repr(value)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return ConfigError(f"{key}: expected {expected}, got {shown}")


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


def load_yaml_mapping(path: os.PathLike | str, what: str) -> Dict[str, Any]:
    """A YAML file whose top level is a mapping (empty file: ``{}``).

    Raises:
        ConfigError: the file cannot be read, is not valid YAML, or its top level is not a
            mapping; the message names the file (and the line for a syntax error).
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(f"cannot read the {what}: {reason}", source=path) from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"invalid YAML{where}: {problem}", source=path) from exc
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"expected a mapping (key: value) at the top level of the {what}, "
                          f"got a {type(data).__name__}", source=path)
    return dict(data)


# --------------------------------------------------------------------------- the schema
def setting(default: Any = dataclasses.MISSING, doc: str = "", *, factory: Any = dataclasses.MISSING,
            range: Optional[Tuple[float, float]] = None, choices: Optional[Sequence[str]] = None,
            length: Optional[int] = None, unset_ok: bool = False) -> Any:
    """A dataclass field with its schema: what it means, its inclusive range, its choices.

    ``length`` fixes how many numbers a list holds; ``unset_ok`` also allows ``[]`` and the
    ROS spelling of "unset", ``[0.0]``.
    """
    metadata = {"doc": doc, "range": range, "choices": tuple(choices) if choices else None,
                "length": length, "unset_ok": unset_ok}
    if factory is not dataclasses.MISSING:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class Setting:
    """One configuration key as the schema describes it (ROS descriptors and CLI flags use it)."""

    key: str  # "perception.mask_threshold"
    kind: str  # bool | int | float | str | optional_str | floats | strs
    default: Any
    doc: str
    range: Optional[Tuple[float, float]] = None
    choices: Optional[Tuple[str, ...]] = None
    length: Optional[int] = None
    unset_ok: bool = False

    @property
    def expected(self) -> str:
        """What a valid value is, in words (the end of every error message about this key)."""
        if self.choices:
            return "one of: " + ", ".join(self.choices)
        if self.kind == "bool":
            return "true or false (a YAML boolean)"
        if self.kind in ("int", "float"):
            noun = "an integer" if self.kind == "int" else "a number"
            return f"{noun} in [{self.range[0]}, {self.range[1]}]" if self.range else noun
        if self.kind == "floats":
            count = f"{self.length} numbers" if self.length else "a list of numbers"
            return f"{count} or {UNSET_ARRAY} for unset" if self.unset_ok else count
        if self.kind == "strs":
            return f"a list of strings or {UNSET_STRINGS} for none" if self.unset_ok else "a list of strings"
        return "a string" if self.kind == "str" else "a string (empty: unset)"

    def check(self, value: Any) -> Any:
        """``value`` in this setting's type (ints widen to float, tuples become lists).

        Raises:
            ConfigError: wrong type, outside the range, not one of the choices, wrong length.
        """
        def fail() -> ConfigError:
            return invalid(self.key, value, self.expected)

        if self.kind == "bool":
            if not isinstance(value, bool):  # "no", 0 and "false" are not booleans: never guess
                raise fail()
            return value
        if self.kind in ("int", "float"):
            if isinstance(value, bool) or not isinstance(value, int if self.kind == "int" else (int, float)):
                raise fail()
            value = value if self.kind == "int" else float(value)
            if not math.isfinite(value) or (self.range and not self.range[0] <= value <= self.range[1]):
                raise fail()
            return value
        if self.kind in ("str", "optional_str"):
            if value is None and self.kind == "optional_str":
                return value
            if not isinstance(value, str) or (self.choices and value not in self.choices):
                raise fail()
            return value
        if isinstance(value, (str, bytes, Mapping)) or not hasattr(value, "__iter__"):
            raise fail()
        items = list(value)
        if self.kind == "strs":
            if not all(isinstance(v, str) for v in items):
                raise fail()
            if self.unset_ok and items == UNSET_STRINGS:
                return []
            return items
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in items):
            raise fail()
        items = [float(v) for v in items]
        if self.unset_ok and (not items or items == UNSET_ARRAY):
            return items
        if self.length is not None and len(items) != self.length:
            raise fail()
        return items


def _kind(hint: Any) -> str:
    """The schema kind of a field's type hint (the few types configuration uses).

    Raises:
        TypeError: a type the schema cannot check (a programming error, at import time).
    """
    if hint in (bool, int, float, str):
        return hint.__name__
    origin, args = get_origin(hint), get_args(hint)
    if origin is Union and set(args) == {str, type(None)}:
        return "optional_str"
    if origin is list and args in ((float,), (str,)):
        return "floats" if args[0] is float else "strs"
    raise TypeError(f"no schema kind for type {hint}")


@functools.lru_cache(maxsize=None)
def _settings_of(cls: type, prefix: str) -> Tuple[Setting, ...]:
    """The ``Setting`` of every field of ``cls`` declared with ``setting(...)`` (built once per class)."""
    hints = get_type_hints(cls)
    specs = []
    for f in dataclasses.fields(cls):
        if "doc" not in f.metadata:
            continue
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        specs.append(Setting(f"{prefix}{f.name}", _kind(hints[f.name]), default, f.metadata["doc"],
                             f.metadata["range"], f.metadata["choices"], f.metadata["length"],
                             f.metadata["unset_ok"]))
    return tuple(specs)


class Validated:
    """A dataclass that checks every ``setting`` field on construction, then its cross-field rules."""

    SECTION: ClassVar[str] = ""  # the key prefix: "perception" -> "perception.mask_threshold"

    def __post_init__(self) -> None:
        self.validate()

    @classmethod
    def settings(cls) -> List[Setting]:
        return list(_settings_of(cls, f"{cls.SECTION}." if cls.SECTION else ""))

    def validate(self) -> None:
        """Check (and normalise) every field; call again after changing fields by hand.

        Raises:
            ConfigError: the first invalid value, naming its key, the value and what was expected.
        """
        for spec in self.settings():
            name = spec.key.rpartition(".")[2]
            setattr(self, name, spec.check(getattr(self, name)))
        self.check_together()

    def check_together(self) -> None:
        """Rules between fields (``depth_min < depth_max``); each field alone is already valid."""


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

    def __post_init__(self) -> None:
        """A vocabulary file is user input: a token of "3" or ``needs_object: "no"`` is an error."""
        name = self.name if isinstance(self.name, str) else repr(self.name)
        kinds = {"name": "str", "token": "int", "verbs": "strs", "templates": "strs", "needs_object": "bool",
                 "needs_destination": "bool"}
        for key, kind in kinds.items():
            spec = Setting(f"skills[{name}].{key}", kind, None, "", range=(0, 1 << 30) if kind == "int" else None)
            setattr(self, key, spec.check(getattr(self, key)))

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
        """Raises ConfigError for a wrong shape or type (skills not a list of mappings, ...)."""
        skills = data.get("skills", [])
        if not isinstance(skills, list) or not all(isinstance(s, Mapping) for s in skills):
            raise invalid("skills", skills, "a list of skills (mappings with name, token, verbs, templates)")
        known = {f.name for f in dataclasses.fields(Skill)}
        for entry in skills:
            unknown = sorted(set(map(str, entry)) - known)
            if unknown or not {"name", "token"} <= set(entry):
                raise invalid(f"skills[{entry.get('name', '?')}]", dict(entry),
                              f"keys name, token and optionally {', '.join(sorted(known - {'name', 'token'}))}")
        lists = {}
        for key in ("objects", "distractors"):
            lists[key] = Setting(key, "strs", [], "").check(data.get(key, []))
        stop = Setting("stop_skill", "str", "none", "").check(data.get("stop_skill", "none"))
        return cls(skills=[Skill(**dict(s)) for s in skills], stop_skill=stop, **lists)

    @classmethod
    def from_yaml(cls, path: os.PathLike | str) -> "Vocabulary":
        """Raises ConfigError (naming the file) for an unreadable, non-YAML or invalid vocabulary."""
        data = load_yaml_mapping(path, "vocabulary file")
        try:
            return cls.from_dict(data)
        except ConfigError as exc:
            raise exc.in_file(path) from None


# --------------------------------------------------------------------------- sections
@dataclass
class ModelConfig(Validated):
    SECTION: ClassVar[str] = "models"

    clipseg: str = setting(DEFAULT_CLIPSEG, "CLIPSeg model: Hugging Face id or local from_pretrained directory")
    clip: str = setting(DEFAULT_CLIP, "CLIP model for skill scoring: Hugging Face id or local directory")
    device: str = setting("auto", "auto (CUDA when available) | cpu | cuda | cuda:N")
    dtype: str = setting("auto", "auto (float16 on CUDA, float32 on CPU) | float32 | float16 | bfloat16")
    # Reuse CLIPSeg's own CLIP backbone for skill scoring (one vision pass per frame, less accurate).
    share_backbone: bool = setting(False, "score skills with CLIPSeg's own CLIP backbone (one vision pass per "
                                          "frame)")
    cache_dir: Optional[str] = setting(None, "Hugging Face cache directory; empty: HF_HOME")
    local_files_only: bool = setting(False, "never contact the hub (offline robots)")
    revision: Optional[str] = setting(None, "model revision (branch, tag or commit); empty: default")

    def check_together(self) -> None:
        for key in ("clipseg", "clip"):
            if not getattr(self, key).strip():
                raise invalid(f"models.{key}", getattr(self, key), "a Hugging Face id or a local directory")
        if not DEVICE_PATTERN.match(self.device.strip().lower()):
            raise invalid("models.device", self.device, "auto, cpu, cuda or cuda:N")
        if self.dtype.strip().lower() not in DTYPES:
            raise invalid("models.dtype", self.dtype, "one of: " + ", ".join(DTYPES))


@dataclass
class PerceptionConfig(Validated):
    SECTION: ClassVar[str] = "perception"

    mask_threshold: float = setting(0.4, "per-pixel probability a target pixel must clear", range=(0.0, 1.0))
    min_confidence: float = setting(0.5, "object confidence under which the answer is low_confidence",
                                    range=(0.0, 1.0))
    min_area_px: int = setting(16, "smallest connected component kept, pixels at input resolution",
                               range=(1, 1 << 30))
    instance_score: str = setting("mass", "which connected component of the target mask is the object: mass (sum "
                                          "of probability, the object covered whole) | mean (most certain per "
                                          "pixel)", choices=INSTANCE_SCORES)
    identity_weight: float = setting(
        0.0, "CLIP's part in choosing the component: the one with the highest ln(probability mass) + this * "
        "ln p_CLIP(name | its crop) is the object (crop, text and temperature: verify.identity_*); 0: mass "
        "alone; needs a CLIP of its own (models.clip, not share_backbone)", range=(0.0, 100.0))
    ground_by_naming: bool = setting(
        False, "the object is the scene object named with the command's name: the named object and its look-alikes "
        "(look_alike_competitors) are each found against the distractors only, overlapping finds merge into one "
        "object named by its best name (mean probability, with CLIP's vote per identity_weight), as suggestions "
        "name objects; of several objects getting the name the best fit; when none gets it, the component rule "
        "decides")
    low_destination: bool = setting(
        False, "a place destination rests on the table: its mask loses the pixels whose depth puts them more than "
        "verify.max_destination_height_m above the table before its component is chosen (needs depth)")
    refuted_radius_m: float = setting(
        0.03, "a retried step's grounding sets aside each object the verifier judged the wrong one "
        "(wrong_object): the name's probability is cleared within this distance of where it was and, with "
        "depth, on its whole body (verify.size_above_table_m)", range=(0.0, 10.0))
    identity_candidates: int = setting(4, "most components (largest mass first) CLIP looks at when identity_weight "
                                          "is on", range=(1, 64))
    min_skill_probability: float = setting(0.5, "a skill guessed by CLIP (no verb) needs this probability",
                                           range=(0.0, 1.0))
    # 16: chosen on validation seeds 9300-9399 (README "Skill veto": clip-vla verify-eval --skill-veto).
    skill_veto_margin: float = setting(
        16.0, "a named verb is refused (low_confidence) when CLIP's top skill beats it by more than "
        "this many nats of log-probability, ln p(top) - ln p(named); 0 = off (the verb always wins)",
        range=(0.0, 100.0))
    skill_temperature: float = setting(0.01, "softmax temperature over cosine similarities", range=(1e-6, 100.0))
    text_weight: float = setting(0.7, "weight of instruction-to-skill-text similarity", range=(0.0, 1.0))
    image_weight: float = setting(0.3, "weight of image-to-skill-prompt similarity", range=(0.0, 1.0))
    prompt_template: str = setting("{object}", "how an object phrase becomes a CLIPSeg prompt ({object} is "
                                               "replaced)")
    look_alike_competitors: int = setting(
        0, "most look-alike names that compete with the target at every pixel, like the distractors: the "
        "suggest catalogue's object names sharing a word with it ('red ball', 'blue block' for 'red block'); "
        "0: none", range=(0, 100))

    def check_together(self) -> None:
        if self.text_weight + self.image_weight <= 0:
            raise invalid("perception.image_weight", self.image_weight, "a weight > 0 when text_weight is 0")
        if "{object}" not in self.prompt_template:
            raise invalid("perception.prompt_template", self.prompt_template, "a text containing '{object}'")


@dataclass
class GeometryConfig(Validated):
    SECTION: ClassVar[str] = "geometry"

    intrinsics: List[float] = setting(
        factory=list, length=4, unset_ok=True,
        doc="fx, fy, cx, cy (pixels) used when no camera_info arrives; [0.0] = unset")
    camera_to_base_matrix: List[float] = setting(
        factory=list, length=16, unset_ok=True,
        doc="camera optical frame -> base frame as 16 row-major numbers; [0.0] = use camera_to_base_xyz/rpy "
            "(static extrinsics, used without TF)")
    camera_to_base_xyz: List[float] = setting(
        factory=lambda: [0.5, 0.0, 0.8], length=3,
        doc="camera optical frame origin in the base frame, metres (static extrinsics)")
    camera_to_base_rpy: List[float] = setting(
        factory=lambda: [3.141592653589793, 0.0, -1.5707963267948966], length=3,
        doc="camera optical frame roll, pitch, yaw in the base frame, radians")
    # Table plane in the base frame: points p with normal . p = offset (offset = table height for z-up).
    table_normal: List[float] = setting(factory=lambda: [0.0, 0.0, 1.0], length=3,
                                        doc="table plane normal in the base frame (used without valid depth)")
    table_height: float = setting(0.0, "table plane offset along its normal, metres", range=(-100.0, 100.0))
    depth_scale: float = setting(0.001, "metres per unit of 16UC1 depth (0.001 for millimetres)",
                                 range=(1e-9, 1000.0))
    depth_min: float = setting(0.05, "closer depth readings are invalid, metres", range=(0.0, 1000.0))
    depth_max: float = setting(10.0, "farther depth readings are invalid, metres", range=(0.0, 1000.0))
    depth_statistic: str = setting("median", "robust depth over the mask: median | percentile_25 | min_valid",
                                   choices=DEPTH_STATISTICS)
    point_estimate: str = setting("object_centre", "3D point when depth is valid: object_centre (centre of an "
                                                   "object resting on the table) | surface (mask centroid at the "
                                                   "robust depth)", choices=POINT_ESTIMATES)
    depth_fallback: str = setting("refuse", "a paired depth image with no valid reading over the object: refuse "
                                            "(answer no_depth) | table_plane (intersect the table plane instead; "
                                            "the status message says so)", choices=DEPTH_FALLBACKS)

    def check_together(self) -> None:
        if len(self.intrinsics) == 4:
            try:
                Intrinsics(*self.intrinsics)
            except ValueError as exc:
                raise invalid("geometry.intrinsics", self.intrinsics, f"fx, fy, cx, cy in pixels ({exc})") from None
        if not any(self.table_normal):
            raise invalid("geometry.table_normal", self.table_normal, "a non-zero normal vector")
        if not self.depth_min < self.depth_max:
            raise invalid("geometry.depth_min", self.depth_min, f"less than geometry.depth_max ({self.depth_max})")
        if len(self.camera_to_base_matrix) == 16:
            from clip_vla.core.geometry import RigidTransform  # geometry imports this module

            try:
                RigidTransform.from_matrix(self.camera_to_base_matrix)
            except ValueError as exc:
                raise invalid("geometry.camera_to_base_matrix", self.camera_to_base_matrix,
                              f"a rigid transform ({exc})") from None


@dataclass
class WorkspaceConfig(Validated):
    """Axis-aligned bounds of the base frame that goals must lie in; also the tokenizer's range."""

    SECTION: ClassVar[str] = "workspace"

    x: List[float] = setting(factory=lambda: [0.0, 1.0], length=2,
                             doc="[min, max] of goal x in base_frame, metres; also the token range")
    y: List[float] = setting(factory=lambda: [-0.5, 0.5], length=2,
                             doc="[min, max] of goal y in base_frame, metres; also the token range")
    z: List[float] = setting(factory=lambda: [-0.1, 0.6], length=2,
                             doc="[min, max] of goal z in base_frame, metres; also the token range")
    bins: int = setting(256, "token bins per dimension", range=(2, 65536))

    def bounds(self) -> Tuple[Tuple[float, float], Tuple[float, float], Tuple[float, float]]:
        return (tuple(self.x), tuple(self.y), tuple(self.z))  # type: ignore[return-value]

    def check_together(self) -> None:
        for axis in ("x", "y", "z"):
            lo, hi = getattr(self, axis)
            if not lo < hi:
                raise invalid(f"workspace.{axis}", [lo, hi], "[min, max] with min < max")


@dataclass
class MotionConfig(Validated):
    """Geometry of the action chunks (``clip_vla.core.chunks``): metres, fingertip centre (TCP).

    Heights are above the step's goal point unless they say "table" (``geometry.table_height``).
    The defaults match the simulated gripper (8 cm fingers, objects at most 8.5 cm tall,
    ``clip_vla.sim.executor.SkillParams``), so its scripted skills and these chunks agree.
    """

    SECTION: ClassVar[str] = "motion"

    approach_height: float = setting(0.12, "metres above the goal point before descending (pick, place, point_at)",
                                     range=(1e-3, 1.0))
    grasp_depth: float = setting(0.03, "pick: fingertips this far below the goal point (object centre) when "
                                 "closing, metres", range=(0.0, 0.5))
    min_tip_clearance: float = setting(0.008, "pick: fingertips never lower than this above the table, metres",
                                       range=(0.0, 0.5))
    lift_height: float = setting(0.15, "pick: raise the grasped object this far above the grasp, metres",
                                 range=(1e-3, 1.0))
    release_height: float = setting(0.045, "place: fingertips above the destination point when opening, metres",
                                    range=(0.0, 0.5))
    retreat_height: float = setting(0.08, "place: rise this far after opening, metres", range=(0.0, 1.0))
    push_standoff: float = setting(0.085, "push/pull: start this far behind the goal point, against the motion "
                                   "direction, metres", range=(1e-3, 0.5))
    push_follow_through: float = setting(0.08, "push/pull: end this far past the goal point, along the motion "
                                         "direction, metres", range=(1e-3, 0.5))
    push_height: float = setting(0.012, "push/pull: fingertips above the table while in contact, metres",
                                 range=(0.0, 0.5))
    point_height: float = setting(0.05, "point_at: hover this far above the goal point, metres", range=(1e-3, 1.0))


@dataclass
class SuggestSection(Validated):
    """What ``~/suggest`` and ``clip-vla suggest`` offer (``clip_vla.perception.suggest.SuggestConfig``
    is built from it, so these are the one set of defaults).

    String lists follow the ROS spelling of "empty": ``[""]`` (a ROS parameter cannot be an
    empty array), read as ``[]``.
    """

    SECTION: ClassVar[str] = "suggest"

    max_suggestions: int = setting(10, "most suggestions in one list", range=(1, 1000))
    min_score: float = setting(0.0, "suggestions scoring lower are dropped (object confidence x skill fit "
                                    "[x destination confidence])", range=(0.0, 1.0))
    skills: List[str] = setting(factory=lambda: ["pick", "place", "push"], doc="skills to suggest (vocabulary "
                                "skill names; never the stop skill)")
    min_confidence: float = setting(-1.0, "an object's mean mask probability to be suggested; negative: "
                                          "perception.min_confidence", range=(-1.0, 1.0))
    merge_overlap: float = setting(0.3, "shared pixels / the smaller mask at which two names are one object",
                                   range=(1e-6, 1.0))
    colours: List[str] = setting(factory=list, unset_ok=True, doc="with shapes: every '<colour> <shape>' is a "
                                 "candidate name; [\"\"] = none")
    shapes: List[str] = setting(factory=list, unset_ok=True, doc="shapes for the colours; [\"\"] = none")
    objects: List[str] = setting(factory=list, unset_ok=True, doc="extra candidate object names; [\"\"] = none")
    vocabulary_objects: bool = setting(True, "the vocabulary's objects are candidates too")
    fixtures: List[str] = setting(factory=lambda: ["bowl", "tray"], unset_ok=True,
                                  doc="destinations: never picked or pushed, only put things in/on")

    def check_together(self) -> None:
        if not self.skills:
            raise invalid("suggest.skills", self.skills, "at least one skill")
        if bool(self.colours) != bool(self.shapes):
            raise invalid("suggest.colours", self.colours, "colours together with suggest.shapes (names are "
                          "'<colour> <shape>')")


METRES = (1e-6, 10.0)  # a positive length in metres (verifier thresholds)


@dataclass
class VerifyConfig(Validated):
    """Thresholds of the step verifier and of the pre-execution refusal (``clip_vla.perception.verify``).

    Metres in the base frame, heights above ``geometry.table_height``. The rival thresholds were
    chosen on validation seeds (pick 9100-9149, place 9100-9122, push 9100-9129: ``clip-vla
    verify-eval --seeds ... --save DIR`` then ``--reverify DIR``) to catch at least 90% of failed
    steps with the fewest flags; see README "Verification". The others are the simulator's own
    success thresholds or physical sizes.
    """

    SECTION: ClassVar[str] = "verify"

    min_lift_m: float = setting(0.04, "pick: an object point this much above where it rested is raised",
                                range=METRES)
    min_push_m: float = setting(0.03, "push/pull: displacement along theta that counts as moved (the simulator's "
                                "success threshold)", range=METRES)
    rest_radius_m: float = setting(0.03, "an object point this close (xy) to where it rested has not left it",
                                   range=METRES)
    match_radius_m: float = setting(0.02, "an after point this close to a before point is the same, unmoved thing",
                                    range=METRES)
    staying_min_area_fraction: float = setting(0.25, "pick: a component left where the object rested says "
                                               "object_still_on_table only with at least this fraction of the "
                                               "acted-on component's area (0: any; a piece of the held object "
                                               "seen below the fingers is smaller)", range=(0.0, 1.0))
    mover_min_area_fraction: float = setting(0.25, "push/pull: a component that appeared after the step is the moved "
                                             "object only with at least this fraction of the acted-on component's "
                                             "area (0: any; a stray piece of the name's mask is smaller)",
                                             range=(0.0, 1.0))
    rival_min_area_fraction: float = setting(0.4, "wrong_object: a rival component has at least this fraction of "
                                             "the acted-on component's area", range=(1e-6, 1.0))
    rival_logit_margin: float = setting(0.1, "wrong_object: ... and a mean logit at least the acted-on one's plus "
                                        "this (may be negative)", range=(-100.0, 100.0))
    object_sizes: List[str] = setting(factory=list, unset_ok=True, doc="wrong_object: the sizes objects come in, one "
                                      "'NOUN HEIGHT_MIN HEIGHT_MAX LENGTH_MIN LENGTH_MAX [flat|round]' per noun "
                                      "(metres: the top above the table, the footprint's longest side; the top's "
                                      "shape, optional: a ball's is round); a pick or push whose "
                                      "object, measured from depth, fits no size of its name's noun and does fit "
                                      "another noun's acted on the wrong object (clip_vla.core.sizes); [\"\"] = "
                                      "none: no size check")
    size_height_tolerance_m: float = setting(0.003, "object_sizes: a measured height this far outside the noun's "
                                             "range still fits (depth noise)", range=METRES)
    size_length_tolerance_m: float = setting(0.01, "object_sizes: a measured length this far outside the noun's "
                                             "range still fits (mask and depth edges)", range=METRES)
    size_above_table_m: float = setting(0.006, "object_sizes: a pixel this high above the table is part of an "
                                        "object (above the depth noise)", range=METRES)
    size_surface_step_m: float = setting(0.015, "object_sizes: neighbouring pixels whose points lie farther apart "
                                         "than this are on different objects (a bar seen against the bowl behind "
                                         "it); above the depth noise between neighbours", range=METRES)
    size_split_step_m: float = setting(0.005, "object_sizes: a blob that fits no known noun is measured again "
                                       "joining only neighbours this close (objects that touch: a block pushed "
                                       "against a cup); 0 = off", range=(0.0, 10.0))
    max_rest_height_m: float = setting(0.10, "place: an object centre this high above the table is still held",
                                       range=METRES)
    beside_margin_m: float = setting(0.05, "place: outside the destination's footprint by less than this is "
                                     "'beside' it", range=METRES)
    footprint_tolerance_m: float = setting(0.01, "place: the object's point may lie this far outside the "
                                           "footprint", range=(0.0, 10.0))
    ray_max_miss_m: float = setting(0.04, "no depth, pick: the centroid's ray must pass this close above the rest "
                                    "point", range=METRES)
    no_depth_confidence: float = setting(0.6, "confidence factor of every verdict made without depth",
                                         range=(1e-6, 1.0))
    confidence_scale_m: float = setting(0.03, "a margin this large past a threshold gives full confidence",
                                        range=METRES)
    max_target_height_m: float = setting(0.12, "refusal: pick/push/pull/point_at goals higher above the table are "
                                         "implausible", range=METRES)
    max_destination_height_m: float = setting(0.10, "refusal: a place destination higher above the table is "
                                              "implausible", range=METRES)
    gripper_radius_m: float = setting(0.06, "refusal: a place destination this close to the held object is on the "
                                      "gripper", range=METRES)
    look_alikes: bool = setting(False, "the verifier's masks compete with the same look-alike names as grounding "
                                       "(perception.look_alike_competitors); off: only the distractors compete")
    place_look_alikes: bool = setting(False, "place: the held object is found where its name or one of its "
                                             "look-alikes' wins (look_alikes on): inside the destination a compact "
                                             "model may give its shape another name")
    identity: bool = setting(False, "wrong_object: CLIP ranks the catalogue's names on the acted-on object's crop "
                                    "(clip_vla.perception.identity); needs a CLIP of its own (models.clip set)")
    identity_margin_nats: float = setting(2.0, "identity: another name beating the named one by more than this "
                                          "(ln p(best) - ln p(named)) is the wrong object", range=(0.0, 100.0))
    identity_template: str = setting("a photo of a {object}", "identity: how a name becomes CLIP's text ({object} "
                                     "is replaced)")
    identity_pad: float = setting(0.25, "identity: the crop's margin around the mask, a fraction of its longest "
                                  "side", range=(0.0, 5.0))
    identity_temperature: float = setting(0.01, "identity: softmax temperature over cosine similarities",
                                          range=(1e-6, 100.0))

    def check_together(self) -> None:
        if "{object}" not in self.identity_template:
            raise invalid("verify.identity_template", self.identity_template, "a text containing '{object}'")
        from clip_vla.core.sizes import parse_object_sizes  # sizes imports geometry, which imports this module

        try:
            parse_object_sizes(self.object_sizes)
        except ValueError as exc:
            raise ConfigError(f"verify.object_sizes: {exc}") from None


SECTIONS: Dict[str, Type[Validated]] = {
    "models": ModelConfig,
    "perception": PerceptionConfig,
    "geometry": GeometryConfig,
    "workspace": WorkspaceConfig,
    "motion": MotionConfig,
    "suggest": SuggestSection,
    "verify": VerifyConfig,
}


@dataclass
class ClipVlaConfig(Validated):
    models: ModelConfig = field(default_factory=ModelConfig)
    perception: PerceptionConfig = field(default_factory=PerceptionConfig)
    geometry: GeometryConfig = field(default_factory=GeometryConfig)
    workspace: WorkspaceConfig = field(default_factory=WorkspaceConfig)
    motion: MotionConfig = field(default_factory=MotionConfig)
    suggest: SuggestSection = field(default_factory=SuggestSection)
    verify: VerifyConfig = field(default_factory=VerifyConfig)
    vocabulary_file: str = setting("", "skills/objects vocabulary YAML; empty: the package's config/vocabulary.yaml")
    base_frame: str = setting("base_link", "robot base frame: workspace bounds and tokens are expressed in it")
    vocabulary: Optional[Vocabulary] = None

    def check_together(self) -> None:
        """Sections are validated by their own constructors; the vocabulary file is read here.

        Raises:
            ConfigError: an empty base_frame, a missing or invalid vocabulary file (naming it).
        """
        if not self.base_frame.strip():
            raise invalid("base_frame", self.base_frame, "a frame name")
        for name, cls in SECTIONS.items():
            if not isinstance(getattr(self, name), cls):
                raise invalid(name, getattr(self, name), f"a {cls.__name__}")
        if self.vocabulary is None:
            path = self.vocabulary_file or str(default_vocabulary_path())
            if not Path(path).is_file():
                raise ConfigError(f"vocabulary_file: file not found: {path}")
            self.vocabulary = Vocabulary.from_yaml(path)

    # ---- flat parameter view (the ROS node declares exactly these names)
    def to_flat(self) -> Dict[str, Any]:
        """Flatten to ``section.key`` names: the node's parameter names."""
        flat: Dict[str, Any] = {}
        for section in SECTIONS:
            for key, value in dataclasses.asdict(getattr(self, section)).items():
                flat[f"{section}.{key}"] = value
        flat["vocabulary_file"] = self.vocabulary_file
        flat["base_frame"] = self.base_frame
        return flat

    @classmethod
    def from_flat(cls, flat: Mapping[str, Any], vocabulary: Optional[Vocabulary] = None) -> "ClipVlaConfig":
        """Build from ``section.key`` values, ignoring names that belong to the node only.

        Raises:
            ConfigError: an unknown key inside a core section (a typo must not be ignored), a
                section that is not a mapping, or any invalid value.
        """
        sections: Dict[str, Dict[str, Any]] = {name: {} for name in SECTIONS}
        top: Dict[str, Any] = {}
        for name, value in flat.items():
            section, _, key = name.partition(".")
            if section in SECTIONS and not key:
                raise invalid(name, value, "a mapping of settings (key: value)")
            if section in SECTIONS:
                known = [f.name for f in dataclasses.fields(SECTIONS[section])]
                if key not in known:
                    raise ConfigError(f"{name}: unknown setting (known in {section}: {', '.join(known)})")
                sections[section][key] = _from_param(value)
            elif name in ("vocabulary_file", "base_frame"):
                top[name] = value
        built = {name: SECTIONS[name](**values) for name, values in sections.items()}
        return cls(**built, vocabulary=vocabulary, **top)

    @classmethod
    def from_yaml(cls, path: os.PathLike | str | None = None, node_name: str = "clip_vla") -> "ClipVlaConfig":
        """Read the node's parameter file (``<node>: ros__parameters: {...}``) or a plain mapping.

        Raises:
            ConfigError: the file cannot be read or parsed, or holds an invalid value; the
                message starts with the file's path.
        """
        path = Path(path) if path else default_config_path()
        data = load_yaml_mapping(path, "parameter file")
        try:
            return cls.from_flat(flatten(_ros_parameters(data, node_name)))
        except ConfigError as exc:
            raise exc.in_file(path) from None

    def replace(self, **overrides: Any) -> "ClipVlaConfig":
        """A copy with ``section.key`` overrides applied (``{"models.device": "cpu"}``).

        Raises:
            ConfigError: an unknown key or an invalid value.
        """
        flat = self.to_flat()
        for key, value in overrides.items():
            if key not in flat:
                raise ConfigError(f"unknown setting '{key}'")
            flat[key] = value
        vocab = self.vocabulary if flat["vocabulary_file"] == self.vocabulary_file else None
        return ClipVlaConfig.from_flat(flat, vocabulary=vocab)


def settings() -> Dict[str, Setting]:
    """Every configuration key (``to_flat`` names, in that order) with its schema."""
    specs: Dict[str, Setting] = {}
    for cls in (*SECTIONS.values(), ClipVlaConfig):
        specs.update((s.key, s) for s in cls.settings())
    return specs


def check_setting(key: str, value: Any) -> Any:
    """One value checked against its key's schema alone (``ros2 param set`` of one parameter).

    Raises:
        ConfigError: unknown key or invalid value. Rules between fields need the whole
            config (``ClipVlaConfig.from_flat``).
    """
    spec = settings().get(key)
    if spec is None:
        raise ConfigError(f"unknown setting '{key}'")
    return spec.check(_from_param(value))


def _from_param(value: Any) -> Any:
    """Plain Python values: ROS arrays arrive as tuples or array.array, numbers may be numpy's."""
    if isinstance(value, tuple):
        return list(value)
    if hasattr(value, "tolist"):  # array.array, numpy arrays and numpy scalars
        return value.tolist()
    return value


def _ros_parameters(data: Mapping[str, Any], node_name: str) -> Mapping[str, Any]:
    """Find the ``ros__parameters`` block for ``node_name`` (or the wildcard ``/**``).

    Raises:
        ConfigError: the file has blocks for other nodes only, or the block is not a mapping.
    """
    block: Any = None
    for key in (node_name, f"/{node_name}", "/**", "**"):
        candidate = data.get(key)
        if isinstance(candidate, Mapping) and "ros__parameters" in candidate:
            block = candidate["ros__parameters"]
            break
    else:
        for key, candidate in data.items():  # namespaced node names: /robot/clip_vla
            if isinstance(candidate, Mapping) and "ros__parameters" in candidate and str(key).endswith(node_name):
                block = candidate["ros__parameters"]
                break
        else:
            if any(isinstance(v, Mapping) and "ros__parameters" in v for v in data.values()):
                raise ConfigError(f"no 'ros__parameters' block for node '{node_name}' in parameter file")
            return data
    if block is None:
        return {}
    if not isinstance(block, Mapping):
        raise invalid("ros__parameters", block, "a mapping of parameters")
    return block


def flatten(tree: Mapping[str, Any], prefix: str = "") -> Dict[str, Any]:
    """Nested mappings as ``a.b.c`` names, as rcl reads a ``ros__parameters`` block."""
    flat: Dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def parse_floats(text: str | Sequence[float], count: int, what: str) -> List[float]:
    """Parse ``"a,b,c"`` (or a sequence) into exactly ``count`` floats, with a clear error.

    Raises:
        ConfigError: not numbers, or not exactly ``count`` of them.
    """
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
