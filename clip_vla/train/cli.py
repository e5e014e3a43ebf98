"""``clip-vla train``: fine-tune or train CLIPSeg (``--task segment``) / CLIP (``--task skills``).

    clip-vla train --task generate --out DATA --count 3200            # simulator frames + labels
    clip-vla train --task segment --data DATA --base new:sim-clipseg --method full --out DIR
    clip-vla train --task skills  --data DATA --base new:sim-clip    --method full --out DIR
    clip-vla train --task segment --data my.bag --labels labels.jsonl --base CIDAS/clipseg-rd64-refined \
        --method lora --out DIR

The output directory loads with ``from_pretrained`` (fp16 safetensors + tokenizer +
preprocessor_config.json) and as the node's ``models.clipseg`` / ``models.clip`` parameter.
Checkpoints go to ``DIR/checkpoints``; running the same command again resumes from them.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

TASKS = ("segment", "skills", "generate")


def build_parser() -> argparse.ArgumentParser:
    from clip_vla.train.methods import METHODS
    from clip_vla.train.simdata import PIPELINE_SEED_BASE

    p = argparse.ArgumentParser(prog="clip-vla train", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", required=True, choices=TASKS)
    p.add_argument("--data", help="dataset directory (samples.jsonl) or rosbag")
    p.add_argument("--labels", help="label sidecar of a rosbag (default: labels.jsonl next to it)")
    p.add_argument("--val", help="held-out dataset for the final eval (default: 5%% of --data)")
    p.add_argument("--base", default=None, help="Hugging Face id, local directory, or new:<arch> "
                   "(new:sim-clipseg, new:sim-clip, new:tiny-clipseg, new:tiny-clip)")
    p.add_argument("--method", default="full", choices=METHODS)
    p.add_argument("--out", required=True, help="output directory (model; checkpoints/ inside)")
    p.add_argument("--epochs", type=float, default=10.0, help="passes over the training frames")
    p.add_argument("--steps", type=int, default=None, help="optimiser steps (overrides --epochs)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch", type=int, default=12, help="frames (segment) or commands (skills) per step")
    p.add_argument("--prompts", type=int, default=6, help="segment: phrases decoded per frame")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--image-size", type=int, default=None, help="train/infer at this square size")
    p.add_argument("--temperature", type=float, default=0.07, help="skills: fixed tau; 0 learns CLIP's logit_scale")
    p.add_argument("--pos-weight", type=float, default=3.0, help="segment: BCE weight of object pixels")
    p.add_argument("--lora-rank", type=int, default=8)
    p.add_argument("--checkpoint-every", type=int, default=200)
    p.add_argument("--no-resume", action="store_true", help="ignore existing checkpoints")
    p.add_argument("--fp32", action="store_true", help="save float32 weights instead of float16")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--eval-samples", type=int, default=100, help="frames in the final eval")
    p.add_argument("--pipeline-seeds", type=int, default=0,
                   help="segment: also run VLAPipeline on this many held-out sim seeds")
    p.add_argument("--pipeline-seed-base", type=int, default=PIPELINE_SEED_BASE,
                   help="first of the --pipeline-seeds (default %(default)s: validation scenes for choosing a "
                        "model, apart from every range figures are measured on; see clip_vla/train/__init__.py)")
    p.add_argument("--eval-only", action="store_true", help="evaluate --base on --val/--data, train nothing")
    p.add_argument("--identity-weight", type=float, default=0.0,
                   help="skills: weight of the object-identity term (crops of the labelled objects named over the "
                        "catalogue: clip_vla/train/identity.py); 0: off")
    p.add_argument("--vocabulary", default=None, help="skills: vocabulary.yaml (default: the package's)")
    p.add_argument("--count", type=int, default=2000, help="generate: frames to render")
    p.add_argument("--seed-base", type=int, default=None, help="generate: first episode seed")
    p.add_argument("--randomise", type=float, default=1.0, help="generate: domain randomisation strength")
    p.add_argument("--workers", type=int, default=1, help="generate: rendering processes")
    p.add_argument("--gripper-views", default=None, metavar="VIEW=W,...",
                   help="generate: where the gripper is, with weights, e.g. home=0.4,hover=0.2,holding=0.2,"
                        "approach=0.2 (default: home only, parked out of view)")
    p.add_argument("--look-alikes", type=float, default=0.0,
                   help="generate: chance that every distractor shares the target's colour or shape")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def _log(msg: str) -> None:
    print(f"[clip-vla train] {msg}", file=sys.stderr, flush=True)


def _split(samples: List[Any], val: Optional[str], labels: Optional[str], seed: int):
    from clip_vla.train.data import load_dataset

    if val:
        return samples, load_dataset(val, None)
    import numpy as np

    idx = np.random.default_rng(seed).permutation(len(samples))
    n_val = max(1, len(samples) // 20) if len(samples) > 4 else 0
    return [samples[i] for i in idx[n_val:]], [samples[i] for i in idx[:n_val]] or samples


def run_segment(args: argparse.Namespace, base, train, val) -> Dict[str, Any]:
    from clip_vla.train import loop, segment
    from clip_vla.train.methods import apply_method, unwrap

    model = apply_method(base.model, "clipseg", args.method, lora_rank=args.lora_rank)
    out = Path(args.out)
    result: Dict[str, Any] = {"parameters": loop.count_parameters(model)}
    if not args.eval_only:
        examples = segment.prepare(train, base.image_size, progress=not args.quiet)
        trainer = segment.SegmentTrainer(model, base.tokenizer, examples, base.image_size, base.mean, base.std,
                                         batch=args.batch, prompts_per_image=args.prompts,
                                         pos_weight=args.pos_weight, method=args.method)
        steps = args.steps or max(1, math.ceil(len(examples) / args.batch * args.epochs))
        _log(f"segment: {len(examples)} frames, {steps} steps of {args.batch}x{args.prompts}, "
             f"{result['parameters']['trainable']}/{result['parameters']['total']} parameters train ({args.method})")
        t0 = time.time()
        result["train"] = loop.run(model, trainer.step, steps, args.lr, out, seed=args.seed,
                                   checkpoint_every=args.checkpoint_every, resume=not args.no_resume,
                                   progress=not args.quiet, log=_log)
        result["train"]["seconds"] = round(time.time() - t0, 1)
        result["train"].pop("losses", None)
    plain = unwrap(model)
    result["eval"] = segment.evaluate(plain, base.tokenizer, val, base.image_size, base.mean, base.std,
                                      max_samples=args.eval_samples)
    return {"model": plain, **result}


def run_skills(args: argparse.Namespace, base, train, val) -> Dict[str, Any]:
    import numpy as np

    from clip_vla.train import identity, loop, skills
    from clip_vla.train.build import bake_image_size
    from clip_vla.train.data import NON_OBJECT_LABELS, sim_catalogue
    from clip_vla.train.methods import apply_method, unwrap

    vocabulary = skills.load_vocabulary(args.vocabulary)
    # the names crops are classified over: the simulator's colours x shapes, else every labelled phrase
    names = sim_catalogue() or sorted({p for s in list(train) + list(val) for p in s.phrases} - set(NON_OBJECT_LABELS))
    bake_image_size(base.model, base.image_size)  # --image-size: position embeddings interpolated once, then trained
    model = apply_method(base.model, "clip", args.method, lora_rank=args.lora_rank)
    result: Dict[str, Any] = {"parameters": loop.count_parameters(model)}
    if not args.eval_only:
        examples = skills.prepare(train, base.image_size)
        crops = (identity.identity_crops(train, base.image_size, names, np.random.default_rng(args.seed + 29))
                 if args.identity_weight > 0 else [])
        trainer = skills.SkillTrainer(model, base.tokenizer, examples, base.image_size, base.mean, base.std,
                                      vocabulary, batch=args.batch, temperature=args.temperature, seed=args.seed,
                                      crops=crops, identity_weight=args.identity_weight, identity_names=names)
        if crops:
            _log(f"identity: {len(crops)} object crops over {len(names)} names")
        steps = args.steps or max(1, math.ceil(max(len(examples), 1000) / args.batch * args.epochs))
        _log(f"skills: {len(examples)} frames + {len(trainer.corpus)} generated commands, {steps} steps "
             f"({result['parameters']['trainable']}/{result['parameters']['total']} parameters, {args.method})")
        t0 = time.time()
        result["train"] = loop.run(model, trainer.step, steps, args.lr, Path(args.out), seed=args.seed,
                                   checkpoint_every=args.checkpoint_every, resume=not args.no_resume,
                                   progress=not args.quiet, log=_log)
        result["train"]["seconds"] = round(time.time() - t0, 1)
        result["train"].pop("losses", None)
    plain = unwrap(model)
    val = [s for s in val if s.command and s.skill][: args.eval_samples]
    frames = [skills.resize_crop(s.load_image(), base.image_size) for s in val]
    commands = [(s.command, s.skill, s.object) for s in val]
    result["eval"] = {"dataset": skills.evaluate(plain, base.tokenizer, vocabulary, commands, frames,
                                                 base.image_size, base.mean, base.std)}
    # held-out phrasings: objects outside the training catalogue (pink/cyan) and all skills
    held = skills.command_corpus(vocabulary, ["pink block", "cyan cup", "pink ball", "cyan bar"],
                                 np.random.default_rng(12345), 400)
    result["eval"]["held_out_commands"] = skills.evaluate(plain, base.tokenizer, vocabulary, held)
    if args.identity_weight > 0 or args.eval_only:
        probe = skills.SkillTrainer(plain, base.tokenizer, [], base.image_size, base.mean, base.std, vocabulary,
                                    objects=["object"])
        crops = identity.identity_crops(val, base.image_size, names, np.random.default_rng(args.seed + 31), jitters=1)
        result["eval"]["identity"] = identity.identity_accuracy(probe.encode_image, probe.encode_text, crops, names)
    return {"model": plain, **result}


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.task == "generate":
        from clip_vla.train.simdata import TRAIN_SEED_BASE, generate, parse_views

        try:
            views = parse_views(args.gripper_views)
        except ValueError as exc:
            _log(f"--gripper-views: {exc}")
            return 2
        path = generate(args.out, args.count, seed_base=args.seed_base if args.seed_base is not None
                        else TRAIN_SEED_BASE, strength=args.randomise, workers=args.workers, progress=not args.quiet,
                        gripper_views=views, look_alikes=args.look_alikes)
        print(json.dumps({"data": str(path), "count": args.count}))
        return 0
    if not args.data and not args.val:
        _log("--data is required")
        return 2
    from clip_vla.train.build import load_base, save_model_dir
    from clip_vla.train.data import load_dataset

    default_base = {"segment": "new:sim-clipseg", "skills": "new:sim-clip"}[args.task]
    base = load_base(args.base or default_base, args.task, seed=args.seed, image_size=args.image_size)
    samples = load_dataset(args.data, args.labels) if args.data else []
    train, val = _split(samples, args.val, args.labels, args.seed) if samples else ([], load_dataset(args.val))
    runner = run_segment if args.task == "segment" else run_skills
    result = runner(args, base, train, val)
    model = result.pop("model")
    if not args.eval_only:
        meta = {"task": args.task, "base": base.source, "method": args.method, "data": args.data,
                "argv": list(argv) if argv is not None else sys.argv[1:], **result}
        save_model_dir(model, base.tokenizer, Path(args.out), base.image_size, base.crop, fp16=not args.fp32,
                       extra=meta)
        _log(f"saved {args.out}")
    if args.task == "segment" and args.pipeline_seeds:
        from clip_vla.train.pipeline_eval import pipeline_hit_rate

        target = args.base if args.eval_only else args.out
        seeds = range(args.pipeline_seed_base, args.pipeline_seed_base + args.pipeline_seeds)
        result["pipeline"] = pipeline_hit_rate(target, seeds=seeds)
        if not args.eval_only:
            meta["pipeline"] = result["pipeline"]
            (Path(args.out) / "training.json").write_text(json.dumps(meta, indent=2, default=str), encoding="utf-8")
    print(json.dumps({k: v for k, v in result.items()}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
