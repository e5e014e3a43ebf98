"""Training losses: CLIP's symmetric contrastive loss, its supervised variant, BCE + dice for masks.

The CLIP loss (Radford et al. 2021): with image embeddings I (NxD), text embeddings T (NxD)
and temperature tau, logits = I T^T / tau; row i's target is column i (image->text) and
column j's target is row j (text->image); the loss is the mean of both cross-entropies.
Worked example: I1=[0.8,0.6], I2=[0.6,0.8], T1=[0.7,0.7], T2=[0.7,-0.7], tau=0.07 gives an
image->text loss ~0 for I1, a text->image loss of 4.02 for T2 (4.06 after L2 normalisation)
and a mean symmetric loss of 5.18 (5.23 normalised).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F

Temperature = Union[float, torch.Tensor]


@dataclass
class ContrastiveLoss:
    """The mean symmetric loss (``loss``) and its per-sample parts."""

    loss: torch.Tensor  # scalar: (mean(image_to_text) + mean(text_to_image)) / 2
    image_to_text: torch.Tensor  # N: cross-entropy of image i over the texts
    text_to_image: torch.Tensor  # N: cross-entropy of text j over the images
    logits: torch.Tensor  # NxN image x text


def _scale(temperature: Optional[Temperature], logit_scale: Optional[torch.Tensor]) -> Union[float, torch.Tensor]:
    """Multiplier of the similarities: 1/tau, or exp(logit_scale) when the temperature is learned."""
    if logit_scale is not None:
        return logit_scale.exp()
    if temperature is None:
        raise ValueError("give a temperature or a learned logit_scale")
    return 1.0 / temperature


def similarity_logits(image: torch.Tensor, text: torch.Tensor, temperature: Optional[Temperature] = 0.07,
                      normalize: bool = True, logit_scale: Optional[torch.Tensor] = None) -> torch.Tensor:
    if normalize:
        image = F.normalize(image, dim=-1)
        text = F.normalize(text, dim=-1)
    return image @ text.t() * _scale(temperature, logit_scale)


def clip_contrastive_loss(image: torch.Tensor, text: torch.Tensor, temperature: Optional[Temperature] = 0.07,
                          normalize: bool = True, logit_scale: Optional[torch.Tensor] = None) -> ContrastiveLoss:
    """Symmetric CLIP loss over in-batch negatives; pairs are (image[i], text[i]).

    ``normalize=False`` uses the raw vectors (the textbook worked example); ``logit_scale`` (a
    learned log of 1/tau, as in ``CLIPModel.logit_scale``) replaces the fixed ``temperature``.
    """
    if image.shape != text.shape:
        raise ValueError(f"image and text embeddings must have the same shape, got {tuple(image.shape)} "
                         f"and {tuple(text.shape)}")
    logits = similarity_logits(image, text, temperature, normalize, logit_scale)
    targets = torch.arange(logits.shape[0], device=logits.device)
    i2t = F.cross_entropy(logits, targets, reduction="none")
    t2i = F.cross_entropy(logits.t(), targets, reduction="none")
    return ContrastiveLoss((i2t.mean() + t2i.mean()) / 2, i2t, t2i, logits)


def _multi_positive_ce(logits: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """Per row: mean over its positive columns of -log softmax (SupCon's L_out)."""
    log_prob = logits.log_softmax(dim=-1)
    pos = positives.float()
    return -(log_prob * pos).sum(dim=-1) / pos.sum(dim=-1).clamp_min(1.0)


def supervised_contrastive_loss(image: torch.Tensor, text: torch.Tensor, labels: Union[torch.Tensor, Sequence],
                                temperature: Optional[Temperature] = 0.07, normalize: bool = True,
                                logit_scale: Optional[torch.Tensor] = None) -> ContrastiveLoss:
    """CLIP loss where every pair sharing a label is a positive (Khosla et al. 2020, L_out form).

    With all labels distinct it equals ``clip_contrastive_loss``; with repeated labels, a
    sample's same-label partners are no longer pushed away as negatives.
    """
    labels_t = _label_tensor(labels, image.device)
    logits = similarity_logits(image, text, temperature, normalize, logit_scale)
    positives = labels_t[:, None] == labels_t[None, :]
    i2t = _multi_positive_ce(logits, positives)
    t2i = _multi_positive_ce(logits.t(), positives.t())
    return ContrastiveLoss((i2t.mean() + t2i.mean()) / 2, i2t, t2i, logits)


def _label_tensor(labels: Union[torch.Tensor, Sequence], device) -> torch.Tensor:
    if isinstance(labels, torch.Tensor):
        return labels.to(device)
    index = {}
    return torch.tensor([index.setdefault(label, len(index)) for label in labels], device=device)


def prototype_loss(queries: torch.Tensor, prototypes: torch.Tensor, targets: torch.Tensor,
                   temperature: Optional[Temperature] = 0.07, normalize: bool = True,
                   logit_scale: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Cross-entropy of each query over class prototypes (NxD vs CxD or NxCxD), the zero-shot scorer's rule."""
    if normalize:
        queries = F.normalize(queries, dim=-1)
        prototypes = F.normalize(prototypes, dim=-1)
    if prototypes.dim() == 3:
        logits = torch.einsum("nd,ncd->nc", queries, prototypes)
    else:
        logits = queries @ prototypes.t()
    return F.cross_entropy(logits * _scale(temperature, logit_scale), targets)


def dice_loss(logits: torch.Tensor, targets: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """Per map 1 - soft dice; logits/targets NxHxW. Maps with an empty target count via ``smooth``."""
    probs = torch.sigmoid(logits).flatten(1)
    t = targets.flatten(1).float()
    inter = (probs * t).sum(-1)
    return 1.0 - (2 * inter + smooth) / (probs.sum(-1) + t.sum(-1) + smooth)


def bce_dice_loss(logits: torch.Tensor, targets: torch.Tensor, pos_weight: float = 5.0,
                  dice_weight: float = 1.0, smooth: float = 1.0) -> torch.Tensor:
    """Mean BCE (positive pixels weighted ``pos_weight``) plus ``dice_weight`` x mean dice loss."""
    t = targets.float()
    bce = F.binary_cross_entropy_with_logits(logits.float(), t,
                                             pos_weight=torch.tensor(pos_weight, device=logits.device))
    if dice_weight <= 0:
        return bce
    return bce + dice_weight * dice_loss(logits.float(), t, smooth).mean()


def temperature_to_logit_scale(temperature: float) -> float:
    return math.log(1.0 / temperature)
