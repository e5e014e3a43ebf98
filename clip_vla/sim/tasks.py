"""Episodes: a random scene, a command about one object in it, and how success is judged.

Sampling is numpy-only (no MuJoCo) and driven by one ``numpy.random.Generator``, so a seed
fixes the scene, the command and therefore the physics outcome. Distractors are chosen to
be confusable with the target (same colour or same shape), which is what a grounding model
must get right.

A failed goal gets one of the ``FAILURE_LABELS`` (decided by ``TabletopWorld``), so that a
benchmark counts why episodes fail: a goal on a look-alike is not a drop beside the bowl.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from clip_vla.pipeline import DIRECTION_YAW
from clip_vla.sim.camera import project
from clip_vla.sim.executor import SkillParams
from clip_vla.sim.gripper import FINGER_OPEN_Y, PAD_HALF
from clip_vla.sim.objects import ObjectSpec
from clip_vla.sim.scene import FixtureSpec, SceneConfig, SceneLayout

SKILLS: Tuple[str, ...] = ("pick", "place", "push", "pull", "open", "close", "point_at", "none")
SAMPLED_SKILLS: Tuple[str, ...] = ("pick", "place", "push", "pull", "point_at", "none")
COMPOUND = "compound"  # a 2-3 clause command (``sample_compound_task``), judged per clause
DESTINATIONS: Tuple[str, ...] = ("bowl", "tray")

# Success thresholds (metres, m/s).
PICK_MIN_LIFT = 0.05
PUSH_MIN_DISPLACEMENT = 0.03
POINT_MAX_XY_ERROR = 0.03
REST_MAX_SPEED = 0.05
GOAL_ON_TOLERANCE = 0.02  # a goal this far outside an object's footprint circle is still on it

# Why a goal failed the episode's task: stable strings, counted by `clip-vla sim` (README, "Simulation").
WRONG_SKILL = "wrong skill"  # a skill the task does not need (pick/place for place tasks)
WRONG_OBJECT = "wrong object"  # the goal was on another object (or, for pick/push, on a fixture)
EMPTY_TABLE = "goal on empty table"  # on no object, and the skill did not reach the target
NOT_GRASPED = "not grasped"  # pick on the target: the fingers do not hold it
NOT_LIFTED = "not lifted"  # held, but not 5 cm above where it rested
WRONG_DIRECTION = "wrong direction"  # push/pull moved the target, not along the named (or goal's) direction
MOVED_TOO_LITTLE = "moved too little"  # push/pull: the target moved less than 3 cm
OFF_TARGET = "pointed off target"  # point_at ended more than 3 cm from the target
NOTHING_HELD = "nothing held"  # place without a held object
WRONG_DESTINATION = "wrong destination"  # place goal on the other fixture
BESIDE_DESTINATION = "dropped beside destination"  # place goal on the bare table (or on the held object)
NOT_IN_DESTINATION = "not in destination"  # goal on the destination, but the object is not resting inside
INVALID_GOAL = "invalid goal"  # no finite xyz
UNSUPPORTED = "unsupported skill"  # open/close: this scene has no articulated object
FAILURE_LABELS: Tuple[str, ...] = (
    WRONG_SKILL, WRONG_OBJECT, EMPTY_TABLE, NOT_GRASPED, NOT_LIFTED, WRONG_DIRECTION, MOVED_TOO_LITTLE, OFF_TARGET,
    NOTHING_HELD, WRONG_DESTINATION, BESIDE_DESTINATION, NOT_IN_DESTINATION, INVALID_GOAL, UNSUPPORTED)

# Directions a sampled push/pull command may name (as the parser normalises them), and how.
DIRECTION_PHRASES: Dict[str, str] = {"left": "to the left", "right": "to the right", "forward": "forward",
                                     "backward": "backward", "away": "away", "closer": "closer"}

_TEMPLATES: Dict[str, Tuple[str, ...]] = {
    "pick": ("pick up the {o}", "grab the {o}", "lift the {o}"),
    "place_bowl": ("put the {o} in the bowl", "place the {o} in the bowl"),
    "place_tray": ("put the {o} on the tray", "place the {o} on the tray"),
    "push": ("push the {o}", "slide the {o}"),
    "pull": ("pull the {o}", "drag the {o}"),
    "point_at": ("point at the {o}", "point to the {o}"),
    "none": ("stop", "do nothing"),
}


@dataclass(frozen=True)
class Task:
    """One episode: the command, what it is about, and the ground truth an oracle would use.

    ``theta`` is the yaw an oracle sends with the goal: the object's major axis for pick and
    point_at, the destination's major axis for place, and for push/pull the direction the
    object moves (the package-wide convention): the direction the command named, else
    radially away from the robot base for push, towards it for pull.

    ``direction`` is the direction word a push/pull command named ("push the cup to the left":
    "left"), None when it named none. Success is then judged along it, not along the goal's own
    theta: pushing the wrong way is a failure.
    """

    command: str
    skill: str
    object: Optional[str]  # phrase of the target object, e.g. "red block"
    destination: Optional[str]  # "bowl" | "tray" | None
    object_xyz: Optional[Tuple[float, float, float]]  # resting centre, base frame
    object_yaw: Optional[float]  # yaw of the major axis, in [-pi/2, pi/2)
    destination_xyz: Optional[Tuple[float, float, float]]
    theta: float
    layout: SceneLayout
    seed: Optional[int] = None
    distractors: Tuple[str, ...] = field(default_factory=tuple)
    direction: Optional[str] = None
    parts: Tuple["Task", ...] = ()  # a compound task's sub-tasks in order, one per clause (skill "compound")

    @property
    def goal_xyz(self) -> Optional[Tuple[float, float, float]]:
        """Where the (first) action goes: the object (pick/push/...)."""
        return self.object_xyz

    @property
    def named_yaw(self) -> Optional[float]:
        """Yaw (base frame) of the motion the command named, as vla_node reads it; None when it named none."""
        return None if self.direction is None else DIRECTION_YAW[self.direction]

    @property
    def step_skills(self) -> Tuple[str, ...]:
        """The skills of the goals this task needs: "put X in Y" is a pick, then a place; a compound
        task's are its parts' in order."""
        if self.parts:
            return tuple(skill for part in self.parts for skill in part.step_skills)
        return ("pick", "place") if self.skill == "place" else (self.skill,)

    @property
    def step_parts(self) -> Tuple["Task", ...]:
        """The sub-task each of ``step_skills`` belongs to (the task itself unless compound)."""
        return tuple(part for part in (self.parts or (self,)) for _ in part.step_skills)

    def to_dict(self) -> Dict[str, object]:
        r = (lambda v: None if v is None else [round(float(x), 4) for x in v])
        return {
            "command": self.command, "skill": self.skill, "object": self.object, "destination": self.destination,
            "object_xyz": r(self.object_xyz),
            "object_yaw": None if self.object_yaw is None else round(self.object_yaw, 4),
            "destination_xyz": r(self.destination_xyz), "theta": round(self.theta, 4), "seed": self.seed,
            "object_shape": self.layout.object(self.object).shape if self.object else None,
            "distractors": list(self.distractors), "direction": self.direction,
            "parts": [p.to_dict() for p in self.parts], "step_skills": list(self.step_skills),
        }


# --------------------------------------------------------------------------- sampling
def sample_objects(rng: np.random.Generator, n_distractors: int, config: SceneConfig) -> List[Tuple[str, str, str]]:
    """(colour, shape, size) of the target first, then distractors: one sharing its colour, one its
    shape, the rest random (``config.all_look_alikes``: every one shares its colour or its shape)."""
    colour = str(rng.choice(config.colours))
    shape = str(rng.choice(config.shapes))
    chosen = [(colour, shape)]
    pool = [(c, s) for c in config.colours for s in config.shapes if (c, s) != (colour, shape)]
    same_colour = [p for p in pool if p[0] == colour]
    same_shape = [p for p in pool if p[1] == shape]
    for group in (same_colour, same_shape):
        if len(chosen) > n_distractors:
            break
        if group:
            chosen.append(group[int(rng.integers(len(group)))])
    if config.all_look_alikes:
        alike = [p for p in same_colour + same_shape if p not in chosen]
        while len(chosen) <= n_distractors and alike:
            chosen.append(alike.pop(int(rng.integers(len(alike)))))
    rest = [p for p in pool if p not in chosen]
    while len(chosen) <= n_distractors and rest:
        chosen.append(rest.pop(int(rng.integers(len(rest)))))
    return [(c, s, str(rng.choice(config.sizes))) for c, s in chosen]


def _grasp_yaws(o: ObjectSpec) -> List[float]:
    """Gripper yaws a grasp of this object may come with: a perception stack cannot tell a block's
    two axes apart, nor give a round object any axis, so all of those must be free."""
    if o.shape == "bar":
        return [o.yaw]
    if o.shape == "block":
        return [o.yaw, o.yaw + math.pi / 2]
    return [o.yaw + k * math.pi / 8 for k in range(8)]


def _pads(o: ObjectSpec) -> List[Tuple[float, float]]:
    """Centres of the open finger pads of top grasps across the object's possible major axes."""
    pads = []
    for yaw in _grasp_yaws(o):
        nx, ny = -math.sin(yaw), math.cos(yaw)
        pads += [(o.x + s * FINGER_OPEN_Y * nx, o.y + s * FINGER_OPEN_Y * ny) for s in (-1.0, 1.0)]
    return pads


PAD_RADIUS = math.hypot(PAD_HALF[0], PAD_HALF[1])


def _fits(o: ObjectSpec, placed: Sequence[ObjectSpec], fixtures: Sequence[FixtureSpec], config: SceneConfig) -> bool:
    gap, fgap = config.clearance, config.finger_clearance
    for f in fixtures:
        if f.footprint_distance(o.x, o.y) < o.radius + gap:
            return False
        if any(f.footprint_distance(px, py) < PAD_RADIUS + fgap for px, py in _pads(o)):
            return False
    for p in placed:
        if math.hypot(o.x - p.x, o.y - p.y) < o.radius + p.radius + gap:
            return False
        # The open fingers of either object's grasp must not come down on the other.
        if any(math.hypot(px - p.x, py - p.y) < p.radius + PAD_RADIUS + fgap for px, py in _pads(o)):
            return False
        if any(math.hypot(px - o.x, py - o.y) < o.radius + PAD_RADIUS + fgap for px, py in _pads(p)):
            return False
    return True


def _in_view(x: float, y: float, z: float, config: SceneConfig, margin_px: float = 40.0) -> bool:
    cam = config.camera
    u, v, depth = project(np.array([[x, y, z]]), cam.intrinsics(), cam.camera_to_base())[0]
    return depth > 0 and margin_px <= u <= cam.width - 1 - margin_px and margin_px <= v <= cam.height - 1 - margin_px


def sample_layout(
    rng: np.random.Generator, n_distractors: int = 3, config: Optional[SceneConfig] = None, max_tries: int = 200
) -> SceneLayout:
    """Non-overlapping poses for the bowl, tray, target (first) and distractors, all in view."""
    config = config or SceneConfig()
    kinds = sample_objects(rng, n_distractors, config)
    fixture_kinds = [k for k, on in (("bowl", config.with_bowl), ("tray", config.with_tray)) if on]
    for _ in range(max_tries):
        fixtures: List[FixtureSpec] = []
        for kind in fixture_kinds:
            for _ in range(100):
                f = FixtureSpec(kind, float(rng.uniform(*config.fixture_x)), float(rng.uniform(*config.fixture_y)),
                                float(rng.uniform(-math.pi / 2, math.pi / 2)))
                if all(math.hypot(f.x - g.x, f.y - g.y) >= f.radius + g.radius + config.clearance for g in fixtures):
                    fixtures.append(f)
                    break
            else:
                break
        if len(fixtures) != len(fixture_kinds):
            continue
        objects: List[ObjectSpec] = []
        for colour, shape, size in kinds:
            for _ in range(200):
                o = ObjectSpec(colour, shape, size,
                               float(rng.uniform(*config.object_x)), float(rng.uniform(*config.object_y)),
                               float(rng.uniform(-math.pi / 2, math.pi / 2)))
                if _fits(o, objects, fixtures, config) and _in_view(o.x, o.y, o.half_height, config):
                    objects.append(o)
                    break
            else:
                break
        if len(objects) == len(kinds):
            return SceneLayout(objects=tuple(objects), fixtures=tuple(fixtures))
    raise RuntimeError(f"could not place {len(kinds)} objects without overlap; "
                       "use fewer distractors or a bigger region")


def sample_task(
    rng: np.random.Generator,
    skills: Sequence[str] = ("pick", "place", "push"),
    n_distractors: int = 3,
    config: Optional[SceneConfig] = None,
    seed: Optional[int] = None,
    destinations: Sequence[str] = DESTINATIONS,
    direction: Optional[str] = None,
) -> Task:
    """A random scene and a command about its first object (the target); place goes to one of ``destinations``.

    ``direction`` (a key of ``DIRECTION_PHRASES``, push/pull only) makes the command name the
    direction ("push the red block to the left"); without one the random draws are exactly
    those of a command that names none, so seeds keep their scenes.
    """
    config = config or SceneConfig()
    for s in skills:
        if s not in SAMPLED_SKILLS:
            raise ValueError(f"cannot sample a '{s}' task (this scene has no articulated object); "
                             f"use one of {SAMPLED_SKILLS}")
    if direction is not None:
        if direction not in DIRECTION_PHRASES:
            raise ValueError(f"unknown direction '{direction}' (known: {sorted(DIRECTION_PHRASES)})")
        if any(s not in ("push", "pull") for s in skills):
            raise ValueError(f"only push and pull commands name a direction, not {list(skills)}")
    skill = str(rng.choice(list(skills)))
    layout = sample_layout(rng, n_distractors, config)
    for _ in range(50):  # push/pull: room to push the target along the oracle axis
        target = layout.objects[0]
        if skill not in ("push", "pull") or _push_clear(layout, motion_yaw(skill, (target.x, target.y), direction)):
            break
        layout = sample_layout(rng, n_distractors, config)
    target = layout.objects[0]
    destination: Optional[FixtureSpec] = None
    if skill == "place":
        allowed = [f for f in layout.fixtures if f.kind in destinations]
        if not allowed:
            raise ValueError(f"a place task needs one of {tuple(destinations)} in the scene")
        destination = allowed[int(rng.integers(len(allowed)))]
        key = f"place_{destination.kind}"
    else:
        key = skill
    templates = _TEMPLATES[key]
    command = templates[int(rng.integers(len(templates)))].format(o=target.name)
    if direction is not None:
        command = f"{command} {DIRECTION_PHRASES[direction]}"
    task = Task(
        command=command,
        skill=skill,
        object=None if skill == "none" else target.name,
        destination=None if destination is None else destination.name,
        object_xyz=(target.x, target.y, target.half_height),
        object_yaw=target.yaw,
        destination_xyz=None if destination is None else (destination.x, destination.y, 0.0),
        theta=0.0,
        layout=layout,
        seed=seed,
        distractors=tuple(o.name for o in layout.objects[1:]),
        direction=direction,
    )
    return replace(task, theta=oracle_theta(task))


# Compound tasks: the clauses' skills in order (pick last: a hand that holds something cannot push or
# pick again without putting it down, which no clause here says), and how clauses are joined.
COMPOUND_SHAPES: Tuple[Tuple[str, ...], ...] = (
    ("place", "push"), ("push", "pick"), ("place", "pick"), ("push", "place"), ("place", "place"),
    ("push", "place", "pick"), ("place", "push", "pick"))
COMPOUND_JOINS: Tuple[str, ...] = ("{a} and {b}", "{a}, then {b}", "{a} and then {b}", "first {a}, then {b}")


def sample_compound_task(rng: np.random.Generator, n_distractors: int = 3, config: Optional[SceneConfig] = None,
                         seed: Optional[int] = None, max_tries: int = 50) -> Task:
    """A random scene and a 2-3 clause command over distinct objects ("put the X in the bowl, then push the Y").

    Each clause is a sub-task (``parts``) judged on its own object; pushes name a direction or
    not, and only where the object's path is clear; two places go to different fixtures.

    Raises:
        RuntimeError: no scene with room for the pushes was found in ``max_tries``.
    """
    config = config or SceneConfig()
    shape = COMPOUND_SHAPES[int(rng.integers(len(COMPOUND_SHAPES)))]
    for _ in range(max_tries):
        layout = sample_layout(rng, max(n_distractors, len(shape) - 1), config)
        fixtures = [f for f in layout.fixtures if f.kind in DESTINATIONS]
        rng.shuffle(fixtures)
        parts: List[Task] = []
        for i, skill in enumerate(shape):
            o = layout.objects[i]
            direction = None
            if skill == "push":
                named = [None, "left", "right"][int(rng.integers(3))]
                order = [named, None] if named else [None]
                direction = next((d for d in order if _push_clear(layout, motion_yaw(skill, (o.x, o.y), d), index=i)),
                                 "unclear")
                if direction == "unclear":
                    break
            destination = fixtures.pop() if skill == "place" else None
            if skill == "place" and destination is None:
                break
            key = f"place_{destination.kind}" if destination is not None else skill
            templates = _TEMPLATES[key]
            text = templates[int(rng.integers(len(templates)))].format(o=o.name)
            if direction is not None:
                text = f"{text} {DIRECTION_PHRASES[direction]}"
            part = Task(command=text, skill=skill, object=o.name,
                        destination=None if destination is None else destination.name,
                        object_xyz=(o.x, o.y, o.half_height), object_yaw=o.yaw,
                        destination_xyz=None if destination is None else (destination.x, destination.y, 0.0),
                        theta=0.0, layout=layout, seed=seed, direction=direction)
            parts.append(replace(part, theta=oracle_theta(part)))
        else:
            texts = [p.command for p in parts]
            if len(texts) == 2:
                join = COMPOUND_JOINS[int(rng.integers(len(COMPOUND_JOINS)))]
                command = join.format(a=texts[0], b=texts[1])
            else:
                command = f"{texts[0]}, then {texts[1]} and then {texts[2]}"
            return Task(command=command, skill="compound", object=None, destination=None, object_xyz=None,
                        object_yaw=None, destination_xyz=None, theta=0.0, layout=layout, seed=seed,
                        distractors=tuple(o.name for o in layout.objects[len(parts):]), parts=tuple(parts))
    raise RuntimeError(f"no scene with room for a {'/'.join(shape)} task in {max_tries} tries")


def motion_yaw(skill: str, xy: Sequence[float], direction: Optional[str] = None) -> float:
    """push/pull: the yaw the object should move along: the named direction, else radially away
    from the robot base (push) or towards it (pull)."""
    if direction is not None:
        return DIRECTION_YAW[direction]
    return math.atan2(xy[1], xy[0]) + (math.pi if skill == "pull" else 0.0)


def _push_clear(layout: SceneLayout, theta: float, standoff: float = SkillParams().push_standoff,
                travel: float = 0.12, pusher_radius: float = 0.025, gap: float = 0.01, index: int = 0) -> bool:
    """Along ``theta``: the fingers' landing point behind object ``index`` (the target) and its path are free."""
    o = layout.objects[index]
    c, s = math.cos(theta), math.sin(theta)
    circles = [(o.x - standoff * c, o.y - standoff * s, pusher_radius)]
    circles += [(o.x + k * c, o.y + k * s, o.radius) for k in np.linspace(0.02, travel, 6)]
    for x, y, r in circles:
        if any(math.hypot(x - p.x, y - p.y) < p.radius + r + gap for p in layout.objects if p is not o):
            return False
        if any(f.footprint_distance(x, y) < r + gap for f in layout.fixtures):
            return False
    return True


def oracle_theta(task: Task) -> float:
    """The theta a perfect perception stack would send with the task's (first) goal."""
    if task.skill in ("push", "pull") and task.object_xyz is not None:
        return motion_yaw(task.skill, task.object_xyz, task.direction)
    if task.skill == "place" and task.destination is not None:
        return task.layout.fixture(task.destination).yaw
    return 0.0 if task.object_yaw is None else float(task.object_yaw)


# --------------------------------------------------------------------------- success
def lifted(rest_z: float, z: float, held: bool) -> bool:
    """pick: the object is > 5 cm above where it rested and the fingers hold it."""
    return held and (z - rest_z) > PICK_MIN_LIFT


def placed(fixture: FixtureSpec, xyz: Sequence[float], speed: float, touching_gripper: bool) -> bool:
    """place: centre over the inside of the fixture, not above its rim region, at rest and released."""
    x, y, z = xyz
    return (
        fixture.contains(x, y)
        and z < fixture.height + 0.06
        and speed < REST_MAX_SPEED
        and not touching_gripper
    )


def pushed(start_xy: Sequence[float], end_xy: Sequence[float], direction: float) -> Tuple[bool, float]:
    """push/pull: displacement along ``direction`` (radians) > 3 cm; returns (ok, displacement).

    ``direction`` is the one the command named when it named one (``Task.named_yaw``): judged
    along the goal's own theta, a push the wrong way would count as done.
    """
    d = np.asarray(end_xy[:2], dtype=np.float64) - np.asarray(start_xy[:2], dtype=np.float64)
    along = float(d @ np.array([math.cos(direction), math.sin(direction)]))
    return along > PUSH_MIN_DISPLACEMENT, along


def pointed(tcp_xyz: Sequence[float], object_xyz: Sequence[float]) -> Tuple[bool, float]:
    """point_at: the gripper ended within 3 cm (xy) of the object; returns (ok, xy error)."""
    err = math.hypot(tcp_xyz[0] - object_xyz[0], tcp_xyz[1] - object_xyz[1])
    return err < POINT_MAX_XY_ERROR, err


def entity_at(xy: Sequence[float], objects: Sequence[Tuple[str, float, float, float]],
              fixtures: Sequence[FixtureSpec]) -> Optional[str]:
    """What a goal at ``xy`` is on: an object, a fixture, or None for the bare table.

    ``objects`` are (name, x, y, footprint radius) where they are now. An object counts when the
    goal is within its footprint circle plus ``GOAL_ON_TOLERANCE`` (the nearest edge wins, so a
    goal between two objects is on the closer one); objects stand on the table beside the
    fixtures, so they are asked first. This, not the executor's 8 cm reach, decides "wrong
    object": a goal in empty space that happens to push a neighbour is not a goal on it.
    """
    x, y = float(xy[0]), float(xy[1])
    gaps = [(math.hypot(x - ox, y - oy) - r, name) for name, ox, oy, r in objects]
    near = [(gap, name) for gap, name in gaps if gap <= GOAL_ON_TOLERANCE]
    if near:
        return min(near)[1]
    for f in fixtures:
        if f.footprint_distance(x, y) <= 0.0:
            return f.name
    return None
