"""Loading CLIPSeg and CLIP through transformers, on the right device and dtype.

``from_pretrained`` is the only loading path: a Hugging Face id (resolved through the
HF cache, honouring ``HF_HOME``, ``HF_HUB_OFFLINE`` and ``models.local_files_only``) or a
local directory written by ``save_pretrained``. When weights cannot be found the error
names the model, where it looked, and how to fetch it ahead of time.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from clip_vla.core.config import ModelConfig

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class ModelUnavailableError(RuntimeError):
    """Weights could not be loaded; the message says which, where it looked, and what to do."""


@dataclass(frozen=True)
class ImageSpec:
    """How a model wants its image: square side, centre crop or not, normalisation."""

    size: int
    crop: bool
    mean: Tuple[float, float, float] = CLIP_MEAN
    std: Tuple[float, float, float] = CLIP_STD


@dataclass
class LoadedModels:
    clipseg: Any  # transformers.CLIPSegForImageSegmentation
    clipseg_tokenizer: Any
    clipseg_image: ImageSpec
    clip: Any  # transformers.CLIPModel, or None when skill scoring shares CLIPSeg's backbone
    clip_tokenizer: Any
    clip_image: Optional[ImageSpec]
    device: Any  # torch.device
    dtype: Any  # torch.dtype
    ids: Dict[str, str] = field(default_factory=dict)

    @property
    def device_name(self) -> str:
        return str(self.device)


def resolve_device(name: str = "auto"):
    """``auto`` picks CUDA when present; an unavailable CUDA request is a clear error."""
    import torch

    name = (name or "auto").strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ModelUnavailableError(
            f"models.device is '{name}' but CUDA is not available here (torch {torch.__version__}); "
            "use 'auto' or 'cpu'"
        )
    return device


def resolve_dtype(name: str, device) -> Any:
    """fp16 on CUDA and fp32 on CPU by default: CPU half precision is slower, not faster."""
    import torch

    name = (name or "auto").strip().lower()
    if name == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    table = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16,
             "fp16": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
    if name not in table:
        raise ValueError(f"models.dtype must be one of auto, {', '.join(sorted(table))}; got '{name}'")
    return table[name]


def _hub_kwargs(cfg: ModelConfig) -> Dict[str, Any]:
    kwargs: Dict[str, Any] = {}
    if cfg.cache_dir:
        kwargs["cache_dir"] = cfg.cache_dir
    if cfg.revision:
        kwargs["revision"] = cfg.revision
    if cfg.local_files_only or os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0", "false", "False"):
        kwargs["local_files_only"] = True
    return kwargs


def _cache_location(cfg: ModelConfig) -> str:
    if cfg.cache_dir:
        return cfg.cache_dir
    try:
        from huggingface_hub import constants

        return str(constants.HF_HUB_CACHE)
    except Exception:  # noqa: BLE001 - only used to word an error message
        return "~/.cache/huggingface/hub"


def unavailable_message(kind: str, model_id: str, cfg: ModelConfig, cause: BaseException) -> str:
    """One message naming the model, where it looked, and the ways out."""
    local = Path(model_id).expanduser()
    if local.exists() or model_id.startswith(("/", "./", "~")):
        where = f"the local directory {local}"
        fix = ("point it at a directory written by save_pretrained (config.json, model.safetensors, "
               "tokenizer files)")
    else:
        offline = "offline mode is on" if _hub_kwargs(cfg).get("local_files_only") else "the hub was unreachable"
        where = f"the Hugging Face cache at {_cache_location(cfg)} ({offline})"
        fix = ("fetch it ahead of time on a networked machine with `clip-vla download-models` "
               "(then copy the cache to the robot), or set the model parameter to a local directory")
    detail = str(cause).splitlines()[0].rstrip(".") if str(cause) else ""
    return (f"cannot load the {kind} model '{model_id}': looked in {where}: "
            f"{type(cause).__name__}: {detail}. To fix: {fix}.")


def read_image_spec(model_id: str, cfg: ModelConfig, default_size: int, default_crop: bool) -> ImageSpec:
    """Read size/normalisation from ``preprocessor_config.json`` without an image processor.

    transformers' image processors need Pillow or torchvision; clip_vla preprocesses in torch,
    so it only needs the numbers.
    """
    data: Dict[str, Any] = {}
    path = Path(model_id).expanduser() / "preprocessor_config.json"
    try:
        if path.is_file():
            data = json.loads(path.read_text(encoding="utf-8"))
        else:
            from huggingface_hub import hf_hub_download

            kwargs = _hub_kwargs(cfg)
            cached = hf_hub_download(model_id, "preprocessor_config.json", **kwargs)
            data = json.loads(Path(cached).read_text(encoding="utf-8"))
    except Exception:  # noqa: BLE001 - the model loaded, so fall back to CLIP's published values
        data = {}
    crop = bool(data.get("do_center_crop", default_crop))
    size_field = data.get("crop_size" if crop else "size", data.get("size", {}))
    if isinstance(size_field, dict):
        size = int(size_field.get("height") or size_field.get("shortest_edge") or default_size)
    elif isinstance(size_field, (int, float)):
        size = int(size_field)
    else:
        size = default_size
    mean = tuple(data.get("image_mean", CLIP_MEAN))
    std = tuple(data.get("image_std", CLIP_STD))
    return ImageSpec(size=size, crop=crop, mean=mean, std=std)  # type: ignore[arg-type]


def _load(kind: str, model_cls: Any, model_id: str, cfg: ModelConfig, device, dtype):
    """``model_cls.from_pretrained`` and its tokenizer, after checking the checkpoint's architecture.

    transformers loads a CLIP checkpoint into CLIPSeg with only a warning (and random decoder
    weights), which fails later on every command; the config says what the weights are, so a
    wrong directory is refused here, where the message can name it.

    Raises:
        ModelUnavailableError: the weights cannot be found, or are of another architecture.
    """
    from transformers import AutoConfig, AutoTokenizer

    kwargs = _hub_kwargs(cfg)
    try:
        found = AutoConfig.from_pretrained(model_id, **kwargs)
        check_architecture(kind, model_id, found, model_cls)
        model = model_cls.from_pretrained(model_id, dtype=dtype, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(model_id, **kwargs)
    except (OSError, ValueError, EnvironmentError) as exc:
        raise ModelUnavailableError(unavailable_message(kind, model_id, cfg, exc)) from exc
    return model.to(device).eval(), tokenizer


def check_architecture(kind: str, model_id: str, found: Any, model_cls: Any) -> None:
    """The checkpoint's ``model_type`` must be the one ``model_cls`` is built for.

    Raises:
        ModelUnavailableError: which model (and its parameter), what was found, what was expected.
    """
    expected = model_cls.config_class.model_type
    model_type = getattr(found, "model_type", None)
    if model_type == expected:
        return
    architectures = ", ".join(getattr(found, "architectures", None) or []) or "none listed"
    raise ModelUnavailableError(
        f"the {kind} model '{model_id}' (models.{kind.lower()}) is a '{model_type}' checkpoint "
        f"(architectures: {architectures}); expected model_type '{expected}' ({model_cls.__name__}): "
        f"point models.{kind.lower()} at a {kind} checkpoint")


def load_models(cfg: ModelConfig) -> LoadedModels:
    """Load CLIPSeg (and CLIP unless ``share_backbone``) once, ready for inference."""
    import torch
    from transformers import CLIPModel, CLIPSegForImageSegmentation
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    device = resolve_device(cfg.device)
    dtype = resolve_dtype(cfg.dtype, device)
    clipseg, seg_tok = _load("CLIPSeg", CLIPSegForImageSegmentation, cfg.clipseg, cfg, device, dtype)
    seg_spec = read_image_spec(cfg.clipseg, cfg, default_size=352, default_crop=False)
    clip = clip_tok = clip_spec = None
    if not cfg.share_backbone:
        clip, clip_tok = _load("CLIP", CLIPModel, cfg.clip, cfg, device, dtype)
        clip_spec = read_image_spec(cfg.clip, cfg, default_size=clip.config.vision_config.image_size,
                                    default_crop=True)
    torch.set_grad_enabled(True)  # loading must not change global autograd state for callers
    ids = {"clipseg": cfg.clipseg, "clip": "clipseg-backbone" if cfg.share_backbone else cfg.clip}
    return LoadedModels(clipseg=clipseg, clipseg_tokenizer=seg_tok, clipseg_image=seg_spec, clip=clip,
                        clip_tokenizer=clip_tok, clip_image=clip_spec, device=device, dtype=dtype, ids=ids)


def download_models(model_ids: List[str], cache_dir: Optional[str] = None,
                    revision: Optional[str] = None) -> Dict[str, str]:
    """Pre-fetch models into the HF cache (for robots that are offline in the field)."""
    from huggingface_hub import snapshot_download

    fetched: Dict[str, str] = {}
    for model_id in model_ids:
        fetched[model_id] = snapshot_download(
            model_id, cache_dir=cache_dir or None, revision=revision or None,
            allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model"],
        )
    return fetched
