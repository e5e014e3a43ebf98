"""The optimisation loop shared by both tasks: AdamW, warmup + cosine LR, progress bar, resumable checkpoints."""
from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import numpy as np
import torch

from clip_vla.train.progress import Progress

CHECKPOINT = "checkpoint.pt"


def trainable_parameters(model: Any) -> List[torch.nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def count_parameters(model: Any) -> Dict[str, int]:
    total = sum(p.numel() for p in model.parameters())
    train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"total": total, "trainable": train}


def lr_at(step: int, total: int, lr: float, warmup: int) -> float:
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def save_checkpoint(path: Path, model: Any, optimizer: Any, step: int, rng: np.random.Generator,
                    extra: Optional[Dict[str, Any]] = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {"step": step, "model": {k: v for k, v in model.state_dict().items()},
             "optimizer": optimizer.state_dict(), "torch_rng": torch.get_rng_state(),
             "numpy_rng": rng.bit_generator.state, "extra": extra or {}}
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def load_checkpoint(path: Path, model: Any, optimizer: Any, rng: np.random.Generator) -> int:
    state = torch.load(path, map_location="cpu", weights_only=False)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["torch_rng"])
    rng.bit_generator.state = state["numpy_rng"]
    return int(state["step"])


def run(model: Any, step_fn: Callable[[int, np.random.Generator], torch.Tensor], total_steps: int, lr: float,
        out_dir: Path, seed: int = 0, checkpoint_every: int = 200, resume: bool = True, progress: bool = True,
        weight_decay: float = 0.01, warmup: Optional[int] = None, grad_clip: float = 1.0,
        log: Optional[Callable[[str], None]] = None) -> Dict[str, Any]:
    """Run ``total_steps`` optimiser steps of ``step_fn(step, rng) -> loss``; checkpoint to ``out_dir``.

    With ``resume`` and an existing ``out_dir/checkpoints/checkpoint.pt`` the run continues from
    that step with the same optimiser state and random streams.
    """
    seed_everything(seed)
    rng = np.random.default_rng(seed)
    params = trainable_parameters(model)
    if not params:
        raise ValueError("nothing to train: every parameter is frozen")
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    ckpt = Path(out_dir) / "checkpoints" / CHECKPOINT
    start = 0
    if resume and ckpt.is_file():
        start = load_checkpoint(ckpt, model, optimizer, rng)
        if log:
            log(f"resumed from {ckpt} at step {start}/{total_steps}")
    warm = warmup if warmup is not None else min(200, max(1, total_steps // 20))
    bar = Progress(total=total_steps, desc="train", enabled=progress, initial=start)
    history: List[float] = []
    ema = None
    model.train()
    for step in range(start, total_steps):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, total_steps, lr, warm)
        loss = step_fn(step, rng)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip:
            torch.nn.utils.clip_grad_norm_(params, grad_clip)
        optimizer.step()
        value = float(loss.detach())
        history.append(value)
        ema = value if ema is None else 0.95 * ema + 0.05 * value
        bar.update(1, loss=ema, lr=optimizer.param_groups[0]["lr"])
        done = step + 1
        if checkpoint_every and (done % checkpoint_every == 0 or done == total_steps):
            save_checkpoint(ckpt, model, optimizer, done, rng)
    bar.close()
    model.eval()
    return {"steps": total_steps, "start_step": start, "losses": history, "final_loss_ema": ema}
