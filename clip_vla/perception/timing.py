"""Per-stage wall-clock timings of one inference, for results, benchmarks and suggestions.

On CUDA each stage synchronises the device before it is read, so a stage's figure is its own
work and not the queue of kernels launched before it.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Dict, Iterator


class StageTimer:
    """Per-stage wall-clock timings in milliseconds (synchronising CUDA so stages are honest)."""

    def __init__(self, device) -> None:
        self.ms: Dict[str, float] = {}
        self._cuda = getattr(device, "type", "cpu") == "cuda"

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        if self._cuda:
            import torch

            torch.cuda.synchronize()
        self.ms[name] = self.ms.get(name, 0.0) + (time.perf_counter() - start) * 1e3
