"""`clip-vla record`: simulated tabletop episodes written as a rosbag2 bag, plus their ground truth.

    clip-vla record OUT --episodes N [--storage mcap|sqlite3] [--seed S] [--fps F]

Each episode is a new seeded MuJoCo scene (``clip_vla.sim.TabletopWorld``). It writes, on the
topics a RealSense-style driver and an operator would publish (the node's defaults)::

    /camera/color/image_raw     sensor_msgs/Image       rgb8
    /camera/depth/image_raw     sensor_msgs/Image       32FC1 metres (or 16UC1 mm), registered to colour
    /camera/color/camera_info   sensor_msgs/CameraInfo  K of the simulated camera
    /command                    std_msgs/String         the episode's command, after its first frame
    /tf_static                  tf2_msgs/TFMessage      base_frame -> camera_color_optical_frame

Header stamps equal bag times; episodes follow each other on one clock (``--start-time``),
``--frames`` frames ``1/fps`` apart, then a gap. The bag is deterministic for a seed (the
renderer aside). ``OUT/ground_truth.json`` holds, per command, the true object and target
positions in the base frame, which ``clip-vla replay`` picks up to score its goals.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

from clip_vla.tools import bags

EXIT_OK = 0
EXIT_ERROR = 2
CAMERA_FRAME = "camera_color_optical_frame"


def _depth_image(depth: np.ndarray, encoding: str) -> np.ndarray:
    if encoding == "32FC1":
        return np.ascontiguousarray(depth, dtype=np.float32)
    mm = np.where(np.isfinite(depth) & (depth > 0), np.round(depth * 1000.0), 0.0)
    return np.clip(mm, 0, 65535).astype(np.uint16)  # 0 = no reading


def _target_xyz(task: Any) -> Optional[List[float]]:
    """Where a correct goal points: the destination for place, the object otherwise (none for stop)."""
    if task.skill == "none":
        return None
    xyz = task.destination_xyz if task.skill == "place" else task.object_xyz
    return None if xyz is None else [round(float(v), 4) for v in xyz]


def record(out: str | Path, episodes: int, storage: str = "mcap", seed: int = 0, fps: float = 10.0,
           frames: int = 3, width: int = 640, height: int = 480, distractors: int = 3,
           skills: Sequence[str] = ("pick", "place", "push"), depth_encoding: str = "32FC1",
           base_frame: str = "base_link", start_time: float = 1_700_000_000.0, gap: float = 1.0,
           color_topic: str = bags.COLOR_TOPIC, depth_topic: str = bags.DEPTH_TOPIC,
           camera_info_topic: str = bags.CAMERA_INFO_TOPIC, command_topic: str = bags.COMMAND_TOPIC,
           log: Optional[Callable[[str], None]] = None) -> Dict[str, Any]:
    """Record ``episodes`` simulated episodes into the bag ``out``; returns the ground truth (also
    written to ``out/ground_truth.json``)."""
    if episodes < 1 or frames < 1 or fps <= 0:
        raise ValueError("--episodes and --frames must be >= 1 and --fps > 0")
    if depth_encoding not in ("32FC1", "16UC1"):
        raise ValueError(f"depth encoding must be 32FC1 or 16UC1, got '{depth_encoding}'")
    out = Path(out)
    if out.exists():
        raise bags.BagError(f"{out} exists already: rosbag2 bags are never overwritten")
    from clip_vla.sim.world import TabletopWorld  # MuJoCo: imported only here

    dt_ns = bags.seconds_to_ns(1.0 / fps)
    period_ns = frames * dt_ns + bags.seconds_to_ns(gap)
    start_ns = bags.seconds_to_ns(start_time)
    truth: Dict[str, Any] = {
        "bag": str(out), "storage": storage, "base_frame": base_frame, "camera_frame": CAMERA_FRAME,
        "width": int(width), "height": int(height), "fps": float(fps), "frames_per_episode": int(frames),
        "seed": int(seed), "depth_encoding": depth_encoding,
        "topics": {"color": color_topic, "depth": depth_topic, "camera_info": camera_info_topic,
                   "command": command_topic, "tf_static": bags.TF_STATIC_TOPIC},
        "commands": [],
    }
    world = TabletopWorld(seed=seed, n_distractors=distractors, width=width, height=height, skills=tuple(skills))
    try:
        with bags.BagWriter(out, storage) as bag:
            for episode in range(episodes):
                episode_seed = int(seed) + episode
                task = world.task if episode == 0 else world.reset(seed=episode_seed)
                t0 = start_ns + episode * period_ns
                for k in range(frames):
                    if k:
                        world.gripper.wait(1.0 / fps)  # time passes; nothing moves unless pushed
                    obs = world.observe()
                    stamp = t0 + k * dt_ns
                    if episode == 0 and k == 0:
                        xyz, rpy = world.camera_xyz_rpy()
                        truth.update(camera_to_base=np.round(obs.camera_to_base, 9).tolist(),
                                     camera_to_base_xyz=[float(v) for v in xyz],
                                     camera_to_base_rpy=[float(v) for v in rpy],
                                     intrinsics=[obs.intrinsics.fx, obs.intrinsics.fy, obs.intrinsics.cx,
                                                 obs.intrinsics.cy])
                        bag.write(bags.TF_STATIC_TOPIC, bags.TF_MESSAGE, bags.tf_message(
                            [bags.transform_msg(base_frame, CAMERA_FRAME, obs.camera_to_base, stamp)]), stamp)
                    bag.write(color_topic, bags.IMAGE, bags.image_msg(obs.rgb, "rgb8", stamp, CAMERA_FRAME), stamp)
                    if depth_topic:
                        bag.write(depth_topic, bags.IMAGE, bags.image_msg(
                            _depth_image(obs.depth, depth_encoding), depth_encoding, stamp, CAMERA_FRAME), stamp)
                    if camera_info_topic:
                        bag.write(camera_info_topic, bags.CAMERA_INFO, bags.camera_info_msg(
                            obs.intrinsics, obs.rgb.shape[1], obs.rgb.shape[0], stamp, CAMERA_FRAME), stamp)
                    if k == 0:
                        command_ns = stamp + dt_ns // 2  # after the first frame, before the next
                        bag.write(command_topic, bags.STRING, bags.string_msg(task.command), command_ns)
                        entry = {"index": len(truth["commands"]), "episode": episode, "seed": episode_seed,
                                 "bag_time": bags.ns_to_seconds(command_ns), "bag_time_ns": command_ns,
                                 "frame_stamp": bags.ns_to_seconds(stamp), **task.to_dict(),
                                 "target_xyz": _target_xyz(task)}
                        entry["seed"] = episode_seed
                        truth["commands"].append(entry)
                if log is not None:
                    log(f"episode {episode} (seed {episode_seed}): '{task.command}' ({frames} frames)")
    finally:
        world.close()
    (out / "ground_truth.json").write_text(json.dumps(truth, indent=2) + "\n", encoding="utf-8")
    return truth


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="clip-vla record",
                                description="Record simulated tabletop episodes (MuJoCo) as a rosbag2 bag "
                                            "with their ground truth, for `clip-vla replay`.")
    p.add_argument("out", help="bag directory to create (must not exist)")
    p.add_argument("--episodes", type=int, default=1, help="episodes, one command each (default 1)")
    p.add_argument("--storage", choices=bags.STORAGES, default="mcap", help="rosbag2 storage (default mcap)")
    p.add_argument("--seed", type=int, default=0, help="seed of the first episode; episode i uses seed + i")
    p.add_argument("--fps", type=float, default=10.0, help="camera rate, frames per second (default 10)")
    p.add_argument("--frames", type=int, default=3, help="frames per episode (default 3)")
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--distractors", type=int, default=3, help="distractor objects per scene (default 3)")
    p.add_argument("--skills", default="pick,place,push", help="skills to sample commands from (comma-separated)")
    p.add_argument("--depth-encoding", choices=("32FC1", "16UC1"), default="32FC1")
    p.add_argument("--base-frame", default="base_link", help="parent frame of the /tf_static camera transform")
    p.add_argument("--start-time", type=float, default=1_700_000_000.0, help="bag time of the first frame, seconds")
    p.add_argument("--color-topic", default=bags.COLOR_TOPIC)
    p.add_argument("--depth-topic", default=bags.DEPTH_TOPIC, help="'' for none")
    p.add_argument("--camera-info-topic", default=bags.CAMERA_INFO_TOPIC, help="'' for none")
    p.add_argument("--command-topic", default=bags.COMMAND_TOPIC)
    p.add_argument("--quiet", action="store_true")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    skills = [s.strip() for s in args.skills.split(",") if s.strip()]
    try:
        truth = record(args.out, args.episodes, storage=args.storage, seed=args.seed, fps=args.fps,
                       frames=args.frames, width=args.width, height=args.height, distractors=args.distractors,
                       skills=skills, depth_encoding=args.depth_encoding, base_frame=args.base_frame,
                       start_time=args.start_time, color_topic=args.color_topic, depth_topic=args.depth_topic,
                       camera_info_topic=args.camera_info_topic, command_topic=args.command_topic,
                       log=None if args.quiet else print)
    except ImportError as exc:
        print(f"clip-vla record: error: the simulator needs MuJoCo (pip install 'clip_vla[sim]'): {exc}",
              file=sys.stderr)
        return EXIT_ERROR
    except (bags.BagError, ValueError, FileNotFoundError, RuntimeError) as exc:  # RuntimeError: no GL context
        print(f"clip-vla record: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    if not args.quiet:
        print(f"wrote {args.out} ({args.storage}): {len(truth['commands'])} commands, "
              f"{args.episodes * args.frames} frames; ground truth in {Path(args.out) / 'ground_truth.json'}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
