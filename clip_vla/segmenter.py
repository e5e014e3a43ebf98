"""CLIPSeg, run the fast way: one vision pass per frame, cached prompts, batched decoding.

The transformers forward re-encodes the image once per prompt and the text on every call.
Here the backbone runs once on a 1x3xSxS input, its extracted activations are broadcast
(``expand``, no copy) over the K prompts, and only CLIPSeg's light conditional decoder runs
K times, in one batch, on text embeddings that are computed once and cached.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Sequence, Tuple

from .models import LoadedModels
from .text_cache import TextEmbeddingCache


@dataclass
class ImageFeatures:
    """What one vision pass gives: decoder activations and the projected CLIP image embedding."""

    activations: List[Any]
    image_embedding: Any  # 1xP, CLIPSeg's CLIP space (used when skills share the backbone)


class Segmenter:
    def __init__(self, models: LoadedModels) -> None:
        self.models = models
        self.model = models.clipseg
        self.tokenizer = models.clipseg_tokenizer
        self.text_cache = TextEmbeddingCache(self._encode_texts)

    def _encode_texts(self, phrases: List[str]):
        import torch

        tokens = self.tokenizer(list(phrases), padding=True, truncation=True, return_tensors="pt")
        tokens = {k: v.to(self.models.device) for k, v in tokens.items()}
        with torch.inference_mode():
            out = self.model.clip.get_text_features(input_ids=tokens["input_ids"],
                                                    attention_mask=tokens["attention_mask"])
        return out.pooler_output

    def text_embeddings(self, phrases: Sequence[str]):
        """KxP prompt embeddings (cached)."""
        return self.text_cache.get(list(phrases))

    def encode_image(self, pixel_values) -> ImageFeatures:
        import torch

        with torch.inference_mode():
            out = self.model.clip.vision_model(pixel_values=pixel_values, output_hidden_states=True,
                                               interpolate_pos_encoding=True)
            hidden = out.hidden_states
            activations = [hidden[i + 1] for i in self.model.extract_layers]
            embedding = self.model.clip.visual_projection(out.pooler_output)
        return ImageFeatures(activations=activations, image_embedding=embedding)

    def decode(self, features: ImageFeatures, text_embeddings):
        """KxhxW logits at the model's resolution, one map per prompt."""
        import torch

        k = text_embeddings.shape[0]
        with torch.inference_mode():
            activations = [a.expand(k, -1, -1) for a in features.activations]
            logits = self.model.decoder(activations, text_embeddings.to(activations[0].dtype)).logits
        return logits.view(k, *logits.shape[-2:])

    @staticmethod
    def probabilities(logits, out_size: Tuple[int, int]):
        """Sigmoid probabilities upsampled to (H, W), as float32 numpy KxHxW."""
        import torch
        import torch.nn.functional as F

        with torch.inference_mode():
            up = F.interpolate(logits.unsqueeze(1).float(), size=out_size, mode="bilinear", align_corners=False)
            return torch.sigmoid(up[:, 0]).cpu().numpy()
