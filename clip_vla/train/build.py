"""Base models for training: a Hugging Face id / local directory, or a new compact architecture.

``--base new:sim-clipseg`` / ``new:sim-clip`` are the shipped compact sim-domain shapes;
``new:tiny-clipseg`` / ``new:tiny-clip`` are test-sized. New models use the byte-level
CLIPTokenizer of ``clip_vla.testing.model_factory`` (every character is a token).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional

from clip_vla.testing.model_factory import byte_level_vocab, save_preprocessor_config, save_tokenizer

# name -> (kind, vision, text, head) ; vision/text are CLIP sub-configs, head the CLIPSeg/CLIP extras.
ARCHITECTURES: Dict[str, Dict[str, Any]] = {
    "sim-clipseg": dict(
        kind="clipseg", image_size=160, crop=False, max_text=32,
        vision=dict(hidden_size=128, intermediate_size=256, num_hidden_layers=4, num_attention_heads=4, patch_size=10),
        text=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2),
        head=dict(projection_dim=64, reduce_dim=32, extract_layers=[1, 2, 3], decoder_num_attention_heads=2,
                  decoder_intermediate_size=64),
    ),
    "sim-clip": dict(
        kind="clip", image_size=64, crop=True, max_text=64,
        vision=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2, patch_size=16),
        text=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2),
        head=dict(projection_dim=64),
    ),
    "tiny-clipseg": dict(
        kind="clipseg", image_size=32, crop=False, max_text=24,
        vision=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2, patch_size=8),
        text=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2),
        head=dict(projection_dim=16, reduce_dim=16, extract_layers=[1, 2], decoder_num_attention_heads=2,
                  decoder_intermediate_size=32),
    ),
    "tiny-clip": dict(
        kind="clip", image_size=32, crop=True, max_text=48,
        vision=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, patch_size=16),
        text=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2),
        head=dict(projection_dim=16),
    ),
}


@dataclass
class Base:
    """A model to train and how to feed it."""

    model: Any
    tokenizer: Any
    image_size: int
    crop: bool
    kind: str  # "clipseg" | "clip"
    source: str
    mean: tuple = (0.48145466, 0.4578275, 0.40821073)
    std: tuple = (0.26862954, 0.26130258, 0.27577711)


def _new(name: str, seed: int, image_size: Optional[int] = None) -> Base:
    import torch
    from transformers import CLIPConfig, CLIPModel, CLIPSegConfig, CLIPSegForImageSegmentation, CLIPTokenizer

    if name not in ARCHITECTURES:
        raise ValueError(f"unknown new architecture '{name}' (known: {', '.join(sorted(ARCHITECTURES))})")
    arch = ARCHITECTURES[name]
    side = int(image_size or arch["image_size"])
    vocab = len(byte_level_vocab())
    text = dict(arch["text"], vocab_size=vocab, bos_token_id=vocab - 2, eos_token_id=vocab - 1,
                pad_token_id=vocab - 1, max_position_embeddings=arch["max_text"])
    vision = dict(arch["vision"], image_size=side)
    torch.manual_seed(seed)
    if arch["kind"] == "clipseg":
        model = CLIPSegForImageSegmentation(CLIPSegConfig(text_config=text, vision_config=vision, **arch["head"]))
        _reset_decoder_heads(model)
    else:
        model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, **arch["head"]))
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        save_tokenizer(tmp, max_length=arch["max_text"])
        tokenizer = CLIPTokenizer.from_pretrained(tmp)
    return Base(model=model, tokenizer=tokenizer, image_size=side, crop=arch["crop"], kind=arch["kind"],
                source=f"new:{name}")


def _reset_decoder_heads(model: Any) -> None:
    """PyTorch's default init for CLIPSeg's FiLM, reduce and output layers.

    transformers initialises them with std 1.0 (harmless when loading pretrained weights);
    from scratch that makes the FiLM offset dwarf the image features, the decoder's tokens
    collapse to one value and the model predicts a constant map.
    """
    import torch

    decoder = model.decoder
    modules = [decoder.film_mul, decoder.film_add, *decoder.reduces, *decoder.transposed_convolution.modules()]
    with torch.no_grad():
        for module in modules:
            if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
                module.reset_parameters()


def load_base(base: str, task: str, seed: int = 0, image_size: Optional[int] = None) -> Base:
    """``new:<architecture>``, a local ``save_pretrained`` directory, or a Hugging Face id."""
    if base.startswith("new:"):
        b = _new(base[4:], seed, image_size)
        want = "clipseg" if task == "segment" else "clip"
        if b.kind != want:
            raise ValueError(f"--task {task} needs a {want} base, '{base}' is a {b.kind}")
        return b
    import torch
    from transformers import AutoTokenizer, CLIPModel, CLIPSegForImageSegmentation

    from clip_vla.core.config import ModelConfig
    from clip_vla.perception.loading import read_image_spec

    cls = CLIPSegForImageSegmentation if task == "segment" else CLIPModel
    model = cls.from_pretrained(base, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(base)
    default = 352 if task == "segment" else model.config.vision_config.image_size
    spec = read_image_spec(base, ModelConfig(), default_size=default, default_crop=task != "segment")
    return Base(model=model, tokenizer=tokenizer, image_size=image_size or spec.size, crop=spec.crop,
                kind="clipseg" if task == "segment" else "clip", source=base, mean=spec.mean, std=spec.std)


def save_model_dir(model: Any, tokenizer: Any, out_dir: Path, image_size: int, crop: bool,
                   fp16: bool = True, extra: Optional[Dict[str, Any]] = None) -> Path:
    """``from_pretrained``-loadable directory: fp16 safetensors, tokenizer, preprocessor_config.json."""
    import copy

    import torch

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    to_save = copy.deepcopy(model).to("cpu")
    bake_image_size(to_save, image_size)
    if fp16:
        to_save = to_save.to(torch.float16)
    to_save.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    save_preprocessor_config(out, image_size, crop=crop)
    if extra:
        (out / "training.json").write_text(json.dumps(extra, indent=2, default=str), encoding="utf-8")
    return out


def bake_image_size(model: Any, image_size: int) -> None:
    """Store position embeddings for the size the model was trained at.

    A model fine-tuned at another resolution than its config's (``--image-size``) learned with
    bicubically interpolated position embeddings; saving that interpolation makes config.json,
    preprocessor_config.json and the weights agree, and the outputs are unchanged.
    """
    import torch

    from clip_vla.perception.segmenter import position_table

    vision = model.clip.vision_model if hasattr(model, "clip") else model.vision_model
    emb = vision.embeddings
    if int(emb.image_size) == int(image_size):
        return
    weight = emb.position_embedding.weight
    with torch.no_grad():
        table = position_table(emb, image_size, image_size)[0]
    n = table.shape[0]
    emb.position_embedding = torch.nn.Embedding(n, weight.shape[1], device=weight.device, dtype=weight.dtype)
    emb.position_embedding.weight.data.copy_(table)
    emb.register_buffer("position_ids", torch.arange(n, device=weight.device).expand((1, -1)), persistent=False)
    emb.image_size, emb.num_patches, emb.num_positions = int(image_size), n - 1, n
    model.config.vision_config.image_size = int(image_size)
