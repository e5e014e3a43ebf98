"""`clip-vla bench`: latency of the fast inference path against the naive baseline, same run, same models.

Measures, with the configured models (or, when their weights are not on this machine, randomly
initialised models of the same real-size architectures: same cost, and the output says so):

- per-stage latency p50/p95 of the fast pipeline (message conversion, preprocessing, image
  encoding, text encoding, mask decoding, skill scoring, post-processing, geometry, tokenisation)
  and end to end per command (conversion + ``VLAPipeline.run`` on a command string);
- frames per second in continuous mode (one prepared command on every new frame);
- the same for the naive baseline (``clip_vla.tools.naive``: transformers processors, CLIPSeg with
  the image repeated per prompt, a separate CLIP forward, no caching) and the speed-up ratio;
- peak RSS and peak GPU memory;
- equivalence of the two paths on the same frame: probability maps, centroids, skill ranking
  (model level on identical pixel values, and end to end through each path's own preprocessing).

Ratios are what to compare across machines; docs/benchmarks.md records runs.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from types import SimpleNamespace
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from clip_vla.core.stats import percentile
from clip_vla.tools.cli import add_config_flags, load_config

# Flags that set configuration keys (help, type and choices from the config schema).
CONFIG_FLAGS = {"clipseg": "models.clipseg", "clip": "models.clip", "device": "models.device",
                "dtype": "models.dtype", "share-backbone": "models.share_backbone"}

STAGES = ["message_conversion", "preprocess", "image_encoding", "text_encoding", "clipseg_forward",
          "mask_decoding", "mask_upsampling", "skill_scoring", "postprocess", "geometry", "tokenization"]
COMMAND_OBJECT = "red cup"


# --------------------------------------------------------------------------- arguments
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="clip-vla bench",
        description="Latency of the fast inference path vs the naive transformers baseline (same run).")
    add_config_flags(p, CONFIG_FLAGS)
    p.add_argument("--accelerate", default="none", choices=["none", "compile", "cuda_graphs"],
                   help="fast path: torch.compile or CUDA graphs for the fixed-shape parts (default none)")
    p.add_argument("--resolution", default="640x480", help="input WIDTHxHEIGHT (default 640x480)")
    p.add_argument("--prompts", type=int, default=4,
                   help="CLIPSeg prompts per frame: 1 object + (K-1) distractors (default 4)")
    p.add_argument("--skills", type=int, default=8, help="skills scored by CLIP (default 8)")
    p.add_argument("--iters", type=int, default=20, help="timed iterations per path (default 20)")
    p.add_argument("--warmup", type=int, default=2, help="untimed iterations before timing (default 2)")
    p.add_argument("--naive-iters", type=int, default=None, help="timed naive iterations (default: --iters)")
    p.add_argument("--no-naive", action="store_true", help="skip the naive baseline")
    p.add_argument("--random-weights", action="store_true",
                   help="do not try the configured models: random real-size architectures")
    p.add_argument("--allow-download", action="store_true",
                   help="let from_pretrained reach the hub (default: local files only, fail fast)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--no-tune-allocator", action="store_true",
                   help="leave glibc's malloc thresholds alone (default: preprocess.tune_cpu_allocator)")
    p.add_argument("--json", dest="json_out", help="also write the figures as JSON to this file")
    return p


def _resolution(text: str) -> Tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().replace("*", "x").split("x"))
    except ValueError as exc:
        raise SystemExit(f"clip-vla bench: --resolution must be WIDTHxHEIGHT, got {text!r}") from exc
    if w < 16 or h < 16:
        raise SystemExit(f"clip-vla bench: --resolution too small: {text!r}")
    return w, h


# --------------------------------------------------------------------------- machine
def machine_info() -> Dict[str, Any]:
    import torch

    cpu = ""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=5).stdout
        cpu = next((ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name")), "")
    except Exception:  # noqa: BLE001 - lscpu is a nicety
        cpu = ""
    if not cpu:
        try:
            with open("/proc/cpuinfo", encoding="utf-8") as fh:
                cpu = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), "")
        except OSError:
            cpu = platform.processor() or platform.machine()
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 0
    info = {"cpu": cpu, "cpus": usable, "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(), "torch": torch.__version__, "gpu": None,
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "")}
    try:
        import transformers

        info["transformers"] = transformers.__version__
    except Exception:  # noqa: BLE001
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


class CpuShare:
    """How many cores *other* processes kept busy while the bench ran (Linux /proc/stat).

    Every figure here assumes the CPU is the bench's: on a shared machine the OpenMP threads of
    torch wait for cores and latency inflates many times over. The bench says so.
    """

    def __init__(self) -> None:
        self.start = self._sample()

    @staticmethod
    def _sample() -> Optional[Tuple[float, float, float]]:
        try:
            with open("/proc/stat", encoding="utf-8") as fh:
                fields = [float(v) for v in fh.readline().split()[1:]]
            hz = float(os.sysconf("SC_CLK_TCK"))
        except (OSError, ValueError, AttributeError):
            return None
        busy = (sum(fields) - fields[3] - (fields[4] if len(fields) > 4 else 0.0)) / hz  # minus idle, iowait
        own = sum(os.times()[:2])
        return time.monotonic(), busy, own

    def others_cores(self) -> Optional[float]:
        end = self._sample()
        if self.start is None or end is None or end[0] <= self.start[0]:
            return None
        return max(0.0, ((end[1] - self.start[1]) - (end[2] - self.start[2])) / (end[0] - self.start[0]))


def rss_mb() -> Optional[float]:
    """Current resident set size (Linux); weights mapped from safetensors count once touched."""
    try:
        with open("/proc/self/status", encoding="utf-8") as fh:
            line = next((ln for ln in fh if ln.startswith("VmRSS:")), "")
        return float(line.split()[1]) / 1024.0 if line else None
    except OSError:
        return None


def peak_rss_mb() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 1024.0 if sys.platform != "darwin" else rss / (1024.0 * 1024.0)


# --------------------------------------------------------------------------- models and config
def _config(args: argparse.Namespace):
    """The parameter file with the flags applied; offline unless --allow-download.

    Raises:
        ConfigError: an invalid file or flag value.
    """
    extra = {} if args.allow_download else {"models.local_files_only": True}
    return load_config(args, CONFIG_FLAGS, extra=extra)


def load_or_build(cfg, random_weights: bool = False, log: Callable[[str], None] = print):
    """(config, LoadedModels, weights description, temporary directory or None).

    The configured models first (local files only unless allowed: a missing model fails fast);
    else randomly initialised real-size CLIPSeg rd64-refined + CLIP ViT-B/32 built on the spot.
    """
    from clip_vla.testing.model_factory import build_model_pair
    from clip_vla.perception.loading import ModelUnavailableError, load_models

    if not random_weights:
        try:
            models = load_models(cfg.models)
            return cfg, models, "configured weights", None
        except (ModelUnavailableError, OSError, ValueError) as exc:
            reason = str(exc).split(". To fix")[0]
            log(f"configured models unavailable ({reason}); using random weights")
    tmp = tempfile.TemporaryDirectory(prefix="clip-vla-bench-")
    dirs = build_model_pair(tmp.name, size="real")
    cfg = cfg.replace(**{"models.clipseg": dirs["clipseg"], "models.clip": dirs["clip"],
                         "models.local_files_only": True})
    models = load_models(cfg.models)
    return cfg, models, "random weights, real-size architectures (CLIPSeg rd64-refined, CLIP ViT-B/32)", tmp


def calibrate_random_decoder(segmenter, rgb: np.ndarray, target_std: float = 3.0) -> Tuple[float, float]:
    """Rescale a random CLIPSeg's output layer so its logits have a pretrained-like spread.

    Randomly initialised real-size CLIPSeg gives logits of +-3000: every sigmoid saturates to
    exactly 0 or 1, prompts tie everywhere, nothing is ever "found", and geometry never runs.
    An affine change of the last (transposed) convolution gives zero-mean logits of std
    ``target_std``: the cost of every operation is unchanged. Returns (old mean, old std).
    """
    import torch

    from clip_vla.perception.preprocess import model_input, to_device_uint8

    models = segmenter.models
    px = model_input(to_device_uint8(rgb, models.device), models.clipseg_image, models.dtype)
    logits = segmenter.decode(segmenter.encode_image(px), segmenter.text_embeddings(["object", "background"]))
    mean, std = float(logits.float().mean()), float(logits.float().std())
    conv = segmenter.model.decoder.transposed_convolution
    last = conv[-1] if isinstance(conv, torch.nn.Sequential) else conv
    scale = target_std / max(std, 1e-6)
    with torch.no_grad():
        last.weight.mul_(scale)
        last.bias.sub_(mean).mul_(scale)
    return mean, std


def bench_vocabulary(base, distractors: int, skills: int):
    """The package vocabulary cut or padded to ``skills`` skills and ``distractors`` distractor prompts."""
    from clip_vla.core.config import Skill, Vocabulary

    chosen = [s for s in base.skills if s.name == base.stop_skill]
    chosen += [s for s in base.skills if s.name != base.stop_skill][:max(0, skills - len(chosen))]
    if not any(s.name == "pick" for s in chosen):
        pick = next((s for s in base.skills if s.name == "pick"), None)
        if pick is not None:
            chosen[-1:] = [pick]
    tokens = {s.token for s in chosen}
    n = 0
    while len(chosen) < skills:
        n += 1
        token = max(tokens) + 1
        tokens.add(token)
        chosen.append(Skill(name=f"task_{n}", token=token, verbs=[f"do task {n} with"],
                            templates=[f"a robot arm doing task {n} with the {{object}}",
                                       f"a gripper at the {{object}} for task {n}", f"task {n} the {{object}}"]))
    extra = list(base.distractors)[:distractors]
    extra += [f"distractor {i}" for i in range(len(extra) + 1, distractors + 1)]
    objects = list(dict.fromkeys([COMMAND_OBJECT] + list(base.objects)))
    return Vocabulary(skills=chosen, objects=objects, distractors=extra, stop_skill=base.stop_skill)


# --------------------------------------------------------------------------- frames and messages
def synthetic_scene(width: int, height: int, seed: int) -> Tuple[np.ndarray, np.ndarray]:
    """A table-top-like RGB frame (textured table, a few coloured objects) and its depth in mm."""
    import cv2

    rng = np.random.default_rng(seed)
    rgb = np.empty((height, width, 3), np.uint8)
    rgb[:] = (150, 130, 110)
    noise = rng.integers(-12, 13, (height, width, 1), dtype=np.int16)
    rgb = np.clip(rgb.astype(np.int16) + noise, 0, 255).astype(np.uint8)
    depth = np.full((height, width), 800, np.uint16)
    for _ in range(4):
        cx, cy = int(rng.integers(width // 5, 4 * width // 5)), int(rng.integers(height // 5, 4 * height // 5))
        r = int(rng.integers(min(width, height) // 20, min(width, height) // 8))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        cv2.circle(rgb, (cx, cy), r, colour, -1)
        cv2.circle(depth, (cx, cy), r, 760, -1)
    return rgb, depth


def image_message(arr: np.ndarray, encoding: str) -> SimpleNamespace:
    """A sensor_msgs/Image look-alike (header-free) carrying ``arr`` as raw bytes."""
    channels = 1 if arr.ndim == 2 else arr.shape[2]
    return SimpleNamespace(height=arr.shape[0], width=arr.shape[1], encoding=encoding, is_bigendian=0,
                           step=arr.shape[1] * channels * arr.dtype.itemsize, data=arr.tobytes())


def message_converters() -> Tuple[Callable[[Any], np.ndarray], Callable[[Any], np.ndarray], str]:
    """(colour, depth, description): clip_vla.ros.conversions when present, else a numpy reshape."""
    try:
        from clip_vla.ros import conversions

        return conversions.image_to_rgb, conversions.depth_to_array, "clip_vla.ros.conversions (" + \
            getattr(conversions, "BACKEND", "?") + ")"
    except Exception:  # noqa: BLE001 - the ROS helpers are optional for the bench

        def rgb(msg):
            return np.frombuffer(msg.data, np.uint8).reshape(msg.height, msg.step)[:, :msg.width * 3] \
                .reshape(msg.height, msg.width, 3).copy()

        def depth(msg):
            return np.frombuffer(msg.data, np.uint16).reshape(msg.height, msg.step // 2)[:, :msg.width].copy()

        return rgb, depth, "numpy reshape of the message buffer"


# --------------------------------------------------------------------------- measuring
def _summary(values: Sequence[float]) -> Dict[str, Optional[float]]:
    return {"p50": percentile(values, 50), "p95": percentile(values, 95),
            "mean": float(np.mean(values)) if len(values) else None, "n": len(values)}


class Runner:
    """Converts a message pair and runs one command on one pipeline, timing everything."""

    def __init__(self, pipeline, messages, intrinsics, convert_rgb, convert_depth, cuda: bool) -> None:
        self.pipeline = pipeline
        self.messages = messages
        self.intrinsics = intrinsics
        self.convert_rgb = convert_rgb
        self.convert_depth = convert_depth
        self.cuda = cuda

    def once(self, i: int, command) -> Tuple[float, Dict[str, float], Any]:
        from clip_vla.core.types import Frame

        msg_rgb, msg_depth = self.messages[i % len(self.messages)]
        start = time.perf_counter()
        rgb = self.convert_rgb(msg_rgb)
        depth = self.convert_depth(msg_depth)
        converted = time.perf_counter()
        result = self.pipeline.run(Frame(rgb=rgb, depth=depth, intrinsics=self.intrinsics, stamp=float(i)), command)
        if self.cuda:
            import torch

            torch.cuda.synchronize()
        end = time.perf_counter()
        stages = {k: float(v) for k, v in (getattr(result, "timings_ms", None) or {}).items() if k != "total"}
        stages["message_conversion"] = (converted - start) * 1e3
        return (end - start) * 1e3, stages, result

    def measure(self, command: str, iters: int, warmup: int) -> Dict[str, Any]:
        for i in range(warmup):
            self.once(i, command)
        e2e: List[float] = []
        stages: Dict[str, List[float]] = {}
        outcomes: Dict[str, int] = {}
        for i in range(iters):
            ms, st, result = self.once(i, command)
            e2e.append(ms)
            for k, v in st.items():
                stages.setdefault(k, []).append(v)
            key = "goal" if getattr(result, "accepted", False) else getattr(result.reason, "value", "?")
            outcomes[key] = outcomes.get(key, 0) + 1
        return {"end_to_end_ms": _summary(e2e), "stages_ms": {k: _summary(v) for k, v in stages.items()},
                "outcomes": outcomes}

    def continuous(self, command: str, frames: int) -> float:
        """Frames per second with one prepared command on every new frame (the node's continuous mode)."""
        prepared = self.pipeline.prepare(command)
        start = time.perf_counter()
        for i in range(frames):
            self.once(i, prepared)
        return frames / (time.perf_counter() - start)


# --------------------------------------------------------------------------- equivalence
def equivalence(fast, naive, rgb: np.ndarray, depth: np.ndarray, intrinsics, command: str) -> Dict[str, Any]:
    """Fast vs naive on one frame: model level (identical pixel values) and end to end."""
    import torch
    from PIL import Image

    from clip_vla.perception.localize import detect, target_mask
    from clip_vla.perception.preprocess import model_input, to_device_uint8
    from clip_vla.perception.segmenter import Segmenter
    from clip_vla.core.types import Frame

    prepared = fast.prepare(command)
    height, width = rgb.shape[:2]
    image = Image.fromarray(rgb)
    perception = fast.config.perception
    seg_inputs = naive.naive.segmentation_inputs(image, prepared.prompts)
    px = seg_inputs["pixel_values"][:1]
    features = fast.segmenter.encode_image(px)
    fast_probs = Segmenter.probabilities(fast.segmenter.decode(features, fast.segmenter.text_embeddings(
        prepared.prompts)), (height, width))
    naive_probs = naive.naive.probabilities(naive.naive.segment(seg_inputs), (height, width))
    competitors = list(range(len(prepared.prompts)))
    idx = prepared.object_index
    rule = (perception.mask_threshold, perception.min_area_px, perception.instance_score)
    det_f = detect(fast_probs, prepared.prompts, idx, competitors, *rule)
    det_n = detect(naive_probs, prepared.prompts, idx, competitors, *rule)
    # target_maps (device-side competition, only the target copied back) against localize on the same logits
    maps = Segmenter.target_maps(fast.segmenter.decode(features, fast.segmenter.text_embeddings(prepared.prompts)),
                                 (height, width), [idx], perception.mask_threshold)
    target_maps_disagree = int(np.count_nonzero(
        maps[idx][1] != target_mask(fast_probs, idx, competitors, perception.mask_threshold)))

    texts = [prepared.parsed.text] + [p for s in fast.vocabulary.skills for p in s.prompts(prepared.parsed.object)]
    with_image = perception.image_weight > 0
    skill_inputs = naive.naive.skill_inputs(image, texts, with_image)
    embedding = None
    if with_image:
        embedding = features.image_embedding if fast.scorer.shared_backbone else \
            fast.scorer.image_embedding(skill_inputs["pixel_values"])
    fast_skills = fast.scorer.score(prepared.parsed.text, prepared.parsed.object, embedding)
    naive_skills = naive.naive.skill_probabilities(image, prepared.parsed.text, prepared.parsed.object,
                                                   fast.vocabulary, perception, inputs=skill_inputs)

    torch_px = model_input(to_device_uint8(rgb, fast.models.device), fast.models.clipseg_image, torch.float32)
    pre_diff = (torch_px.cpu() - seg_inputs["pixel_values"][:1].float().cpu()).abs()

    frame = Frame(rgb=rgb, depth=depth, intrinsics=intrinsics)
    r_fast, r_naive = fast.run(frame, command), naive.run(frame, command)

    def centroid_distance(a, b) -> Optional[float]:
        if a is None or b is None or not a.found or not b.found:
            return None
        return float(math.hypot(a.centroid[0] - b.centroid[0], a.centroid[1] - b.centroid[1]))

    def outcome(r) -> str:
        return "goal" if getattr(r, "accepted", False) else r.reason.value

    def target_of(r):
        return getattr(r, "detection", None)

    fp32 = fast.models.dtype == torch.float32
    # fp32: the same numbers up to summation order, so the same decisions. Reduced precision (bf16/fp16):
    # probabilities within the precision, and pixels/components whose decision is a near-tie
    # (random weights have many) may flip: those are reported, not gated.
    tol = {"prob_max_abs": 1e-4 if fp32 else 1e-1, "prob_mean_abs": 1e-5 if fp32 else 1e-2,
           "winner_mask_fraction": 1e-4 if fp32 else None, "centroid_px": 1.0 if fp32 else None}
    model_prob = float(np.abs(fast_probs - naive_probs).max())
    winners = [target_mask(p, idx, competitors, perception.mask_threshold) for p in (fast_probs, naive_probs)]
    winner_fraction = float(np.count_nonzero(winners[0] != winners[1])) / winners[0].size
    same_component = False
    if det_f.found and det_n.found:
        inter = np.count_nonzero(det_f.mask & det_n.mask)
        same_component = inter / max(1, np.count_nonzero(det_f.mask | det_n.mask)) > 0.5
    model_centroid = centroid_distance(det_f, det_n)
    out = {
        "tolerance": tol,
        "model_level": {
            "prob_max_abs_diff": model_prob,
            "prob_mean_abs_diff": float(np.abs(fast_probs - naive_probs).mean()),
            "winner_mask_fraction_differing": winner_fraction,
            "found": [det_f.found, det_n.found],
            "same_component": bool(same_component),
            "centroid_px": model_centroid,
            "centroids": [det_f.centroid, det_n.centroid],
            "target_maps_vs_localize_pixels_differing": target_maps_disagree,
            "skill_ranking_same": list(fast_skills) == list(naive_skills),
            "skill_top1_same": next(iter(fast_skills)) == next(iter(naive_skills)),
            "skill_prob_max_abs_diff": max(abs(fast_skills[k] - naive_skills[k]) for k in fast_skills),
        },
        "preprocessing": {"clipseg_pixels_max_abs_diff": float(pre_diff.max()),
                          "clipseg_pixels_mean_abs_diff": float(pre_diff.mean())},
        "end_to_end": {
            "outcome": [outcome(r_fast), outcome(r_naive)],
            "centroid_px": centroid_distance(target_of(r_fast), target_of(r_naive)),
            "skill_top1": [next(iter(r_fast.skill_probabilities), None), next(iter(r_naive.skill_probabilities), None)],
        },
    }
    # The chosen component is the most confident one: with random weights many small components tie
    # and reduced precision may pick another; centroids are compared when both chose the same component.
    ok = (model_prob <= tol["prob_max_abs"] and out["model_level"]["prob_mean_abs_diff"] <= tol["prob_mean_abs"]
          and out["model_level"]["skill_top1_same"])
    if fp32:
        ok = ok and winner_fraction <= tol["winner_mask_fraction"] and det_f.found == det_n.found and (
            not det_f.found or (same_component and model_centroid <= tol["centroid_px"]))
    out["model_level_ok"] = bool(ok)
    return out


# --------------------------------------------------------------------------- report
def _fmt(v: Optional[float], width: int = 9) -> str:
    if v is None:
        return "-".rjust(width)
    return (f"{v:.1f}" if v >= 100 else f"{v:.2f}" if v >= 1 else f"{v:.3f}").rjust(width)


def render(report: Dict[str, Any]) -> str:
    m = report["machine"]
    lines = [f"clip-vla bench  {report['date']}",
             f"machine : {m['cpu'] or '?'} ({m['cpus']} CPUs, torch {m['torch']}, {m['torch_threads']} threads)"
             + (f", GPU {m['gpu']}" if m.get("gpu") else ""),
             f"models  : clipseg={report['models']['clipseg']}  clip={report['models']['clip']}",
             f"weights : {report['models']['weights']}",
             f"setup   : device {report['device']}, dtype {report['dtype']}, input {report['resolution']}, "
             f"{report['prompts']} CLIPSeg prompts (1 object + {report['prompts'] - 1} distractors), "
             f"{report['skills']} skills, acceleration {report['acceleration']}, "
             f"{report['iters']} timed iterations (+{report['warmup']} warm-up)",
             "others  : " + ("unknown" if report["other_processes_cores"] is None else
                             f"other processes kept {report['other_processes_cores']:.2f} cores busy during the run")
             + (" (BUSY: the CPU was shared, figures are inflated)" if report.get("busy") else ""),
             f"message : {report['message_conversion']}; malloc: {report.get('allocator', '?')}",
             f"command : {report['command']!r}", ""]
    fast, naive = report["fast"], report.get("naive")
    header = f"{'stage (ms)':22s}{'fast p50':>10s}{'fast p95':>10s}"
    if naive:
        header += f"{'naive p50':>11s}{'naive p95':>11s}"
    lines += [header, "-" * len(header)]
    for stage in STAGES:
        f = fast["stages_ms"].get(stage)
        n = naive["stages_ms"].get(stage) if naive else None
        if f is None and n is None:
            continue
        row = f"{stage:22s}{_fmt(f and f['p50'], 10)}{_fmt(f and f['p95'], 10)}"
        if naive:
            row += f"{_fmt(n and n['p50'], 11)}{_fmt(n and n['p95'], 11)}"
        lines.append(row)
    lines.append("-" * len(header))
    row = f"{'end to end':22s}{_fmt(fast['end_to_end_ms']['p50'], 10)}{_fmt(fast['end_to_end_ms']['p95'], 10)}"
    if naive:
        row += f"{_fmt(naive['end_to_end_ms']['p50'], 11)}{_fmt(naive['end_to_end_ms']['p95'], 11)}"
    lines += [row, ""]
    lines.append(f"continuous mode : {fast['continuous_fps']:.2f} frames/s fast"
                 + (f", {naive['continuous_fps']:.2f} frames/s naive" if naive else ""))
    if naive:
        lines.append(f"speed-up        : {report['speedup_p50']:.2f}x end to end (naive p50 / fast p50), "
                     f"{report['speedup_fps']:.2f}x in continuous mode")
    lines.append(f"outcomes        : fast {fast['outcomes']}" + (f", naive {naive['outcomes']}" if naive else ""))
    mem = report["memory"]
    lines.append(f"peak RSS        : {mem['peak_rss_mb_after_load']:.0f} MB after loading, "
                 f"{mem['peak_rss_mb_fast']:.0f} MB after the fast path"
                 + (f", {mem['peak_rss_mb_naive']:.0f} MB after the naive path" if naive else "")
                 + (f" (current {mem['rss_mb_after_fast']:.0f} MB after the fast path)"
                    if mem.get("rss_mb_after_fast") else ""))
    gpu = mem.get("peak_gpu_mb_fast")
    lines.append("peak GPU memory : " + ("n/a (CPU)" if gpu is None else
                                         f"{gpu:.0f} MB fast" + (f", {mem['peak_gpu_mb_naive']:.0f} MB naive"
                                                                 if mem.get("peak_gpu_mb_naive") is not None
                                                                 else "")))
    eq = report.get("equivalence")
    if eq:
        ml, e2e, tol = eq["model_level"], eq["end_to_end"], eq["tolerance"]
        if ml["centroid_px"] is None:
            cen = "n/a (not found)"
        elif ml["same_component"]:
            cen = f"{ml['centroid_px']:.3f} px apart (same component)"
        else:
            cen = "different components chosen (near-tie of confidences): " + ", ".join(
                f"({c[0]:.0f}, {c[1]:.0f})" for c in ml["centroids"])
        gated = (f"prob max {tol['prob_max_abs']:g} mean {tol['prob_mean_abs']:g}, skill top-1"
                 + (f", winner mask {tol['winner_mask_fraction']:.2%} of pixels, centroid {tol['centroid_px']:g} px"
                    if tol.get("winner_mask_fraction") is not None else
                    "; reduced precision: near-tie masks/components reported, not gated"))
        lines += ["", f"equivalence on the same pixel values ({gated}): "
                      + ("OK" if eq["model_level_ok"] else "MISMATCH"),
                  f"  |p_fast - p_naive| max {ml['prob_max_abs_diff']:.2e} mean {ml['prob_mean_abs_diff']:.1e}; "
                  f"winner mask differs on {ml['winner_mask_fraction_differing']:.3%} of pixels; found {ml['found']}",
                  f"  centroid {cen}",
                  f"  skill ranking same: {ml['skill_ranking_same']} (top-1 same: {ml['skill_top1_same']}, "
                  f"max prob diff {ml['skill_prob_max_abs_diff']:.2e}); target_maps vs localize rule: "
                  f"{ml['target_maps_vs_localize_pixels_differing']} pixels differ (float32 sigmoid ties)",
                  f"  preprocessing torch vs Pillow: max {eq['preprocessing']['clipseg_pixels_max_abs_diff']:.3f}, "
                  f"mean {eq['preprocessing']['clipseg_pixels_mean_abs_diff']:.4f} (normalised units)",
                  f"  end to end (own preprocessing): outcome {e2e['outcome']}, centroid "
                  + ("n/a" if e2e["centroid_px"] is None else f"{e2e['centroid_px']:.2f} px")
                  + f", skill top-1 {e2e['skill_top1']}"]
    return "\n".join(lines)


# --------------------------------------------------------------------------- main
def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    width, height = _resolution(args.resolution)
    if args.prompts < 1 or args.skills < 1 or args.iters < 1 or args.warmup < 0:
        raise SystemExit("clip-vla bench: --prompts, --skills and --iters must be >= 1, --warmup >= 0")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    import torch

    from clip_vla.tools.naive import NaivePipeline
    from clip_vla.pipeline import VLAPipeline
    from clip_vla.perception.segmenter import warm_up
    from clip_vla.core.types import Intrinsics

    if args.threads:
        torch.set_num_threads(args.threads)
    from clip_vla.perception.preprocess import tune_cpu_allocator

    allocator = "glibc defaults" if args.no_tune_allocator else (
        "tuned (mmap/trim thresholds raised)" if tune_cpu_allocator() else "defaults (tuning unavailable)")
    started = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[bench {time.perf_counter() - started:6.1f}s] {msg}", file=sys.stderr, flush=True)

    share = CpuShare()
    cfg = _config(args)
    cfg, models, weights, tmp = load_or_build(cfg, args.random_weights, log)
    try:
        vocab = bench_vocabulary(cfg.vocabulary, args.prompts - 1, args.skills)
        cfg = dataclasses.replace(cfg, vocabulary=vocab)
        rss_load = peak_rss_mb()
        cuda = models.device.type == "cuda"
        command = f"pick up the {COMMAND_OBJECT}"
        scenes = [synthetic_scene(width, height, seed) for seed in range(4)]
        messages = [(image_message(rgb, "rgb8"), image_message(depth, "16UC1")) for rgb, depth in scenes]
        convert_rgb, convert_depth, conversion = message_converters()
        intrinsics = Intrinsics(fx=0.8 * width, fy=0.8 * width, cx=(width - 1) / 2.0, cy=(height - 1) / 2.0)

        fast = VLAPipeline(cfg, models=models)
        if tmp is not None:
            mean, std = calibrate_random_decoder(fast.segmenter, scenes[0][0])
            weights += f"; CLIPSeg output layer rescaled (logits mean {mean:.0f}, std {std:.0f} -> 0, 3) " \
                       "so masks do not saturate (cost unchanged)"
        acceleration = fast.segmenter.accelerate(args.accelerate)
        log(f"models ready ({weights}); warming up the fast path")
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        warm_up(fast, width, height, command)
        runner = Runner(fast, messages, intrinsics, convert_rgb, convert_depth, cuda)
        log(f"fast path: {args.iters} iterations")
        fast_report = runner.measure(command, args.iters, args.warmup)
        fast_report["continuous_fps"] = runner.continuous(command, args.iters)
        memory: Dict[str, Any] = {"peak_rss_mb_after_load": rss_load, "peak_rss_mb_fast": peak_rss_mb(),
                                  "rss_mb_after_fast": rss_mb()}
        memory["peak_gpu_mb_fast"] = torch.cuda.max_memory_allocated() / 2 ** 20 if cuda else None

        naive_report = eq = None
        if not args.no_naive:
            naive = NaivePipeline(cfg, models=models)
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            n_iters = args.naive_iters or args.iters
            log(f"naive path: {n_iters} iterations")
            naive_runner = Runner(naive, messages, intrinsics, convert_rgb, convert_depth, cuda)
            naive_report = naive_runner.measure(command, n_iters, max(1, min(args.warmup, 1)))
            naive_report["continuous_fps"] = naive_runner.continuous(command, max(2, n_iters // 4))
            memory["peak_rss_mb_naive"] = peak_rss_mb()
            memory["rss_mb_after_naive"] = rss_mb()
            memory["peak_gpu_mb_naive"] = torch.cuda.max_memory_allocated() / 2 ** 20 if cuda else None
            log("equivalence check")
            eq = equivalence(fast, naive, scenes[0][0], scenes[0][1], intrinsics, command)

        report: Dict[str, Any] = {
            "date": _dt.datetime.now().isoformat(timespec="seconds"),
            "argv": ["clip-vla", "bench"] + list(argv if argv is not None else sys.argv[1:]),
            "machine": machine_info(),
            "models": {"clipseg": models.ids.get("clipseg"), "clip": models.ids.get("clip"), "weights": weights},
            "device": str(models.device), "dtype": str(models.dtype).replace("torch.", ""),
            "resolution": f"{width}x{height}", "prompts": args.prompts, "skills": args.skills,
            "iters": args.iters, "warmup": args.warmup, "acceleration": acceleration,
            "message_conversion": conversion, "command": command, "allocator": allocator,
            "other_processes_cores": share.others_cores(),
            "fast": fast_report, "naive": naive_report, "memory": memory, "equivalence": eq,
        }
        others = report["other_processes_cores"]
        report["busy"] = others is not None and others > 0.1 * max(1, report["machine"]["cpus"])
        if naive_report:
            report["speedup_p50"] = naive_report["end_to_end_ms"]["p50"] / fast_report["end_to_end_ms"]["p50"]
            report["speedup_fps"] = fast_report["continuous_fps"] / naive_report["continuous_fps"]
        if tmp is not None:  # the temporary model directories are gone after this run
            report["models"].update(clipseg="random real-size CLIPSeg rd64-refined",
                                    clip="random real-size CLIP ViT-B/32")
        print(render(report))
        if args.json_out:
            with open(args.json_out, "w", encoding="utf-8") as fh:
                json.dump(report, fh, indent=2)
            log(f"wrote {args.json_out}")
        return 0
    finally:
        if tmp is not None:
            tmp.cleanup()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
