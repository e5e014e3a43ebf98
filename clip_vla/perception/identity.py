"""Which object is this? CLIP's zero-shot answer on one object's crop.

Grounding weighs it against CLIPSeg's masks (``perception.identity_weight``: ``rank_by_identity``
for a name's components, ``suggest.merge_objects`` for an object's name), and the verifier can
ask it for a second opinion (``verify.identity``), as below.

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
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from clip_vla.core.types import Detection, Frame
from clip_vla.perception.skill_scorer import log_odds_gap

if TYPE_CHECKING:  # the pipeline loads torch
    from clip_vla.pipeline import VLAPipeline

__all__ = ["IdentityVote", "Identify", "crop_box", "object_crop", "crop_embedding", "crop_embeddings",
           "identity_probabilities", "clip_votes", "region_votes", "clip_identifier", "rank_by_identity"]

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
    cols, rows = np.flatnonzero(mask.any(axis=0)), np.flatnonzero(mask.any(axis=1))
    if cols.size == 0:
        return None
    h, w = mask.shape[:2]
    (u_min, u_max), (v_min, v_max) = (cols[0], cols[-1]), (rows[0], rows[-1])
    side = max(int(u_max - u_min + 1), int(v_max - v_min + 1))
    side = int(round(max(min_side, side * (1.0 + 2.0 * pad)) * scale))
    side = max(2, min(side, h, w))
    cu = (u_min + u_max + 1) / 2.0 + shift[0] * side
    cv = (v_min + v_max + 1) / 2.0 + shift[1] * side
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
    return crop_embeddings(pipeline, [crop])[0]


def crop_embeddings(pipeline: "VLAPipeline", crops: Sequence[np.ndarray]):
    """NxP unit image embeddings of N HxWx3 uint8 crops of any sizes: one CLIP vision pass for all.

    Raises:
        ValueError: when the pipeline has no CLIP of its own (``models.share_backbone``, an oracle).
    """
    import torch

    from clip_vla.perception.preprocess import model_input, to_device_uint8

    scorer = getattr(pipeline, "scorer", None)
    if scorer is None or scorer.shared_backbone:
        raise ValueError("a crop embedding needs a CLIP of its own (not CLIPSeg's shared backbone)")
    models = pipeline.models
    pixels = torch.cat([model_input(to_device_uint8(c, models.device), models.clip_image, models.dtype)
                        for c in crops])
    return scorer.image_embedding(pixels)


def clip_votes(pipeline: "VLAPipeline", frame: Frame, masks: Sequence[np.ndarray], named: str,
               names: Optional[Sequence[str]] = None) -> List[Optional[IdentityVote]]:
    """CLIP's vote on each mask's crop (None for an empty mask), in one batched vision pass.

    ``names``: the names ranked (default: the pipeline's catalogue; ``named`` is always one).
    Settings: ``verify.identity_template``, ``verify.identity_pad`` and
    ``verify.identity_temperature``, read at every call. The names' text embeddings are cached
    by the scorer.

    Raises:
        ValueError: when the pipeline has no CLIP of its own (``models.share_backbone``, an oracle).
    """
    cfg = pipeline.config.verify
    crops = [object_crop(frame.rgb, m, cfg.identity_pad) for m in masks]
    present = [i for i, c in enumerate(crops) if c is not None]
    votes: List[Optional[IdentityVote]] = [None] * len(crops)
    if not present:
        return votes
    known = names if names is not None else pipeline.catalogue
    candidates = list(dict.fromkeys(n.strip().lower() for n in [named] + list(known)))
    texts = pipeline.scorer.text_cache.get([cfg.identity_template.replace("{object}", n) for n in candidates])
    embeddings = crop_embeddings(pipeline, [crops[i] for i in present])
    for row, i in enumerate(present):
        probs = identity_probabilities(embeddings[row], texts, candidates, cfg.identity_temperature)
        gap = log_odds_gap(probs, candidates[0])
        votes[i] = IdentityVote(candidates[0], probs, gap if math.isfinite(gap) else 0.0)
    return votes


def region_votes(pipeline: "VLAPipeline", frame: Frame,
                 names: Sequence[str]) -> Callable[[List[np.ndarray]], List[Optional[IdentityVote]]]:
    """``clip_votes`` on regions of ``frame`` over ``names`` (the first is the vote's ``named``), as
    ``suggest.merge_objects`` asks to name its objects."""
    names = list(names)
    return lambda regions: clip_votes(pipeline, frame, regions, names[0], names)


def clip_identifier(pipeline: "VLAPipeline", names: Optional[Sequence[str]] = None) -> Optional[Identify]:
    """The pipeline's CLIP as an ``Identify`` over ``names`` (default: the pipeline's catalogue).

    None when there is no separate CLIP (an oracle pipeline, or CLIP sharing CLIPSeg's backbone:
    then it is not an independent witness). Settings as ``clip_votes``, read at every call (as
    the catalogue), so a configuration update takes effect on the next vote.
    """
    scorer = getattr(pipeline, "scorer", None)
    if scorer is None or scorer.shared_backbone:
        return None

    def identify(frame: Frame, mask: np.ndarray, named: str) -> Optional[IdentityVote]:
        return clip_votes(pipeline, frame, [mask], named, names)[0]

    return identify


def rank_by_identity(components: Sequence[Detection], votes: Sequence[Optional[IdentityVote]],
                     weight: float, name: Optional[str] = None) -> List[Detection]:
    """The components re-ranked by ln(probability mass) + ``weight`` * ln p_CLIP(named | crop), best first.

    Why: CLIPSeg's mass alone picks a look-alike when its map lights the look-alike more than
    the named object (a yellow block for "the yellow cup"); CLIP, looking at each component's
    crop, often tells them apart. The product of the two beliefs (a sum of logs) chooses better
    than either alone on validation scenes (README "Simulation"). A component without a vote
    keeps its mass alone, with the worst named log-probability of the others. ``name``: the name
    judged (default: each vote's own ``named``), for votes cast over several names at once.
    """
    if len(components) != len(votes):
        raise ValueError(f"{len(components)} components but {len(votes)} votes")
    floor = 1e-9
    logp = [math.log(max(v.probabilities.get(name or v.named, 0.0), floor)) if v is not None else None
            for v in votes]
    known = [lp for lp in logp if lp is not None]
    worst = min(known) if known else 0.0

    def score(i: int) -> float:
        d = components[i]
        mass = max(float(d.area) * float(d.confidence), floor)
        return math.log(mass) + weight * (logp[i] if logp[i] is not None else worst)

    order = sorted(range(len(components)), key=lambda i: (-score(i), i))
    return [components[i] for i in order]
