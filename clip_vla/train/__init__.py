"""Fine-tuning and training for clip_vla: ``clip-vla train`` (see ``clip_vla.train.cli``).

Losses in ``losses``, datasets (directory / rosbag formats) in ``data``, simulator data in
``simdata``, CLIPSeg training in ``segment``, CLIP skill training in ``skills``.
"""
from __future__ import annotations

from typing import List, Optional


def main(argv: Optional[List[str]] = None) -> int:
    from clip_vla.train.cli import main as _main

    return _main(argv)


__all__ = ["main"]
