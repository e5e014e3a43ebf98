"""Image preprocessing in torch, on the model's device, straight from the uint8 frame.

Equivalent to the transformers CLIP/CLIPSeg image processors (resize, optional centre
crop, rescale to [0, 1], normalise) without Pillow or torchvision, and fast on GPU:
the frame crosses to the device once as uint8, and all arithmetic happens there.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .models import ImageSpec


def to_device_uint8(rgb: np.ndarray, device: Any):
    """HxWx3 uint8 -> 1x3xHxW uint8 tensor on ``device`` (pinned, non-blocking copy on CUDA)."""
    import torch

    tensor = torch.from_numpy(np.ascontiguousarray(rgb))
    if device.type == "cuda":
        tensor = tensor.pin_memory().to(device, non_blocking=True)
    return tensor.permute(2, 0, 1).unsqueeze(0)


def model_input(image_u8: Any, spec: ImageSpec, dtype: Any):
    """1x3xHxW uint8 tensor -> normalised 1x3xSxS pixel values for a CLIP-family model."""
    import torch
    import torch.nn.functional as F

    x = image_u8.float()
    _, _, h, w = x.shape
    if spec.crop:  # CLIP: shortest side to S, then centre crop SxS
        scale = spec.size / min(h, w)
        nh, nw = max(spec.size, round(h * scale)), max(spec.size, round(w * scale))
        x = F.interpolate(x, size=(nh, nw), mode="bicubic", align_corners=False, antialias=True)
        top, left = (nh - spec.size) // 2, (nw - spec.size) // 2
        x = x[:, :, top:top + spec.size, left:left + spec.size]
    else:  # CLIPSeg: straight resize to SxS
        x = F.interpolate(x, size=(spec.size, spec.size), mode="bilinear", align_corners=False, antialias=True)
    mean = torch.tensor(spec.mean, device=x.device).view(1, 3, 1, 1) * 255.0
    std = torch.tensor(spec.std, device=x.device).view(1, 3, 1, 1) * 255.0
    return ((x - mean) / std).to(dtype).contiguous()
