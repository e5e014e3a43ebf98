"""`clip-vla`: the command-line face of the core (and of the tools built on it).

Every subcommand imports its heavy dependencies lazily, so `clip-vla parse` answers in
well under a second and `clip-vla --help` works without torch.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple

EXIT_OK = 0
EXIT_NO_ACTION = 3  # the command ran but produced no goal (the JSON says why)
EXIT_ERROR = 2


# Flags of the tools that mirror a configuration key: --FLAG -> key. Help, type and choices come
# from the config schema, so a flag and its parameter are described and validated alike.
CONFIG_FLAGS: Dict[str, str] = {
    "clipseg": "models.clipseg",
    "clip": "models.clip",
    "device": "models.device",
    "vocabulary": "vocabulary_file",
}


def add_config_flags(p: argparse.ArgumentParser, flags: Mapping[str, str] = CONFIG_FLAGS,
                     config_file: bool = True) -> None:
    """``--config`` and one ``--FLAG`` per ``flags`` entry, described by the config schema.

    Values stay strings/numbers as typed; ``load_config`` judges them with the one validator
    (``ClipVlaConfig``), so ``--device banana`` is refused like ``models.device: banana``.
    """
    from clip_vla.core.config import settings

    if config_file:
        p.add_argument("--config", help="parameter file (default: the package's config/clip_vla.yaml)")
    specs = settings()
    for flag, key in flags.items():
        spec = specs[key]
        kwargs: Dict[str, Any] = {"dest": flag.replace("-", "_"), "default": None,
                                  "help": f"{spec.doc} ({key}; default: the config's)"}
        if spec.kind == "bool":
            kwargs["action"] = argparse.BooleanOptionalAction
        elif spec.kind in ("int", "float"):
            kwargs["type"] = int if spec.kind == "int" else float
        if spec.choices:
            kwargs["choices"] = spec.choices
        p.add_argument(f"--{flag}", **kwargs)


def config_overrides(args: argparse.Namespace, flags: Mapping[str, str] = CONFIG_FLAGS) -> Dict[str, Any]:
    """``{key: value}`` of the config flags given on the command line."""
    values = {key: getattr(args, flag.replace("-", "_"), None) for flag, key in flags.items()}
    return {key: value for key, value in values.items() if value is not None}


def load_config(args: argparse.Namespace, flags: Mapping[str, str] = CONFIG_FLAGS,
                extra: Optional[Mapping[str, Any]] = None):
    """The parameter file (``--config`` or the package's) with the flags' and ``extra`` overrides.

    Raises:
        ConfigError: the file or a flag holds an invalid value; a flag's error names the flag.
    """
    from clip_vla.core.config import ClipVlaConfig, ConfigError

    cfg = ClipVlaConfig.from_yaml(getattr(args, "config", None) or None)
    overrides = {**config_overrides(args, flags), **(extra or {})}
    if not overrides:
        return cfg
    try:
        return cfg.replace(**overrides)
    except ConfigError as exc:
        flag = next((f for f, key in flags.items() if key in overrides and exc.detail.startswith(key)), None)
        if flag is None:
            raise
        raise ConfigError(f"--{flag}: {exc}") from None


def read_image(path: str):
    """A colour image file as HxWx3 uint8 RGB.

    Raises:
        ValueError: the file cannot be read or decoded (one line; the codec's own warnings,
            such as libpng's, are kept off the terminal).
    """
    import cv2

    bgr = _decode(path, cv2.IMREAD_COLOR, "image")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def read_depth(path: str):
    """Depth as a 16-bit PNG/TIFF (millimetres) or a .npy array (float metres or uint16 mm).

    Raises:
        ValueError: unreadable, undecodable, or not a single-channel uint16/float image.
    """
    import cv2
    import numpy as np

    if path.endswith(".npy"):
        try:
            depth = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).splitlines()[0]
            raise ValueError(f"cannot read depth '{path}': {reason}") from None
    else:
        depth = _decode(path, cv2.IMREAD_UNCHANGED, "depth")
    if depth.ndim != 2 or not (depth.dtype == np.uint16 or np.issubdtype(depth.dtype, np.floating)):
        raise ValueError(f"cannot use depth '{path}': expected a single-channel 16-bit image or float/uint16 .npy, "
                         f"got {depth.dtype} with shape {tuple(depth.shape)}")
    return depth


def _decode(path: str, flags: int, what: str):
    """``cv2.imdecode`` of a file's bytes: a missing file says so, a damaged one is one line.

    Raises:
        ValueError: the file cannot be read, or OpenCV cannot decode it.
    """
    import cv2
    import numpy as np

    try:
        data = np.frombuffer(Path(path).read_bytes(), np.uint8)
    except OSError as exc:
        raise ValueError(f"cannot read {what} '{path}': {exc.strerror or exc}") from None
    with _stderr_silenced():  # libpng/libjpeg print their own complaints to fd 2
        image = cv2.imdecode(data, flags) if data.size else None
    if image is None:
        raise ValueError(f"cannot decode {what} '{path}': not an image OpenCV can read (damaged, or an "
                         "unsupported format)")
    return image


@contextlib.contextmanager
def _stderr_silenced() -> Iterator[None]:
    """Point file descriptor 2 at /dev/null for the block: C libraries write there directly."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def cmd_infer(args: argparse.Namespace) -> int:
    from clip_vla.core.config import parse_floats
    from clip_vla.pipeline import VLAPipeline
    from clip_vla.core.types import Frame, Intrinsics

    cfg = load_config(args)
    rgb = read_image(args.image)
    depth = read_depth(args.depth) if args.depth else None
    if depth is not None and depth.shape != rgb.shape[:2]:
        raise ValueError(f"depth '{args.depth}' is {depth.shape[1]}x{depth.shape[0]} but the image is "
                         f"{rgb.shape[1]}x{rgb.shape[0]}: give depth registered to the colour image")
    intrinsics = Intrinsics(*parse_floats(args.intrinsics, 4, "--intrinsics")) if args.intrinsics else None
    pipeline = VLAPipeline(cfg)
    result = pipeline.run(Frame(rgb=rgb, depth=depth, intrinsics=intrinsics), args.text)
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
    from clip_vla.core.plan import make_plan

    vocabulary = Vocabulary.from_yaml(args.vocabulary or default_vocabulary_path())
    try:
        steps = InstructionParser(vocabulary).parse_steps(args.text)
    except CommandError as exc:
        print(json.dumps({"error": str(exc)}))
        return EXIT_ERROR
    main_step = steps[0]  # the first step said: what `parse` read before commands had steps
    out = main_step.to_full_dict() if args.full else main_step.to_dict()
    out["steps"] = [step.to_dict() for step in make_plan(steps).steps]  # implicit picks included
    print(json.dumps(out))
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
    "verify-eval": ("clip_vla.tools.verify_eval", "the step verifier against the simulator's truth (no ROS)"),
    "console": ("clip_vla.ros.console_node", "the operator console: a local web page to watch and command vla_node"),
}


def run_tool(name: str, argv: List[str]) -> int:
    """A tool's own ``main(argv)``; it parses its own arguments (options may come first)."""
    import importlib

    module = importlib.import_module(TOOLS[name][0])
    return int(module.main(argv) or 0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="clip-vla", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="subcommand", required=True)

    p = sub.add_parser("infer", help="one image + command -> goal JSON")
    p.add_argument("--image", required=True, help="colour image file (PNG/JPEG)")
    p.add_argument("--depth", help="depth: 16-bit PNG in millimetres, or .npy in metres")
    p.add_argument("--intrinsics", help="fx,fy,cx,cy in pixels (default: geometry.intrinsics)")
    p.add_argument("--command", dest="text", required=True, help='e.g. "pick up the red cup"')
    p.add_argument("--annotate", help="write the annotated debug image here")
    p.add_argument("--pretty", action="store_true", help="indent the JSON")
    add_config_flags(p)
    p.set_defaults(func=cmd_infer)

    p = sub.add_parser("parse", help='command text -> {"skill", "object", "destination", "steps"} JSON')
    p.add_argument("text")
    add_config_flags(p, {"vocabulary": "vocabulary_file"}, config_file=False)
    p.add_argument("--full", action="store_true", help="also print relation, direction, verb")
    p.set_defaults(func=cmd_parse)

    p = sub.add_parser("download-models", help="pre-fetch the models into the Hugging Face cache")
    p.add_argument("models", nargs="*", help="model ids (default: those of the config)")
    p.add_argument("--cache-dir", help="cache directory (default: HF_HOME / HF_HUB_CACHE)")
    add_config_flags(p)
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
        print(f"clip-vla {name or args.subcommand}: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
