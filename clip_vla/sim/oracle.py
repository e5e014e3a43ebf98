"""Ground-truth perception: the simulator's own masks in place of CLIPSeg/CLIP.

``clip-vla sim --perception oracle`` uses it to measure the geometry + tokenizer + execution
stack alone: any error left is not the models'. The oracle sees exactly the frame the
pipeline was given, looked up by its stamp among the observations the simulator published.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any, Dict, Optional, Tuple

import numpy as np

from clip_vla.perception.localize import detection_from_mask
from clip_vla.core.types import Detection, Frame
from clip_vla.sim.world import Observation


class ObservationLog:
    """The last few published observations, by stamp (thread-safe: the sim and the node share it)."""

    def __init__(self, size: int = 32) -> None:
        self._items: "OrderedDict[float, Observation]" = OrderedDict()
        self._lock = threading.Lock()
        self.size = size

    def add(self, obs: Observation, stamp: Optional[float] = None) -> None:
        with self._lock:
            self._items[round(obs.stamp if stamp is None else stamp, 6)] = obs
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def get(self, stamp: float) -> Optional[Observation]:
        with self._lock:
            return self._items.get(round(stamp, 6))

    def mask(self, stamp: float, phrase: str) -> Optional[np.ndarray]:
        """The true mask of ``phrase`` in the frame stamped ``stamp``; None when unknown or not visible."""
        obs = self.get(stamp)
        if obs is None:
            return None
        try:
            mask = obs.mask_of(phrase)
        except KeyError:
            return None
        return mask if mask.any() else None


def oracle_perceiver(log: ObservationLog) -> Any:
    """A verifier ``Perceive`` from the simulator's own masks (``ObservationLog`` by stamp)."""
    from clip_vla.perception.verify import component_from_mask

    def perceive(frame: Frame, phrases: Any, kin: Any = ()) -> Dict[str, Any]:
        """``kin`` changes nothing: a true mask is the object's whatever a model would call it."""
        masks = {phrase: log.mask(frame.stamp, phrase) for phrase in phrases}
        return {phrase: [] if mask is None else [component_from_mask(phrase, mask)] for phrase, mask in masks.items()}

    return perceive


class GroundTruthPerception:
    """Callable for ``VLAPipeline(oracle=...)``: detections from the true masks, skill from the parser."""

    def __init__(self, log: ObservationLog, min_area: int = 1) -> None:
        self.log = log
        self.min_area = min_area

    def suggester(self, pipeline: Any, config: Any) -> "GroundTruthSuggester":
        """Suggestions from the true masks, for a pipeline built on this oracle (``make_suggester``)."""
        return GroundTruthSuggester(self.log, pipeline, config, self.min_area)

    def perceiver(self) -> Any:
        """The verifier's ``Perceive`` on the same true masks (``make_verifier`` on an oracle pipeline)."""
        return oracle_perceiver(self.log)

    def __call__(self, frame: Frame, prepared) -> Tuple[Dict[str, Detection], Dict[str, float]]:
        detections: Dict[str, Detection] = {}
        for role, phrase in (("object", prepared.parsed.object), ("destination", prepared.parsed.destination)):
            if not phrase:
                continue
            mask = self.log.mask(frame.stamp, phrase)
            if mask is None:
                detections[role] = Detection(phrase=phrase, found=False, confidence=0.0)
            else:
                detections[role] = detection_from_mask(phrase, mask, self.min_area)
        skill = prepared.skill.name if prepared.skill is not None else None
        return detections, ({skill: 1.0} if skill else {})


class GroundTruthSuggester:
    """``Suggester``'s interface on the simulator's truth: every visible entity, under its own name.

    Every skill fits every object equally (the oracle knows what is there, not what suits it),
    so the ranking is by name within each skill; fixtures are ``config.fixtures``. The table and
    the gripper are never candidates.
    """

    NOT_CANDIDATES = ("table", "gripper")

    def __init__(self, log: ObservationLog, pipeline: Any, config: Any, min_area: int = 1) -> None:
        self.log = log
        self.pipeline = pipeline
        self.config = config
        self.min_area = min_area

    def suggest(self, frame: Frame, camera_to_base: Any = None) -> Any:
        """The ranked suggestions of the observation published with ``frame``'s stamp (none if unknown)."""
        from clip_vla.perception import suggest as S

        obs = self.log.get(frame.stamp)
        objects = []
        for name in ([] if obs is None or obs.segmentation is None else sorted(set(obs.labels.values()))):
            mask = obs.mask_of(name)
            if name in self.NOT_CANDIDATES or mask.sum() < self.min_area:
                continue
            objects.append(S.SceneObject(name, name in self.config.fixtures,
                                         detection_from_mask(name, mask, self.min_area)))
        S.locate_objects(objects, frame, camera_to_base or self.pipeline.camera_to_base, self.pipeline)
        fits = {o.name: S.allowed_fits({}, self.config.skills) for o in objects if not o.fixture}
        ranked = S.rank_suggestions(objects, fits, self.config, self.pipeline.vocabulary, self.pipeline.parser)
        return S.SuggestionList(ranked, objects, {}, frame.stamp)
