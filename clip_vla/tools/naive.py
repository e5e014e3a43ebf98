"""The naive way to run the models: the baseline ``clip-vla bench`` measures the fast path against.

What a first implementation following the transformers model cards does, per command and frame:

- Pillow preprocessing through the transformers image processors (CLIPSeg: resize to 352x352;
  CLIP: shortest side to 224, centre crop), once per prompt for CLIPSeg, as its processor is
  called with ``images=[image] * K``;
- ``CLIPSegForImageSegmentation(input_ids, pixel_values)`` with the image repeated for every
  prompt: the vision backbone runs K times, the prompts are re-tokenised and re-encoded;
- all K logit maps upsampled to the input size and thresholded on the CPU (``localize.detect``);
- a separate ``CLIPModel`` forward for skill scoring, re-encoding every skill prompt;
- nothing cached between calls.

It produces the same kind of result as ``VLAPipeline`` (same parser, geometry, tokenizer and
safety envelope: ``NaivePipeline`` only replaces perception), so the two can be compared
output for output. Needs Pillow (a dev/CI requirement, not a runtime one).
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from clip_vla.core.config import ModelConfig, PerceptionConfig, Vocabulary
from clip_vla.perception.loading import ImageSpec, LoadedModels
from clip_vla.pipeline import VLAPipeline, detect_roles, skill_text
from clip_vla.core.types import Detection


def _image_processor(kind: str, model_id: str, spec: Optional[ImageSpec], model_config: Optional[ModelConfig]):
    """The model's own Pillow image processor (``from_pretrained``), else one built from its ImageSpec."""
    import transformers

    names = ("ViTImageProcessorPil", "ViTImageProcessor") if kind == "clipseg" else (
        "CLIPImageProcessorPil", "CLIPImageProcessor")
    cls = next(getattr(transformers, n) for n in names if hasattr(transformers, n))
    kwargs: Dict[str, Any] = {}
    if model_config is not None:
        from clip_vla.perception.loading import _hub_kwargs

        kwargs = _hub_kwargs(model_config)
    try:
        return cls.from_pretrained(model_id, **kwargs)
    except Exception:  # noqa: BLE001 - e.g. no preprocessor_config.json: use the published settings
        if spec is None:
            raise
    if kind == "clipseg":  # CIDAS/clipseg-rd64-refined: bilinear resize to SxS
        return cls(do_resize=True, size={"height": spec.size, "width": spec.size}, resample=2,
                   image_mean=list(spec.mean), image_std=list(spec.std))
    return cls(do_resize=True, size={"shortest_edge": spec.size}, resample=3, do_center_crop=True,
               crop_size={"height": spec.size, "width": spec.size}, image_mean=list(spec.mean),
               image_std=list(spec.std))


class NaivePerception:
    """CLIPSeg + CLIP run the naive way on already loaded models (same weights as the fast path)."""

    def __init__(self, models: LoadedModels, model_config: Optional[ModelConfig] = None) -> None:
        self.models = models
        ids = models.ids or {}
        self.seg_processor = _image_processor("clipseg", ids.get("clipseg", ""), models.clipseg_image, model_config)
        if models.clip is not None:
            self.clip_model = models.clip
            self.clip_tokenizer = models.clip_tokenizer
            self.clip_processor = _image_processor("clip", ids.get("clip", ""), models.clip_image, model_config)
        else:  # skills share CLIPSeg's backbone: its CLIPSegModel, with CLIPSeg's preprocessing
            self.clip_model = models.clipseg.clip
            self.clip_tokenizer = models.clipseg_tokenizer
            self.clip_processor = self.seg_processor

    def _to_device(self, batch: Dict[str, Any]) -> Dict[str, Any]:
        out = {}
        for key, value in batch.items():
            value = value.to(self.models.device)
            if key == "pixel_values":
                value = value.to(self.models.dtype)
            out[key] = value
        return out

    # ------------------------------------------------------------------ CLIPSeg
    def segmentation_inputs(self, image: Any, prompts: Sequence[str]) -> Dict[str, Any]:
        """What ``CLIPSegProcessor(text=prompts, images=[image] * K, padding=True)`` returns."""
        pixels = self.seg_processor(images=[image] * len(prompts), return_tensors="pt")
        tokens = self.models.clipseg_tokenizer(list(prompts), padding=True, return_tensors="pt")
        return self._to_device({"pixel_values": pixels["pixel_values"], "input_ids": tokens["input_ids"],
                                "attention_mask": tokens["attention_mask"]})

    def segment(self, inputs: Dict[str, Any]):
        """KxSxS logits: the whole model per prompt (vision backbone K times, text every call)."""
        import torch

        with torch.inference_mode():
            logits = self.models.clipseg(**inputs).logits
        return logits.reshape(-1, *logits.shape[-2:])

    @staticmethod
    def probabilities(logits, out_size: Tuple[int, int]) -> np.ndarray:
        """All K maps upsampled to the input size, then sigmoid, as float32 numpy KxHxW."""
        import torch
        import torch.nn.functional as F

        with torch.inference_mode():
            up = F.interpolate(logits.unsqueeze(1).float(), size=out_size, mode="bilinear", align_corners=False)
            return torch.sigmoid(up[:, 0]).cpu().numpy()

    # ------------------------------------------------------------------ CLIP skills
    def skill_inputs(self, image: Any, texts: Sequence[str], with_image: bool = True) -> Dict[str, Any]:
        tokens = self.clip_tokenizer(list(texts), padding=True, truncation=True, return_tensors="pt")
        batch = {"input_ids": tokens["input_ids"], "attention_mask": tokens["attention_mask"]}
        if with_image:
            batch["pixel_values"] = self.clip_processor(images=image, return_tensors="pt")["pixel_values"]
        return self._to_device(batch)

    def skill_probabilities(self, image: Any, instruction: str, object_phrase: Optional[str],
                            vocabulary: Vocabulary, perception: PerceptionConfig,
                            inputs: Optional[Dict[str, Any]] = None) -> Dict[str, float]:
        """Skill probabilities from one CLIP forward over the instruction and every skill prompt.

        The same formula as ``SkillScorer.score``: per skill the normalised mean of its normalised
        prompt embeddings, scored against the instruction (``text_weight``) and the image
        (``image_weight``), softmax with ``skill_temperature``.
        """
        import torch

        prompts: List[List[str]] = [s.prompts(object_phrase) for s in vocabulary.skills]
        texts = [instruction] + [p for group in prompts for p in group]
        with_image = perception.image_weight > 0
        if inputs is None:
            inputs = self.skill_inputs(image, texts, with_image)
        with torch.inference_mode():
            if with_image:
                out = self.clip_model(**inputs)
                text, img = out.text_embeds.float(), out.image_embeds.float()
            else:
                text = self.clip_model.get_text_features(input_ids=inputs["input_ids"],
                                                         attention_mask=inputs["attention_mask"]).pooler_output
                text, img = text.float(), None
            text = text / text.norm(dim=-1, keepdim=True).clamp_min(1e-8)
            rows, start = [], 1
            for group in prompts:
                emb = text[start:start + len(group)].mean(dim=0)
                rows.append(emb / emb.norm().clamp_min(1e-8))
                start += len(group)
            matrix = torch.stack(rows)
            scores = perception.text_weight * (matrix @ text[0])
            if img is not None:
                img = img / img.norm(dim=-1, keepdim=True).clamp_min(1e-8)
                scores = scores + perception.image_weight * (matrix @ img[0])
            probs = torch.softmax(scores / max(perception.skill_temperature, 1e-6), dim=0).cpu().tolist()
        ranked = sorted(zip(vocabulary.skill_names, probs), key=lambda kv: kv[1], reverse=True)
        return dict(ranked)


class NaivePipeline(VLAPipeline):
    """``VLAPipeline`` with its perception replaced by ``NaivePerception`` (everything else shared).

    Timed stages: preprocess (Pillow processors + tokenisers), clipseg_forward (image encoding
    x K, text encoding and decoding in one call), mask_upsampling (K full-size maps to the CPU),
    skill_scoring (CLIP processor + forward), postprocess (threshold, competition, components),
    then geometry and tokenization as in the fast pipeline.
    """

    def __init__(self, config, models: Optional[LoadedModels] = None) -> None:
        super().__init__(config, models=models)
        self.naive = NaivePerception(self.models, config.models)

    def _perceive(self, frame, prepared, timer, camera_to_base=None,
                  low=None) -> Tuple[Dict[str, Detection], Dict[str, float]]:
        """The naive rule: ``low`` (``perception.low_destination``) is not applied, nor are refuted
        objects set aside (``prepared.avoid_xy``: a retry's concern, not the benchmark's)."""
        from PIL import Image

        perception = self.config.perception
        height, width = frame.rgb.shape[:2]
        with timer.stage("preprocess"):
            image = Image.fromarray(frame.rgb)
            seg_inputs = self.naive.segmentation_inputs(image, prepared.prompts)
        with timer.stage("clipseg_forward"):
            logits = self.naive.segment(seg_inputs)
        with timer.stage("mask_upsampling"):
            probs = self.naive.probabilities(logits, (height, width))
        with timer.stage("skill_scoring"):
            skill_probs = self.naive.skill_probabilities(image, skill_text(prepared.parsed), prepared.parsed.object,
                                                         self.vocabulary, perception)
        with timer.stage("postprocess"):
            detections = detect_roles(probs, prepared, perception)
        return detections, skill_probs
