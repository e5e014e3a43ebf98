"""Build CLIPSeg/CLIP model directories from configs, without downloading anything.

Two uses:
- tests and CI build *tiny* models (hidden size 32, a few layers, < 1 MB) and load them
  back through the real ``from_pretrained`` path;
- benchmarks build *real-size* randomly initialised models whose cost equals the
  pretrained ones (CLIPSeg rd64-refined, CLIP ViT-B/32) when the weights are unreachable.

The tokenizer is CLIP's byte-level BPE over the 256-symbol byte alphabet with no merges:
every character is a token, so any text tokenises, and words keep their last letter
because each symbol also exists in its end-of-word form (``a</w>``).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Dict, Optional

# CLIP's published preprocessing statistics (OpenAI CLIP), used by both CLIP and CLIPSeg.
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
BOS = "<|startoftext|>"
EOS = "<|endoftext|>"


def byte_level_vocab() -> Dict[str, int]:
    """Every byte symbol, its end-of-word form, then BOS/EOS."""
    from tokenizers import pre_tokenizers

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab: Dict[str, int] = {}
    for symbol in alphabet:
        vocab[symbol] = len(vocab)
    for symbol in alphabet:
        vocab[symbol + "</w>"] = len(vocab)
    vocab[BOS] = len(vocab)
    vocab[EOS] = len(vocab)
    return vocab


def save_tokenizer(out_dir: os.PathLike | str, max_length: int = 77):
    """Write a byte-level CLIPTokenizer into ``out_dir`` and return it."""
    from transformers import CLIPTokenizer

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    vocab_file = out / "vocab.json"
    merges_file = out / "merges.txt"
    vocab_file.write_text(json.dumps(byte_level_vocab()), encoding="utf-8")
    merges_file.write_text("#version: 0.2\n", encoding="utf-8")
    tokenizer = CLIPTokenizer(str(vocab_file), str(merges_file), model_max_length=max_length)
    tokenizer.save_pretrained(str(out))
    return tokenizer


def save_preprocessor_config(out_dir: os.PathLike | str, size: int, crop: bool) -> None:
    """The subset of a Hugging Face ``preprocessor_config.json`` that clip_vla reads."""
    config = {
        "do_resize": True,
        "do_normalize": True,
        "image_mean": CLIP_MEAN,
        "image_std": CLIP_STD,
        "size": {"height": size, "width": size} if not crop else {"shortest_edge": size},
        "do_center_crop": crop,
        "crop_size": {"height": size, "width": size},
    }
    Path(out_dir, "preprocessor_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")


def _text_config(vocab_size: int, tiny: bool) -> Dict[str, int]:
    base = {"vocab_size": vocab_size, "bos_token_id": vocab_size - 2, "eos_token_id": vocab_size - 1,
            "pad_token_id": vocab_size - 1, "max_position_embeddings": 77}
    if tiny:
        base.update(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
    return base


def build_clipseg(out_dir: os.PathLike | str, size: str = "tiny", seed: int = 0,
                  image_size: Optional[int] = None) -> Path:
    """Save a randomly initialised CLIPSeg (``tiny`` or ``real`` = rd64-refined shape) to ``out_dir``."""
    import torch
    from transformers import CLIPSegConfig, CLIPSegForImageSegmentation

    torch.manual_seed(seed)
    vocab_size = len(byte_level_vocab())
    if size == "tiny":
        side = image_size or 64
        config = CLIPSegConfig(
            text_config=_text_config(vocab_size, tiny=True),
            vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                               num_attention_heads=2, image_size=side, patch_size=16),
            projection_dim=16, reduce_dim=16, extract_layers=[1, 2], decoder_num_attention_heads=2,
            decoder_intermediate_size=32,
        )
    elif size == "real":
        side = image_size or 352
        config = CLIPSegConfig(text_config=_text_config(vocab_size, tiny=False),
                               vision_config=dict(patch_size=16), use_complex_transposed_convolution=True)
        config.text_config.vocab_size = 49408  # same embedding table as the real model
    else:
        raise ValueError(f"size must be 'tiny' or 'real', got {size!r}")
    model = CLIPSegForImageSegmentation(config).eval()
    out = Path(out_dir)
    model.save_pretrained(str(out))
    save_tokenizer(out)
    save_preprocessor_config(out, side, crop=False)
    return out


def build_clip(out_dir: os.PathLike | str, size: str = "tiny", seed: int = 0) -> Path:
    """Save a randomly initialised CLIP (``tiny`` or ``real`` = ViT-B/32 shape) to ``out_dir``."""
    import torch
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(seed)
    vocab_size = len(byte_level_vocab())
    if size == "tiny":
        side = 32
        config = CLIPConfig(
            text_config=_text_config(vocab_size, tiny=True),
            vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                               num_attention_heads=2, image_size=side, patch_size=16),
            projection_dim=16,
        )
    elif size == "real":
        side = 224
        config = CLIPConfig(text_config=_text_config(vocab_size, tiny=False),
                            vision_config=dict(patch_size=32, image_size=side), projection_dim=512)
        config.text_config.vocab_size = 49408
    else:
        raise ValueError(f"size must be 'tiny' or 'real', got {size!r}")
    model = CLIPModel(config).eval()
    out = Path(out_dir)
    model.save_pretrained(str(out))
    save_tokenizer(out)
    save_preprocessor_config(out, side, crop=True)
    return out


def build_model_pair(root: os.PathLike | str, size: str = "tiny", seed: int = 0) -> Dict[str, str]:
    """Build both models under ``root``; returns ``{"clipseg": dir, "clip": dir}``."""
    root = Path(root)
    return {
        "clipseg": str(build_clipseg(root / f"clipseg-{size}", size=size, seed=seed)),
        "clip": str(build_clip(root / f"clip-{size}", size=size, seed=seed + 1)),
    }
