"""Image preprocessing in torch, on the model's device, straight from the uint8 frame.

Equivalent to the transformers CLIP/CLIPSeg image processors (resize, optional centre
crop, rescale to [0, 1], normalise) without Pillow or torchvision, and fast on GPU:
the frame crosses to the device once as uint8 (through a reused pinned buffer, without
blocking the host), and all arithmetic happens there. Normalisation is one fused
multiply-add with constants kept on the device.

Against the Pillow processors the result differs by Pillow's rounding of the resized image
to uint8 and its filter details: test/test_fast_path.py bounds the difference.
"""
from __future__ import annotations

import threading
from typing import Any, Dict, Tuple

import numpy as np

from clip_vla.perception.loading import ImageSpec

_LOCK = threading.Lock()
_PINNED: Dict[Tuple[Tuple[int, ...], str], Tuple[Any, Any]] = {}  # (shape, device) -> (pinned buffer, event)
_CONSTANTS: Dict[Tuple[Any, ...], Tuple[Any, Any]] = {}  # (mean, std, device) -> (scale, offset)


def tune_cpu_allocator(mmap_threshold: int = 64 << 20, trim_threshold: int = 256 << 20) -> bool:
    """Keep freed tensor memory in the heap instead of handing it back to the OS (glibc only).

    glibc serves every allocation above its mmap threshold (128 KiB, adapting upwards) with a
    fresh ``mmap`` and returns it on free, so each large temporary of a forward pass (attention
    matrices, MLP activations, upsampled masks: 1-16 MB) page-faults its memory in again on
    every frame. Raising the mmap and trim thresholds makes them reuse heap memory: -6% end to
    end for the fast path on the 2-core CPU (docs/benchmarks.md). The cost: up to
    ``trim_threshold`` of freed memory stays resident. Process-wide; returns False where
    ``mallopt`` is not available (not glibc) or refused the values.
    """
    import ctypes
    import ctypes.util
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
    ok = bool(mallopt(m_mmap_threshold, int(mmap_threshold)))
    return bool(mallopt(m_trim_threshold, int(trim_threshold))) and ok


def to_device_uint8(rgb: np.ndarray, device: Any):
    """HxWx3 uint8 -> 1x3xHxW uint8 tensor on ``device`` (pinned, non-blocking copy on CUDA)."""
    import torch

    tensor = torch.from_numpy(np.ascontiguousarray(rgb))
    if getattr(device, "type", "cpu") == "cuda":
        tensor = _pinned_copy(tensor, device)
    return tensor.permute(2, 0, 1).unsqueeze(0)


def _pinned_copy(tensor, device):
    """Host -> device through a pinned staging buffer reused per frame shape.

    Pinning a fresh buffer per frame costs more than the copy; the buffer is reused, and an event
    recorded after each copy makes the next frame wait (host side) until the previous copy has
    read it, so a frame is never overwritten while in flight.
    """
    import torch

    key = (tuple(tensor.shape), str(device))
    with _LOCK:
        entry = _PINNED.get(key)
        if entry is None:
            entry = (torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True), torch.cuda.Event())
            _PINNED.clear()  # one frame size at a time: a resolution change frees the old buffer
            _PINNED[key] = entry
        pinned, done = entry
        done.synchronize()
        pinned.copy_(tensor)
        out = pinned.to(device, non_blocking=True)
        done.record()
    return out


def _normalisation(spec: ImageSpec, device: Any):
    """(1/(255*std), -mean/std) as 1x3x1x1 float32 tensors on ``device``, made once."""
    import torch

    key = (tuple(spec.mean), tuple(spec.std), str(device))
    constants = _CONSTANTS.get(key)
    if constants is None:
        mean = torch.tensor(spec.mean, dtype=torch.float64)
        std = torch.tensor(spec.std, dtype=torch.float64)
        scale = (1.0 / (255.0 * std)).float().view(1, 3, 1, 1).to(device)
        offset = (-mean / std).float().view(1, 3, 1, 1).to(device)
        constants = (scale, offset)
        _CONSTANTS[key] = constants
    return constants


def model_input(image_u8: Any, spec: ImageSpec, dtype: Any):
    """1x3xHxW uint8 tensor -> normalised 1x3xSxS pixel values for a CLIP-family model."""
    import torch
    import torch.nn.functional as F

    x = image_u8.float()
    _, _, h, w = x.shape
    if spec.crop:  # CLIP: shortest side to S, then centre crop SxS
        # the long side as transformers computes it: int(size * long / short), truncated
        if h <= w:
            nh, nw = spec.size, max(spec.size, int(spec.size * w / h))
        else:
            nh, nw = max(spec.size, int(spec.size * h / w)), spec.size
        x = F.interpolate(x, size=(nh, nw), mode="bicubic", align_corners=False, antialias=True)
        x = x.clamp_(0.0, 255.0)  # bicubic overshoots; Pillow saturates to uint8
        top, left = (nh - spec.size) // 2, (nw - spec.size) // 2
        x = x[:, :, top:top + spec.size, left:left + spec.size]
    elif (h, w) != (spec.size, spec.size):  # CLIPSeg: straight resize to SxS
        x = F.interpolate(x, size=(spec.size, spec.size), mode="bilinear", align_corners=False, antialias=True)
    scale, offset = _normalisation(spec, x.device)
    return torch.addcmul(offset, x, scale).to(dtype).contiguous()
