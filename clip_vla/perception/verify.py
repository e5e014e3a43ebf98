"""Did the step work? A step's postcondition checked on the frame after it, and goals refused before it.

RT-2's loop is plan, verify, execute: after the executor reports a step, the next frame is
looked at before anything else moves. The verifier answers from perception alone (the
executor's word is trusted only where nothing can be seen, ``point_at``)::

    before frame ─┐                                    ┌─ pick:  gone from where it rested, raised
                  ├─ CLIPSeg: object (+ destination) ──┤  place: inside the destination's footprint,
    after frame  ─┘   one vision pass per frame,       │         at rest height (the gripper let go)
                      every component of each mask     └─ push/pull: moved far enough along theta
                  components ─► depth + intrinsics ─► points in the base frame (core.geometry.locate)

Every component of the object's mask is kept, not only the best one: after a pick the held
object is half hidden by the fingers and a look-alike left on the table can outrank it, so
"the best component is still on the table" would call most successful picks failures.
The object the goal was grounded on is "the acted-on object": with grounding by naming, the
first scene object that takes the command's name in the before frame (the one grounding chose:
the same models on the same frame), else the before-frame component nearest the goal. Not
simply the nearest: when the executor acts beside the grounded object (a hand-eye calibration
offset, a goal that slid onto a neighbour), a piece of the name's mask on that neighbour is
nearest the goal, and its lift was read as the named object's. The rules ask where it went:

* pick: failure ``object_still_on_table`` when a component still lies where it rested;
  success ``object_lifted`` when a component is raised above it (``object_left_rest``, with
  less confidence, when the rest place is empty but the held object is not seen);
* place: success when a component of the object lies inside the destination's footprint (the
  convex hull of its mask's points on the table) at rest height; else ``gripper_not_empty``
  (held high), ``object_beside_destination`` or ``object_not_in_destination``. With
  ``verify.place_look_alikes`` the object is found where its name or one of its look-alikes
  wins: the object held was the one picked, and inside a bowl a compact CLIPSeg often calls a
  purple ball a purple block;
* push/pull: the component that appeared nearest the acted-on object's old place (at least
  ``mover_min_area_fraction`` of its area: not a stray piece of the name) gives the
  displacement along theta: ``object_moved``, ``not_moved_enough`` or ``moved_wrong_direction``;
* a put-back (the planner's undo of a failed pick, ``core.plan.PlanStep.put_back``) and
  ``point_at``: the executor's report decides (``executor_report``): a put-back only has to
  empty the hand before the pick is retried, and that pick is verified itself;
* pick and push/pull, ``wrong_object``: a second opinion on the grounding. Another component
  of the before frame, at least 0.4 as large and surer per pixel (mean logit, averaged over
  both frames) than the acted-on one, is still where it was: the step most likely moved a
  look-alike (the grounding ranks components by probability mass; these are its mistakes).
  With ``verify.object_sizes`` depth gives an independent opinion: the acted-on object's height
  and footprint length, measured from the before frame's depth, must fit a size its name's noun
  comes in ("red bar": 3 cm high, 10-13 cm long), within ``size_height_tolerance_m`` and
  ``size_length_tolerance_m`` (``clip_vla.core.sizes``): the models that confused a red cup with
  the red bar cannot make the cup lie flat. With ``verify.identity`` CLIP gives another: it ranks
  the catalogue's names on the crop of the acted-on component (before frame), and another name
  beating the named one by ``identity_margin_nats`` is ``wrong_object`` (``clip_vla.perception.identity``).

Without depth, points come from the table plane (the pipeline's fallback). Heights are then
unknown, so:

* pick: a component's height is measured under the hypothesis that a pick lifts the object
  straight up: its centroid's ray is followed to where it passes over the rest point, and the
  ray's height there is the lift (a ray that misses the rest point by more than
  ``ray_max_miss_m`` gives no height);
* place: the footprint test uses the table-plane points of both masks; the gripper-empty test
  (a height) cannot be made and is skipped (the evidence says so);
* push/pull: before and after points share the same table-plane bias, so the displacement is
  still measured.

Every no-depth verdict carries ``evidence["depth"] = "missing"`` and its confidence is scaled
by ``VerifyConfig.no_depth_confidence``. ``uncertain`` answers when the object (or the
destination) is not found in the after frame: not found is not evidence either way.

``refuse_implausible_goal`` is the rule that runs before execution: a place destination found
on the gripper or on the object it holds, or any goal too high above the table for something
resting on it, is refused with its own reason instead of being executed.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import (TYPE_CHECKING, Any, Callable, Collection, Dict, List, Mapping, NamedTuple, Optional, Protocol,
                    Sequence, Tuple)

import cv2
import numpy as np

from clip_vla.core import geometry
from clip_vla.core.config import GeometryConfig, VerifyConfig  # VerifyConfig: re-exported (it lived here)
from clip_vla.core.sizes import MeasuredSize, bodies_at, measure_object, on_objects, parse_object_sizes, size_range_for
from clip_vla.core.types import Detection, Frame, Intrinsics
from clip_vla.perception.identity import Identify, clip_identifier
from clip_vla.perception.localize import all_components, detection_from_mask, look_alikes, target_mask
from clip_vla.perception.suggest import mask_overlap

if TYPE_CHECKING:  # the pipeline loads torch; the verifier's rules do not need it
    from clip_vla.pipeline import VLAPipeline

__all__ = [
    "GoalLike",
    "GoalRefusal",
    "Perceive",
    "StepLike",
    "Verdict",
    "VerifyConfig",
    "Verifier",
    "model_perceiver",
    "make_verifier",
    "refuse_goal",
    "refuse_implausible_goal",
]

SUCCESS, FAILURE, UNCERTAIN = "success", "failure", "uncertain"
VERDICTS = (SUCCESS, FAILURE, UNCERTAIN)

# Stable reasons (published on ~/task_status): why a verdict is what it is.
OBJECT_LIFTED = "object_lifted"
OBJECT_LEFT_REST = "object_left_rest"
WRONG_OBJECT = "wrong_object"
OBJECT_STILL_ON_TABLE = "object_still_on_table"
OBJECT_IN_DESTINATION = "object_in_destination"
OBJECT_NOT_IN_DESTINATION = "object_not_in_destination"
OBJECT_BESIDE_DESTINATION = "object_beside_destination"
GRIPPER_NOT_EMPTY = "gripper_not_empty"
OBJECT_MOVED = "object_moved"
NOT_MOVED_ENOUGH = "not_moved_enough"
MOVED_WRONG_DIRECTION = "moved_wrong_direction"
OBJECT_NOT_FOUND = "object_not_found"
DESTINATION_NOT_FOUND = "destination_not_found"
EXECUTOR_REPORT = "executor_report"
UNSUPPORTED_SKILL = "unsupported_skill"
REASONS = (OBJECT_LIFTED, OBJECT_LEFT_REST, OBJECT_STILL_ON_TABLE, WRONG_OBJECT, OBJECT_IN_DESTINATION,
           OBJECT_NOT_IN_DESTINATION, OBJECT_BESIDE_DESTINATION, GRIPPER_NOT_EMPTY, OBJECT_MOVED, NOT_MOVED_ENOUGH,
           MOVED_WRONG_DIRECTION, OBJECT_NOT_FOUND, DESTINATION_NOT_FOUND, EXECUTOR_REPORT, UNSUPPORTED_SKILL)

# Refusal reasons of refuse_implausible_goal.
DESTINATION_ON_GRIPPER = "destination_on_gripper"
IMPLAUSIBLE_HEIGHT = "implausible_height"

MOVE_SKILLS = ("push", "pull")  # theta of their goal is the direction the object moves
RESTING_TARGET_SKILLS = ("pick", "push", "pull", "point_at")  # the goal is an object resting on the table


class StepLike(Protocol):
    """What the verifier needs of a step (the planner's PlanStep, a ParsedInstruction, ...)."""

    skill: Optional[str]
    object: Optional[str]
    destination: Optional[str]
    direction: Optional[str]


class GoalLike(Protocol):
    """What the verifier needs of the step's grounded goal (an ``ActionGoal`` has it).

    ``xyz_base`` is where the executor was sent: the object for pick/push/pull, the
    destination for place. ``theta`` is, for push/pull, the direction the object must move.
    """

    xyz_base: Tuple[float, float, float]
    theta: float


class Component(NamedTuple):
    """One connected component of a phrase's mask.

    ``mean_logit`` is how sure the model is per pixel, unsaturated: the mean probabilities of an
    object and of its look-alikes all sit near 0.97, their mean logits still differ.
    """

    detection: Detection
    mean_logit: float
    named: bool = False  # a scene object taking the phrase (``perception.ground_by_naming``), not a pixel-wise piece


# (frame, phrases[, kin=phrases]) -> per phrase, every connected component of its mask, best first (the
# pipeline's instance score); an empty list when the phrase is not found. One vision pass for all phrases.
# ``kin`` (passed only when not empty): phrases found where they or their look-alikes win.
Perceive = Callable[..., Dict[str, List[Component]]]
MASK_LOGIT = 10.0  # the mean logit given to a known binary mask (ground truth): probability ~1


@dataclass
class Verdict:
    """The outcome of one step as perception sees it; ``reason`` is a stable string (see REASONS)."""

    verdict: str  # success | failure | uncertain
    confidence: float  # [0, 1]
    reason: str
    evidence: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {self.verdict!r}")
        self.confidence = float(min(1.0, max(0.0, self.confidence)))

    @property
    def success(self) -> bool:
        return self.verdict == SUCCESS

    def to_dict(self) -> Dict[str, Any]:
        return {"verdict": self.verdict, "confidence": round(self.confidence, 4), "reason": self.reason,
                "evidence": _jsonable(self.evidence)}


@dataclass(frozen=True)
class GoalRefusal:
    """Why a goal is not executed (``destination_on_gripper`` | ``implausible_height``)."""

    reason: str
    message: str
    evidence: Dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- refusal before execution
def refuse_implausible_goal(goal_xyz_base: Sequence[float], skill: str, *, table_height: float = 0.0,
                            held_xyz_base: Optional[Sequence[float]] = None,
                            config: Optional[VerifyConfig] = None) -> Optional[GoalRefusal]:
    """A refusal for a goal no resting object could be at, else None.

    Why: with the compact models a third of the failed places put "the bowl" on the gripper
    (13-20 cm above the table); executing such a goal drops the object. ``held_xyz_base`` is
    where the held object was seen (``ActionGoal.object_xyz_base`` of a place); a place
    destination within ``gripper_radius_m`` of it is on the gripper or on that object.

    ``config`` None: the defaults of ``VerifyConfig``.

    Raises:
        ValueError: when ``goal_xyz_base`` is not three finite numbers.
    """
    config = config or VerifyConfig()
    goal = _point3(goal_xyz_base, "goal_xyz_base")
    height = float(goal[2] - table_height)
    if skill == "place" and held_xyz_base is not None:
        held = _point3(held_xyz_base, "held_xyz_base")
        distance = float(np.linalg.norm(goal - held))
        if distance < config.gripper_radius_m:
            return GoalRefusal(DESTINATION_ON_GRIPPER,
                               f"the destination is {distance:.3f} m from the held object: it was found on the gripper",
                               {"distance_m": distance, "held_xyz_base": held.tolist()})
    limit = config.max_destination_height_m if skill == "place" else (
        config.max_target_height_m if skill in RESTING_TARGET_SKILLS else None)
    if limit is not None and height > limit:
        what = "destination" if skill == "place" else "object"
        return GoalRefusal(IMPLAUSIBLE_HEIGHT,
                           f"the {what} is {height:.3f} m above the table (> {limit:.3f} m): nothing rests there",
                           {"height_m": height, "max_height_m": limit})
    return None


# --------------------------------------------------------------------------- perception
def model_perceiver(pipeline: "VLAPipeline") -> Perceive:
    """The pipeline's CLIPSeg as a ``Perceive``: every phrase and distractor competes at every pixel.

    The same decision rule as grounding (threshold, competition, component by
    ``perception.instance_score``), so a verdict sees what the goal was grounded on.

    Raises:
        ValueError: when the pipeline has no models (an oracle pipeline).
    """
    if pipeline.segmenter is None:
        raise ValueError("model_perceiver needs a pipeline with models; pass an oracle Perceive instead")

    def perceive(frame: Frame, phrases: Sequence[str], kin: Sequence[str] = ()) -> Dict[str, List[Component]]:
        perception = pipeline.config.perception
        rivals: List[str] = []
        kin_of: Dict[int, List[int]] = {}  # a phrase's look-alikes, by prompt index
        if pipeline.config.verify.look_alikes:
            for i, phrase in enumerate(phrases):
                own = look_alikes(phrase, pipeline.catalogue, perception.look_alike_competitors,
                                  exclude=list(phrases) + rivals)
                kin_of[i] = list(range(len(phrases) + len(rivals), len(phrases) + len(rivals) + len(own)))
                rivals += own
        prompts = [perception.prompt_template.replace("{object}", p) for p in list(phrases) + rivals]
        prompts += list(pipeline.vocabulary.distractors)
        probs = prompt_probabilities(pipeline, frame.rgb, prompts)
        everyone = range(len(prompts))
        with_kin = {i for i, p in enumerate(phrases) if p in kin and kin_of.get(i)}
        seen = {p: _with_kin(probs, i, kin_of[i], p, perception) if i in with_kin else
                components(target_mask(probs, i, everyone, perception.mask_threshold), probs[i], p,
                           perception.min_area_px, perception.instance_score) for i, p in enumerate(phrases)}
        if perception.ground_by_naming:
            _name_objects(pipeline, frame, probs, list(phrases) + rivals, len(phrases), seen, skip=with_kin)
        return seen

    return perceive


def _with_kin(probs: np.ndarray, index: int, kin: Sequence[int], phrase: str, perception: Any) -> List[Component]:
    """The components where ``phrase`` or one of its look-alikes (``kin``, prompt indices) wins: the
    family's best probability per pixel against every other prompt, the family not competing within."""
    family = [index, *kin]
    others = [j for j in range(probs.shape[0]) if j not in family]
    merged = probs[family].max(axis=0)
    stacked = np.concatenate([merged[None], probs[others]], axis=0)
    mask = target_mask(stacked, 0, range(stacked.shape[0]), perception.mask_threshold)
    return components(mask, merged, phrase, perception.min_area_px, perception.instance_score)


def _name_objects(pipeline: "VLAPipeline", frame: Frame, probs: np.ndarray, names: Sequence[str], phrases: int,
                  seen: Dict[str, List[Component]], skip: Collection[int] = ()) -> None:
    """Put the scene objects that take each phrase (as grounding by naming found the goal's) first in
    ``seen``, marked ``named``; the pixel-wise pieces they cover go. Fixtures keep the component rule,
    and the phrases in ``skip`` (found with their look-alikes, ``_with_kin``) are not named."""
    fixture_names = set(pipeline.config.suggest.fixtures)
    fixtures = [i for i, n in enumerate(names) if n in fixture_names]
    asked = [i for i in range(phrases) if i not in skip and i not in fixtures]
    if not asked:
        return
    overlap = pipeline.config.suggest.merge_overlap
    rank = pipeline._identity_rank(frame) if pipeline.config.perception.identity_weight > 0 else None
    for i in asked:
        objects = pipeline.objects_named(frame, probs, names, i, fixtures, rank)
        if not objects:
            continue
        named = [Component(d, _mean_logit(probs[i], d.mask), named=True) for d in objects]
        pieces = [c for c in seen[names[i]] if all(mask_overlap(c.detection, d) < overlap for d in objects)]
        seen[names[i]] = named + pieces


def components(mask: np.ndarray, probs: np.ndarray, phrase: str, min_area: int = 1,
               score: str = "mass") -> List[Component]:
    """Every connected component of ``mask`` (``localize.all_components``, best first) with its mean logit.

    Why all of them: after a pick the held object is partly hidden by the fingers, and a
    look-alike left on the table can outrank it; the verifier must see both.
    """
    return [Component(det, _mean_logit(probs, det.mask))
            for det in all_components(mask, probs, phrase, min_area, score)]


def _mean_logit(probs: np.ndarray, mask: np.ndarray) -> float:
    """Mean logit of ``probs`` (HxW) over ``mask``: how sure per pixel, unsaturated."""
    p = probs[mask]
    return float((np.log(np.clip(p, 1e-6, 1.0)) - np.log(np.clip(1.0 - p, 1e-6, 1.0))).mean())


def component_from_mask(phrase: str, mask: np.ndarray, mean_logit: float = MASK_LOGIT) -> Component:
    """A Component from a known binary mask (the simulator's ground truth, a user's label)."""
    return Component(detection_from_mask(phrase, mask), float(mean_logit))


def prompt_probabilities(pipeline: "VLAPipeline", rgb: np.ndarray, prompts: Sequence[str]) -> np.ndarray:
    """KxHxW CLIPSeg probabilities of ``prompts`` on one image: one vision pass, one decoder batch."""
    _, _, logits = pipeline.segment(rgb, prompts)
    return pipeline.segmenter.probabilities(logits, rgb.shape[:2])


# --------------------------------------------------------------------------- the verifier
@dataclass
class _Seen:
    """One mask component in one frame: its detection and its point in the base frame."""

    detection: Detection
    mean_logit: float
    xyz_base: np.ndarray
    depth_source: str  # depth | table_plane
    named: bool = False  # Component.named

    def evidence(self) -> Dict[str, Any]:
        d = self.detection
        return {"area_px": int(d.area), "confidence": float(d.confidence), "mean_logit": float(self.mean_logit),
                "centroid_px": None if d.centroid is None else [float(c) for c in d.centroid],
                "xyz_base": [float(v) for v in self.xyz_base],
                "depth_source": self.depth_source, "named": self.named}


@dataclass
class _View:
    """One frame with the geometry needed to turn its masks into base-frame points."""

    frame: Frame
    intrinsics: Intrinsics
    camera_to_base: geometry.RigidTransform

    @property
    def has_depth(self) -> bool:
        return self.frame.depth is not None


class Verifier:
    """Checks a step's postcondition on the frame after it (see the module docstring for the rules)."""

    def __init__(self, perceive: Perceive, geometry_config: GeometryConfig,
                 camera_to_base: Optional[geometry.RigidTransform] = None,
                 default_intrinsics: Optional[Intrinsics] = None, config: Optional[VerifyConfig] = None,
                 identify: Optional[Identify] = None) -> None:
        """``config`` None: the defaults of ``VerifyConfig``. ``identify``: CLIP's vote on the acted-on
        object's crop (``clip_vla.perception.identity``), a second ``wrong_object`` test; None: none."""
        self.perceive = perceive
        self.identify = identify
        self.geometry = geometry_config
        self.camera_to_base = camera_to_base or geometry.camera_to_base_from_config(geometry_config)
        self.default_intrinsics = default_intrinsics or geometry.intrinsics_from_config(geometry_config)
        self.config = config or VerifyConfig()

    @classmethod
    def from_pipeline(cls, pipeline: "VLAPipeline", config: Optional[VerifyConfig] = None,
                      perceive: Optional[Perceive] = None) -> "Verifier":
        """The pipeline's models (or ``perceive``, e.g. oracle masks), geometry and camera mounting.

        ``config`` None: the pipeline's own ``verify`` section, so the node, the CLI and the YAML
        file set the verifier's thresholds in one place. With ``verify.identity`` the pipeline's CLIP
        votes on the acted-on object's identity (when it has a CLIP of its own).
        """
        config = config or pipeline.config.verify
        return cls(perceive or model_perceiver(pipeline), pipeline.config.geometry, pipeline.camera_to_base,
                   pipeline.default_intrinsics, config, clip_identifier(pipeline) if config.identity else None)

    # ------------------------------------------------------------------ entry point
    def verify(self, step: StepLike, goal: GoalLike, before: Frame, after: Frame,
               camera_to_base: Optional[geometry.RigidTransform] = None,
               executor_report: Optional[Mapping[str, Any]] = None,
               set_aside: Sequence[Sequence[float]] = (), set_aside_radius_m: float = 0.03) -> Verdict:
        """Does the step's postcondition hold on ``after``? ``before`` is the frame the goal was grounded on.

        ``set_aside``: base (x, y) of objects known not to be the step's object (the node's
        ``tasks.set_aside_for``: refuted as it, or left by a passed step naming another object):
        components within ``set_aside_radius_m`` of one are not the object, nor its rival; a pick
        or push whose goal lies that close to one acted on that other object (``wrong_object``).

        Raises:
            ValueError: when a frame has no intrinsics and none are configured, or the step names
                no object for a skill that needs one.
        """
        skill = step.skill or ""
        if skill == "point_at" or getattr(step, "put_back", False):
            return self._executor_verdict(executor_report)
        if skill not in ("pick", "place") + MOVE_SKILLS:
            return Verdict(UNCERTAIN, 0.0, UNSUPPORTED_SKILL, {"skill": skill})
        if not step.object:
            raise ValueError(f"a '{skill}' step must name its object")
        c2b = camera_to_base or self.camera_to_base
        views = (self._view(before, c2b), self._view(after, c2b))
        aside = _Aside(tuple(set_aside), set_aside_radius_m)
        goal_xyz = _point3(goal.xyz_base, "goal.xyz_base")
        known = aside.under(goal_xyz) if skill != "place" else None
        if known is not None:  # the goal on an object the plan knows is another: no need to look
            verdict = Verdict(FAILURE, 1.0, WRONG_OBJECT, {"acted_xyz_base": goal_xyz.tolist(),
                                                           "set_aside_xyz_base": [float(v) for v in known]})
        elif skill == "pick":
            verdict = self._verify_pick(step, goal, *views, aside)
        elif skill == "place":
            verdict = self._verify_place(step, goal, views[1])
        else:
            verdict = self._verify_move(step, goal, *views, aside)
        if not views[1].has_depth:
            verdict.evidence["depth"] = "missing"
            verdict.confidence *= self.config.no_depth_confidence
        else:
            verdict.evidence["depth"] = "present"
        verdict.evidence["skill"] = skill
        return verdict

    # ------------------------------------------------------------------ rules
    def _verify_pick(self, step: StepLike, goal: GoalLike, before: _View, after: _View,
                     aside: "_Aside") -> Verdict:
        """Gone from where it rested (and seen raised), and no better match for the name left behind."""
        cfg = self.config
        start, end = self._see(before, [step.object])[step.object], self._see(after, [step.object])[step.object]
        start, end = aside.keep(start), aside.keep(end)
        acted = _acted(start, goal.xyz_base)
        rest = acted.xyz_base if acted is not None else _point3(goal.xyz_base, "goal.xyz_base")
        heights = [self._lift(after, seen, rest) for seen in end]
        evidence = {"object_before": _evidence(start), "object_after": _evidence(end), "rest_xyz_base": rest.tolist(),
                    "lift_m_per_component": heights, "min_lift_m": cfg.min_lift_m}
        least = cfg.staying_min_area_fraction * (acted.detection.area if acted is not None else 0)
        staying = [(s, h) for s, h in zip(end, heights) if _xy_distance(s.xyz_base, rest) < cfg.rest_radius_m
                   and (h is None or h < cfg.min_lift_m) and s.detection.area >= least]
        if staying:
            left, evidence["lift_m"] = staying[0]
            return Verdict(FAILURE, self._confidence(cfg.rest_radius_m - _xy_distance(left.xyz_base, rest)),
                           OBJECT_STILL_ON_TABLE, evidence)
        wrong = self._wrong_object(before, step.object, start, acted, end, goal.xyz_base, evidence)
        if wrong is not None:
            return wrong
        raised = [h for h in heights if h is not None and h >= cfg.min_lift_m]
        if raised:
            evidence["lift_m"] = max(raised)
            return Verdict(SUCCESS, self._confidence(max(raised) - cfg.min_lift_m), OBJECT_LIFTED, evidence)
        if not end:
            return Verdict(UNCERTAIN, 0.5, OBJECT_NOT_FOUND, evidence)
        return Verdict(SUCCESS, 0.5, OBJECT_LEFT_REST, evidence)

    def _verify_place(self, step: StepLike, goal: GoalLike, after: _View) -> Verdict:
        """Some component of the object inside the destination's footprint, at rest height."""
        cfg = self.config
        destination = step.destination or ""
        if not destination:
            raise ValueError("a 'place' step must name its destination")
        seen = self._see(after, [step.object, destination], kin=[step.object] if cfg.place_look_alikes else ())
        objects, destinations = seen[step.object], seen[destination]
        evidence: Dict[str, Any] = {"object_after": _evidence(objects), "destination_after": _evidence(destinations),
                                    "goal_xyz_base": [float(v) for v in goal.xyz_base]}
        if not objects:
            return Verdict(UNCERTAIN, 0.5, OBJECT_NOT_FOUND, evidence)
        if not destinations:
            return Verdict(UNCERTAIN, 0.5, DESTINATION_NOT_FOUND, evidence)
        whole = _joined_through(destinations, objects)
        footprint = self._footprint(after, dataclasses.replace(destinations[0].detection, mask=whole))
        inside = [float(cv2.pointPolygonTest(footprint, (float(o.xyz_base[0]), float(o.xyz_base[1])), True))
                  for o in objects]
        heights = [self._height(o) for o in objects]
        evidence.update(inside_footprint_m_per_component=inside, object_height_m_per_component=heights,
                        footprint_xy=footprint.reshape(-1, 2).round(4).tolist())
        if not after.has_depth:
            evidence["gripper_empty_check"] = "skipped: no depth, height unknown"
        resting = [h is None or h <= cfg.max_rest_height_m for h in heights]
        best = max(range(len(objects)), key=lambda i: (resting[i], inside[i]))
        evidence.update(inside_footprint_m=inside[best], object_height_m=heights[best],
                        object_xyz_base=objects[best].xyz_base.tolist())  # where it is now (``tasks.settle``)
        margin = inside[best] + cfg.footprint_tolerance_m
        if resting[best] and margin >= 0:
            return Verdict(SUCCESS, self._confidence(margin), OBJECT_IN_DESTINATION, evidence)
        if not resting[best]:
            return Verdict(FAILURE, self._confidence(heights[best] - cfg.max_rest_height_m), GRIPPER_NOT_EMPTY,
                           evidence)
        reason = OBJECT_BESIDE_DESTINATION if -inside[best] < cfg.beside_margin_m else OBJECT_NOT_IN_DESTINATION
        return Verdict(FAILURE, self._confidence(margin), reason, evidence)

    def _verify_move(self, step: StepLike, goal: GoalLike, before: _View, after: _View,
                     aside: "_Aside") -> Verdict:
        """The acted-on object's place vacated and a new point ahead along theta (the commanded direction)."""
        cfg = self.config
        start, end = self._see(before, [step.object])[step.object], self._see(after, [step.object])[step.object]
        start, end = aside.keep(start), aside.keep(end)
        acted = _acted(start, goal.xyz_base)
        origin = acted.xyz_base if acted is not None else _point3(goal.xyz_base, "goal.xyz_base")
        direction = np.array([math.cos(goal.theta), math.sin(goal.theta)])
        evidence: Dict[str, Any] = {"object_before": _evidence(start), "object_after": _evidence(end),
                                    "theta": float(goal.theta), "min_push_m": cfg.min_push_m}
        least = cfg.mover_min_area_fraction * (acted.detection.area if acted is not None else 0)
        moved = [s for s in end if s.detection.area >= least
                 and not any(_xy_distance(s.xyz_base, b.xyz_base) < cfg.match_radius_m
                             for b in start if b is not acted)]
        if moved:  # depth, once for all the candidates: where other objects stood before the push
            others = self._others_before(before, acted)
            moved = [s for s in moved if others is None or not _stood_on(s, *others)]
        mover = min(moved, key=lambda s: _xy_distance(s.xyz_base, origin), default=None)
        wrong = self._wrong_object(before, step.object, start, acted, end, goal.xyz_base, evidence)
        if wrong is not None:
            if mover is not None:  # where the wrong object went: a retry sets it aside there too
                evidence["acted_after_xyz_base"] = mover.xyz_base.tolist()
            return wrong
        if mover is None:  # gone from its place and not seen elsewhere: pushed out of view (or off the table)
            left = acted is not None and not any(_xy_distance(e.xyz_base, origin) < cfg.rest_radius_m for e in end)
            return (Verdict(SUCCESS, 0.5, OBJECT_LEFT_REST, evidence) if left
                    else Verdict(UNCERTAIN, 0.5, OBJECT_NOT_FOUND, evidence))
        delta = mover.xyz_base[:2] - origin[:2]
        along = float(delta @ direction)
        evidence.update(displacement_xy_m=delta.tolist(), along_m=along, object_xyz_base=mover.xyz_base.tolist())
        margin = along - cfg.min_push_m
        if margin >= 0:
            return Verdict(SUCCESS, self._confidence(margin), OBJECT_MOVED, evidence)
        reason = MOVED_WRONG_DIRECTION if along <= -cfg.min_push_m else NOT_MOVED_ENOUGH
        return Verdict(FAILURE, self._confidence(margin), reason, evidence)

    def _others_before(self, before: _View, acted: Optional[_Seen]) -> Optional[Tuple[np.ndarray, np.ndarray]]:
        """(HxW: the pixels on an object in the before frame, HxW: the acted-on object's body there), from
        depth; None without it. Why: a component lying mostly on another object that stood there
        before is that object, lit by the name only now, not the pushed one (``_stood_on``)."""
        if not before.has_depth:
            return None
        shape = before.frame.rgb.shape[:2]
        occupied = on_objects(before.frame.depth, before.intrinsics, before.camera_to_base, self.geometry,
                              self.config.size_above_table_m)
        if occupied is None:
            return None
        own = (bodies_at([acted.xyz_base[:2]], shape, before.intrinsics, before.camera_to_base, self.geometry,
                         self.config.size_above_table_m, self.config.match_radius_m, before.frame.depth,
                         self.config.size_surface_step_m) if acted is not None else np.zeros(shape, dtype=bool))
        return occupied, own

    def _wrong_object(self, before: _View, name: str, start: Sequence[_Seen], acted: Optional[_Seen],
                      end: Sequence[_Seen], goal_xyz: Sequence[float], evidence: Dict[str, Any]) -> Optional[Verdict]:
        """``wrong_object`` when a rival of the acted-on component is left where it was (the larger the
        rival relative to the acted-on component, the surer), when the acted-on object's size fits no
        size of its name's noun (the farther outside, the surer), or when CLIP names the acted-on
        object's crop otherwise (the larger the log-odds gap past the margin, the surer); else None."""
        if acted is not None:  # where the object acted on was: a retry sets it aside if this refutes it
            evidence["acted_xyz_base"] = acted.xyz_base.tolist()
        rival = self._rival_left(before, name, start, acted, end, evidence)
        if rival is not None:
            evidence["rival_xyz_base"] = rival.xyz_base.tolist()
            return Verdict(FAILURE, 0.5 + 0.5 * min(1.0, rival.detection.area / max(acted.detection.area, 1)),
                           WRONG_OBJECT, evidence)
        misfit = self._size_misfit(before, name, acted, _point3(goal_xyz, "goal.xyz_base")[:2], evidence)
        if misfit is not None:
            return Verdict(FAILURE, self._confidence(misfit), WRONG_OBJECT, evidence)
        if self.identify is None or acted is None:
            return None
        vote = self.identify(before.frame, acted.detection.mask, name)
        if vote is None:
            return None
        evidence["identity"] = vote.to_dict()
        excess = vote.gap_nats - self.config.identity_margin_nats
        if excess <= 0:
            return None
        return Verdict(FAILURE, 0.5 + 0.5 * min(1.0, excess / max(self.config.identity_margin_nats, 1.0)),
                       WRONG_OBJECT, evidence)

    def _rival_left(self, before: _View, name: str, start: Sequence[_Seen], acted: Optional[_Seen],
                    end: Sequence[_Seen], evidence: Dict[str, Any]) -> Optional[_Seen]:
        """A second opinion on which object the name meant: another component of the before frame,
        big enough and (mean logit, averaged over both frames: two looks) surer per pixel than the
        one acted on, that is still where it was, and whose size (``verify.object_sizes``) does not
        rule out the name.

        Why: the goal's component won by probability mass; when an unmoved rival matches the name
        better per pixel, the step most likely moved a look-alike and the named object is still there.
        When the acted-on component is a scene object named by the phrase (grounding by naming), its
        rivals are the other objects that take the name: a look-alike lit by the phrase in places
        was already judged, and named otherwise. A rival that depth measures as another noun's
        object (a cup standing 6 cm tall rivalling "the yellow block") is no evidence: it is listed
        in ``evidence["rivals_not_the_size"]``.
        """
        if acted is None:
            return None
        cfg = self.config
        for other in start:
            if other is acted or (acted.named and not other.named):  # a named object's rivals take its name too
                continue
            again = [e for e in end if _xy_distance(e.xyz_base, other.xyz_base) < cfg.match_radius_m]
            if not again:
                continue
            sure = (other.mean_logit + again[0].mean_logit) / 2.0  # two looks at it
            big = other.detection.area >= cfg.rival_min_area_fraction * acted.detection.area
            if not (big and sure >= acted.mean_logit + cfg.rival_logit_margin):
                continue
            size = self._size_evidence(before, name, other, other.xyz_base[:2])
            if size is not None and _misfit(size) is not None:
                evidence.setdefault("rivals_not_the_size", []).append({"xyz_base": other.xyz_base.tolist(), **size})
                continue
            return other
        return None

    def _size_misfit(self, before: _View, name: str, acted: Optional[_Seen], goal_xy: Sequence[float],
                     evidence: Dict[str, Any]) -> Optional[float]:
        """How far (metres, past the tolerances) the acted-on object's size, measured from depth, lies
        outside every size its name's noun comes in (``verify.object_sizes``), when it fits another
        noun's; None when it fits its own or cannot be judged (``_size_evidence``). Of the blobs under
        the mask, the one reaching closest to the goal (``goal_xy``) is measured: the gripper acted there.

        Why: depth is a second sensor, blind to the colours and textures the models confused; a
        bar and a cup of one colour differ by centimetres (``clip_vla.core.sizes``).
        """
        size = self._size_evidence(before, name, acted, goal_xy) if acted is not None else None
        if size is None:
            return None
        evidence["size"] = size
        return _misfit(size)

    def _size_evidence(self, view: _View, name: str, seen: _Seen, at_xy: Sequence[float]) -> Optional[Dict[str, Any]]:
        """``seen``'s object measured on ``view``'s depth against the sizes of ``name``'s noun: the
        expected range, the measured size, how far outside (``excess_m``), the nouns it fits; or why it
        was not measured (``skipped``). None when no size is known for the noun.

        A blob that fits no known noun is measured again joining only neighbours within
        ``size_split_step_m``: objects that touch (a block pushed against a cup, a ball against the
        tray's rim) meet at a smaller step than the 1.5 cm that keeps apart objects that only touch
        in the image, and a single object's surface steps by less still.
        """
        cfg = self.config
        known = parse_object_sizes(cfg.object_sizes)
        expected = size_range_for(name, known) if known else None
        if expected is None:
            return None
        if not view.has_depth:
            return {"expected": expected.to_dict(), "skipped": "no depth"}
        measured = self._measure(view, seen, cfg.size_surface_step_m, at_xy)
        if measured is None:
            return {"expected": expected.to_dict(), "skipped": "nothing above the table under the mask"}
        tolerances = (cfg.size_height_tolerance_m, cfg.size_length_tolerance_m)

        def fitting(size: MeasuredSize) -> List[str]:
            return [noun for noun, other in known.items() if other.excess(size, *tolerances) == 0]

        fits, step = fitting(measured), cfg.size_surface_step_m
        if not fits and 0 < cfg.size_split_step_m < step:  # touching objects: split where their surfaces meet
            split = self._measure(view, seen, cfg.size_split_step_m, at_xy)
            if split is not None and fitting(split):
                measured, fits, step = split, fitting(split), cfg.size_split_step_m
        return {"expected": expected.to_dict(), "measured": measured.to_dict(),
                "excess_m": expected.excess(measured, *tolerances), "fits": fits, "surface_step_m": step}

    def _measure(self, view: _View, seen: _Seen, surface_step_m: float,
                 at_xy: Sequence[float]) -> Optional[MeasuredSize]:
        """The size of the object under ``seen``'s mask closest to ``at_xy`` on ``view``'s depth
        (``core.sizes.measure_object``)."""
        return measure_object(seen.detection.mask, view.frame.depth, view.intrinsics, view.camera_to_base,
                              self.geometry, self.config.size_above_table_m, surface_step_m, at_xy)

    @staticmethod
    def _executor_verdict(report: Optional[Mapping[str, Any]]) -> Verdict:
        """point_at changes nothing a camera could check: the executor's word decides."""
        outcome = (report or {}).get("outcome", "done")
        ok = outcome == "done"
        return Verdict(SUCCESS if ok else FAILURE, 1.0, EXECUTOR_REPORT, {"executor_outcome": outcome})

    # ------------------------------------------------------------------ geometry
    def _view(self, frame: Frame, camera_to_base: geometry.RigidTransform) -> _View:
        intrinsics = frame.intrinsics or self.default_intrinsics
        if intrinsics is None:
            raise ValueError("the frame has no intrinsics and geometry.intrinsics is unset")
        return _View(frame, intrinsics, camera_to_base)

    def _see(self, view: _View, phrases: Sequence[str], kin: Sequence[str] = ()) -> Dict[str, List[_Seen]]:
        """Every component of each phrase's mask (one perception call) with its base-frame point, best first.

        ``kin``: phrases found where they or their look-alikes win (``verify.place_look_alikes``).
        A component whose point cannot be computed is dropped.
        """
        out: Dict[str, List[_Seen]] = {}
        phrases = list(phrases)
        found_by = self.perceive(view.frame, phrases, kin=list(kin)) if kin else self.perceive(view.frame, phrases)
        for phrase, found in found_by.items():
            out[phrase] = []
            for det, mean_logit, *named in found:
                try:
                    located = geometry.locate(det.mask, det.centroid, view.frame.depth, view.intrinsics,
                                              view.camera_to_base, self.geometry)
                except geometry.GeometryError:
                    continue
                out[phrase].append(_Seen(det, mean_logit, np.asarray(located.xyz_base, dtype=np.float64),
                                         located.depth_source, bool(named and named[0])))
        return out

    def _lift(self, view: _View, seen: _Seen, rest: np.ndarray) -> Optional[float]:
        """Height of a component's point above the rest point: from depth, or (no depth) from its ray
        over the rest point (a pick lifts straight up); None when that ray misses the rest point, or
        is so steep that it passes within ``ray_max_miss_m`` of it all the way down from the camera
        (straight down onto it: every height fits, none is measured)."""
        if seen.depth_source == "depth":
            return float(seen.xyz_base[2] - rest[2])
        origin = view.camera_to_base.translation
        ray = view.camera_to_base.apply_direction(geometry.pixel_ray(*seen.detection.centroid, view.intrinsics))
        horizontal = ray[:2]
        drift = float(np.linalg.norm(horizontal)) * max(float(origin[2] - rest[2]), 0.0)  # over the whole drop
        if drift < self.config.ray_max_miss_m * abs(float(ray[2])):
            return None
        t = max(0.0, float((rest[:2] - origin[:2]) @ horizontal / max(float(horizontal @ horizontal), 1e-12)))
        closest = origin + t * ray
        if float(np.linalg.norm(closest[:2] - rest[:2])) > self.config.ray_max_miss_m:
            return None
        return float(closest[2] - rest[2])

    def _height(self, seen: _Seen) -> Optional[float]:
        """Height above the table of a component's point; None without depth (unknown)."""
        if seen.depth_source != "depth":
            return None
        return float(seen.xyz_base[2] - self.geometry.table_height)

    def _footprint(self, view: _View, det: Detection) -> np.ndarray:
        """The destination's outline on the table (convex hull of its mask's points), Nx1x2 float32 xy.

        With depth every valid mask pixel is back-projected; without, the outline pixels of the
        mask are intersected with the table plane.
        """
        points = self._mask_points_xy(view, det)
        return cv2.convexHull(points.astype(np.float32).reshape(-1, 1, 2))

    def _mask_points_xy(self, view: _View, det: Detection) -> np.ndarray:
        g = self.geometry
        if view.has_depth:
            vs, us = np.nonzero(det.mask)
            z = geometry.depth_to_metres(view.frame.depth[vs, us], g.depth_scale, g.depth_min, g.depth_max)
            ok = np.isfinite(z)
            if np.count_nonzero(ok) >= 3:
                cam = geometry.backproject(us[ok], vs[ok], z[ok], view.intrinsics)
                return view.camera_to_base.apply(cam)[:, :2]
        hull = cv2.convexHull(np.column_stack(np.nonzero(det.mask)[::-1]).astype(np.int32))
        points = [geometry.table_plane_point(float(u), float(v), view.intrinsics, view.camera_to_base,
                                             g.table_normal, g.table_height) for u, v in hull.reshape(-1, 2)]
        cam = np.array([p for p in points if p is not None]).reshape(-1, 3)
        return view.camera_to_base.apply(cam)[:, :2]

    def _confidence(self, margin: float) -> float:
        """0.5 at a threshold, 1.0 once the evidence clears it by ``confidence_scale_m``."""
        return 0.5 + 0.5 * min(1.0, abs(margin) / self.config.confidence_scale_m)


class _Aside(NamedTuple):
    """Objects set aside as not the step's object: base (x, y) points and how close a component must be."""

    points: Tuple[Sequence[float], ...]
    radius_m: float

    def keep(self, seen: Sequence[_Seen]) -> List[_Seen]:
        """``seen`` without the components lying within ``radius_m`` of a set-aside point."""
        return [s for s in seen if self.under(s.xyz_base) is None]

    def under(self, xyz: Sequence[float]) -> Optional[Sequence[float]]:
        """The set-aside point within ``radius_m`` (xy) of ``xyz``; None when there is none."""
        return next((p for p in self.points if _xy_distance(xyz, p) <= self.radius_m), None)


def _acted(seen: Sequence[_Seen], goal_xyz: Sequence[float]) -> Optional[_Seen]:
    """The component the goal was grounded on: the first scene object taking the name (grounding by
    naming chose it), else the component closest (xy) to the goal; None when nothing was seen."""
    named = [s for s in seen if s.named]
    if named:
        return named[0]
    return min(seen, key=lambda s: _xy_distance(s.xyz_base, goal_xyz), default=None)


def _joined_through(destinations: Sequence[_Seen], objects: Sequence[_Seen]) -> np.ndarray:
    """The destination's mask: its best component, and every other one of its components that the
    object's masks touching it join to it. Why: a cup standing in a bowl hides the bowl's middle and
    splits its mask in two; the footprint of one half put the cup beside the bowl (validation seed
    52,774, flagged three times)."""
    first = destinations[0].detection.mask
    kernel = np.ones((3, 3), np.uint8)
    near = cv2.dilate(first.astype(np.uint8), kernel).astype(bool)
    bridges = [o.detection.mask for o in objects if (o.detection.mask & near).any()]
    if len(destinations) < 2 or not bridges:
        return first
    pieces = [d.detection.mask for d in destinations]
    union = np.logical_or.reduce(pieces + bridges)
    _, labels = cv2.connectedComponents(cv2.dilate(union.astype(np.uint8), kernel), connectivity=8)
    joined = np.isin(labels, np.unique(labels[first]))
    return np.logical_or.reduce([p for p in pieces if (p & joined).any()])


def _stood_on(seen: _Seen, occupied: np.ndarray, own: np.ndarray) -> bool:
    """Were most of ``seen``'s pixels, outside the acted-on object's body (``own``), on an object
    already in the before frame (``occupied``)? A push ends where the table was bare or where the
    object itself was. Fresh seed 18,142: the green cup pushed off the table's far edge, and
    another green object, 36 cm behind, was read as the cup moved backwards."""
    elsewhere = seen.detection.mask & ~own
    if elsewhere.sum() < 0.5 * seen.detection.mask.sum():  # mostly where the pushed object was
        return False
    return bool(occupied[elsewhere].mean() >= 0.5)


def _misfit(size: Mapping[str, Any]) -> Optional[float]:
    """A size evidence's excess (metres) when the object fits no size of its noun and does fit another
    noun's; None otherwise (it fits its own, was not measured, or fits no known noun at all)."""
    excess = size.get("excess_m", 0.0)
    return excess if excess > 0 and size.get("fits") else None


def _xy_distance(a: Sequence[float], b: Sequence[float]) -> float:
    return math.hypot(float(a[0]) - float(b[0]), float(a[1]) - float(b[1]))


def _evidence(seen: Sequence[_Seen]) -> List[Dict[str, Any]]:
    """Every component's area, centroid, confidence and point, best first."""
    return [s.evidence() for s in seen]


def _point3(values: Sequence[float], what: str) -> np.ndarray:
    p = np.asarray(values, dtype=np.float64).reshape(-1)
    if p.shape != (3,) or not np.all(np.isfinite(p)):
        raise ValueError(f"{what} must be three finite numbers, got {list(np.ravel(values))}")
    return p


def _jsonable(value: Any) -> Any:
    """Evidence as plain JSON types (numpy scalars and arrays become floats and lists)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, (np.floating, float)):
        return round(float(value), 5)
    if isinstance(value, np.integer):
        return int(value)
    return value


# --------------------------------------------------------------------------- the node's entry points
def make_verifier(pipeline: "VLAPipeline") -> Verifier:
    """The verifier for ``pipeline``: on its models, or on its oracle's true masks (simulation).

    Why here: the node, the CLI and the simulator must verify with the same perception they ground with.

    Raises:
        ValueError: an oracle pipeline whose oracle cannot perceive for the verifier.
    """
    oracle = getattr(pipeline, "oracle", None)
    if getattr(pipeline, "segmenter", None) is None and hasattr(oracle, "perceiver"):
        return Verifier.from_pipeline(pipeline, perceive=oracle.perceiver())
    return Verifier.from_pipeline(pipeline)


def refuse_goal(goal: Any, config: Any) -> Optional[GoalRefusal]:
    """``refuse_implausible_goal`` for an ``ActionGoal`` under a ``ClipVlaConfig`` (table height, thresholds)."""
    return refuse_implausible_goal(goal.xyz_base, goal.cmd, table_height=config.geometry.table_height,
                                   held_xyz_base=goal.object_xyz_base if goal.cmd == "place" else None,
                                   config=config.verify)
