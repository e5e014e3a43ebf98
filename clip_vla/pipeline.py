"""One call from (frame, command) to an action goal, or to a reasoned refusal.

    command ──parse──► skill phrase, object phrase, destination phrase     (once per command)
    frame ──► CLIPSeg vision pass (once) ──► decoder over [object, destination, distractors]
          ──► mask of the goal target ──► depth + intrinsics ──► point in the camera frame
          ──► camera-to-base transform ──► (x, y, z), theta ──► workspace/confidence checks
          ──► RT-2 tokens

A named verb decides the skill unless CLIP's skill probabilities contradict it by more than
``perception.skill_veto_margin`` (``skill_scorer.contradiction``): that answer is low_confidence.

The safety envelope lives here, not in the node: a goal outside the workspace or under the
confidence threshold is never returned as an ``ActionGoal``; it becomes a ``NoAction``.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

from clip_vla.core import geometry
from clip_vla.core.config import ClipVlaConfig, PerceptionConfig, Skill
from clip_vla.core.language import DEFAULT_MAX_LENGTH, CommandError, InstructionParser, ParsedInstruction
from clip_vla.perception.identity import clip_votes, rank_by_identity, region_votes
from clip_vla.perception.localize import catalogue_names, detect, detect_all, look_alikes
from clip_vla.perception.suggest import RankComponents, named_objects
from clip_vla.perception.loading import LoadedModels, load_models
from clip_vla.perception.preprocess import model_input, to_device_uint8
from clip_vla.perception.timing import StageTimer
from clip_vla.perception.segmenter import Segmenter
from clip_vla.perception.skill_scorer import SkillScorer, contradiction
from clip_vla.core.tokenizer import Action, ActionTokenizer
from clip_vla.core.records import echo
from clip_vla.core.sizes import bodies_at
from clip_vla.core.types import GOAL_PUBLISHED, ActionGoal, Detection, Frame, Intrinsics, NoAction, Reason

Result = Union[ActionGoal, NoAction]
OraclePerception = Callable[[Frame, "PreparedCommand"], Tuple[Dict[str, Detection], Dict[str, float]]]

# Push/pull directions named in a command, as yaw of the motion in the base frame (REP-103: x forward, y left).
DIRECTION_YAW = {
    "forward": 0.0, "away": 0.0, "ahead": 0.0, "front": 0.0,
    "left": math.pi / 2, "right": -math.pi / 2,
    "backward": -math.pi, "backwards": -math.pi, "back": -math.pi, "closer": -math.pi, "toward me": -math.pi,
}
SKILL_DEFAULT_YAW = {"push": 0.0, "pull": -math.pi}  # away from / towards the robot base
REFUTED_GROWTH_PX = 4  # a refuted object's pixels grow by this much: CLIPSeg's map spills past its outline


@dataclass
class PreparedCommand:
    """A parsed command with everything that does not depend on the frame."""

    text: str
    parsed: ParsedInstruction
    skill: Optional[Skill]
    prompts: List[str]  # CLIPSeg prompts: [object?, destination?, *look-alikes, *distractors]
    object_index: Optional[int]
    destination_index: Optional[int]
    prompt_names: Tuple[str, ...] = ()  # the names of the prompts before the distractors, in order
    # base-frame (x, y) of objects the verifier refuted as this step's object (wrong_object): set aside
    avoid_xy: Tuple[Tuple[float, float], ...] = ()


class VLAPipeline:
    """Frame + command -> ``ActionGoal`` | ``NoAction``. Models load once, in the constructor."""

    def __init__(self, config: ClipVlaConfig, models: Optional[LoadedModels] = None,
                 oracle: Optional[OraclePerception] = None, max_command_length: int = DEFAULT_MAX_LENGTH) -> None:
        """``max_command_length``: the caller's limit on a command's characters (the node's
        ``max_command_length`` parameter); the parser enforces this one limit, no other."""
        self.max_command_length = max_command_length
        # Ground-truth perception for simulation ("oracle"): (frame, prepared) -> (detections, skill
        # probabilities). It replaces the models to measure geometry + tokenizer + execution alone.
        self.oracle = oracle
        if models is None and oracle is None:
            models = load_models(config.models)
        self.models = models
        self.segmenter = Segmenter(models) if models is not None else None
        self.scorer = SkillScorer(models, config.vocabulary, config.perception) if models is not None else None
        self._prepared: "OrderedDict[str, PreparedCommand]" = OrderedDict()
        self.update_config(config)

    # ------------------------------------------------------------------ configuration
    def update_config(self, config: ClipVlaConfig) -> None:
        """Thresholds, prompts and geometry take effect on the next frame; models stay loaded."""
        self.config = config
        self.vocabulary = config.vocabulary
        self.catalogue = catalogue_names(config)
        fallback = self.scorer.best_skill_for_text if self.scorer is not None else None
        self.parser = InstructionParser(self.vocabulary, similarity_fallback=fallback,
                                        max_length=self.max_command_length)
        if self.scorer is not None:
            self.scorer.set_vocabulary(self.vocabulary, config.perception)
        self.tokenizer = ActionTokenizer.from_config(config.workspace)
        self.camera_to_base = geometry.camera_to_base_from_config(config.geometry)
        self.default_intrinsics = geometry.intrinsics_from_config(config.geometry)
        self._prepared.clear()

    def set_command_limit(self, max_command_length: int) -> None:
        """Change the command length limit (the node's ``max_command_length``, also when the pipeline
        came from a factory that takes only the config); cached commands are read again.

        Raises:
            ValueError: the limit is not a positive integer.
        """
        self.parser = InstructionParser(self.vocabulary, similarity_fallback=self.parser.similarity_fallback,
                                        max_length=max_command_length)
        self.max_command_length = max_command_length
        self._prepared.clear()

    @property
    def model_ids(self) -> Dict[str, str]:
        return dict(self.models.ids) if self.models is not None else {"clipseg": "oracle", "clip": "oracle"}

    @property
    def device(self) -> str:
        return self.models.device_name if self.models is not None else "cpu"

    # ------------------------------------------------------------------ commands
    def prepare(self, command: str) -> Union[PreparedCommand, NoAction]:
        """Parse and validate a command once; repeated commands come from a small cache."""
        if command in self._prepared:
            self._prepared.move_to_end(command)
            return self._prepared[command]
        try:
            parsed = self.parser.parse(command)
        except CommandError as exc:
            empty = not str(command).strip()
            return NoAction(Reason.EMPTY_COMMAND if empty else Reason.BAD_COMMAND, str(exc),
                            command=echo(command))
        prepared = self.prepare_parsed(parsed, command)
        if isinstance(prepared, PreparedCommand):
            self._prepared[command] = prepared
            while len(self._prepared) > 128:
                self._prepared.popitem(last=False)
        return prepared

    def prepare_parsed(self, parsed: ParsedInstruction,
                       command: Optional[str] = None) -> Union[PreparedCommand, NoAction]:
        """Validate an already parsed instruction (one step of a plan) and build its prompts; not cached.

        ``command`` is the text echoed in results (default: the instruction's own text).
        """
        command = parsed.text if command is None else command
        refusal = self._refuse(parsed, command)
        if refusal is not None:
            return refusal
        skill = self.vocabulary.skill(parsed.skill)
        template = self.config.perception.prompt_template
        named = [p for p in (parsed.object, parsed.destination) if p]
        rivals = look_alikes(parsed.object, self.catalogue, self.config.perception.look_alike_competitors,
                             exclude=named)
        prompts = [template.replace("{object}", p) for p in named + rivals] + list(self.vocabulary.distractors)
        object_index = 0 if parsed.object else None
        destination_index = (1 if parsed.object else 0) if parsed.destination else None
        prepared = PreparedCommand(command, parsed, skill, prompts, object_index, destination_index,
                                   tuple(named + rivals))
        if self.segmenter is not None:
            self.segmenter.text_embeddings(prompts)  # warm the cache now, not on the first frame
        return prepared

    def _refuse(self, parsed: ParsedInstruction, command: str) -> Optional[NoAction]:
        def no(reason: Reason, message: str) -> NoAction:
            return NoAction(reason, message, command=command, skill=parsed.skill, object_phrase=parsed.object)

        if parsed.skill is None:
            known = ", ".join(self.vocabulary.skill_names)
            return no(Reason.UNKNOWN_SKILL, f"no known skill in '{parsed.text}' (skills: {known})")
        if parsed.skill == self.vocabulary.stop_skill:
            return no(Reason.STOPPED, "stop requested: nothing to execute")
        skill = self.vocabulary.skill(parsed.skill)
        if skill.needs_object and not parsed.object:
            return no(Reason.NO_OBJECT_NAMED, f"'{parsed.skill}' needs an object, none named in '{parsed.text}'")
        if skill.needs_destination and not parsed.destination:
            return no(Reason.NO_DESTINATION, f"'{parsed.skill}' needs a destination (e.g. 'in the bowl')")
        return None

    # ------------------------------------------------------------------ the call
    def run(self, frame: Frame, command: Union[str, PreparedCommand],
            camera_to_base: Optional[geometry.RigidTransform] = None) -> Result:
        """One command on one frame. Never raises for bad input: it answers with a NoAction."""
        prepared = self.prepare(command) if isinstance(command, str) else command
        if isinstance(prepared, NoAction):
            prepared.stamp = frame.stamp
            return prepared
        try:
            return self._run(frame, prepared, camera_to_base or self.camera_to_base)
        except (RuntimeError, ValueError, IndexError) as exc:  # a model or shape failure; keep serving
            return self._no(prepared, frame, Reason.MODEL_ERROR, f"{type(exc).__name__}: {exc}")

    def _no(self, prepared: PreparedCommand, frame: Frame, reason: Reason, message: str, **extra) -> NoAction:
        return NoAction(reason, message, command=prepared.text, skill=prepared.parsed.skill,
                        object_phrase=prepared.parsed.object, stamp=frame.stamp, **extra)

    def _run(self, frame: Frame, prepared: PreparedCommand, camera_to_base: geometry.RigidTransform) -> Result:
        timer = StageTimer(self.models.device if self.models is not None else None)
        intrinsics = frame.intrinsics or self.default_intrinsics
        if intrinsics is None:
            return self._no(prepared, frame, Reason.NO_INTRINSICS,
                            "no camera intrinsics: publish camera_info or set geometry.intrinsics")
        perception = self.config.perception
        if self.oracle is not None:
            detections, skill_probs = self.oracle(frame, prepared)
        else:
            low = None
            if perception.low_destination and frame.depth is not None and prepared.destination_index is not None:
                low = self._low(frame.depth, intrinsics, camera_to_base)
            detections, skill_probs = self._perceive(frame, prepared, timer, camera_to_base, low)
        skill = prepared.skill
        if prepared.parsed.skill_source == "similarity":  # a guessed skill must be confident enough
            best = skill_probs.get(skill.name, 0.0)
            if best < perception.min_skill_probability:
                return self._no(prepared, frame, Reason.LOW_CONFIDENCE,
                                f"skill '{skill.name}' has probability {best:.2f} < "
                                f"{perception.min_skill_probability:.2f}", skill_probabilities=skill_probs)
        elif prepared.parsed.skill_source == "verb":  # a spoken verb CLIP strongly disagrees with is not executed
            veto = contradiction(skill_probs, skill.name, perception.skill_veto_margin)
            if veto is not None:
                return self._no(prepared, frame, Reason.LOW_CONFIDENCE, veto.message, skill_probabilities=skill_probs)
        role = "destination" if skill.needs_destination else "object"
        target = detections[role]
        timings = timer.ms
        if not target.found:
            message = not_found_message(target, perception)
            if prepared.avoid_xy and role == "object":
                message += (f"; {len(prepared.avoid_xy)} object(s) the verifier judged not to be "
                            f"'{target.phrase}' set aside")
            return self._no(prepared, frame, Reason.NO_OBJECT, message,
                            skill_probabilities=skill_probs, detection=target, timings_ms=timings)
        if target.confidence < perception.min_confidence:
            return self._no(prepared, frame, Reason.LOW_CONFIDENCE,
                            f"'{target.phrase}' found with confidence {target.confidence:.2f} < "
                            f"{perception.min_confidence:.2f}",
                            skill_probabilities=skill_probs, detection=target, timings_ms=timings)

        with timer.stage("geometry"):
            try:
                located = self._locate(target, frame.depth, intrinsics, camera_to_base)
            except geometry.GeometryError as exc:
                return self._no(prepared, frame, Reason.NO_DEPTH, f"cannot place '{target.phrase}' in 3D: {exc}",
                                skill_probabilities=skill_probs, detection=target, timings_ms=timings)
            theta = self._theta(prepared, skill, target, located, intrinsics, camera_to_base, detections,
                                frame.depth)
            object_xyz = None
            obj = detections.get("object")
            if role == "destination" and obj is not None and obj.found:  # best effort: it may be in the gripper
                try:
                    object_xyz = tuple(float(v) for v in
                                       self._locate(obj, frame.depth, intrinsics, camera_to_base).xyz_base)
                except geometry.GeometryError:
                    object_xyz = None
        xyz = tuple(float(v) for v in located.xyz_base)

        with timer.stage("tokenization"):
            encoded = self.tokenizer.encode(Action(skill.token, xyz[0], xyz[1], xyz[2], theta))
        if encoded.out_of_range:
            bounds = self.config.workspace
            return self._no(prepared, frame, Reason.OUTSIDE_WORKSPACE,
                            f"goal ({xyz[0]:.3f}, {xyz[1]:.3f}, {xyz[2]:.3f}) m is outside the workspace "
                            f"x{bounds.x} y{bounds.y} z{bounds.z} of '{self.config.base_frame}'",
                            skill_probabilities=skill_probs, detection=target, timings_ms=timer.ms)
        timer.ms["total"] = sum(timer.ms.values())
        return ActionGoal(
            cmd=skill.name, cmd_token=skill.token, skill_probabilities=skill_probs,
            object_phrase=prepared.parsed.object, destination_phrase=prepared.parsed.destination,
            pixel=target.centroid, detection=detections.get("object"),
            xyz_camera=tuple(float(v) for v in located.xyz_camera), xyz_base=xyz,  # type: ignore[arg-type]
            theta=theta, tokens=encoded.tokens, confidence=target.confidence,
            depth_source=located.depth_source, timings_ms=timer.ms, command=prepared.text,
            stamp=frame.stamp, frame_id=self.config.base_frame, destination=detections.get("destination"),
            object_xyz_base=object_xyz,  # type: ignore[arg-type]
            message=f"{GOAL_PUBLISHED}; {located.note}" if located.note else GOAL_PUBLISHED,
        )

    def _perceive(self, frame: Frame, prepared: PreparedCommand, timer: StageTimer,
                  camera_to_base: geometry.RigidTransform,
                  low: Optional[MaskFilter] = None) -> Tuple[Dict[str, Detection], Dict[str, float]]:
        """CLIPSeg detections of the named object/destination and CLIP skill probabilities."""
        perception = self.config.perception
        image, features, logits = self.segment(frame.rgb, prepared.prompts, timer)
        with timer.stage("mask_decoding"):
            probs = self.segmenter.probabilities(logits, frame.rgb.shape[:2])
        if prepared.avoid_xy and prepared.object_index is not None:
            with timer.stage("postprocess"):
                probs[prepared.object_index][self._refuted(frame, prepared.avoid_xy, camera_to_base)] = 0.0
        with timer.stage("skill_scoring"):
            skill_probs = self._score_skills(prepared, image, features)
        with timer.stage("postprocess"):
            rank = self._identity_rank(frame) if perception.identity_weight > 0 else None
            named = None
            if perception.ground_by_naming and prepared.object_index is not None:
                named = self._named_object(frame, probs, prepared, rank)
            detections = detect_roles(probs, prepared, perception, rank, skip_object=named is not None,
                                      destination_filter=low)
            if named is not None:
                detections["object"] = named
        return detections, skill_probs

    def _refuted(self, frame: Frame, points_xy: Sequence[Tuple[float, float]],
                 camera_to_base: geometry.RigidTransform) -> np.ndarray:
        """The pixels of the objects at ``points_xy`` (``core.sizes.bodies_at``), grown by a few pixels:
        CLIPSeg's map of an object spills past its outline onto the table."""
        intrinsics = frame.intrinsics or self.default_intrinsics
        body = bodies_at(points_xy, frame.rgb.shape[:2], intrinsics, camera_to_base, self.config.geometry,
                         self.config.verify.size_above_table_m, self.config.perception.refuted_radius_m,
                         frame.depth, self.config.verify.size_surface_step_m)
        return cv2.dilate(body.astype(np.uint8), np.ones((REFUTED_GROWTH_PX * 2 + 1,) * 2, np.uint8)) > 0

    def _low(self, depth: np.ndarray, intrinsics: Intrinsics, camera_to_base: geometry.RigidTransform) -> MaskFilter:
        """``perception.low_destination``: a mask without its pixels too high for a resting destination."""
        config = self.config

        def low(mask: np.ndarray) -> np.ndarray:
            return geometry.low_pixels(mask, depth, intrinsics, camera_to_base, config.geometry,
                                       config.verify.max_destination_height_m)

        return low

    def _identity_rank(self, frame: Frame) -> Optional[RankComponents]:
        """CLIP's re-ranking of names' components on ``frame`` (``perception.identity_weight``), or None
        when there is no CLIP of its own to ask (``models.share_backbone``).

        Every name's candidates go through one batched CLIP pass; each crop's vote ranks all names.
        """
        if self.scorer is None or self.scorer.shared_backbone:
            return None
        perception = self.config.perception

        def rank(by_name: Dict[str, List[Detection]]) -> Dict[str, List[Detection]]:
            heads = {n: c[:perception.identity_candidates] for n, c in by_name.items()}
            masks = [d.mask for head in heads.values() for d in head]
            names = list(dict.fromkeys(list(by_name) + list(self.catalogue)))
            votes = iter(clip_votes(self, frame, masks, names[0], names))
            return {n: rank_by_identity(head, [next(votes) for _ in head], perception.identity_weight, n)
                    + by_name[n][len(head):] for n, head in heads.items()}

        return rank

    def _named_object(self, frame: Frame, probs: np.ndarray, prepared: PreparedCommand,
                      rank: Optional[RankComponents]) -> Optional[Detection]:
        """The scene object that takes the command's object name (``perception.ground_by_naming``), or None."""
        fixtures = [] if prepared.destination_index is None else [prepared.destination_index]
        objects = self.objects_named(frame, probs, prepared.prompt_names, prepared.object_index, fixtures, rank)
        return objects[0] if objects else None

    def objects_named(self, frame: Frame, probs: np.ndarray, names: Sequence[str], index: int,
                      fixtures: Sequence[int], rank: Optional[RankComponents]) -> List[Detection]:
        """The scene objects that take ``names[index]`` (``suggest.named_objects``), most confident first.

        ``probs`` is KxHxW over ``names`` and then the distractors. CLIP (``rank``, from
        ``_identity_rank``; None: no vote) names an object over ``names``: the command's object,
        its look-alikes and its destination. Grounding and the verifier both ask here.
        """
        votes = region_votes(self, frame, names) if rank is not None else None
        return named_objects(probs, list(names), index, fixtures, range(len(names), probs.shape[0]),
                             self.config.perception, self.config.suggest.merge_overlap, rank, votes)

    def segment(self, rgb: np.ndarray, prompts: Sequence[str], timer: Optional[StageTimer] = None):
        """One CLIPSeg vision pass over ``rgb`` and one decoder batch over ``prompts``.

        Returns ``(image, features, logits)``: the 1x3xHxW uint8 frame on the device (CLIP's
        image term reuses it), the vision features and the KxhxW decoder logits. Every caller
        that segments (goals, suggestions, verification) goes through here.
        """
        timer = timer or StageTimer(self.models.device)
        with timer.stage("preprocess"):
            image = to_device_uint8(rgb, self.models.device)
            pixels = model_input(image, self.models.clipseg_image, self.models.dtype)
        with timer.stage("image_encoding"):
            features = self.segmenter.encode_image(pixels)
        with timer.stage("text_encoding"):
            text = self.segmenter.text_embeddings(list(prompts))
        with timer.stage("mask_decoding"):
            logits = self.segmenter.decode(features, text)
        return image, features, logits

    def _score_skills(self, prepared: PreparedCommand, image, features) -> Dict[str, float]:
        """CLIP skill probabilities; the image term costs a CLIP vision pass only when weighted."""
        return self.scorer.score(skill_text(prepared.parsed), prepared.parsed.object,
                                 self.skill_image_embedding(image, features))

    def skill_image_embedding(self, image, features):
        """The image embedding skill scoring uses, or None when ``perception.image_weight`` is 0.

        CLIPSeg's pooled embedding (already encoded) with a shared backbone, else one CLIP vision
        pass over ``image`` (the 1x3xHxW uint8 frame on the device). Suggestions score with it too.
        """
        if self.config.perception.image_weight <= 0:
            return None
        if self.scorer.shared_backbone:
            return features.image_embedding
        return self.scorer.image_embedding(model_input(image, self.models.clip_image, self.models.dtype))

    def _theta(self, prepared: PreparedCommand, skill: Skill, target: Detection, located,
               intrinsics: Intrinsics, camera_to_base: geometry.RigidTransform,
               detections: Dict[str, Detection], depth: Optional[np.ndarray]) -> float:
        """Grasp yaw for grasps; motion direction for push/pull (named direction, destination, default)."""
        if skill.name in SKILL_DEFAULT_YAW:
            direction = getattr(prepared.parsed, "direction", None)
            if direction in DIRECTION_YAW:
                return geometry.wrap_angle(DIRECTION_YAW[direction])
            dest = detections.get("destination")
            if dest is not None and dest.found:
                try:
                    dest_loc = self._locate(dest, depth, intrinsics, camera_to_base)
                except geometry.GeometryError:
                    dest_loc = None
                if dest_loc is not None:
                    delta = np.asarray(dest_loc.xyz_base) - np.asarray(located.xyz_base)
                    return geometry.wrap_angle(math.atan2(delta[1], delta[0]))
            return geometry.wrap_angle(SKILL_DEFAULT_YAW[skill.name])
        return geometry.grasp_yaw(target.mask, target.centroid, float(located.xyz_camera[2]), intrinsics,
                                  camera_to_base, plane_normal=self.config.geometry.table_normal)

    def _locate(self, detection: Detection, depth: Optional[np.ndarray], intrinsics: Intrinsics,
                camera_to_base: geometry.RigidTransform) -> geometry.LocateResult:
        """3D point of a detection: robust depth over its mask, else the table plane (``geometry.locate``).

        Raises:
            GeometryError: no usable depth and no table-plane point (see ``geometry.depth_fallback``).
        """
        return geometry.locate(detection.mask, detection.centroid, depth, intrinsics, camera_to_base,
                               self.config.geometry)


# an HxW bool mask -> the same mask with some pixels removed
MaskFilter = Callable[[np.ndarray], np.ndarray]


def not_found_message(target: Detection, perception: PerceptionConfig) -> str:
    """Why a phrase has no mask component: too faint everywhere, or bright but never the winning name.

    Why two messages: "peak probability 0.97 < threshold 0.40" was said of a cup whose bright
    pixels all went to its look-alikes (or made no region of ``min_area_px``); the user needs to
    know that the model did see something.
    """
    threshold = perception.mask_threshold
    if target.peak < threshold:
        return f"'{target.phrase}' not found (peak probability {target.peak:.2f} < threshold {threshold:.2f})"
    return (f"'{target.phrase}' not found: its probability reaches {target.peak:.2f}, but no region of at least "
            f"{perception.min_area_px} px is above {threshold:.2f} and more likely '{target.phrase}' than every "
            "other name (a look-alike or a distractor wins there)")


def skill_text(parsed: ParsedInstruction) -> str:
    """The command as CLIP scores its skill: as said, but without a direction phrase.

    A direction says where the object goes, not which skill moves it (a push and a pull both go
    left), and the compact sim CLIP learned "to the left" as pull's: it gave "push the red ball to
    the right" to pull by 20 nats, so the skill veto refused valid pushes in compound commands.
    The words the parser understood are said again: verb, object, and a destination if any.
    """
    if parsed.direction is None or not parsed.object:
        return parsed.text
    words = [parsed.verb or parsed.skill or "", f"the {parsed.object}"]
    if parsed.destination:
        words += [(parsed.relation or "to").replace("_", " "), f"the {parsed.destination}"]
    return " ".join(w for w in words if w)


def detect_roles(probs, prepared: PreparedCommand, perception, rank: Optional[RankComponents] = None,
                 skip_object: bool = False, destination_filter: Optional[MaskFilter] = None) -> Dict[str, Detection]:
    """The object's and the destination's detections; every prompt competes at every pixel.

    ``rank`` (CLIP's identity, ``perception.identity_weight``) re-orders the object's components
    when it has more than one; without it, and for the destination, the component with the most
    probability mass wins. ``skip_object``: the object was found otherwise (grounding by naming).
    ``destination_filter`` (``perception.low_destination``) trims the destination's mask first.
    """
    competitors = list(range(len(prepared.prompts)))
    name = prepared.parsed.object
    detections: Dict[str, Detection] = {}
    for role, index in (("object", prepared.object_index), ("destination", prepared.destination_index)):
        if index is None or (role == "object" and skip_object):
            continue
        args = (probs, prepared.prompts, index, competitors, perception.mask_threshold)
        if rank is None or role != "object":  # fixtures: CLIP was not taught to name them (README "Simulation")
            keep = destination_filter if role == "destination" else None
            detections[role] = detect(*args, perception.min_area_px, perception.instance_score, keep)
            continue
        found = detect_all(*args, perception.min_area_px, perception.instance_score)
        if len(found) > 1:
            found = rank({name: found})[name]
        detections[role] = found[0] if found else detect(*args, perception.min_area_px, perception.instance_score)
    return detections
