"""`clip-vla verify-eval`: the step verifier measured against the simulator's ground truth, no ROS.

Each episode grounds its command with ``VLAPipeline`` on the rendered frame, executes the goal
in ``TabletopWorld`` exactly as ``sim_node`` would (the gripper parks after everything but a
successful pick), renders the frame after it, and asks the ``Verifier`` whether the step
worked. The simulator's ``check_success`` is the truth::

    reset(seed, skill) ─► frame before ─► pipeline goal ─► execute ─► frame after ─► verdict
                                                                 └─► check_success (truth)

A place episode starts from the object held (picked at its true pose: the planner's
precondition), so every place episode is one place step. With the compact shipped models
20-40% of steps fail for real (goals on the wrong object, destinations found on the gripper),
which is what the verifier has to catch. Counts per skill, as ``clip-vla sim --json`` will
report them: ``true_success`` (said success, it worked), ``true_failure``, ``false_success``
(said success, it failed), ``false_failure`` (said failure, it worked); ``uncertain`` verdicts
are counted apart and, for the two rates, as "not success" (the node re-checks or retries).
Goals that ``refuse_implausible_goal`` would refuse are still executed here, so the verifier is
measured on them too; they are counted under ``refused``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

DEFAULT_SKILLS = ("pick", "place", "push")
VALIDATION_SEEDS = "9100-9199"  # thresholds were chosen here
HELD_OUT_SEEDS = "7500-7599"  # measured once, after the choice


@dataclass
class StepOutcome:
    """One executed (or refused-by-perception) step: the goal, the truth and the verdict."""

    seed: int
    skill: str
    command: str
    executed: bool
    truth: Optional[bool] = None
    verdict: Optional[str] = None
    reason: str = ""
    confidence: float = 0.0
    refusal: Optional[str] = None  # what refuse_implausible_goal says of the goal
    goal_xyz: Optional[List[float]] = None
    sim_reason: str = ""
    measures: Dict[str, Any] = field(default_factory=dict)  # lift, along, inside, clip margin, ...


def parse_seeds(text: str) -> List[int]:
    """``"9100-9199"`` or ``"1,2,5-7"`` -> the seeds.

    Raises:
        ValueError: when a part is not an integer or a range.
    """
    seeds: List[int] = []
    for part in str(text).split(","):
        first, _, last = part.strip().partition("-")
        seeds += list(range(int(first), int(last) + 1)) if last else [int(first)]
    return seeds


# --------------------------------------------------------------------------- perception sources
def oracle_perceiver(log):
    """A ``Perceive`` from the simulator's own masks (``clip_vla.sim.oracle.ObservationLog`` by stamp)."""
    from clip_vla.perception.localize import detection_from_mask

    def perceive(frame, phrases):
        obs = log.get(frame.stamp)
        out = {}
        for phrase in phrases:
            mask = None
            if obs is not None:
                try:
                    mask = obs.mask_of(phrase)
                except KeyError:
                    mask = None
            out[phrase] = [detection_from_mask(phrase, mask)] if mask is not None and mask.any() else []
        return out

    return perceive


def clip_place_margin(pipeline, frame, obj: str, destination, pad: float = 0.25) -> Optional[float]:
    """CLIP's vote on the destination's crop: cos("a X in a Y") - cos("a X next to a Y"); None if unusable.

    The extra signal the issue asks to measure for place: positive says "in".
    """
    from clip_vla.perception.preprocess import model_input, to_device_uint8

    scorer = pipeline.scorer
    if scorer is None or scorer.shared_backbone or not destination.found:
        return None
    u0, v0, u1, v1 = destination.bbox
    du, dv = (u1 - u0 + 1) * pad, (v1 - v0 + 1) * pad
    h, w = frame.rgb.shape[:2]
    crop = frame.rgb[max(0, int(v0 - dv)):min(h, int(v1 + dv) + 1), max(0, int(u0 - du)):min(w, int(u1 + du) + 1)]
    pixels = model_input(to_device_uint8(crop, pipeline.models.device), pipeline.models.clip_image,
                         pipeline.models.dtype)
    image = scorer.image_embedding(pixels)[0]
    place = destination.phrase
    texts = scorer.text_cache.get([f"a {obj} in a {place}", f"a {obj} next to a {place}"])
    sims = (texts @ image).tolist()
    return float(sims[0] - sims[1])


# --------------------------------------------------------------------------- episodes
class Evaluation:
    """One world, one pipeline and one verifier, reused over every episode."""

    def __init__(self, perception: str = "model", depth: bool = True, n_distractors: int = 3,
                 verify_config=None, clip_evidence: bool = False,
                 record_components: bool = False) -> None:
        os.environ.setdefault("MUJOCO_GL", "egl")
        from clip_vla.core.config import ClipVlaConfig
        from clip_vla.perception.verify import Verifier, VerifyConfig
        from clip_vla.pipeline import VLAPipeline
        from clip_vla.sim.oracle import GroundTruthPerception, ObservationLog
        from clip_vla.sim.world import TabletopWorld
        from clip_vla.train.shipped import sim_model_config

        self.log = ObservationLog()
        cfg = ClipVlaConfig.from_yaml().replace(**sim_model_config(), **{"models.device": "cpu"})
        if perception == "oracle":
            self.pipeline = VLAPipeline(cfg, oracle=GroundTruthPerception(self.log))
            perceive = oracle_perceiver(self.log)
        else:
            self.pipeline = VLAPipeline(cfg)
            perceive = None
        self.verifier = Verifier.from_pipeline(self.pipeline, verify_config or VerifyConfig(), perceive=perceive)
        self.world = TabletopWorld(seed=0, n_distractors=n_distractors)
        self.depth = depth
        self.clip_evidence = clip_evidence and perception == "model"
        self.record_components = record_components

    def close(self) -> None:
        self.world.close()

    def _frame(self):
        """The current camera frame (without its depth image when measuring the fallback)."""
        from dataclasses import replace

        obs = self.world.observe()
        self.log.add(obs)
        frame = obs.frame()
        return obs, (frame if self.depth else replace(frame, depth=None))

    def run(self, seed: int, skill: str) -> StepOutcome:
        """One episode: ground, execute, observe, verify, and the simulator's truth."""
        from clip_vla.core.geometry import RigidTransform
        from clip_vla.core.types import ActionGoal
        from clip_vla.perception.verify import refuse_implausible_goal

        world = self.world
        task = world.reset(seed=seed, skill=skill)
        if skill == "place":  # the precondition: the object is held
            xyz, yaw = world.object_pose(task.object)
            world.execute("pick", xyz, yaw)
        obs, before = self._frame()
        camera_to_base = RigidTransform.from_matrix(obs.camera_to_base)
        prepared = self.pipeline.prepare(task.command)
        goal = self.pipeline.run(before, prepared, camera_to_base=camera_to_base)
        out = StepOutcome(seed=seed, skill=skill, command=task.command, executed=isinstance(goal, ActionGoal))
        if not isinstance(goal, ActionGoal):
            out.reason = goal.reason.value
            return out
        refusal = refuse_implausible_goal(goal.xyz_base, goal.cmd, held_xyz_base=goal.object_xyz_base
                                          if goal.cmd == "place" else None)
        out.refusal = refusal.reason if refusal else None
        out.goal_xyz = [round(float(v), 4) for v in goal.xyz_base]
        result = world.execute(goal.cmd, goal.xyz_base, goal.theta)
        if goal.cmd != "pick" or not result.success:  # as sim_node: a held object stays held for a place
            world.go_home()
        out.truth, out.sim_reason = world.check_success(task), result.reason
        _, after = self._frame()
        verdict = self.verifier.verify(prepared.parsed, goal, before, after, camera_to_base=camera_to_base)
        out.verdict, out.reason, out.confidence = verdict.verdict, verdict.reason, round(verdict.confidence, 3)
        out.measures = {k: verdict.evidence[k] for k in ("lift_m", "along_m", "inside_footprint_m",
                                                         "object_height_m", "ray_miss_m") if k in verdict.evidence}
        if self.clip_evidence and skill == "place":
            found = self.verifier.perceive(after, [prepared.parsed.destination])[prepared.parsed.destination]
            if found:
                out.measures["clip_margin"] = clip_place_margin(self.pipeline, after, prepared.parsed.object,
                                                                found[0])
        if self.record_components:
            out.measures["components"] = self._components(verdict.evidence, task)
        return out

    def _components(self, evidence, task) -> Dict[str, Any]:
        """Analysis only: each component's area, confidence, point and whether it is the true target."""
        truth = {"object_before": self.world.rest[task.object][0], "object_after": self.world.object_pose(task.object)[0]}
        out = {}
        for key in ("object_before", "object_after", "destination_after"):
            rows = []
            for c in evidence.get(key, []):
                xyz = np.asarray(c["xyz_base"])
                near = key in truth and float(np.linalg.norm(xyz[:2] - truth[key][:2])) < 0.05
                rows.append([c["area_px"], round(c["confidence"], 3), *np.round(xyz, 4).tolist(), bool(near)])
            out[key] = rows
        return out


# --------------------------------------------------------------------------- figures
def confusion(steps: Sequence[StepOutcome]) -> Dict[str, int]:
    """The verifier's verdicts against the truth, over executed steps (uncertain counted apart)."""
    counts = {"true_success": 0, "true_failure": 0, "false_success": 0, "false_failure": 0,
              "uncertain_success": 0, "uncertain_failure": 0}
    for s in steps:
        if not s.executed or s.verdict is None:
            continue
        truth = "success" if s.truth else "failure"
        if s.verdict == "uncertain":
            counts[f"uncertain_{truth}"] += 1
        elif (s.verdict == "success") == bool(s.truth):
            counts[f"true_{truth}"] += 1
        else:
            counts["false_success" if s.verdict == "success" else "false_failure"] += 1
    return counts


def rates(counts: Dict[str, int]) -> Dict[str, Optional[float]]:
    """caught: failed steps not called success; flagged: successful steps not called success."""
    failed = counts["true_failure"] + counts["false_success"] + counts["uncertain_failure"]
    worked = counts["true_success"] + counts["false_failure"] + counts["uncertain_success"]
    caught = counts["true_failure"] + counts["uncertain_failure"]
    flagged = counts["false_failure"] + counts["uncertain_success"]
    return {"caught": caught / failed if failed else None, "flagged": flagged / worked if worked else None,
            "failed_steps": failed, "successful_steps": worked}


def summarise(steps: Sequence[StepOutcome]) -> Dict[str, Any]:
    """Per skill and over all: executed steps, true failure rate, the confusion counts and the two rates."""
    groups: Dict[str, List[StepOutcome]] = {}
    for s in steps:
        groups.setdefault(s.skill, []).append(s)
    groups["all"] = list(steps)
    out: Dict[str, Any] = {}
    for skill, rows in groups.items():
        executed = [s for s in rows if s.executed]
        counts = confusion(executed)
        refused = [s for s in executed if s.refusal]
        out[skill] = {
            "episodes": len(rows), "executed": len(executed),
            "step_success_rate": sum(bool(s.truth) for s in executed) / max(len(executed), 1),
            "verifier": counts, **rates(counts),
            "refused": {"total": len(refused), "would_have_failed": sum(not s.truth for s in refused)},
            "reasons": _count(s.reason for s in executed),
        }
    return out


def _count(values) -> Dict[str, int]:
    out: Dict[str, int] = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def evaluate(seeds: Sequence[int], skills: Sequence[str] = DEFAULT_SKILLS, perception: str = "model",
             depth: bool = True, clip_evidence: bool = False, verify_config=None,
             progress: bool = False, record_components: bool = False) -> Dict[str, Any]:
    """Every (seed, skill) episode verified; returns the summary and the per-step outcomes."""
    ev = Evaluation(perception=perception, depth=depth, verify_config=verify_config, clip_evidence=clip_evidence,
                    record_components=record_components)
    steps: List[StepOutcome] = []
    t0 = time.perf_counter()
    try:
        for skill in skills:
            for seed in seeds:
                steps.append(ev.run(seed, skill))
                if progress:
                    s = steps[-1]
                    print(f"{skill} {seed} truth={s.truth} verdict={s.verdict} {s.reason} {s.measures}",
                          file=sys.stderr, flush=True)
    finally:
        ev.close()
    return {"seeds": _seed_text(seeds), "skills": list(skills), "perception": perception,
            "depth": depth, "wall_s": round(time.perf_counter() - t0, 1),
            "summary": summarise(steps), "steps": [asdict(s) for s in steps]}


def _seed_text(seeds: Sequence[int]) -> str:
    return f"{min(seeds)}-{max(seeds)} ({len(seeds)})" if seeds else ""


def print_summary(report: Dict[str, Any]) -> None:
    print(f"verifier vs simulator truth: seeds {report['seeds']}, perception {report['perception']}, "
          f"depth {'yes' if report['depth'] else 'no'}, {report['wall_s']} s")
    for skill, s in report["summary"].items():
        c = s["verifier"]
        caught = "-" if s["caught"] is None else f"{100 * s['caught']:.1f}%"
        flagged = "-" if s["flagged"] is None else f"{100 * s['flagged']:.1f}%"
        print(f"  {skill:6s} executed {s['executed']:3d}  step success {100 * s['step_success_rate']:5.1f}%  "
              f"caught {caught} of {s['failed_steps']} failed  flagged {flagged} of {s['successful_steps']} "
              f"successful  TS {c['true_success']} TF {c['true_failure']} FS {c['false_success']} "
              f"FF {c['false_failure']} U {c['uncertain_success'] + c['uncertain_failure']}  "
              f"refused {s['refused']['total']} ({s['refused']['would_have_failed']} would have failed)")


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="clip-vla verify-eval", description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default=VALIDATION_SEEDS,
                    help=f"e.g. 9100-9199 (validation, default) or {HELD_OUT_SEEDS} (held out: measure once)")
    ap.add_argument("--skills", default=",".join(DEFAULT_SKILLS))
    ap.add_argument("--perception", choices=("model", "oracle"), default="model")
    ap.add_argument("--no-depth", action="store_true", help="verify (and ground) without the depth image")
    ap.add_argument("--clip-evidence", action="store_true", help="also record CLIP's in/next-to margin for place")
    ap.add_argument("--components", action="store_true", help="record every mask component (rule analysis)")
    ap.add_argument("--json", help="write the full report (with every step) here")
    ap.add_argument("--progress", action="store_true", help="one line per step on stderr")
    args = ap.parse_args(argv)
    report = evaluate(parse_seeds(args.seeds), [s.strip() for s in args.skills.split(",") if s.strip()],
                      args.perception, not args.no_depth, args.clip_evidence, progress=args.progress,
                      record_components=args.components)
    print_summary(report)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(report, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
