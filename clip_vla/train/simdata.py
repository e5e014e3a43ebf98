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


# Where the gripper is when a frame is rendered. The robot's own camera sees it at every step
# after the first: empty above the table, holding an object at lift height, carrying one over
# the bowl or tray (the place step's frame). A model trained on "home" frames alone took the
# gripper for the bowl (issue 15: 14 of 39 failed places).
GRIPPER_VIEWS = ("home", "hover", "holding", "approach")


def _pose_gripper(world, rng: np.random.Generator, view: str) -> None:
    """Move the gripper (by the simulator's scripted motions) into the pose of ``view``."""
    if view == "home":
        return
    g, names = world.gripper, world.object_names
    if view == "hover":
        xyz, _ = world.object_pose(str(rng.choice(names)))
        (g.close if rng.random() < 0.5 else g.open)(settle=0.0)
        g.move_to((xyz[0] + rng.uniform(-0.04, 0.04), xyz[1] + rng.uniform(-0.04, 0.04),
                   xyz[2] + rng.uniform(0.06, 0.16)), yaw=float(rng.uniform(-np.pi / 2, np.pi / 2)))
        return
    task = world.task
    obj = task.object if task is not None and task.object in names else str(rng.choice(names))
    xyz, yaw = world.object_pose(obj)
    world.executor.pick(float(xyz[0]), float(xyz[1]), float(xyz[2]), float(yaw))  # lifted to travel height
    if view == "approach":
        fixtures = list(world.fixtures.values())
        dest = world.fixtures.get(task.destination or "") if task is not None else None
        f = dest or fixtures[int(rng.integers(len(fixtures)))]
        top = world.executor.p.table_z + world.executor.p.travel_height
        g.move_to((f.x + rng.uniform(-0.03, 0.03), f.y + rng.uniform(-0.03, 0.03), top - rng.uniform(0.0, 0.07)))


def render_sample(seed: int, strength: float = 1.0, skills: Iterable[str] = SIM_SKILLS,
                  n_distractors: Optional[int] = None, width: int = 640, height: int = 480,
                  gripper_views: Optional[Dict[str, float]] = None, look_alikes: float = 0.0):
    """(observation, task) of one randomised episode.

    ``gripper_views``: view -> weight (``GRIPPER_VIEWS``); None renders before anything moves,
    the gripper parked out of view. ``look_alikes``: the chance that every distractor shares
    the target's colour or shape (``SceneConfig.all_look_alikes``).
    """
    from clip_vla.sim.world import TabletopWorld

    rng = np.random.default_rng(seed)
    skills = tuple(skills)
    nd = int(n_distractors if n_distractors is not None else rng.choice([1, 2, 3, 3, 3, 4]))
    cfg = _randomised_config(rng, strength)
    skill = str(rng.choice(skills))
    view = "home"
    if gripper_views:  # drawn after everything above, so a seed's scene is the same with or without views
        names, weights = zip(*gripper_views.items())
        view = str(rng.choice(names, p=np.asarray(weights, float) / sum(weights)))
    if look_alikes > 0 and rng.random() < look_alikes:
        cfg = replace(cfg, all_look_alikes=True)
    world = TabletopWorld(seed=seed, n_distractors=nd, width=width, height=height, config=cfg, skills=(skill,))
    try:
        _randomise_appearance(world, rng, strength)
        _pose_gripper(world, rng, view)
        obs = world.observe()
        return obs, world.task
    finally:
        world.close()


def parse_views(text: Optional[str]) -> Optional[Dict[str, float]]:
    """``"home=0.4,holding=0.6"`` -> {view: weight}; None for None or "".

    Raises:
        ValueError: an unknown view, a malformed pair, a negative weight, or weights summing to 0.
    """
    if not text:
        return None
    views: Dict[str, float] = {}
    for item in text.split(","):
        name, sep, weight = item.strip().partition("=")
        if name not in GRIPPER_VIEWS or not sep:
            raise ValueError(f"gripper view '{item.strip()}': expected VIEW=WEIGHT with VIEW one of {GRIPPER_VIEWS}")
        views[name] = float(weight)
        if views[name] < 0:
            raise ValueError(f"gripper view '{name}': weight {views[name]} is negative")
    if sum(views.values()) <= 0:
        raise ValueError(f"gripper views '{text}': the weights sum to 0")
    return views


def _write_one(out: Path, index: int, seed: int, strength: float, gripper_views: Optional[Dict[str, float]] = None,
               look_alikes: float = 0.0) -> Dict[str, object]:
    import cv2

    obs, task = render_sample(seed, strength, gripper_views=gripper_views, look_alikes=look_alikes)
    frames = out / "frames"
    name = f"{index:06d}"
    cv2.imwrite(str(frames / f"{name}.png"), obs.rgb[:, :, ::-1])
    cv2.imwrite(str(frames / f"{name}_seg.png"), obs.segmentation.astype(np.uint8))
    present = {int(k): v for k, v in obs.labels.items() if (obs.segmentation == k).any()}
    return {"image": f"frames/{name}.png", "segmentation": f"frames/{name}_seg.png",
            "labels": {str(k): v for k, v in present.items()}, "command": task.command, "skill": task.skill,
            "object": task.object, "destination": task.destination, "seed": seed}


def _worker(args) -> List[Dict[str, object]]:
    out, indices, seed_base, strength, views, look_alikes = args
    os.environ.setdefault("MUJOCO_GL", "egl")
    return [_write_one(Path(out), i, seed_base + i, strength, views, look_alikes) for i in indices]


def generate(out_dir: os.PathLike | str, count: int, seed_base: int = TRAIN_SEED_BASE, strength: float = 1.0,
             workers: int = 1, progress: bool = True, gripper_views: Optional[Dict[str, float]] = None,
             look_alikes: float = 0.0) -> Path:
    """Render ``count`` randomised frames into ``out_dir`` (dataset format of ``clip_vla.train.data``).

    ``gripper_views`` and ``look_alikes``: see ``render_sample``.
    """
    os.environ.setdefault("MUJOCO_GL", "egl")
    out = Path(out_dir)
    (out / "frames").mkdir(parents=True, exist_ok=True)
    chunks = [list(range(i, min(count, i + 50))) for i in range(0, count, 50)]
    jobs = [(str(out), c, seed_base, strength, gripper_views, look_alikes) for c in chunks]
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
                                                  "strength": strength, "gripper_views": gripper_views,
                                                  "look_alikes": look_alikes}, indent=2), encoding="utf-8")
    return out
