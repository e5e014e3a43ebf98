"""``--task skills --identity-weight W``: teach CLIP to name one object from its crop.

The verifier asks CLIP which catalogue name fits the crop of the object a step acted on
(``clip_vla.perception.identity``). The term is CLIP's zero-shot classification objective:
cross-entropy of the crop's embedding against "a photo of a <name>" for every catalogue name,
so every look-alike ("yellow bar", "green cup" for "yellow cup") is a negative in every step.
Crops come from the frames' label masks through the same ``crop_box`` the verifier uses, each
object twice with the box jittered (scale, shift) as a CLIPSeg mask would be loose or off.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from clip_vla.core.config import VerifyConfig
from clip_vla.perception.identity import crop_box
from clip_vla.train.data import NON_OBJECT_LABELS, Sample

IDENTITY_TEMPLATE = VerifyConfig().identity_template  # the text the verifier asks with, by default


@dataclass
class IdentityCrop:
    image: np.ndarray  # 3xSxS uint8, CLIP's input geometry
    name: str


def identity_crops(samples: Sequence[Sample], size: int, names: Sequence[str], rng: np.random.Generator,
                   jitters: int = 2, pad: float = 0.25, min_area: int = 20) -> List[IdentityCrop]:
    """Crops of every named object (``names``: the catalogue) in ``samples``, ``jitters`` per object."""
    from clip_vla.train.skills import resize_crop

    known = set(names)
    out: List[IdentityCrop] = []
    for sample in samples:
        masks = {p: m for p, m in sample.phrase_masks().items() if p in known and p not in NON_OBJECT_LABELS}
        if not masks:
            continue
        rgb = sample.load_image()
        for name, mask in masks.items():
            if np.count_nonzero(mask) < min_area:
                continue
            for _ in range(jitters):
                box = crop_box(mask, pad, scale=float(rng.uniform(0.85, 1.3)),
                               shift=(float(rng.uniform(-0.12, 0.12)), float(rng.uniform(-0.12, 0.12))))
                u0, v0, u1, v1 = box
                out.append(IdentityCrop(resize_crop(rgb[v0:v1, u0:u1], size), name))
    return out


def identity_loss(image_features: torch.Tensor, name_features: torch.Tensor, labels: torch.Tensor,
                  temperature: Optional[float], logit_scale: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Cross-entropy of each crop against every name (rows of ``name_features``): CLIP's zero-shot rule."""
    logits = F.normalize(image_features, dim=-1) @ F.normalize(name_features, dim=-1).T
    logits = logits * (logit_scale.exp() if logit_scale is not None else 1.0 / float(temperature))
    return F.cross_entropy(logits, labels)


def identity_accuracy(encode_image, encode_text, crops: Sequence[IdentityCrop], names: Sequence[str],
                      template: str = IDENTITY_TEMPLATE, batch: int = 256) -> Dict[str, float]:
    """Top-1 over ``names`` of held-out crops (the verifier's question: which name is this?)."""
    if not crops:
        return {"identity_top1": float("nan"), "crops": 0}
    with torch.inference_mode():
        text = F.normalize(encode_text([template.replace("{object}", n) for n in names]), dim=-1)
        correct = 0
        for i in range(0, len(crops), batch):
            chunk = crops[i:i + batch]
            img = F.normalize(encode_image(np.stack([c.image for c in chunk])), dim=-1)
            best = (img @ text.T).argmax(dim=1).tolist()
            correct += sum(names[b] == c.name for b, c in zip(best, chunk))
    return {"identity_top1": correct / len(crops), "crops": len(crops)}
