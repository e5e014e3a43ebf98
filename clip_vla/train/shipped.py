"""Where the package's own compact sim-domain models live (``clip_vla/weights/<name>/``).

They are plain ``save_pretrained`` directories, so ``models.clipseg`` / ``models.clip`` can
point at them; ``sim_model_config`` returns the model overrides the simulator demo uses.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict

MODELS_DIR = Path(__file__).resolve().parents[1] / "weights"
SIM_CLIPSEG = MODELS_DIR / "sim-clipseg"
SIM_CLIP = MODELS_DIR / "sim-clip"


def shipped_model_dir(name: str) -> Path:
    path = MODELS_DIR / name
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"no shipped model '{name}' in {MODELS_DIR} "
                                f"(known: {sorted(p.name for p in MODELS_DIR.glob('*/config.json'))})")
    return path


def sim_model_config() -> Dict[str, object]:
    """``ClipVlaConfig.replace`` overrides that select the shipped sim-domain models."""
    return {"models.clipseg": str(SIM_CLIPSEG), "models.clip": str(SIM_CLIP), "models.share_backbone": False}
