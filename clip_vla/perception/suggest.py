"""What can I do here? Ranked commands for what is on the table, for a person to choose.

Looking at a scene without a command, the same perception that grounds commands lists the
commands worth giving::

    frame ──► CLIPSeg vision pass (once) ──► decoder over [every candidate name, distractors] (one batch)
          ──► per name: pixels over the threshold that beat every distractor ──► best component
          ──► merge overlapping masks: one object, one entry (the other names are its look-alikes)
          ──► 3D point of each object (geometry.locate: the pipeline's own point estimate)
          ──► CLIP, zero-shot over the skill templates: which skills fit each object
          ──► commands ("pick up the yellow cup", "put the yellow cup in the bowl"), each parsed back
          ──► ranked: every object's best command first, then the next ones, by score

Candidate names are the vocabulary's objects, the names built from ``SuggestConfig.colours`` x
``shapes`` and any names a user adds; fixtures (bowl, tray) are destinations, never picked.
A name competes with the distractors only, not with the other names: look-alikes ("yellow bar"
on the yellow cup) light up the same object, and letting them split its pixels would cut one
object into fragments; deciding by overlap afterwards keeps it whole under its best name.

The decisions (``find_objects``, ``merge_objects``, ``rank_suggestions``) are numpy-only so they
are tested on constructed probability maps; ``Suggester`` runs them on a ``VLAPipeline``'s models.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from clip_vla.core import geometry
from clip_vla.core.config import ConfigError, SuggestSection, Vocabulary, invalid
from clip_vla.core.language import CommandError, InstructionParser
from clip_vla.core.types import Detection, Frame
from clip_vla.perception.identity import region_votes
from clip_vla.perception.localize import all_components, target_mask
from clip_vla.perception.timing import StageTimer

# How a suggestion is said, per skill; a skill not listed is said with its first verb.
DEFAULT_PHRASINGS: Dict[str, str] = {
    "pick": "pick up the {object}",
    "place": "put the {object} {relation} the {destination}",
    "push": "push the {object}",
    "pull": "pull the {object}",
    "point_at": "point at the {object}",
    "open": "open the {object}",
    "close": "close the {object}",
}


# --------------------------------------------------------------------------- settings
_SECTION = SuggestSection()  # the schema's defaults: one set, for the node, the CLI and this module


@dataclass(frozen=True)
class SuggestConfig:
    """What to suggest and how many; ``from_section`` builds it from the ``suggest`` config section.

    The defaults are the section's (``clip_vla.core.config.SuggestSection``); ``relations`` and
    ``phrasings`` are how commands are worded, not settings of a robot, so they live only here.

    Raises:
        ConfigError: on construction, for a value out of range, no skills, or colours without shapes.
    """

    max_suggestions: int = _SECTION.max_suggestions
    min_score: float = _SECTION.min_score  # score = confidence x skill fit [x destination]
    skills: Tuple[str, ...] = tuple(_SECTION.skills)
    colours: Tuple[str, ...] = tuple(_SECTION.colours)  # with ``shapes``: every "<colour> <shape>" is a name
    shapes: Tuple[str, ...] = tuple(_SECTION.shapes)
    objects: Tuple[str, ...] = tuple(_SECTION.objects)  # names a user adds
    vocabulary_objects: bool = _SECTION.vocabulary_objects  # also the vocabulary's objects (fixtures stay fixtures)
    fixtures: Tuple[str, ...] = tuple(_SECTION.fixtures)  # destinations: never picked, pushed, ...
    relations: Mapping[str, str] = field(default_factory=lambda: {"tray": "on"})  # "on the tray"; default "in"
    min_confidence: Optional[float] = None  # an object's mean mask probability; None: perception.min_confidence
    merge_overlap: float = _SECTION.merge_overlap  # shared pixels / the smaller mask at which two names are one
    phrasings: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_PHRASINGS))

    @classmethod
    def from_section(cls, section: SuggestSection, **overrides: Any) -> "SuggestConfig":
        """The settings of a config's ``suggest`` section (a negative min_confidence: the perception's).

        Raises:
            ConfigError: see the class.
        """
        values: Dict[str, Any] = dict(
            max_suggestions=section.max_suggestions, min_score=section.min_score, skills=tuple(section.skills),
            colours=tuple(section.colours), shapes=tuple(section.shapes), objects=tuple(section.objects),
            vocabulary_objects=section.vocabulary_objects, fixtures=tuple(section.fixtures),
            min_confidence=None if section.min_confidence < 0 else section.min_confidence,
            merge_overlap=section.merge_overlap)
        values.update(overrides)
        return cls(**values)

    def __post_init__(self) -> None:
        object.__setattr__(self, "skills", tuple(self.skills))
        for name in ("colours", "shapes", "objects", "fixtures"):
            object.__setattr__(self, name, tuple(str(v).strip().lower() for v in getattr(self, name) if str(v).strip()))
        if self.min_confidence is not None and self.min_confidence < 0:  # here None says "the perception's"
            raise invalid("suggest.min_confidence", self.min_confidence, "a number in [0, 1] or None")
        self.section()  # the schema judges every value: one set of rules

    def section(self) -> SuggestSection:
        """These settings as the config section (``from_section``'s inverse, wording aside).

        Raises:
            ConfigError: a value the schema refuses.
        """
        return SuggestSection(
            max_suggestions=self.max_suggestions, min_score=self.min_score, skills=list(self.skills),
            min_confidence=-1.0 if self.min_confidence is None else self.min_confidence,
            merge_overlap=self.merge_overlap, colours=list(self.colours), shapes=list(self.shapes),
            objects=list(self.objects), vocabulary_objects=self.vocabulary_objects, fixtures=list(self.fixtures))

    def candidates(self, vocabulary: Vocabulary) -> List["Candidate"]:
        """Every name to look for, objects first, each once (a fixture name is always a fixture)."""
        fixtures = list(dict.fromkeys(self.fixtures))
        names = [f"{c} {s}" for c in self.colours for s in self.shapes] + list(self.objects)
        if self.vocabulary_objects:
            names += [str(o).strip().lower() for o in vocabulary.objects]
        objects = [n for n in dict.fromkeys(names) if n and n not in fixtures]
        return [Candidate(n, False) for n in objects] + [Candidate(n, True) for n in fixtures]

    def relation(self, destination: str) -> str:
        return self.relations.get(destination, "in")


# --------------------------------------------------------------------------- data
@dataclass(frozen=True)
class Candidate:
    """A name to look for; a fixture is a destination, not something to act on."""

    name: str
    fixture: bool = False


@dataclass(frozen=True)
class Found:
    """One mask component of one candidate name; ``grounded``: the component a command naming it picks."""

    candidate: Candidate
    detection: Detection
    grounded: bool = True


@dataclass
class SceneObject:
    """One thing found on the table, under its best name, with the other names that matched it."""

    name: str
    fixture: bool
    detection: Detection
    look_alikes: List[str] = field(default_factory=list)
    grounded: bool = True  # a command naming it grounds here (the name's best component is this one)
    xyz: Optional[Tuple[float, float, float]] = None  # base frame, metres; None without geometry

    @property
    def confidence(self) -> float:
        return float(self.detection.confidence)

    def to_dict(self) -> Dict[str, Any]:
        det = self.detection
        return {
            "name": self.name,
            "kind": "fixture" if self.fixture else "object",
            "confidence": round(self.confidence, 4),
            "pixel": _rounded(det.centroid, 2),
            "xyz": _rounded(self.xyz, 4),
            "box": None if det.bbox is None else list(det.bbox),
            "area_px": int(det.area),
            "look_alikes": list(self.look_alikes),
            "grounded": self.grounded,
            "other_instances": int(det.other_instances),
        }


@dataclass
class Suggestion:
    """A full command a person can choose, with what it is about and where that is."""

    rank: int
    command: str
    skill: str
    object: SceneObject
    destination: Optional[SceneObject]
    score: float

    def to_dict(self) -> Dict[str, Any]:
        det = self.object.detection
        return {
            "rank": self.rank,
            "command": self.command,
            "skill": self.skill,
            "object": self.object.name,
            "destination": None if self.destination is None else self.destination.name,
            "score": round(float(self.score), 4),
            "pixel": _rounded(det.centroid, 2),
            "xyz": _rounded(self.object.xyz, 4),
            "box": None if det.bbox is None else list(det.bbox),
        }


@dataclass
class SuggestionList:
    """One round: the ranked suggestions and every object they were drawn from."""

    suggestions: List[Suggestion]
    objects: List[SceneObject]
    timings_ms: Dict[str, float] = field(default_factory=dict)
    stamp: float = 0.0

    def to_dict(self) -> Dict[str, Any]:
        return {
            "suggestions": [s.to_dict() for s in self.suggestions],
            "objects": [o.to_dict() for o in self.objects],
            "timings_ms": {k: round(float(v), 3) for k, v in self.timings_ms.items()},
            "stamp": self.stamp,
        }


def _rounded(values: Optional[Sequence[float]], digits: int) -> Optional[List[float]]:
    return None if values is None else [round(float(v), digits) for v in values]


# --------------------------------------------------------------------------- decisions (numpy)
# {name: its components, best first} -> the same, re-ranked (``VLAPipeline._identity_rank``: CLIP's votes)
RankComponents = Callable[[Dict[str, List[Detection]]], Dict[str, List[Detection]]]
# the regions of some objects -> CLIP's vote on each region's crop (``identity.clip_votes``), None: no vote
RegionVotes = Callable[[List[np.ndarray]], List[Optional[Any]]]


def find_objects(maps: Mapping[int, Tuple[np.ndarray, np.ndarray]], candidates: Sequence[Candidate],
                 min_area_px: int, min_confidence: float, instance_score: str = "mass",
                 rank: Optional[RankComponents] = None) -> List[Found]:
    """Every mask component of every candidate that is large and confident enough.

    ``maps[i]`` is candidate ``i``'s (HxW probability map, HxW winner mask) as
    ``Segmenter.target_maps`` or ``localize.target_mask`` compute them. All components count,
    not only the one a command would ground on (``instance_score``, marked ``grounded``): when a
    name's strongest patch is a look-alike ("red ball" brightest on the red block), its weaker
    patch may be the only one on the object that really is the red ball.
    """
    components = {c.name: all_components(maps[i][1], maps[i][0], c.name, min_area_px, instance_score)
                  for i, c in enumerate(candidates)}
    if rank is not None:  # as the pipeline grounds an object: CLIP weighs in where a name has a choice
        components.update(rank({c.name: components[c.name] for c in candidates
                                if not c.fixture and len(components[c.name]) > 1}))
    found = []
    for candidate in candidates:
        for order, det in enumerate(components[candidate.name]):
            if det.confidence >= min_confidence:
                found.append(Found(candidate, det, grounded=order == 0))
    return found


def mask_overlap(a: Detection, b: Detection) -> float:
    """Shared pixels over the smaller mask: 1 when one lies inside the other (boxes first, for speed)."""
    (au0, av0, au1, av1), (bu0, bv0, bu1, bv1) = a.bbox, b.bbox
    u0, v0, u1, v1 = max(au0, bu0), max(av0, bv0), min(au1, bu1), min(av1, bv1)
    smaller = min(a.area, b.area)
    if u0 > u1 or v0 > v1 or not smaller:
        return 0.0
    shared = np.count_nonzero(a.mask[v0:v1 + 1, u0:u1 + 1] & b.mask[v0:v1 + 1, u0:u1 + 1])
    return float(shared) / smaller


def merge_objects(found: Sequence[Found], probs: Mapping[str, np.ndarray], overlap: float,
                  votes: Optional[RegionVotes] = None, identity_weight: float = 0.0,
                  prefer_grounded: bool = True) -> List[SceneObject]:
    """One entry per object: components whose masks overlap by ``overlap`` or more are one object.

    Components join the group of the first (most confident) component they overlap; comparing
    with that seed only means a chain of half-overlapping names cannot join two neighbours.
    The group is named by the name with the highest mean probability (``probs[name]``, HxW)
    over the group's whole region, each name judged on the same pixels (a name's own component
    confidence is not comparable: its extent differs from name to name). With ``votes`` and an
    ``identity_weight`` > 0, CLIP's view of the region's crop joins in where every name is an
    object's: a name scores ln(mean probability) + weight * ln p_CLIP(name), as grounding weighs
    an object's components (``perception.identity_weight``). With ``prefer_grounded`` (suggestions)
    names whose command would ground here under the component rule (``grounded``) are preferred,
    so that saying the name acts on this object; the others only name it when no grounded one
    does. Grounding by naming (``named_objects``) does not prefer them: the component rule's
    choice is what naming corrects, and preferring it can call a block by a look-alike's name.
    The name decides whether the object is a fixture and gives its detection; the other names
    are its look-alikes, best first. The result is ordered by confidence.
    """
    order = sorted(found, key=lambda f: (-f.detection.confidence, -f.detection.area, f.candidate.name))
    groups: List[List[Found]] = []
    for item in order:
        group = next((g for g in groups if mask_overlap(g[0].detection, item.detection) >= overlap), None)
        if group is None:
            groups.append([item])
        else:
            group.append(item)
    regions = [np.logical_or.reduce([f.detection.mask for f in group]) for group in groups]
    # CLIP names objects, not fixtures (it was not taught them): a group with a fixture keeps the mass rule
    asked = [i for i, g in enumerate(groups)
             if len({f.candidate.name for f in g}) > 1 and not any(f.candidate.fixture for f in g)]
    group_votes: Dict[int, Any] = {}
    if votes is not None and identity_weight > 0 and asked:
        group_votes = dict(zip(asked, votes([regions[i] for i in asked])))
    objects = []
    for i, (group, region) in enumerate(zip(groups, regions)):
        members = {f.candidate.name: f.candidate for f in group}
        grounded = {f.candidate.name for f in group if f.grounded}
        fit = {name: _name_score(float(probs[name][region].mean()), group_votes.get(i), name, identity_weight)
               for name in members}
        names = sorted(members, key=lambda n: (prefer_grounded and n not in grounded, -fit[n], n))
        best = names[0]
        det = max((f.detection for f in group if f.candidate.name == best), key=lambda d: d.area)
        objects.append(SceneObject(best, members[best].fixture, det, names[1:], grounded=best in grounded))
    return sorted(objects, key=lambda o: (-o.confidence, o.name))


def _name_score(mean_probability: float, vote: Any, name: str, weight: float) -> float:
    """The mean probability alone, or ln(it) + weight * ln p_CLIP(name) when CLIP voted on the region."""
    if vote is None or weight <= 0:
        return mean_probability
    p_clip = vote.probabilities.get(name, 0.0)
    return math.log(max(mean_probability, 1e-9)) + weight * math.log(max(p_clip, 1e-9))


def named_objects(probs: np.ndarray, names: Sequence[str], object_index: int, fixtures: Sequence[int],
                  distractors: Sequence[int], perception: Any, overlap: float,
                  rank: Optional[RankComponents] = None, votes: Optional[RegionVotes] = None) -> List[Detection]:
    """Every scene object that takes the name ``names[object_index]``, found as suggestions find and name
    objects, best first (see the end); empty when no object takes it (``perception.ground_by_naming``).

    ``probs`` is KxHxW over the command's prompts: ``names`` (the object, a destination among
    ``fixtures``, the look-alikes) and then the ``distractors``. Each name competes with the
    distractors only, so a yellow block lit by both "yellow block" and "yellow cup" is found by
    both; the overlapping finds merge into one object, and the object takes its best name. Why:
    the component rule gives each pixel to one name, so a look-alike whose map outshines the named
    object's on part of it takes that part, and the named object's remaining piece can lose to a
    look-alike's whole body. Naming the objects judges every name on the same pixels. When
    several objects take the name, the one that fits it best comes first (``best_fits``; without
    CLIP's vote, the most confident).
    """
    candidates = [Candidate(n, fixture=i in fixtures) for i, n in enumerate(names)]
    maps = {i: (probs[i], target_mask(probs, i, list(distractors), perception.mask_threshold))
            for i in range(len(names))}
    found = find_objects(maps, candidates, perception.min_area_px, perception.min_confidence,
                         perception.instance_score, rank)
    objects = merge_objects(found, {c.name: probs[i] for i, c in enumerate(candidates)}, overlap, votes,
                            perception.identity_weight, prefer_grounded=False)
    target = names[object_index]
    taking = [o.detection for o in objects if o.name == target]
    if len(taking) > 1 and votes is not None and perception.identity_weight > 0:
        taking = best_fits(taking, probs[object_index], votes, target, perception.identity_weight)
    return taking


def best_fits(detections: Sequence[Detection], probs: np.ndarray, votes: RegionVotes, name: str,
              weight: float) -> List[Detection]:
    """Objects that all take ``name``, best fit first: ln(mean probability) + weight * ln p_CLIP(name)
    on each one's own mask. Why: the most confident mask is often the larger look-alike; the name's
    fit is what named them, judged the same way for each."""
    fits = [_name_score(float(probs[d.mask].mean()), vote, name, weight)
            for d, vote in zip(detections, votes([d.mask for d in detections]))]
    order = sorted(range(len(detections)), key=lambda i: -fits[i])
    return [detections[i] for i in order]


def compose_command(skill: str, obj: str, destination: Optional[str], config: SuggestConfig,
                    vocabulary: Vocabulary) -> str:
    """The sentence a person would say for (skill, object, destination).

    Raises:
        KeyError: ``skill`` is not in the vocabulary.
    """
    phrasing = config.phrasings.get(skill)
    if phrasing is None:
        spec = vocabulary.skill(skill)
        verb = spec.verbs[0] if spec.verbs else skill.replace("_", " ")
        phrasing = f"{verb} the {{object}}" + (" {relation} the {destination}" if spec.needs_destination else "")
    relation = config.relation(destination) if destination else ""
    return phrasing.format(object=obj, destination=destination or "", relation=relation)


def rank_suggestions(objects: Sequence[SceneObject], fits: Mapping[str, Mapping[str, float]],
                     config: SuggestConfig, vocabulary: Vocabulary,
                     parser: Optional[InstructionParser] = None) -> List[Suggestion]:
    """Commands for every (object, skill[, fixture]), scored, ordered, cut, ranked from 1.

    A suggestion's score is the object's confidence x how well the skill fits it
    (``fits[object name][skill]``, a probability) x, for a skill that needs a destination, the
    fixture's confidence. Fixtures get no suggestions of their own, nor objects whose name a
    command would ground elsewhere (``SceneObject.grounded`` False). The order shows every
    object's best command before any object's second one (a list of ten should not be one
    object ten ways), by score within each round. A command that does not parse back to its
    own skill, object and destination is never suggested (``parser``, default: the
    vocabulary's own).
    """
    parser = parser or InstructionParser(vocabulary)
    fixtures = [o for o in objects if o.fixture]
    per_object: List[List[Tuple[float, str, str, SceneObject, Optional[SceneObject]]]] = []
    for obj in objects:
        if obj.fixture or not obj.grounded:  # saying its name would act on another object
            continue
        options = []
        for skill in config.skills:
            fit = float(fits.get(obj.name, {}).get(skill, 0.0))
            needs_destination = vocabulary.skill(skill).needs_destination
            for dest in (fixtures if needs_destination else [None]):
                score = obj.confidence * fit * (dest.confidence if dest is not None else 1.0)
                if score < config.min_score:
                    continue
                command = compose_command(skill, obj.name, dest.name if dest else None, config, vocabulary)
                if _parses_back(parser, command, skill, obj.name, dest.name if dest else None):
                    options.append((score, command, skill, obj, dest))
        if options:
            per_object.append(sorted(options, key=lambda o: (-o[0], o[1])))
    ordered = sorted(((i, option) for options in per_object for i, option in enumerate(options)),
                     key=lambda io: (io[0], -io[1][0], io[1][1]))
    return [Suggestion(rank, command, skill, obj, dest, score)
            for rank, (_, (score, command, skill, obj, dest)) in enumerate(ordered[:config.max_suggestions], 1)]


def _parses_back(parser: InstructionParser, command: str, skill: str, obj: str, destination: Optional[str]) -> bool:
    try:
        parsed = parser.parse(command)
    except CommandError:
        return False
    return (parsed.skill, parsed.object, parsed.destination) == (skill, obj, destination)


def allowed_fits(probabilities: Mapping[str, float], skills: Sequence[str]) -> Dict[str, float]:
    """Skill probabilities renormalised over the suggested ``skills``: which of THESE fits best."""
    total = sum(float(probabilities.get(s, 0.0)) for s in skills)
    if total <= 0:
        return {s: 1.0 / len(skills) for s in skills}
    return {s: float(probabilities.get(s, 0.0)) / total for s in skills}


# --------------------------------------------------------------------------- the models
class Suggester:
    """Suggestions on a ``VLAPipeline``'s models: one vision pass and one decoder batch per frame.

    Holds nothing but the settings and the candidate prompts: text embeddings are cached by the
    pipeline's segmenter and skill scorer, so a Suggester next to a running node's pipeline adds
    no model and re-encodes no text after its first round.

    Raises:
        ConfigError: a configured skill is not in the vocabulary, or it is the stop skill.
        ValueError: the pipeline runs on oracle perception (no models to suggest with).
    """

    def __init__(self, pipeline: Any, config: Optional[SuggestConfig] = None) -> None:
        if pipeline.models is None:
            raise ValueError("suggestions need CLIPSeg and CLIP: this pipeline runs on oracle perception")
        self.pipeline = pipeline
        self.config = config or SuggestConfig()
        vocabulary = pipeline.vocabulary
        for skill in self.config.skills:
            if skill not in vocabulary.skill_names or skill == vocabulary.stop_skill:
                raise ConfigError(f"suggest.skills: '{skill}' is not a skill to suggest "
                                  f"(known: {[s for s in vocabulary.skill_names if s != vocabulary.stop_skill]})")
        self.candidates = self.config.candidates(vocabulary)
        template = pipeline.config.perception.prompt_template
        self.prompts = [template.replace("{object}", c.name) for c in self.candidates] + list(vocabulary.distractors)

    @property
    def min_confidence(self) -> float:
        value = self.config.min_confidence
        return self.pipeline.config.perception.min_confidence if value is None else float(value)

    def suggest(self, frame: Frame, camera_to_base: Optional[geometry.RigidTransform] = None) -> SuggestionList:
        """Ranked suggestions for one frame (``camera_to_base`` default: the pipeline's)."""
        pipe = self.pipeline
        models, segmenter, perception = pipe.models, pipe.segmenter, pipe.config.perception
        timer = StageTimer(models.device)
        height, width = frame.rgb.shape[:2]
        k = len(self.candidates)
        image, features, logits = pipe.segment(frame.rgb, self.prompts, timer)
        with timer.stage("mask_decoding"):
            maps = segmenter.target_maps(logits, (height, width), range(k), perception.mask_threshold,
                                         competitors=range(k, len(self.prompts)))
        with timer.stage("postprocess"):
            rank = pipe._identity_rank(frame) if perception.identity_weight > 0 else None
            found = find_objects(maps, self.candidates, perception.min_area_px, self.min_confidence,
                                 perception.instance_score, rank)
            probs = {c.name: maps[i][0] for i, c in enumerate(self.candidates)}
            votes = region_votes(pipe, frame, [c.name for c in self.candidates]) if rank is not None else None
            objects = merge_objects(found, probs, self.config.merge_overlap, votes, perception.identity_weight)
        with timer.stage("geometry"):
            self._locate(objects, frame, camera_to_base or pipe.camera_to_base)
        with timer.stage("skill_scoring"):
            embedding = pipe.skill_image_embedding(image, features)
            fits = {o.name: allowed_fits(pipe.scorer.score(o.name, o.name, embedding), self.config.skills)
                    for o in objects if not o.fixture}
        with timer.stage("ranking"):
            ranked = rank_suggestions(objects, fits, self.config, pipe.vocabulary, pipe.parser)
        timer.ms["total"] = sum(timer.ms.values())
        return SuggestionList(ranked, objects, timer.ms, frame.stamp)

    def _locate(self, objects: Sequence[SceneObject], frame: Frame, camera_to_base: geometry.RigidTransform) -> None:
        locate_objects(objects, frame, camera_to_base, self.pipeline)


def locate_objects(objects: Sequence[SceneObject], frame: Frame, camera_to_base: geometry.RigidTransform,
                   pipeline: Any) -> None:
    """Each object's base-frame point as ``pipeline`` computes a goal's; None where it cannot."""
    intrinsics = frame.intrinsics or pipeline.default_intrinsics
    if intrinsics is None:
        return
    for obj in objects:
        det = obj.detection
        try:
            located = geometry.locate(det.mask, det.centroid, frame.depth, intrinsics, camera_to_base,
                                      pipeline.config.geometry)
        except geometry.GeometryError:
            continue
        obj.xyz = tuple(float(v) for v in located.xyz_base)  # type: ignore[assignment]


def make_suggester(pipeline: Any, config: SuggestConfig) -> Any:
    """What suggests on ``pipeline``: a ``Suggester`` on its models, or its oracle's own (simulation).

    An oracle perception (the simulator's ground truth) has no models to suggest with; one that
    offers ``suggester(pipeline, config)`` answers from the truth instead, with the same interface.

    Raises:
        ConfigError: see ``Suggester``.
        ValueError: an oracle pipeline whose oracle cannot suggest.
    """
    oracle = getattr(pipeline, "oracle", None)
    if pipeline.models is None and hasattr(oracle, "suggester"):
        return oracle.suggester(pipeline, config)
    return Suggester(pipeline, config)


def suggest(frame: Frame, pipeline: Any, config: Optional[SuggestConfig] = None,
            camera_to_base: Optional[geometry.RigidTransform] = None) -> SuggestionList:
    """One round of suggestions (a ``Suggester`` is cheap to build: the caches live in the pipeline).

    Raises:
        ConfigError: see ``Suggester``.
        ValueError: see ``Suggester``.
    """
    return Suggester(pipeline, config).suggest(frame, camera_to_base)
