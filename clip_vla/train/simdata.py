"""Training data generated from the simulated tabletop (``clip_vla.sim``).

Every sample is one rendered frame at the camera's resolution, its ground-truth label
image and the phrases of what is in it, plus the episode's command and skill, written in
the documented dataset format (see ``clip_vla.train.data``)::

    DIR/samples.jsonl          one JSON object per frame
    DIR/frames/000123.png      RGB frame
    DIR/frames/000123_seg.png  uint8 label ids; ``labels`` maps id -> phrase

Domain randomisation per frame: camera pose and field of view, light intensities and
positions, headlight, object and table colour jitter, number of distractors and skill.
Seeds are disjoint from the benchmark's and the validation seeds (see the ranges below), so
evaluation stays held out.
"""
from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Dict, Iterable, List, Optional

import numpy as np

# Simulator seed ranges: a seed fixes a scene, so keeping the ranges apart keeps every figure on
# scenes that neither training nor the choice of a model saw. Listed in clip_vla/train/__init__.py
# and clip_vla/weights/README.md.
BENCHMARK_SEED_BASE = 1000  # published figures (`clip-vla sim --seed 1000`; README: 1000-1049)
TRAIN_SEED_BASE = 5_000_000  # training frames (`--task generate` default)
VALIDATION_SEED_BASE = 6_000_000  # validation frames (`--task generate --seed-base 6000000`)
PIPELINE_SEED_BASE = 50_000  # choosing a model in the pipeline (`--pipeline-seed-base` default)
SIM_SKILLS = ("pick", "place", "push", "pull", "point_at", "none")


def _randomised_config(rng: np.random.Generator, strength: float):
    from clip_vla.sim.camera import CameraSpec
    from clip_vla.sim.scene import SceneConfig

    cam = CameraSpec()
    if strength > 0:
        pos = np.asarray(cam.position) + rng.uniform(-1, 1, 3) * np.array([0.06, 0.06, 0.05]) * strength
        tgt = np.asarray(cam.target) + rng.uniform(-1, 1, 3) * np.array([0.04, 0.04, 0.0]) * strength
        cam = replace(cam, position=tuple(float(v) for v in pos), target=tuple(float(v) for v in tgt),
                      fovy_deg=float(cam.fovy_deg + rng.uniform(-3, 3) * strength))
    return SceneConfig(camera=cam)


def _randomise_appearance(world, rng: np.random.Generator, strength: float) -> None:
    """Lights and colours, changed on the compiled model (the renderer reads them every frame)."""
    if strength <= 0:
        return
    m = world.model
    scale = rng.uniform(1 - 0.4 * strength, 1 + 0.35 * strength)
    m.light_diffuse[:] = np.clip(m.light_diffuse * scale, 0, 1)
    m.light_pos[:] += rng.uniform(-0.3, 0.3, m.light_pos.shape) * strength
    m.vis.headlight.ambient[:] = np.clip(np.asarray(m.vis.headlight.ambient) * rng.uniform(0.7, 1.3), 0, 1)
    m.vis.headlight.diffuse[:] = np.clip(np.asarray(m.vis.headlight.diffuse) * rng.uniform(0.7, 1.3), 0, 1)
    jitter = rng.uniform(1 - 0.12 * strength, 1 + 0.12 * strength, (m.ngeom, 3))
    m.geom_rgba[:, :3] = np.clip(m.geom_rgba[:, :3] * jitter, 0, 1)


def render_sample(seed: int, strength: float = 1.0, skills: Iterable[str] = SIM_SKILLS,
                  n_distractors: Optional[int] = None, width: int = 640, height: int = 480):
    """(observation, task) of one randomised episode, rendered before anything moves."""
    from clip_vla.sim.world import TabletopWorld

    rng = np.random.default_rng(seed)
    skills = tuple(skills)
    nd = int(n_distractors if n_distractors is not None else rng.choice([1, 2, 3, 3, 3, 4]))
    cfg = _randomised_config(rng, strength)
    skill = str(rng.choice(skills))
    world = TabletopWorld(seed=seed, n_distractors=nd, width=width, height=height, config=cfg, skills=(skill,))
    try:
        _randomise_appearance(world, rng, strength)
        obs = world.observe()
        return obs, world.task
    finally:
        world.close()


def _write_one(out: Path, index: int, seed: int, strength: float) -> Dict[str, object]:
    import cv2

    obs, task = render_sample(seed, strength)
    frames = out / "frames"
    name = f"{index:06d}"
    cv2.imwrite(str(frames / f"{name}.png"), obs.rgb[:, :, ::-1])
    cv2.imwrite(str(frames / f"{name}_seg.png"), obs.segmentation.astype(np.uint8))
    present = {int(k): v for k, v in obs.labels.items() if (obs.segmentation == k).any()}
    return {"image": f"frames/{name}.png", "segmentation": f"frames/{name}_seg.png",
            "labels": {str(k): v for k, v in present.items()}, "command": task.command, "skill": task.skill,
            "object": task.object, "destination": task.destination, "seed": seed}


def _worker(args) -> List[Dict[str, object]]:
    out, indices, seed_base, strength = args
    os.environ.setdefault("MUJOCO_GL", "egl")
    return [_write_one(Path(out), i, seed_base + i, strength) for i in indices]


def generate(out_dir: os.PathLike | str, count: int, seed_base: int = TRAIN_SEED_BASE, strength: float = 1.0,
             workers: int = 1, progress: bool = True) -> Path:
    """Render ``count`` randomised frames into ``out_dir`` (dataset format of ``clip_vla.train.data``)."""
    os.environ.setdefault("MUJOCO_GL", "egl")
    out = Path(out_dir)
    (out / "frames").mkdir(parents=True, exist_ok=True)
    chunks = [list(range(i, min(count, i + 50))) for i in range(0, count, 50)]
    jobs = [(str(out), c, seed_base, strength) for c in chunks]
    rows: List[Dict[str, object]] = []
    from clip_vla.train.progress import Progress

    bar = Progress(total=count, desc="render", enabled=progress)
    if workers > 1:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(workers) as pool:
            for part in pool.imap(_worker, jobs):
                rows.extend(part)
                bar.update(len(part))
    else:
        for job in jobs:
            part = _worker(job)
            rows.extend(part)
            bar.update(len(part))
    bar.close()
    with open(out / "samples.jsonl", "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")
    (out / "dataset.json").write_text(json.dumps({"source": "clip_vla.sim", "count": count, "seed_base": seed_base,
                                                  "strength": strength}, indent=2), encoding="utf-8")
    return out
