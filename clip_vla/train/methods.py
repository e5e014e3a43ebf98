"""Which parameters train: ``full``, ``lora`` (peft adapters, backbone frozen), ``linear-probe``, ``decoder-only``."""
from __future__ import annotations

from typing import Any, Tuple

METHODS = ("full", "lora", "linear-probe", "decoder-only")
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"]


def head_names(kind: str) -> Tuple[str, ...]:
    """The 'head' a linear probe trains: CLIPSeg's output convolution, CLIP's projections + temperature."""
    if kind == "clipseg":
        return ("decoder.transposed_convolution",)
    return ("visual_projection", "text_projection", "logit_scale")


def apply_method(model: Any, kind: str, method: str, lora_rank: int = 8, lora_alpha: int = 16) -> Any:
    """Freeze/wrap ``model`` for ``method``; returns the module to optimise (a peft model for lora)."""
    if method not in METHODS:
        raise ValueError(f"--method must be one of {', '.join(METHODS)}; got '{method}'")
    if method == "full":
        for p in model.parameters():
            p.requires_grad_(True)
        return model
    if method == "lora":
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(r=lora_rank, lora_alpha=lora_alpha, lora_dropout=0.0, target_modules=LORA_TARGETS,
                            bias="none")
        return get_peft_model(model, config)  # freezes every non-adapter weight
    for p in model.parameters():
        p.requires_grad_(False)
    if method == "decoder-only":
        if kind != "clipseg":
            raise ValueError("--method decoder-only is for --task segment (CLIPSeg's decoder)")
        prefixes: Tuple[str, ...] = ("decoder.",)
    else:
        prefixes = head_names(kind)
    for name, p in model.named_parameters():
        if name.startswith(prefixes):
            p.requires_grad_(True)
    return model


def unwrap(model: Any) -> Any:
    """The plain transformers model (LoRA merged into the weights) for ``save_pretrained``."""
    if hasattr(model, "merge_and_unload"):
        return model.merge_and_unload()
    return model


def inner(model: Any) -> Any:
    """The transformers model whose submodules (possibly adapter-injected) the forward code calls."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model
