"""Pipeline-level check of a trained CLIPSeg: does ``VLAPipeline``'s goal pixel land on the true target?

For held-out simulator seeds (``clip-vla train`` uses the validation range 50,000..; the
benchmark's are 1000..; see clip_vla/train/__init__.py), render the episode's first frame with
the default camera and lighting, run the full pipeline with the given model directories, and
count goals whose pixel lies inside the ground-truth mask of the object (pick, push, ...) or
the destination (place). The pipeline runs under the simulated world's perception settings
(``clip_vla.sim.settings``: look-alike competitors), as `clip-vla sim` runs it, so the
training tool's check and the closed-loop figures judge a model by the same rule.
"""
from __future__ import annotations

import os
from typing import Any, Dict, Iterable, Optional, Sequence


def pipeline_hit_rate(clipseg_dir: str, seeds: Iterable[int], clip_dir: Optional[str] = None,
                      skills: Sequence[str] = ("pick", "place", "push"), n_distractors: int = 3,
                      vocabulary_file: Optional[str] = None,
                      overrides: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """``overrides``: flat settings (``ClipVlaConfig.replace``) on top of the simulated world's, e.g. a
    test-time choice to compare; the settings used are returned under ``settings``."""
    os.environ.setdefault("MUJOCO_GL", "egl")
    from dataclasses import replace

    from clip_vla.core.config import ClipVlaConfig, Vocabulary
    from clip_vla.core.geometry import RigidTransform
    from clip_vla.pipeline import VLAPipeline
    from clip_vla.sim.settings import sim_perception_settings
    from clip_vla.sim.world import TabletopWorld
    from clip_vla.core.types import ActionGoal

    cfg = ClipVlaConfig.from_yaml(None)
    models = replace(cfg.models, clipseg=str(clipseg_dir), clip=str(clip_dir or clipseg_dir),
                     share_backbone=clip_dir is None, device="cpu", dtype="float32")
    cfg = replace(cfg, models=models)
    if vocabulary_file:
        cfg = replace(cfg, vocabulary=Vocabulary.from_yaml(vocabulary_file))
    settings = {**sim_perception_settings(), **(overrides or {})}
    cfg = cfg.replace(**settings)
    seeds = list(seeds)
    pipe = VLAPipeline(cfg)
    world = TabletopWorld(seed=0, n_distractors=n_distractors)
    per_skill: Dict[str, Dict[str, int]] = {}
    reasons: Dict[str, int] = {}
    try:
        for seed in seeds:
            for skill in skills:
                task = world.reset(seed=seed, skill=skill)
                obs = world.observe()
                frame = obs.frame()
                result = pipe.run(frame, task.command, camera_to_base=RigidTransform.from_matrix(obs.camera_to_base))
                stats = per_skill.setdefault(skill, {"episodes": 0, "hits": 0, "goals": 0})
                stats["episodes"] += 1
                if isinstance(result, ActionGoal):
                    stats["goals"] += 1
                    target = task.destination if skill == "place" else task.object
                    truth = obs.mask_of(target)
                    u, v = int(round(result.pixel[0])), int(round(result.pixel[1]))
                    if 0 <= v < truth.shape[0] and 0 <= u < truth.shape[1] and truth[v, u]:
                        stats["hits"] += 1
                else:
                    key = getattr(result.reason, "value", str(result.reason))
                    reasons[key] = reasons.get(key, 0) + 1
    finally:
        world.close()
    total = sum(s["episodes"] for s in per_skill.values())
    hits = sum(s["hits"] for s in per_skill.values())
    return {"hit_rate": hits / max(total, 1), "episodes": total,
            "seeds": f"{min(seeds)}-{max(seeds)}" if seeds else "",
            "per_skill": {k: {**v, "hit_rate": v["hits"] / max(v["episodes"], 1)} for k, v in per_skill.items()},
            "no_action_reasons": reasons, "settings": settings}
