"""``--task skills``: train CLIP so that instruction -> skill-prompt similarity picks the skill.

Three terms, all CLIP-style contrastive:
- command <-> skill prototypes (the mean of the skill's prompt templates filled with the
  object, exactly what ``SkillScorer`` compares against): cross-entropy over the skills;
- command <-> one skill prompt, symmetric, supervised-contrastive over in-batch negatives
  (commands sharing a skill are positives of each other's prompts);
- frame <-> command, symmetric CLIP loss (labels: the command's object, shared frames/objects
  are positives), so the image tower learns the scene's objects.
Top-1 accuracy is measured with ``SkillScorer``'s rule (text only, and text + image).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from clip_vla.core.config import Vocabulary, default_vocabulary_path
from clip_vla.train.data import Sample, sim_catalogue
from clip_vla.train.identity import IDENTITY_TEMPLATE, IdentityCrop, identity_loss
from clip_vla.train.losses import prototype_loss, supervised_contrastive_loss
from clip_vla.train.methods import inner

# Verb-less phrasings (the pipeline asks CLIP only when the parser finds no verb).
IMPLICIT = {
    "pick": ["the {o} up", "{o} up please", "up with the {o}", "i want the {o} in the gripper", "{o}, lifted"],
    "place": ["the {o} into the {d}", "{o} in the {d} please", "the {o} onto the {d}", "{o} goes in the {d}"],
    "push": ["the {o} forward", "{o} away from you", "the {o} further away", "{o} forwards a bit"],
    "pull": ["the {o} towards you", "{o} closer to you", "the {o} back towards the robot", "{o} nearer please"],
    "point_at": ["where is the {o}", "which one is the {o}", "show the {o}", "the {o}, where"],
    "none": ["nothing", "stay still", "no action please", "everything is fine, rest"],
    "open": ["the {o} should be open", "{o} open please"],
    "close": ["the {o} should be closed", "{o} shut please"],
}
POLITE = ["{c}", "please {c}", "{c} please", "can you {c}", "robot, {c}", "now {c}", "{c} now", "could you {c}"]
DESTINATIONS = ("bowl", "tray")


def load_vocabulary(path: Optional[str] = None) -> Vocabulary:
    return Vocabulary.from_yaml(path or default_vocabulary_path())


def command_corpus(vocabulary: Vocabulary, objects: Sequence[str], rng: np.random.Generator, count: int,
                   implicit_fraction: float = 0.3) -> List[Tuple[str, str, Optional[str]]]:
    """(command, skill, object) triples from the vocabulary's verbs and verb-less phrasings."""
    out = []
    skills = [s for s in vocabulary.skills]
    for _ in range(count):
        skill = skills[int(rng.integers(len(skills)))]
        obj = str(objects[int(rng.integers(len(objects)))])
        dest = DESTINATIONS[int(rng.integers(2))]
        if rng.random() < implicit_fraction and skill.name in IMPLICIT:
            pattern = IMPLICIT[skill.name][int(rng.integers(len(IMPLICIT[skill.name])))]
            text = pattern.format(o=obj, d=dest)
        else:
            verb = skill.verbs[int(rng.integers(len(skill.verbs)))]
            if not skill.needs_object:
                text = verb
            elif skill.needs_destination:
                prep = "on" if dest == "tray" and rng.random() < 0.5 else "in"
                text = f"{verb} the {obj} {prep} the {dest}"
            else:
                text = f"{verb} the {obj}"
            text = POLITE[int(rng.integers(len(POLITE)))].format(c=text)
        out.append((text, skill.name, obj if skill.needs_object else None))
    return out


def resize_crop(rgb: np.ndarray, size: int) -> np.ndarray:
    """CLIP preprocessing geometry (shortest side to S, centre crop) as ``model_input`` with crop."""
    x = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].float()
    h, w = x.shape[-2:]
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    x = F.interpolate(x, size=(nh, nw), mode="bicubic", align_corners=False, antialias=True)
    top, left = (nh - size) // 2, (nw - size) // 2
    return x[0, :, top:top + size, left:left + size].round().clamp(0, 255).to(torch.uint8).numpy()


@dataclass
class SkillExample:
    image: Optional[np.ndarray]  # 3xSxS uint8 or None
    command: str
    skill: str
    object: Optional[str]


def prepare(samples: Sequence[Sample], size: int) -> List[SkillExample]:
    return [SkillExample(resize_crop(s.load_image(), size), s.command, s.skill, s.object)
            for s in samples if s.command and s.skill]


class SkillTrainer:
    def __init__(self, model: Any, tokenizer: Any, examples: List[SkillExample], image_size: int,
                 mean: Sequence[float], std: Sequence[float], vocabulary: Vocabulary, batch: int = 32,
                 temperature: float = 0.07, objects: Optional[Sequence[str]] = None, image_weight: float = 0.5,
                 seed: int = 0, crops: Sequence[IdentityCrop] = (), identity_weight: float = 0.0,
                 identity_names: Sequence[str] = ()) -> None:
        self.model, self.tokenizer, self.examples = model, tokenizer, examples
        self.size, self.mean, self.std = image_size, mean, std
        self.vocabulary, self.batch, self.temperature = vocabulary, batch, temperature
        self.skill_names = vocabulary.skill_names
        objs = list(objects) if objects else sorted({e.object for e in examples if e.object} | set(sim_catalogue()))
        self.objects = objs or ["object"]
        self.corpus = command_corpus(vocabulary, self.objects, np.random.default_rng(seed + 17), 20000)
        self.image_weight = image_weight
        self.crops, self.identity_weight = list(crops), identity_weight
        self.identity_names = list(identity_names) or sorted({c.name for c in self.crops})

    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        model = inner(self.model)
        tokens = self.tokenizer(list(texts), padding=True, truncation=True, return_tensors="pt")
        out = model.get_text_features(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"])
        return getattr(out, "pooler_output", out)

    def encode_image(self, images_u8: np.ndarray) -> torch.Tensor:
        from clip_vla.train.segment import normalise

        model = inner(self.model)
        out = model.get_image_features(pixel_values=normalise(torch.from_numpy(images_u8), self.mean, self.std))
        return getattr(out, "pooler_output", out)

    def prototypes(self, objects: Sequence[Optional[str]]) -> torch.Tensor:
        """NxSxD: per command, the (unnormalised mean of unit) prompt embeddings of every skill."""
        prompts: List[str] = []
        for obj in objects:
            for skill in self.vocabulary.skills:
                prompts.extend(skill.prompts(obj))
        unique = sorted(set(prompts))
        emb = F.normalize(self.encode_text(unique), dim=-1)
        pos = {p: i for i, p in enumerate(unique)}
        rows = []
        for obj in objects:
            rows.append(torch.stack([emb[[pos[p] for p in skill.prompts(obj)]].mean(0)
                                     for skill in self.vocabulary.skills]))
        return torch.stack(rows)

    def step(self, step: int, rng: np.random.Generator) -> torch.Tensor:
        model = inner(self.model)
        scale = model.logit_scale if self.temperature <= 0 else None
        tau = None if scale is not None else self.temperature
        picks = [self.corpus[int(i)] for i in rng.integers(len(self.corpus), size=self.batch)]
        if self.examples:
            frames = [self.examples[int(i)] for i in rng.integers(len(self.examples), size=self.batch // 2)]
            picks = picks[: self.batch - len(frames)] + [(e.command, e.skill, e.object) for e in frames]
        else:
            frames = []
        texts = [p[0] for p in picks]
        labels = torch.tensor([self.skill_names.index(p[1]) for p in picks])
        objects = [p[2] for p in picks]
        text_emb = self.encode_text(texts)
        protos = self.prototypes(objects)
        loss = prototype_loss(text_emb, protos, labels, tau, logit_scale=scale)
        # one random prompt of the true skill per command: supervised contrastive over the batch
        prompts = []
        for (_, skill, obj) in picks:
            options = self.vocabulary.skill(skill).prompts(obj)
            prompts.append(options[int(rng.integers(len(options)))])
        loss = loss + 0.5 * supervised_contrastive_loss(text_emb, self.encode_text(prompts), labels.tolist(), tau,
                                                        logit_scale=scale).loss
        if frames and self.image_weight > 0:
            images = np.stack([e.image for e in frames])
            img = self.encode_image(images)
            cmd = text_emb[len(picks) - len(frames):]
            loss = loss + self.image_weight * supervised_contrastive_loss(
                img, cmd, [e.object or e.command for e in frames], tau, logit_scale=scale).loss
            # the image alone must not favour a skill: its similarities to the skill prototypes stay flat
            sims = torch.einsum("nd,nsd->ns", F.normalize(img, dim=-1),
                                F.normalize(protos[len(picks) - len(frames):], dim=-1))
            loss = loss + self.image_weight * sims.var(dim=1).mean() * 10.0
        if self.crops and self.identity_weight > 0:
            loss = loss + self.identity_weight * self.identity_step(rng, tau, scale)
        return loss

    def identity_step(self, rng: np.random.Generator, tau: Optional[float], scale) -> torch.Tensor:
        """One batch of object crops classified over every catalogue name (``train.identity``)."""
        chosen = [self.crops[int(i)] for i in rng.integers(len(self.crops), size=self.batch)]
        names = self.identity_names
        text = self.encode_text([IDENTITY_TEMPLATE.replace("{object}", n) for n in names])
        labels = torch.tensor([names.index(c.name) for c in chosen])
        return identity_loss(self.encode_image(np.stack([c.image for c in chosen])), text, labels, tau, scale)


def evaluate(model: Any, tokenizer: Any, vocabulary: Vocabulary, commands: Sequence[Tuple[str, str, Optional[str]]],
             images: Optional[Sequence[Optional[np.ndarray]]] = None, image_size: int = 32,
             mean: Sequence[float] = (0.48145466, 0.4578275, 0.40821073),
             std: Sequence[float] = (0.26862954, 0.26130258, 0.27577711),
             text_weight: float = 0.7, image_weight: float = 0.3) -> Dict[str, float]:
    """Top-1 skill accuracy with ``SkillScorer``'s rule: text only, and text + image when images are given."""
    trainer = SkillTrainer(model, tokenizer, [], image_size, mean, std, vocabulary, objects=["object"])
    trainer.corpus = []
    correct_text, correct_both, n_both = 0, 0, 0
    model.eval()
    with torch.inference_mode():
        for i, (text, skill, obj) in enumerate(commands):
            protos = F.normalize(trainer.prototypes([obj])[0], dim=-1)
            t = F.normalize(trainer.encode_text([text]), dim=-1)[0]
            scores = text_weight * (protos @ t)
            correct_text += int(trainer.skill_names[int(scores.argmax())] == skill)
            if images is not None and images[i] is not None:
                im = F.normalize(trainer.encode_image(images[i][None]), dim=-1)[0]
                both = scores + image_weight * (protos @ im)
                correct_both += int(trainer.skill_names[int(both.argmax())] == skill)
                n_both += 1
    n = max(len(commands), 1)
    out = {"skill_top1_text": correct_text / n, "commands": len(commands)}
    if n_both:
        out["skill_top1_text_image"] = correct_both / n_both
    return out
