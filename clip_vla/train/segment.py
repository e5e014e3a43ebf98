"""``--task segment``: train CLIPSeg on (frame, phrase, mask), evaluate mIoU and centroid hits.

Each optimiser step encodes B frames once and decodes K phrases per frame (present objects,
the destinations, the pipeline's distractor prompts on their own regions, and absent hard
negatives with empty targets), with BCE + dice. The backbone is trained by calling
``clip.vision_model`` / ``get_text_features`` / ``decoder`` directly (transformers' CLIPSeg
forward runs the encoders under ``no_grad``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from clip_vla.train.data import Sample, derived_masks, hard_negatives, sim_catalogue
from clip_vla.train.losses import bce_dice_loss
from clip_vla.train.methods import inner

DISTRACTOR_PHRASES = ("background", "table surface", "robot arm", "shadow")


def resize_image(rgb: np.ndarray, size: int) -> np.ndarray:
    """HxWx3 uint8 -> 3xSxS uint8, resized exactly as ``clip_vla.perception.preprocess.model_input`` does."""
    x = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].float()
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return x[0].round().clamp(0, 255).to(torch.uint8).numpy()


def normalise(images_u8: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    m = torch.tensor(mean).view(1, 3, 1, 1) * 255.0
    s = torch.tensor(std).view(1, 3, 1, 1) * 255.0
    return (images_u8.float() - m) / s


def resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """HxW bool -> SxS float target (area fraction, so 4-pixel objects stay visible)."""
    import cv2

    return cv2.resize(mask.astype(np.float32), (size, size), interpolation=cv2.INTER_AREA)


@dataclass
class SegExample:
    image: np.ndarray  # 3xSxS uint8
    phrases: List[str]
    masks: np.ndarray  # KxSxS uint8 (area fraction x 255)
    objects: List[str]  # the phrases that are things (for evaluation / sampling priority)


def prepare(samples: Sequence[Sample], size: int, progress: bool = False) -> List[SegExample]:
    from clip_vla.train.progress import Progress

    out = []
    bar = Progress(len(samples), "load", enabled=progress)
    for s in samples:
        masks = derived_masks(s, s.phrase_masks())
        phrases = list(masks)
        stack = np.stack([(resize_mask(masks[p], size) * 255).round().astype(np.uint8) for p in phrases]) \
            if phrases else np.zeros((0, size, size), np.uint8)
        for n in s.negatives:
            if n not in masks:
                phrases.append(n)
                stack = np.concatenate([stack, np.zeros((1, size, size), np.uint8)])
        objects = [p for p in phrases if p not in DISTRACTOR_PHRASES and p not in ("table", "gripper")
                   and masks.get(p) is not None and masks[p].any()]
        out.append(SegExample(resize_image(s.load_image(), size), phrases, stack, objects))
        bar.update(1)
    bar.close()
    return out


class SegmentTrainer:
    """Builds batches and computes the loss; ``step(step, rng)`` is the loop's step function."""

    def __init__(self, model: Any, tokenizer: Any, examples: List[SegExample], image_size: int,
                 mean: Sequence[float], std: Sequence[float], batch: int = 12, prompts_per_image: int = 6,
                 pos_weight: float = 3.0, dice_weight: float = 1.0, method: str = "full",
                 catalogue: Optional[Sequence[str]] = None, augment: bool = True) -> None:
        self.model, self.tokenizer, self.examples = model, tokenizer, examples
        self.size, self.mean, self.std = image_size, mean, std
        self.batch, self.k = batch, prompts_per_image
        self.pos_weight, self.dice_weight = pos_weight, dice_weight
        self.frozen_backbone = method in ("decoder-only", "linear-probe")
        self.catalogue = list(catalogue) if catalogue is not None else sim_catalogue()
        extra = sorted({p for e in examples for p in e.objects})
        self.catalogue = sorted(set(self.catalogue) | set(extra))
        self.augment = augment

    # ---------------------------------------------------------------- batches
    def _choose(self, ex: SegExample, rng: np.random.Generator) -> Tuple[List[str], List[np.ndarray]]:
        """K (phrase, target) pairs: objects first, a fixture, a distractor region, a hard negative."""
        index = {p: i for i, p in enumerate(ex.phrases)}
        zeros = np.zeros(ex.masks.shape[1:], np.uint8)
        objects = [p for p in ex.objects if p not in ("bowl", "tray")]
        fixtures = [p for p in ex.objects if p in ("bowl", "tray")]
        rng.shuffle(objects)
        # Objects are small and need the colour x shape binding: most slots go to them; one slot
        # alternates between a destination and a distractor region, one is an absent hard negative.
        picks: List[str] = objects[:max(1, self.k - 2)]
        regions = [p for p in DISTRACTOR_PHRASES if p in index]
        if fixtures and (not regions or rng.random() < 0.5):
            picks.append(fixtures[int(rng.integers(len(fixtures)))])
        elif regions:
            weights = np.array([3.0 if p in ("background", "table surface") else 1.0 for p in regions])
            picks.append(regions[int(rng.choice(len(regions), p=weights / weights.sum()))])
        negs = [p for p in ex.phrases if p not in ex.objects and p not in DISTRACTOR_PHRASES and p != "table"]
        negs += hard_negatives(ex.objects, self.catalogue, rng, 2)
        rng.shuffle(negs)
        picks += [n for n in negs[:1] if n not in picks]
        pool = [p for p in objects[len(picks):] + fixtures + negs if p not in picks]
        while len(picks) < self.k and pool:
            picks.append(pool.pop(int(rng.integers(len(pool)))))
        while len(picks) < self.k:
            picks.append(picks[int(rng.integers(len(picks)))])
        targets = [ex.masks[index[p]] if p in index else zeros for p in picks[: self.k]]
        return picks[: self.k], targets

    def batch_tensors(self, indices: Sequence[int], rng: np.random.Generator, train: bool = True):
        images, phrases, targets = [], [], []
        for i in indices:
            ex = self.examples[i]
            img = ex.image
            ps, ts = self._choose(ex, rng)
            t = np.stack(ts)
            if train and self.augment and rng.random() < 0.5:
                img, t = img[:, :, ::-1], t[:, :, ::-1]
            images.append(np.ascontiguousarray(img))
            phrases.extend(ps)
            targets.append(np.ascontiguousarray(t))
        pix = normalise(torch.from_numpy(np.stack(images)), self.mean, self.std)
        if train and self.augment:
            gain = torch.from_numpy(rng.uniform(0.85, 1.15, (len(images), 1, 1, 1))).float()
            pix = pix * gain + torch.from_numpy(rng.normal(0, 0.05, (len(images), 3, 1, 1))).float()
        tgt = torch.from_numpy(np.concatenate(targets)).float() / 255.0
        return pix, phrases, tgt

    # ---------------------------------------------------------------- model calls
    def text_features(self, phrases: Sequence[str]) -> torch.Tensor:
        model = inner(self.model)
        unique = sorted(set(phrases))
        tokens = self.tokenizer(unique, padding=True, truncation=True, return_tensors="pt")
        emb = model.clip.get_text_features(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"])
        emb = getattr(emb, "pooler_output", emb)
        pos = {p: i for i, p in enumerate(unique)}
        return emb[torch.tensor([pos[p] for p in phrases])]

    def logits(self, pixels: torch.Tensor, phrases: Sequence[str]) -> torch.Tensor:
        """(B*K)xSxS logits: one vision pass per image, the decoder once per (image, phrase)."""
        model = inner(self.model)
        k = len(phrases) // pixels.shape[0]
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen_backbone):
            other_size = pixels.shape[-1] != model.config.vision_config.image_size
            out = model.clip.vision_model(pixel_values=pixels, output_hidden_states=True,
                                          interpolate_pos_encoding=other_size)
            acts = [out.hidden_states[i + 1].repeat_interleave(k, dim=0) for i in model.extract_layers]
            cond = self.text_features(phrases)
        logits = model.decoder(acts, cond).logits
        logits = logits.view(len(phrases), *logits.shape[-2:])
        if logits.shape[-1] != pixels.shape[-1]:
            logits = F.interpolate(logits[:, None], size=pixels.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
        return logits

    def loss(self, indices: Sequence[int], rng: np.random.Generator) -> torch.Tensor:
        pix, phrases, tgt = self.batch_tensors(indices, rng)
        return bce_dice_loss(self.logits(pix, phrases), tgt, self.pos_weight, self.dice_weight)

    def step(self, step: int, rng: np.random.Generator) -> torch.Tensor:
        idx = rng.choice(len(self.examples), size=min(self.batch, len(self.examples)), replace=False)
        return self.loss(idx, rng)


# --------------------------------------------------------------------------- evaluation
def evaluate(model: Any, tokenizer: Any, samples: Sequence[Sample], image_size: int, mean: Sequence[float],
             std: Sequence[float], distractors: Sequence[str] = DISTRACTOR_PHRASES, threshold: float = 0.4,
             min_area: int = 16, max_samples: Optional[int] = None) -> Dict[str, float]:
    """mIoU and centroid-in-true-mask hit rate over every (frame, object/fixture phrase).

    Uses the pipeline's decision rule at the frame's resolution: the phrase is decoded
    together with ``distractors``; a pixel is the target where its probability clears
    ``threshold`` and beats every distractor; the most confident component is the detection.
    """
    from clip_vla.perception.localize import detect

    trainer = SegmentTrainer(model, tokenizer, [], image_size, mean, std, catalogue=[])
    ious, hits, found = [], [], []
    model.eval()
    for s in list(samples)[: max_samples or len(samples)]:
        rgb = s.load_image()
        h, w = rgb.shape[:2]
        masks = s.phrase_masks()
        targets = [p for p, m in masks.items() if p not in ("table", "gripper") and m.sum() >= 4]
        if not targets:
            continue
        prompts = targets + list(distractors)
        pix = normalise(torch.from_numpy(resize_image(rgb, image_size))[None], mean, std)
        with torch.inference_mode():
            model_inner = inner(model)
            out = model_inner.clip.vision_model(pixel_values=pix, output_hidden_states=True)
            acts = [out.hidden_states[i + 1].expand(len(prompts), -1, -1) for i in model_inner.extract_layers]
            logits = model_inner.decoder(acts, trainer.text_features(prompts)).logits
            logits = logits.view(len(prompts), *logits.shape[-2:])
            probs = torch.sigmoid(F.interpolate(logits[:, None].float(), size=(h, w), mode="bilinear",
                                                align_corners=False)[:, 0]).numpy()
        n_t = len(targets)
        for j, p in enumerate(targets):
            competitors = [j] + list(range(n_t, len(prompts)))
            det = detect(probs, prompts, j, competitors, threshold, min_area)
            truth = masks[p]
            if det.found:
                inter = np.logical_and(det.mask, truth).sum()
                union = np.logical_or(det.mask, truth).sum()
                ious.append(inter / max(union, 1))
                u, v = int(round(det.centroid[0])), int(round(det.centroid[1]))
                hits.append(bool(0 <= v < h and 0 <= u < w and truth[v, u]))
            else:
                ious.append(0.0)
                hits.append(False)
            found.append(det.found)
    n = max(len(ious), 1)
    return {"miou": float(np.sum(ious) / n), "centroid_hit_rate": float(np.sum(hits) / n),
            "found_rate": float(np.sum(found) / n), "queries": len(ious)}
