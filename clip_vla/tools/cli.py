"""`clip-vla`: the command-line face of the core (and of the tools built on it).

Every subcommand imports its heavy dependencies lazily, so `clip-vla parse` answers in
well under a second and `clip-vla --help` works without torch.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Dict, List, Optional, Tuple

EXIT_OK = 0
EXIT_NO_ACTION = 3  # the command ran but produced no goal (the JSON says why)
EXIT_ERROR = 2


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="parameter file (default: the package's config/clip_vla.yaml)")
    p.add_argument("--clipseg", help="CLIPSeg model id or local from_pretrained directory")
    p.add_argument("--clip", help="CLIP model id or local from_pretrained directory")
    p.add_argument("--device", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--vocabulary", help="skills/objects vocabulary YAML")


def load_config(args: argparse.Namespace):
    """The parameter file with the CLI's overrides applied."""
    from clip_vla.core.config import ClipVlaConfig

    cfg = ClipVlaConfig.from_yaml(args.config) if getattr(args, "config", None) else ClipVlaConfig.from_yaml()
    overrides = {}
    for arg, key in (("clipseg", "models.clipseg"), ("clip", "models.clip"), ("device", "models.device"),
                     ("vocabulary", "vocabulary_file")):
        value = getattr(args, arg, None)
        if value:
            overrides[key] = value
    return cfg.replace(**overrides) if overrides else cfg


def read_image(path: str):
    """A colour image file as HxWx3 uint8 RGB."""
    import cv2

    bgr = cv2.imread(path, cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"cannot read image '{path}' (missing file or unsupported format)")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def read_depth(path: str):
    """Depth as a 16-bit PNG/TIFF (millimetres) or a .npy array (float metres or uint16 mm)."""
    import cv2
    import numpy as np

    if path.endswith(".npy"):
        return np.load(path)
    depth = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if depth is None or depth.ndim != 2:
        raise ValueError(f"cannot read depth '{path}': expected a single-channel 16-bit image or .npy")
    return depth


def cmd_infer(args: argparse.Namespace) -> int:
    from clip_vla.core.config import parse_floats
    from clip_vla.pipeline import VLAPipeline
    from clip_vla.core.types import Frame, Intrinsics

    cfg = load_config(args)
    rgb = read_image(args.image)
    depth = read_depth(args.depth) if args.depth else None
    intrinsics = Intrinsics(*parse_floats(args.intrinsics, 4, "--intrinsics")) if args.intrinsics else None
    pipeline = VLAPipeline(cfg)
    result = pipeline.run(Frame(rgb=rgb, depth=depth, intrinsics=intrinsics), args.command)
    out = result.to_dict()
    out["models"] = pipeline.model_ids
    out["device"] = pipeline.device
    print(json.dumps(out, indent=2 if args.pretty else None))
    if args.annotate:
        import cv2

        from clip_vla.core.visualize import annotate

        cv2.imwrite(args.annotate, cv2.cvtColor(annotate(rgb, result), cv2.COLOR_RGB2BGR))
    return EXIT_OK if result.accepted else EXIT_NO_ACTION


def cmd_parse(args: argparse.Namespace) -> int:
    from clip_vla.core.config import Vocabulary, default_vocabulary_path
    from clip_vla.core.language import CommandError, InstructionParser

    vocabulary = Vocabulary.from_yaml(args.vocabulary or default_vocabulary_path())
    try:
        parsed = InstructionParser(vocabulary).parse(args.text)
    except CommandError as exc:
        print(json.dumps({"error": str(exc)}))
        return EXIT_ERROR
    print(json.dumps(parsed.to_full_dict() if args.full else parsed.to_dict()))
    return EXIT_OK


def cmd_download(args: argparse.Namespace) -> int:
    from clip_vla.perception.loading import download_models

    cfg = load_config(args)
    ids = args.models or [cfg.models.clipseg, cfg.models.clip]
    for model_id, path in download_models(ids, cache_dir=args.cache_dir).items():
        print(f"{model_id}: {path}")
    print("done: set HF_HUB_OFFLINE=1 (or models.local_files_only: true) on the robot to use the cache only")
    return EXIT_OK


# Tools built on the core; each module owns its arguments (`clip-vla NAME --help`).
TOOLS: Dict[str, Tuple[str, str]] = {
    "demo": ("clip_vla.tools.demo", "the simulated tabletop + vla_node as a ROS 2 graph, scripted commands (start here)"),
    "sim": ("clip_vla.tools.sim_eval", "closed-loop episodes in the simulated world: success, goal errors, latency"),
    "record": ("clip_vla.tools.record", "record simulated camera topics and commands into a rosbag2 bag"),
    "replay": ("clip_vla.tools.replay", "run the pipeline over a rosbag2 bag; compare with expected goals"),
    "train": ("clip_vla.train", "fine-tune CLIPSeg/CLIP (full, LoRA, linear probe) or generate sim data"),
    "bench": ("clip_vla.tools.bench", "per-stage latency, fast path vs naive baseline, memory"),
    "soak": ("clip_vla.tools.soak", "long-running vla_node load test over DDS (latency, memory growth)"),
    "suggest": ("clip_vla.tools.suggest", "ranked commands for what is in one image (or --eval-sim N scenes)"),
}


def run_tool(name: str, argv: List[str]) -> int:
    """A tool's own ``main(argv)``; it parses its own arguments (options may come first)."""
    import importlib

    module = importlib.import_module(TOOLS[name][0])
    return int(module.main(argv) or 0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="clip-vla", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("infer", help="one image + command -> goal JSON")
    p.add_argument("--image", required=True, help="colour image file (PNG/JPEG)")
    p.add_argument("--depth", help="depth: 16-bit PNG in millimetres, or .npy in metres")
    p.add_argument("--intrinsics", help="fx,fy,cx,cy in pixels (default: geometry.intrinsics)")
    p.add_argument("--command", required=True, help='e.g. "pick up the red cup"')
    p.add_argument("--annotate", help="write the annotated debug image here")
    p.add_argument("--pretty", action="store_true", help="indent the JSON")
    _add_config_args(p)
    p.set_defaults(func=cmd_infer)

    p = sub.add_parser("parse", help='command text -> {"skill", "object", "destination"} JSON')
    p.add_argument("text")
    p.add_argument("--vocabulary", help="skills/objects vocabulary YAML")
    p.add_argument("--full", action="store_true", help="also print relation, direction, verb")
    p.set_defaults(func=cmd_parse)

    p = sub.add_parser("download-models", help="pre-fetch the models into the Hugging Face cache")
    p.add_argument("models", nargs="*", help="model ids (default: those of the config)")
    p.add_argument("--cache-dir", help="cache directory (default: HF_HOME / HF_HUB_CACHE)")
    _add_config_args(p)
    p.set_defaults(func=cmd_download)

    for name, (_, help_text) in TOOLS.items():
        sub.add_parser(name, help=help_text, add_help=False)  # listed in --help; run by run_tool
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    from clip_vla.core.config import ConfigError
    from clip_vla.perception.loading import ModelUnavailableError

    name = argv[0] if argv and argv[0] in TOOLS else None
    args = None if name else build_parser().parse_args(argv)
    try:
        return run_tool(name, argv[1:]) if name else args.func(args)
    except (ModelUnavailableError, ConfigError, ValueError, FileNotFoundError) as exc:
        print(f"clip-vla {name or args.command}: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
