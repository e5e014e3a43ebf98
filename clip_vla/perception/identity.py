"""Which object is this? CLIP's zero-shot answer on one object's crop: the verifier's second opinion.

The verifier's masks come from the CLIPSeg that grounded the goal. When that model lit a
look-alike ("yellow bar" for "yellow cup") more than the named object, the verifier's masks
agree with the mistake, and the step that moved the look-alike looks like a success. CLIP is an
independent witness: it sees only the crop of the acted-on object and ranks the catalogue's
names for it ("a photo of a {object}", zero-shot classification as in the CLIP paper). When
another name beats the named one by a margin (log-odds, nats), the step acted on the wrong object.

ROS-free; the pipeline's CLIP (its own vision tower, not a backbone shared with CLIPSeg) does the work.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Dict, Optional, Sequence, Tuple

import numpy as np

from clip_vla.core.types import Frame
from clip_vla.perception.skill_scorer import log_odds_gap

if TYPE_CHECKING:  # the pipeline loads torch
    from clip_vla.pipeline import VLAPipeline

__all__ = ["IdentityVote", "Identify", "crop_box", "object_crop", "crop_embedding", "identity_probabilities",
           "clip_identifier"]

Box = Tuple[int, int, int, int]  # u0, v0, u1, v1 (exclusive), pixels


@dataclass(frozen=True)
class IdentityVote:
    """CLIP's ranking of the catalogue's names for one crop; ``gap_nats`` > 0: another name beats the named one."""

    named: str
    probabilities: Dict[str, float]  # highest first
    gap_nats: float

    @property
    def best(self) -> str:
        return next(iter(self.probabilities))

    def to_dict(self, top: int = 4) -> Dict[str, Any]:
        return {"named": self.named, "gap_nats": round(self.gap_nats, 4),
                "top": {k: round(v, 4) for k, v in list(self.probabilities.items())[:top]}}


# (frame, the object's HxW bool mask, the name the command used) -> CLIP's vote, or None when it cannot vote
Identify = Callable[[Frame, np.ndarray, str], Optional[IdentityVote]]


def crop_box(mask: np.ndarray, pad: float = 0.25, min_side: int = 24, scale: float = 1.0,
             shift: Tuple[float, float] = (0.0, 0.0)) -> Optional[Box]:
    """A square box around the mask's bounding box, ``pad`` of its longest side added on each side.

    Square so CLIP's centre crop keeps the whole object. ``scale`` and ``shift`` (fractions of the
    side) jitter the box for training, so the model tolerates a loose CLIPSeg mask. The box is
    moved (not shrunk) to stay inside the image where it fits. None for an empty mask.
    """
    vs, us = np.nonzero(mask)
    if us.size == 0:
        return None
    h, w = mask.shape[:2]
    side = max(int(us.max() - us.min() + 1), int(vs.max() - vs.min() + 1))
    side = int(round(max(min_side, side * (1.0 + 2.0 * pad)) * scale))
    side = max(2, min(side, h, w))
    cu = (us.min() + us.max() + 1) / 2.0 + shift[0] * side
    cv = (vs.min() + vs.max() + 1) / 2.0 + shift[1] * side
    u0 = int(round(min(max(cu - side / 2.0, 0), w - side)))
    v0 = int(round(min(max(cv - side / 2.0, 0), h - side)))
    return u0, v0, u0 + side, v0 + side


def object_crop(rgb: np.ndarray, mask: np.ndarray, pad: float = 0.25, min_side: int = 24) -> Optional[np.ndarray]:
    """The SxSx3 crop of ``crop_box`` (a view of ``rgb``), or None for an empty mask."""
    box = crop_box(mask, pad, min_side)
    if box is None:
        return None
    u0, v0, u1, v1 = box
    return rgb[v0:v1, u0:u1]


def identity_probabilities(image_embedding, text_embeddings, names: Sequence[str],
                           temperature: float) -> Dict[str, float]:
    """Softmax over the names of cos(image, "a photo of a <name>") / temperature, highest first."""
    import torch

    sims = (text_embeddings @ image_embedding.reshape(-1)).float()
    probs = torch.softmax(sims / max(temperature, 1e-6), dim=0).cpu().tolist()
    return dict(sorted(zip(names, probs), key=lambda kv: kv[1], reverse=True))


def crop_embedding(pipeline: "VLAPipeline", crop: np.ndarray):
    """CLIP's P-dim unit image embedding of an HxWx3 uint8 crop (the pipeline's own CLIP preprocessing).

    Raises:
        ValueError: when the pipeline has no CLIP of its own (``models.share_backbone``, an oracle).
    """
    from clip_vla.perception.preprocess import model_input, to_device_uint8

    scorer = getattr(pipeline, "scorer", None)
    if scorer is None or scorer.shared_backbone:
        raise ValueError("a crop embedding needs a CLIP of its own (not CLIPSeg's shared backbone)")
    pixels = model_input(to_device_uint8(crop, pipeline.models.device),
                         pipeline.models.clip_image, pipeline.models.dtype)
    return scorer.image_embedding(pixels)[0]


def clip_identifier(pipeline: "VLAPipeline", names: Optional[Sequence[str]] = None) -> Optional[Identify]:
    """The pipeline's CLIP as an ``Identify`` over ``names`` (default: the pipeline's catalogue).

    None when there is no separate CLIP (an oracle pipeline, or CLIP sharing CLIPSeg's backbone:
    then it is not an independent witness). Settings: ``verify.identity_template``,
    ``verify.identity_pad`` and ``verify.identity_temperature``, read at every call (as the
    catalogue), so a configuration update takes effect on the next vote. The names' text
    embeddings are cached by the scorer.
    """
    scorer = getattr(pipeline, "scorer", None)
    if scorer is None or scorer.shared_backbone:
        return None

    def identify(frame: Frame, mask: np.ndarray, named: str) -> Optional[IdentityVote]:
        cfg = pipeline.config.verify
        crop = object_crop(frame.rgb, mask, cfg.identity_pad)
        if crop is None:
            return None
        known = names if names is not None else pipeline.catalogue
        candidates = list(dict.fromkeys(n.strip().lower() for n in [named] + list(known)))
        texts = scorer.text_cache.get([cfg.identity_template.replace("{object}", n) for n in candidates])
        probs = identity_probabilities(crop_embedding(pipeline, crop), texts, candidates, cfg.identity_temperature)
        gap = log_odds_gap(probs, candidates[0])
        return IdentityVote(candidates[0], probs, gap if math.isfinite(gap) else 0.0)

    return identify
