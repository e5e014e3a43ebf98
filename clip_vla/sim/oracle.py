"""Ground-truth perception: the simulator's own masks in place of CLIPSeg/CLIP.

``clip-vla sim --perception oracle`` uses it to measure the geometry + tokenizer + execution
stack alone: any error left is not the models'. The oracle sees exactly the frame the
pipeline was given, looked up by its stamp among the observations the simulator published.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Dict, Optional, Tuple

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


class GroundTruthPerception:
    """Callable for ``VLAPipeline(oracle=...)``: detections from the true masks, skill from the parser."""

    def __init__(self, log: ObservationLog, min_area: int = 1) -> None:
        self.log = log
        self.min_area = min_area

    def __call__(self, frame: Frame, prepared) -> Tuple[Dict[str, Detection], Dict[str, float]]:
        obs = self.log.get(frame.stamp)
        detections: Dict[str, Detection] = {}
        for role, phrase in (("object", prepared.parsed.object), ("destination", prepared.parsed.destination)):
            if not phrase:
                continue
            mask = None
            if obs is not None:
                try:
                    mask = obs.mask_of(phrase)
                except KeyError:
                    mask = None
            if mask is None or not mask.any():
                detections[role] = Detection(phrase=phrase, found=False, confidence=0.0)
            else:
                detections[role] = detection_from_mask(phrase, mask, self.min_area)
        skill = prepared.skill.name if prepared.skill is not None else None
        return detections, ({skill: 1.0} if skill else {})
