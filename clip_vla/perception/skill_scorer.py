"""Zero-shot skill scoring with CLIP: which of the configured skills does the command ask for?

Each skill is a set of prompt templates ("a robot arm picking up the {object}"). A skill's
score mixes two cosine similarities against the mean of its prompt embeddings:
instruction text <-> skill prompts (weight ``text_weight``) and scene image <-> skill prompts
(weight ``image_weight``); a softmax with temperature turns scores into probabilities.
All prompt embeddings are cached: per frame only the image embedding is new, computed by
``VisionTower`` (the lean forward of clip_vla.perception.segmenter) over CLIP's own vision modules.

When the command names a verb the parser's skill is executed, but CLIP still has a say:
``contradiction`` is the veto rule the pipeline applies (``perception.skill_veto_margin``),
so "open the cup" can be refused when CLIP finds no 'open' in what it hears and sees.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional

from clip_vla.core.config import SKILL_VETO_OFF, PerceptionConfig, Vocabulary
from clip_vla.perception.loading import LoadedModels
from clip_vla.perception.segmenter import VisionTower
from clip_vla.perception.text_cache import TextEmbeddingCache

# Probabilities are floored here before their logarithm: at skill_temperature 0.01 a losing skill's
# probability underflows to 0.0, and its log-odds gap is then read as ln(1 / 1e-9) ~ 20.7 nats.
PROBABILITY_FLOOR = 1e-9


@dataclass(frozen=True)
class SkillContradiction:
    """CLIP's top skill beats the skill the command named by more than the configured margin."""

    named: str
    top: str
    named_probability: float
    top_probability: float
    gap_nats: float  # ln p(top) - ln p(named), probabilities floored at PROBABILITY_FLOOR
    margin_nats: float

    @property
    def message(self) -> str:
        return (f"CLIP contradicts the named skill '{self.named}': '{self.top}' has probability "
                f"{self.top_probability:.2f}, '{self.named}' {self.named_probability:.2g} "
                f"(ln ratio {self.gap_nats:.1f} > skill_veto_margin {self.margin_nats:.1f})")


def log_odds_gap(probabilities: Mapping[str, float], named: str) -> float:
    """ln p(top) - ln p(named) over ``probabilities`` (0 when ``named`` is CLIP's top skill).

    Why log-odds, not a difference of probabilities: at the low softmax temperature CLIP's
    probabilities sit at 0 or 1, where a difference cannot tell "far behind" from "hopeless".
    A skill missing from ``probabilities`` has probability 0.
    """
    if not probabilities:
        return 0.0
    top = max(probabilities.values())
    named_p = probabilities.get(named, 0.0)
    return math.log(max(top, PROBABILITY_FLOOR)) - math.log(max(named_p, PROBABILITY_FLOOR))


def vetoed(gap_nats: float, margin_nats: float) -> bool:
    """The veto rule on a log-odds gap: it fires when the gap exceeds a margin that is not ``SKILL_VETO_OFF``."""
    return margin_nats > SKILL_VETO_OFF and gap_nats > margin_nats


def contradiction(probabilities: Mapping[str, float], named: str, margin_nats: float) -> Optional[SkillContradiction]:
    """The veto rule: CLIP's evidence contradicts ``named`` when ``log_odds_gap > margin_nats``.

    ``margin_nats`` 0 (``SKILL_VETO_OFF``) or no probabilities (an oracle without skill scores):
    never a contradiction, the spoken verb wins as before.
    """
    if not probabilities:
        return None
    gap = log_odds_gap(probabilities, named)
    if not vetoed(gap, margin_nats):
        return None
    top = max(probabilities, key=lambda k: probabilities[k])
    return SkillContradiction(named, top, float(probabilities.get(named, 0.0)), float(probabilities[top]),
                              gap, float(margin_nats))


class SkillScorer:
    def __init__(self, models: LoadedModels, vocabulary: Vocabulary, perception: PerceptionConfig) -> None:
        self.models = models
        self.vocabulary = vocabulary
        self.perception = perception
        self.shared_backbone = models.clip is None
        self._text_model = models.clipseg.clip if self.shared_backbone else models.clip
        self._tokenizer = models.clipseg_tokenizer if self.shared_backbone else models.clip_tokenizer
        self.text_cache = TextEmbeddingCache(self._encode_texts)
        self._skill_matrices: "OrderedDict[str, Any]" = OrderedDict()
        self._tower = None if self.shared_backbone else VisionTower(models.clip.vision_model,
                                                                    models.clip.visual_projection)

    def set_vocabulary(self, vocabulary: Vocabulary, perception: PerceptionConfig) -> None:
        """New skills or weights: drop the per-object skill matrices (text rows stay cached)."""
        self.vocabulary = vocabulary
        self.perception = perception
        self._skill_matrices.clear()

    def _encode_texts(self, texts: List[str]):
        import torch

        tokens = self._tokenizer(list(texts), padding=True, truncation=True, return_tensors="pt")
        tokens = {k: v.to(self.models.device) for k, v in tokens.items()}
        with torch.inference_mode():
            out = self._text_model.get_text_features(input_ids=tokens["input_ids"],
                                                     attention_mask=tokens["attention_mask"])
        emb = out.pooler_output.float()
        return emb / emb.norm(dim=-1, keepdim=True).clamp_min(1e-8)

    def skill_matrix(self, object_phrase: Optional[str]):
        """SxP: one unit vector per skill, the mean of its prompts filled with the object."""
        import torch

        key = object_phrase or ""
        if key not in self._skill_matrices:
            rows = []
            for skill in self.vocabulary.skills:
                emb = self.text_cache.get(skill.prompts(object_phrase)).mean(dim=0)
                rows.append(emb / emb.norm().clamp_min(1e-8))
            self._skill_matrices[key] = torch.stack(rows)
            while len(self._skill_matrices) > 256:
                self._skill_matrices.popitem(last=False)
        self._skill_matrices.move_to_end(key)
        return self._skill_matrices[key]

    def image_embedding(self, pixel_values):
        """1xP unit image embedding from CLIP's own vision tower (not used with a shared backbone)."""
        import torch

        with torch.inference_mode():
            emb = self._tower.image_embedding(pixel_values).float()
            return emb / emb.norm(dim=-1, keepdim=True).clamp_min(1e-8)

    @staticmethod
    def normalise(embedding):
        emb = embedding.float()
        return emb / emb.norm(dim=-1, keepdim=True).clamp_min(1e-8)

    def score(self, instruction: str, object_phrase: Optional[str], image_embedding=None) -> Dict[str, float]:
        """Skill probabilities, highest first. ``image_embedding`` None scores on text alone."""
        import torch

        matrix = self.skill_matrix(object_phrase)
        text = self.text_cache.get([instruction])[0]
        scores = self.perception.text_weight * (matrix @ text)
        if image_embedding is not None and self.perception.image_weight > 0:
            scores = scores + self.perception.image_weight * (matrix @ self.normalise(image_embedding)[0])
        probs = torch.softmax(scores / max(self.perception.skill_temperature, 1e-6), dim=0).cpu().tolist()
        ranked = sorted(zip(self.vocabulary.skill_names, probs), key=lambda kv: kv[1], reverse=True)
        return dict(ranked)

    def best_skill_for_text(self, text: str) -> Optional[str]:
        """Text-only fallback for commands with no known verb (plugged into the parser).

        Never guesses the stop skill: stopping is said, not inferred.
        """
        scores = self.score(text, None, image_embedding=None)
        return next((name for name in scores if name != self.vocabulary.stop_skill), None)
