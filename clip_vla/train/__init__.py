"""Fine-tuning and training for clip_vla: ``clip-vla train`` (see ``clip_vla.train.cli``).

Losses in ``losses``, datasets (directory / rosbag formats) in ``data``, simulator data in
``simdata``, CLIPSeg training in ``segment``, CLIP skill training in ``skills``.

Simulator seed ranges (one seed, one scene; constants in ``simdata``). Keep them apart: a
model chosen or trained on the scenes its figures are measured on reports too high.

* 1000+: benchmark, the published figures (``clip-vla sim --seed 1000``; README: 1000-1049).
  Already used for figures too: 2000-2099 (choosing the shipped models) and 7300-7399 (a re-run).
* 5,000,000+: training frames (``--task generate`` default).
* 6,000,000+: validation frames (``--task generate --seed-base 6000000``).
* 50,000+: validation scenes for choosing a model in the pipeline (``--pipeline-seed-base``
  default; it was 1000, the benchmark's own range).
"""
from __future__ import annotations

from typing import List, Optional


def main(argv: Optional[List[str]] = None) -> int:
    from clip_vla.train.cli import main as _main

    return _main(argv)


__all__ = ["main"]
