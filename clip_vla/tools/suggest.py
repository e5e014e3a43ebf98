"""`clip-vla suggest`: what could be done in this scene? Ranked commands for one image.

    clip-vla suggest --image scene.png [--depth d.png --intrinsics fx,fy,cx,cy] [--json]
    clip-vla suggest --eval-sim 20 --seed 8000      # recall / precision on simulated scenes

Without ``--json`` it prints a table (rank, command, score, pixel, point); with it
``{"suggestions": [{"rank", "command", "skill", "object", "destination", "score", "pixel",
"xyz", "box"}, ...], "objects": [...], "timings_ms": {...}}``. ``--eval-sim`` renders held-out
scenes of the simulated tabletop (``clip_vla.sim``) and scores the suggestions against what is
really on the table, with the shipped compact models unless ``--clipseg``/``--clip`` say
otherwise. Bad input (unreadable image, missing weights, bad settings) is one line on stderr
and exit status 2.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, Dict, List, Optional, Sequence

from clip_vla.perception.suggest import SuggestConfig, SuggestionList

EXIT_OK = 0
EXIT_ERROR = 2


def build_parser() -> argparse.ArgumentParser:
    from clip_vla.tools.cli import add_config_flags

    p = argparse.ArgumentParser(prog="clip-vla suggest", description=__doc__.splitlines()[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--image", help="colour image file (PNG/JPEG)")
    src.add_argument("--eval-sim", type=int, metavar="N", help="evaluate on N simulated scenes instead")
    src.add_argument("--eval-option", type=int, metavar="N",
                     help="on N simulated scenes over the ROS graph: success of 'option 1' vs its command typed")
    p.add_argument("--perception", choices=("model", "oracle"), default="model",
                   help="--eval-option: the shipped models (or --clipseg/--clip), or the simulator's truth")
    p.add_argument("--depth", help="depth: 16-bit PNG in millimetres, or .npy in metres")
    p.add_argument("--intrinsics", help="fx,fy,cx,cy in pixels (default: geometry.intrinsics)")
    p.add_argument("--json", action="store_true", help="print the suggestions as JSON")
    p.add_argument("--repeat", type=int, default=1,
                   help="run N timed rounds on the image (after one untimed) and print their time to stderr")
    # Unset flags leave the config file's ``suggest`` section as it is (its defaults: the schema's).
    p.add_argument("--max", type=int, help=f"most suggestions (default {SuggestConfig.max_suggestions})")
    p.add_argument("--min-score", type=float,
                   help=f"drop suggestions scoring lower (default {SuggestConfig.min_score})")
    p.add_argument("--min-confidence", type=float,
                   help="an object's mean mask probability (default: perception.min_confidence)")
    p.add_argument("--skills", help=f"skills to suggest (default {','.join(SuggestConfig.skills)})")
    p.add_argument("--objects", help="extra object names, comma-separated")
    p.add_argument("--colours", help="colours, comma-separated: with --shapes, '<colour> <shape>' names")
    p.add_argument("--shapes", help="shapes, comma-separated")
    p.add_argument("--no-vocabulary-objects", action="store_true",
                   help="leave the vocabulary's objects out of the candidates")
    p.add_argument("--fixtures", help=f"destinations, never picked (default {','.join(SuggestConfig.fixtures)})")
    p.add_argument("--seed", type=int, default=8000, help="--eval-sim: first scene seed (default %(default)s)")
    p.add_argument("--distractors", type=int, default=3, help="--eval-sim: objects besides the target (default 3)")
    add_config_flags(p)
    return p


def _names(text: str) -> List[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def suggest_config(args: argparse.Namespace, section: Any, **overrides: Any) -> SuggestConfig:
    """The config's ``suggest`` section with the flags given on top (``overrides`` win).

    Raises:
        ConfigError: an invalid setting.
    """
    lists = {"skills": args.skills, "objects": args.objects, "colours": args.colours, "shapes": args.shapes,
             "fixtures": args.fixtures}
    flags: Dict[str, Any] = {key: _names(value) for key, value in lists.items() if value is not None}
    numbers = {"max_suggestions": args.max, "min_score": args.min_score, "min_confidence": args.min_confidence}
    flags.update({key: value for key, value in numbers.items() if value is not None})
    if args.no_vocabulary_objects:
        flags["vocabulary_objects"] = False
    return SuggestConfig.from_section(section, **{**flags, **overrides})


# --------------------------------------------------------------------------- output
def format_table(result: SuggestionList) -> str:
    """The suggestions as a readable table, then the objects they come from."""
    def point(values: Optional[Sequence[float]], fmt: str) -> str:
        return "-" if values is None else "(" + ", ".join(format(v, fmt) for v in values) + ")"

    lines = [f"{'#':>2}  {'command':<40} {'score':>5}  {'pixel':<14} xyz (m, base)"]
    for s in result.suggestions:
        lines.append(f"{s.rank:>2}  {s.command:<40} {s.score:5.2f}  {point(s.object.detection.centroid, '.0f'):<14} "
                     f"{point(s.object.xyz, '.3f')}")
    if not result.suggestions:
        lines.append("    (no suggestion: nothing found with enough confidence)")
    lines.append("")
    lines.append("objects: " + ("; ".join(
        f"{o.name}{' (fixture)' if o.fixture else ''} {o.confidence:.2f}"
        + (f", looks like {', '.join(o.look_alikes)}" if o.look_alikes else "") for o in result.objects) or "none"))
    lines.append(f"time: {result.timings_ms.get('total', 0.0):.0f} ms")
    return "\n".join(lines)


# --------------------------------------------------------------------------- simulated evaluation
def evaluate_sim(pipeline: Any, config: SuggestConfig, seeds: Sequence[int], n_distractors: int = 3) -> Dict[str, Any]:
    """Recall and precision of the suggestions on simulated scenes, against the true layout.

    - recall: objects on the table named by at least one suggestion;
    - precision: suggested object names that are on the table;
    - on target: suggested objects whose pixel lies on the true mask of that name (stricter);
    - fixtures: destinations found among the bowl and tray present.
    Also the median and maximum wall time of a suggestion round and its median process CPU
    time (the first round includes encoding the prompts once). The first frame of each seed's
    episode is used, rendered at the camera's default size.
    """
    os.environ.setdefault("MUJOCO_GL", "egl")
    import statistics

    from clip_vla.core.geometry import RigidTransform
    from clip_vla.perception.suggest import Suggester
    from clip_vla.sim.world import TabletopWorld

    suggester = Suggester(pipeline, config)
    world = TabletopWorld(seed=int(seeds[0]) if seeds else 0, n_distractors=n_distractors)
    truth_total = named_total = suggested_total = existing_total = on_target_total = 0
    fixtures_total = fixtures_found = 0
    times: List[float] = []
    cpu: List[float] = []  # process CPU time: on a shared machine the wall time measures the neighbours too
    scenes: List[Dict[str, Any]] = []
    try:
        for seed in seeds:
            task = world.reset(seed=int(seed), skill="pick")
            obs = world.observe()
            started, started_cpu = time.perf_counter(), time.process_time()
            result = suggester.suggest(obs.frame(), RigidTransform.from_matrix(obs.camera_to_base))
            times.append((time.perf_counter() - started) * 1e3)
            cpu.append((time.process_time() - started_cpu) * 1e3)
            truth = [o.name for o in task.layout.objects]
            suggested = list(dict.fromkeys(s.object.name for s in result.suggestions))
            by_name = {s.object.name: s.object for s in result.suggestions}
            on_target = [n for n in suggested
                         if n in truth and _pixel_on(obs.mask_of(n), by_name[n].detection.centroid)]
            present_fixtures = [f.name for f in task.layout.fixtures]
            found_fixtures = list(dict.fromkeys(o.name for o in result.objects  # one bowl found twice is one
                                                if o.fixture and o.name in present_fixtures))
            truth_total += len(truth)
            named_total += sum(n in suggested for n in truth)
            suggested_total += len(suggested)
            existing_total += sum(n in truth for n in suggested)
            on_target_total += len(on_target)
            fixtures_total += len(present_fixtures)
            fixtures_found += len(found_fixtures)
            scenes.append({"seed": int(seed), "objects": truth, "suggested": suggested,
                           "missed": [n for n in truth if n not in suggested],
                           "not_there": [n for n in suggested if n not in truth],
                           "look_alikes": {o.name: o.look_alikes for o in result.objects if o.look_alikes}})
    finally:
        world.close()

    def ratio(a: int, b: int) -> Optional[float]:
        return round(a / b, 4) if b else None

    return {
        "seeds": f"{min(seeds)}-{max(seeds)}" if seeds else "", "scenes": len(seeds),
        "recall": ratio(named_total, truth_total), "precision": ratio(existing_total, suggested_total),
        "on_target": ratio(on_target_total, suggested_total), "fixtures_found": ratio(fixtures_found, fixtures_total),
        "objects_on_table": truth_total, "objects_suggested": suggested_total,
        "round_ms_median": round(statistics.median(times), 1) if times else None,
        "round_ms_max": round(max(times), 1) if times else None,
        "round_cpu_ms_median": round(statistics.median(cpu), 1) if cpu else None,
        "torch_threads": _threads(),
        "load_average": round(os.getloadavg()[0], 1) if hasattr(os, "getloadavg") else None,
        "prompts": len(suggester.prompts), "candidates": len(suggester.candidates),
        "settings": {"max_suggestions": config.max_suggestions, "min_score": config.min_score,
                     "min_confidence": suggester.min_confidence, "merge_overlap": config.merge_overlap,
                     "skills": list(config.skills),
                     "identity_weight": pipeline.config.perception.identity_weight,
                     "catalogue": len(pipeline.catalogue)},  # the names CLIP votes over
        "models": dict(pipeline.model_ids),
        "per_scene": scenes,
    }


def _pixel_on(mask: Any, pixel: Optional[Sequence[float]]) -> bool:
    if pixel is None:
        return False
    u, v = int(round(pixel[0])), int(round(pixel[1]))
    return 0 <= v < mask.shape[0] and 0 <= u < mask.shape[1] and bool(mask[v, u])


def sim_suggest_config(args: argparse.Namespace, section: Any) -> SuggestConfig:
    """The flags' settings with the simulated catalogue as candidates (its colours x shapes, bowl, tray)."""
    from clip_vla.sim.settings import sim_suggest_parameters

    sim = {key.partition(".")[2]: value for key, value in sim_suggest_parameters().items()}
    given = {key: _names(getattr(args, key)) for key in ("colours", "shapes", "fixtures") if getattr(args, key)}
    return suggest_config(args, section, **{**sim, **given})


# --------------------------------------------------------------------------- main
def _run(args: argparse.Namespace) -> int:
    from clip_vla.core.config import parse_floats
    from clip_vla.core.types import Frame, Intrinsics
    from clip_vla.perception.suggest import Suggester
    from clip_vla.pipeline import VLAPipeline
    from clip_vla.tools.cli import load_config, read_depth, read_image

    if args.eval_sim is not None:
        from clip_vla.sim.settings import sim_perception_settings
        from clip_vla.train.shipped import sim_model_config

        if args.eval_sim < 1:
            raise ValueError(f"--eval-sim needs at least 1 scene, got {args.eval_sim}")
        shipped = sim_model_config()
        args.clipseg = args.clipseg or shipped["models.clipseg"]
        args.clip = args.clip or shipped["models.clip"]
        # the simulated world's settings, as `clip-vla sim` runs them: its catalogue is also the names CLIP
        # votes over; the flags choose the candidates (``sim_suggest_config``)
        core = load_config(args).replace(**sim_perception_settings())
        config = sim_suggest_config(args, core.suggest)
        pipeline = VLAPipeline(core)
        report = evaluate_sim(pipeline, config, range(args.seed, args.seed + args.eval_sim), args.distractors)
        if not args.json:
            report.pop("per_scene")
        print(json.dumps(report, indent=1))
        return EXIT_OK

    if args.eval_option is not None:
        from clip_vla.tools.sim_eval import SimGraph, sim_model_overrides
        from clip_vla.tools.suggest_sim import evaluate_option_one

        if args.eval_option < 1:
            raise ValueError(f"--eval-option needs at least 1 scene, got {args.eval_option}")
        overrides = sim_model_overrides(args.perception, args.clipseg, args.clip)
        overrides["suggest_timeout"] = 120.0  # a loaded CPU must not turn a slow round into "no suggestion"
        with SimGraph(overrides, perception=args.perception, seed=args.seed, n_distractors=args.distractors) as graph:
            report = evaluate_option_one(graph, range(args.seed, args.seed + args.eval_option))
        if not args.json:
            report.pop("per_scene")
        print(json.dumps(dict(report, perception=args.perception), indent=1))
        return EXIT_OK

    rgb = read_image(args.image)
    depth = read_depth(args.depth) if args.depth else None
    intrinsics = Intrinsics(*parse_floats(args.intrinsics, 4, "--intrinsics")) if args.intrinsics else None
    core = load_config(args)
    config = suggest_config(args, core.suggest)
    frame = Frame(rgb=rgb, depth=depth, intrinsics=intrinsics)
    suggester = Suggester(VLAPipeline(core), config)
    result = suggester.suggest(frame)
    if args.repeat > 1:
        print(time_rounds(suggester, frame, args.repeat), file=sys.stderr)
    print(json.dumps(result.to_dict()) if args.json else format_table(result))
    return EXIT_OK


def time_rounds(suggester: Any, frame: Any, rounds: int) -> str:
    """Median and best wall time of ``rounds`` suggestion rounds on one frame (caches warm): a figure, not a test."""
    import statistics

    times, cpu = [], []
    for _ in range(rounds):
        started, started_cpu = time.perf_counter(), time.process_time()
        suggester.suggest(frame)
        times.append((time.perf_counter() - started) * 1e3)
        cpu.append((time.process_time() - started_cpu) * 1e3)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    # On a shared machine the wall time measures the neighbours too; the process CPU time does not.
    return (f"suggestion round, {len(suggester.candidates)} candidates ({len(suggester.prompts)} prompts with the "
            f"distractors), {frame.rgb.shape[1]}x{frame.rgb.shape[0]}: wall median {statistics.median(times):.0f} ms "
            f"(best {min(times):.0f}), process CPU median {statistics.median(cpu):.0f} ms over {rounds} rounds "
            f"(torch threads {_threads()}, load average {load:.1f})")


def _threads() -> int:
    import torch

    return int(torch.get_num_threads())


def main(argv: Optional[List[str]] = None) -> int:
    """``clip-vla suggest``; every expected failure is one line on stderr and exit status 2."""
    args = build_parser().parse_args(argv)
    from clip_vla.core.config import ConfigError
    from clip_vla.perception.loading import ModelUnavailableError

    try:
        return _run(args)
    except (ModelUnavailableError, ConfigError, ValueError, FileNotFoundError, OSError) as exc:
        print(f"clip-vla suggest: error: {exc}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
