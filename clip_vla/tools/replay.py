"""`clip-vla replay`: run the pipeline on every command of a rosbag2 bag, report, compare, re-record.

    clip-vla replay BAG [--expect EXPECTED.json] [--out REPORT.json] [--write-bag OUT]
                    [--command TEXT [--command-at SECONDS] | --commands-file FILE]   (camera-only bags)

The bag may come from ``clip-vla record`` or from ``ros2 bag record`` on a robot (sqlite3 or
mcap; topics configurable). Each command gets exactly one result record, with the node's
``on_command`` semantics: the rules and the records are the node's own code
(``clip_vla.core.framesync`` and ``clip_vla.core.records``):

1. the command is checked and parsed first: refusals that need no frame (``empty_command``,
   ``bad_command``, ``unknown_skill``, ``stopped``...) are answered at once;
2. it pairs with the latest colour frame *received* (bag time) at or before the command's bag
   time: none -> ``no_frame``; older than ``--max-frame-age`` -> ``stale_frame``;
3. depth and camera_info pair with that frame by *header stamp* within ``--sync-tolerance``
   (closest wins; one received up to ``framesync.sync_wait`` after the command is a
   candidate, as the node waits that long for late depth). Without a synced camera_info,
   the latest one received before the command is used when it is valid and of the frame's
   size (intrinsics are static) and arrived at most ``--max-camera-info-age`` before the frame,
   as the node does; without any, the config's ``geometry.intrinsics``;
4. extrinsics: when the bag has ``/tf``/``/tf_static``, ``base_frame <- image frame_id`` at the
   image stamp (no transform -> ``bad_input``, like the node with TF); otherwise, or with
   ``--no-tf``, the config's static ``geometry.camera_to_base_*``.

Plans: a command is planned and its first step prepared by the node's own rule
(``clip_vla.core.plan.prepare_plan``), so its status and goal are the node's first answer.
Offline there is no executor and no later frame: every step is grounded on the command's one
frame (``ground_plan``), and each record carries ``plan``: per step its skill, object, status,
goal (``xyz_base``, ``theta``, ``tokens``) and chunk (``chunk_tokens``, decoded ``waypoints``).

``--write-bag`` writes what the node would have published: ``~/goal``, ``~/status`` and
``~/plan`` JSON built by ``clip_vla.core.records`` and ``clip_vla.core.plan``, the functions the
node calls (the plan as grounded on the one frame).

Records are deterministic on CPU (``timings_ms`` aside): replaying a bag twice gives the same
goals, which is what ``--expect`` checks in CI. A previous ``--out`` report is a valid
expectation file; hand-written ones may give only the fields they care about.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from clip_vla.core import framesync
from clip_vla.core import records as node_records
from clip_vla.core.framesync import Refusal
from clip_vla.core.language import DEFAULT_MAX_LENGTH
from clip_vla.core.plan import GroundedStep, Plan, chunk_step, ground_plan, plan_record, prepare_plan
from clip_vla.core.records import echo
from clip_vla.core.stats import percentile_summary
from clip_vla.core.types import ActionGoal, Frame, NoAction, Reason
from clip_vla.tools import bags, replay_commands
from clip_vla.tools.bags import TopicMessage

EXIT_OK = 0
EXIT_REGRESSION = 1
EXIT_ERROR = 2

GOAL_SUFFIX, POSE_SUFFIX, STATUS_SUFFIX, PLAN_SUFFIX = "goal", "goal_pose", "status", "plan"
MODE = "on_command"  # the node mode replay reproduces
# Keys of ActionGoal/NoAction.to_dict() the record carries under its own names (or not at all).
_RESULT_KEYS_DROPPED = ("accepted", "command", "timings_ms", "stamp", "reason")


@dataclass
class ReplayOptions:
    """Topics and pairing rules (defaults: the node's topics and parameters)."""

    color_topic: str = bags.COLOR_TOPIC
    depth_topic: str = bags.DEPTH_TOPIC
    camera_info_topic: str = bags.CAMERA_INFO_TOPIC
    command_topic: str = bags.COMMAND_TOPIC
    max_frame_age: float = 1.0  # seconds between the frame's and the command's bag times
    sync_tolerance: float = 0.05  # seconds between depth/camera_info and colour header stamps
    max_camera_info_age: float = framesync.MAX_CAMERA_INFO_AGE  # seconds; 0: the latest camera_info never expires
    use_tf: bool = True
    depth_registered: bool = False
    max_command_length: int = DEFAULT_MAX_LENGTH  # characters; longer commands answer bad_command
    tf_topics: Tuple[str, ...] = (bags.TF_TOPIC, bags.TF_STATIC_TOPIC)
    commands: Tuple[replay_commands.ScheduledCommand, ...] = ()  # given: used instead of the command topic

    @property
    def image_topics(self) -> List[str]:
        return [t for t in (self.color_topic, self.depth_topic, self.camera_info_topic) if t]


@dataclass
class Pairing:
    """Which messages one command uses (decided from the scan, before any pixel is decoded)."""

    index: int
    command: TopicMessage
    color: Optional[TopicMessage] = None
    depth: Optional[TopicMessage] = None
    info: Optional[TopicMessage] = None
    info_source: str = "none"  # "synced" | "latest" | "none"
    status: Optional[str] = None  # "no_frame" | "stale_frame" decided here; None: run the pipeline
    message: str = ""

    @property
    def frame_age(self) -> Optional[float]:
        return None if self.color is None else (self.command.time_ns - self.color.time_ns) * 1e-9

    def needs(self, options: ReplayOptions) -> List[Tuple[str, int]]:
        if self.status is not None:
            return []
        keys = [(options.color_topic, self.color.ordinal)]
        if self.depth is not None:
            keys.append((options.depth_topic, self.depth.ordinal))
        if self.info is not None:
            keys.append((options.camera_info_topic, self.info.ordinal))
        return keys


@dataclass
class ReplayResult:
    """One command's outcome: the JSON record, the pipeline's result, and what it was paired with."""

    record: Dict[str, Any]
    result: Any  # ActionGoal | NoAction
    pairing: Pairing
    frame_stamp_ns: Optional[int] = None
    frame_id: str = ""
    plan: Optional[Plan] = None
    grounded: Tuple[GroundedStep, ...] = ()  # the plan's steps grounded on the command's frame


@dataclass
class ReplayReport:
    bag: str
    results: List[ReplayResult]
    summary: Dict[str, Any]

    @property
    def records(self) -> List[Dict[str, Any]]:
        return [r.record for r in self.results]

    def to_dict(self) -> Dict[str, Any]:
        return {"bag": self.bag, "records": self.records, "summary": self.summary}


# --------------------------------------------------------------------------- pairing
def pair_commands(index: bags.BagIndex, options: ReplayOptions) -> List[Pairing]:
    """Pair every command of the scanned bag with its colour frame, depth and camera_info (the node's rules)."""
    colors = index.messages.get(options.color_topic, [])
    color_times = [m.time_ns for m in colors]
    depths = index.messages.get(options.depth_topic, [])
    infos = index.messages.get(options.camera_info_topic, [])
    info_times = [m.time_ns for m in infos]
    tol_ns = int(round(options.sync_tolerance * 1e9))
    wait_ns = int(round(framesync.sync_wait(options.sync_tolerance) * 1e9))
    pairings: List[Pairing] = []
    for i, cmd in enumerate(index.messages.get(options.command_topic, [])):
        p = Pairing(i, cmd)
        j = framesync.latest_at_or_before(color_times, cmd.time_ns)
        p.color = None if j is None else colors[j]
        try:
            framesync.check_frame_age(p.frame_age, options.max_frame_age, options.color_topic)
        except Refusal as refusal:
            p.status, p.message = refusal.reason.value, refusal.message
            pairings.append(p)
            continue
        arrived = cmd.time_ns + wait_ns  # what the node would have received while it waited
        p.depth = framesync.closest((m for m in depths if m.time_ns <= arrived), p.color.stamp_ns, tol_ns, _stamp_ns)
        p.info = framesync.closest((m for m in infos if m.time_ns <= arrived), p.color.stamp_ns, tol_ns, _stamp_ns)
        if p.info is not None:
            p.info_source = "synced"
        else:  # static intrinsics: the latest received before the command (size checked later), if not stale
            k = framesync.latest_at_or_before(info_times, cmd.time_ns)
            if k is not None and not framesync.stale_camera_info((p.color.time_ns - infos[k].time_ns) * 1e-9,
                                                                 options.max_camera_info_age):
                p.info, p.info_source = infos[k], "latest"
        pairings.append(p)
    return pairings


def _stamp_ns(message: TopicMessage) -> int:
    return message.stamp_ns


# --------------------------------------------------------------------------- replay
class _Decoded:
    """A converted message (or why it could not be), and how long converting took."""

    __slots__ = ("value", "error", "ms", "frame_id", "stamp_ns", "size")

    def __init__(self, value=None, error: Optional[str] = None, ms: float = 0.0, frame_id: str = "",
                 stamp_ns: int = 0, size: Optional[Tuple[int, int]] = None) -> None:
        self.value, self.error, self.ms = value, error, ms
        self.frame_id, self.stamp_ns, self.size = frame_id, stamp_ns, size


_KINDS = {"color": framesync.COLOUR_IMAGE, "depth": framesync.DEPTH_IMAGE, "info": framesync.CAMERA_INFO}


def _decode(kind: str, msgtype: str, msg: Any) -> _Decoded:
    start = time.perf_counter()
    frame_id = str(msg.header.frame_id)
    stamp = bags.stamp_to_ns(msg.header.stamp)
    size = None
    try:
        if kind == "color":
            value = bags.color_to_rgb(msg, msgtype)
        elif kind == "depth":
            value = bags.depth_to_array(msg)
        else:
            size = (int(msg.width), int(msg.height))
            value = bags.camera_info_to_intrinsics(msg)
        error = None
    except (bags.ConversionError, ValueError) as exc:
        value, error = None, framesync.invalid(_KINDS[kind], exc)
    return _Decoded(value, error, (time.perf_counter() - start) * 1e3, frame_id, stamp, size)


def replay_bag(bag: Union[str, Path], pipeline: Any, options: Optional[ReplayOptions] = None,
               ground_truth: Optional[Mapping[str, Any]] = None,
               on_result: Optional[Callable[[ReplayResult], None]] = None) -> ReplayReport:
    """Replay every command of ``bag`` through ``pipeline`` (a ``VLAPipeline``: ``prepare`` + ``run``).

    Two passes: a scan (times and stamps only), then a read that decodes just the paired
    messages and runs each command as soon as its messages are in, so memory holds a few frames.
    """
    options = options or ReplayOptions()
    index = bags.scan_bag(bag, options.image_topics, [] if options.commands else [options.command_topic],
                          options.tf_topics if options.use_tf else ())
    replay_commands.use_commands(index, options)  # checks the topics; places options.commands
    for topic, allowed in ((options.color_topic, (bags.IMAGE, bags.COMPRESSED_IMAGE)),
                           (options.depth_topic, (bags.IMAGE,)), (options.camera_info_topic, (bags.CAMERA_INFO,))):
        msgtype = index.topics.get(topic) if topic else None
        if msgtype is not None and msgtype not in allowed:
            raise bags.BagError(f"topic {topic} has type {msgtype}; expected {' or '.join(allowed)}")
    pairings = pair_commands(index, options)
    use_tf = options.use_tf and len(index.transforms) > 0
    base_frame = str(pipeline.config.base_frame)
    truth = _truth_lookup(ground_truth)
    pipeline.set_command_limit(options.max_command_length)  # as the node does: one limit, the option's

    # Check and parse every command first (the node answers these refusals before looking at frames).
    prepared: Dict[int, Any] = {}
    plans: Dict[int, Optional[Plan]] = {}
    prepare_ms: Dict[int, float] = {}
    for p in pairings:
        start = time.perf_counter()
        plans[p.index], prepared[p.index] = _prepare(pipeline, p.command.text or "", options.max_command_length)
        prepare_ms[p.index] = (time.perf_counter() - start) * 1e3

    def refused_early(p: Pairing) -> bool:
        return _is_no_action(prepared[p.index]) or p.status is not None

    wanted: Dict[str, set] = defaultdict(set)
    refs: Dict[Tuple[str, int], int] = defaultdict(int)
    for p in pairings:
        if not refused_early(p):
            for key in p.needs(options):
                wanted[key[0]].add(key[1])
                refs[key] += 1
    kinds = {options.color_topic: "color", options.depth_topic: "depth", options.camera_info_topic: "info"}

    results: List[Optional[ReplayResult]] = [None] * len(pairings)
    loaded: Dict[Tuple[str, int], _Decoded] = {}
    cursor = 0

    def run_ready() -> None:
        nonlocal cursor
        while cursor < len(pairings):
            p = pairings[cursor]
            keys = [] if refused_early(p) else p.needs(options)
            if any(k not in loaded for k in keys):
                return
            res = _run_one(p, prepared[p.index], prepare_ms[p.index], {k: loaded[k] for k in keys}, options,
                           pipeline, index.transforms if use_tf else None, base_frame, truth, plans[p.index])
            results[cursor] = res
            if on_result is not None:
                on_result(res)
            for k in keys:
                refs[k] -= 1
                if refs[k] == 0:
                    loaded.pop(k, None)
            cursor += 1

    run_ready()
    if wanted:
        for topic, ordinal, _t, msgtype, msg in bags.iter_messages(index, wanted):
            loaded[(topic, ordinal)] = _decode(kinds[topic], msgtype, msg)
            run_ready()
    run_ready()
    done = [r for r in results if r is not None]
    if len(done) != len(pairings):  # cannot happen unless the bag changed between the passes
        raise bags.BagError(f"{bag}: {len(pairings) - len(done)} commands could not be paired on the second pass")
    summary = summarise([r.record for r in done])
    summary.update({
        "bag": str(bag), "storage": index.storage,
        "topics": {"color": options.color_topic, "depth": options.depth_topic,
                   "camera_info": options.camera_info_topic, "command": options.command_topic},
        "messages": {t: len(index.messages.get(t, [])) for t in options.image_topics + [options.command_topic]},
        "extrinsics": "tf" if use_tf else "config",
        "models": dict(getattr(pipeline, "model_ids", {}) or {}),
        "device": str(getattr(pipeline, "device", "")),
        "notes": list(index.notes),  # topics that yielded fewer messages than the bag states, and why
    })
    return ReplayReport(str(bag), done, summary)


def _prepare(pipeline: Any, text: str, max_command_length: int) -> Tuple[Optional[Plan], Any]:
    """(plan, its first step prepared) as the node makes them, or (None, the NoAction it answers without a frame)."""
    try:
        framesync.check_command_text(text, max_command_length)
        return prepare_plan(pipeline, text)
    except Refusal as refusal:
        return None, framesync.refused(refusal, text)
    except Exception as exc:  # noqa: BLE001 - a tokenizer/model failure on the text, as the node answers it
        return None, NoAction(Reason.MODEL_ERROR, f"{type(exc).__name__}: {exc}", command=echo(text))


def _is_no_action(result: Any) -> bool:
    return getattr(result, "accepted", None) is False


def _run_one(p: Pairing, prepared: Any, prep_ms: float, inputs: Dict[Tuple[str, int], _Decoded],
             options: ReplayOptions, pipeline: Any, transforms: Optional[bags.Transforms], base_frame: str,
             truth: Dict[Tuple[int, str], Dict[str, Any]], plan: Optional[Plan] = None) -> ReplayResult:
    text = p.command.text or ""
    timings: Dict[str, float] = {"prepare": prep_ms}
    color = inputs.get((options.color_topic, p.color.ordinal)) if p.color is not None else None
    depth = inputs.get((options.depth_topic, p.depth.ordinal)) if p.depth is not None else None
    info = inputs.get((options.camera_info_topic, p.info.ordinal)) if p.info is not None else None
    extrinsics = "config"
    info_source = p.info_source
    result = None
    ran_on_frame = False
    grounded: Tuple[GroundedStep, ...] = ()
    if _is_no_action(prepared):
        result = prepared
    elif p.status is not None:
        result = framesync.refused(Refusal(Reason(p.status), p.message), text, prepared)
    else:
        timings["decode"] = sum(d.ms for d in (color, depth, info) if d is not None)
        try:
            frame, info_source = _frame(color, depth, info, p.info_source, options)
            camera_to_base = None
            if transforms is not None and color.frame_id:
                camera_to_base = transforms.lookup(base_frame, color.frame_id, color.stamp_ns)
                if camera_to_base is None:
                    raise Refusal(Reason.BAD_INPUT,
                                  f"no transform '{color.frame_id}' -> '{base_frame}' at the image stamp in the "
                                  "bag's /tf, /tf_static (replay with --no-tf to use the static extrinsics)")
                extrinsics = "tf"
        except Refusal as refusal:
            result = framesync.refused(refusal, text, prepared)
        if result is None:
            start = time.perf_counter()
            try:
                result = pipeline.run(frame, prepared, camera_to_base)
            except Exception as exc:  # noqa: BLE001 - as the node: one bad command never stops the replay
                result = NoAction(Reason.MODEL_ERROR, f"{type(exc).__name__}: {exc}", command=echo(text))
            ran_on_frame = True
            if plan is not None:  # the first step as the node grounds it, the rest on this same frame
                first = chunk_step(pipeline, plan.steps[0], result)
                result = first.result
                grounded = ground_plan(pipeline, frame, plan, camera_to_base, first=first).grounded
            timings["pipeline"] = (time.perf_counter() - start) * 1e3
            for k, v in (getattr(result, "timings_ms", None) or {}).items():
                timings.setdefault(k, float(v))
    timings["latency"] = prep_ms + timings.get("decode", 0.0) + timings.get("pipeline", 0.0)

    accepted = getattr(result, "accepted", False)
    record: Dict[str, Any] = {
        "index": p.index,
        "command": echo(text),
        "status": "accepted" if accepted else result.reason.value,
        "bag_time": bags.ns_to_seconds(p.command.time_ns),
        "frame_stamp": bags.ns_to_seconds(p.color.stamp_ns) if p.color is not None else None,
        "frame_age": None if p.frame_age is None else round(p.frame_age, 6),
        "bag_time_ns": p.command.time_ns,  # exact: float seconds near 1.7e9 keep only ~0.2 us
        "frame_stamp_ns": p.color.stamp_ns if p.color is not None else None,
    }
    if p.status is None and not _is_no_action(prepared):
        record["depth_stamp"] = bags.ns_to_seconds(p.depth.stamp_ns) if p.depth is not None else None
        record["intrinsics_source"] = info_source
        record["extrinsics"] = extrinsics
    details = result.to_dict()
    if not accepted:
        record["message"] = details.get("message", "")
    for key, value in details.items():
        if key not in _RESULT_KEYS_DROPPED and key not in record:
            record[key] = value
    if grounded:
        record["plan"] = [_plan_step(g) for g in grounded]
    gt = truth.get((p.command.time_ns, text)) or truth.get((p.index, text))
    if gt is not None:
        record["truth"] = _score(record, gt)
    record["timings_ms"] = {k: round(float(v), 3) for k, v in timings.items()}
    return ReplayResult(record, result, p, color.stamp_ns if ran_on_frame else None,
                        color.frame_id if color is not None else "", plan, grounded)


def _plan_step(g: GroundedStep) -> Dict[str, Any]:
    """One grounded step in a replay record: what ``--expect`` compares (goal and decoded chunk)."""
    out: Dict[str, Any] = {"index": g.step.index, "skill": g.step.skill, "object": g.step.object,
                           "status": "accepted" if g.accepted else g.reason}
    if g.accepted:
        goal, chunk = g.result, g.chunk.to_dict()  # type: ignore[union-attr]
        out.update({"cmd": goal.cmd, "xyz_base": [float(v) for v in goal.xyz_base], "theta": float(goal.theta),
                    "tokens": list(goal.tokens), "chunk_tokens": chunk["tokens"], "waypoints": chunk["waypoints"]})
    return out


def _frame(color: _Decoded, depth: Optional[_Decoded], info: Optional[_Decoded], info_source: str,
           options: ReplayOptions) -> Tuple[Frame, str]:
    """The pipeline's Frame of the paired messages, and where its intrinsics came from.

    Raises:
        Refusal: ``bad_input`` for an invalid message, or depth/camera_info that does not fit the frame.
    """
    if color.error:
        raise Refusal(Reason.BAD_INPUT, color.error)
    rgb = color.value
    h, w = rgb.shape[:2]
    depth_arr = None
    if depth is not None:
        if depth.error:
            raise Refusal(Reason.BAD_INPUT, depth.error)
        depth_arr = depth.value
        if framesync.check_depth_size((depth_arr.shape[1], depth_arr.shape[0]), (w, h), options.depth_registered):
            depth_arr = bags.resize_depth(depth_arr, w, h)
    intrinsics = None
    if info is not None:
        if info_source == "latest" and (info.error or not framesync.fits(info.size, (w, h))):
            info, info_source = None, "none"  # the node only falls back to a valid one of the frame's size
        elif info.error:
            raise Refusal(Reason.BAD_INPUT, info.error)
        else:
            framesync.check_intrinsics_size(info.size, (w, h))
            intrinsics = info.value
    if intrinsics is None:
        info_source = "config"
    try:
        frame = Frame(rgb=rgb, depth=depth_arr, intrinsics=intrinsics, stamp=color.stamp_ns * 1e-9,
                      frame_id=color.frame_id or "camera_color_optical_frame")
    except ValueError as exc:
        raise Refusal(Reason.BAD_INPUT, str(exc)) from exc
    return frame, info_source


# --------------------------------------------------------------------------- ground truth
def load_ground_truth(path: Union[str, Path]) -> Dict[str, Any]:
    with open(path, "r", encoding="utf-8") as fh:
        return json.load(fh)


def _truth_lookup(gt: Optional[Mapping[str, Any]]) -> Dict[Tuple[int, str], Dict[str, Any]]:
    out: Dict[Tuple[int, str], Dict[str, Any]] = {}
    for entry in (gt or {}).get("commands", []):
        if entry.get("bag_time_ns") is not None:
            out[(int(entry["bag_time_ns"]), str(entry.get("command", "")))] = entry
        elif entry.get("index") is not None:
            out[(int(entry["index"]), str(entry.get("command", "")))] = entry
    return out


def _score(record: Dict[str, Any], gt: Mapping[str, Any]) -> Dict[str, Any]:
    """The record against the simulator's truth: skill right? how far is the goal from the target?"""
    out: Dict[str, Any] = {"skill": gt.get("skill"), "target_xyz": gt.get("target_xyz")}
    if record["status"] == "accepted":
        out["skill_correct"] = record.get("cmd") == gt.get("skill")
        target = gt.get("target_xyz")
        if target is not None and record.get("xyz_base") is not None:
            diff = np.asarray(record["xyz_base"], float) - np.asarray(target, float)
            out["xyz_error"] = round(float(np.linalg.norm(diff)), 4)
            out["xy_error"] = round(float(np.linalg.norm(diff[:2])), 4)
    return out


# --------------------------------------------------------------------------- summary and table
def summarise(records: Sequence[Mapping[str, Any]]) -> Dict[str, Any]:
    """Counts per status and latency percentiles of the commands that reached the pipeline."""
    statuses = Counter(str(r["status"]) for r in records)
    latencies = [float(r["timings_ms"]["latency"]) for r in records if "pipeline" in r.get("timings_ms", {})]
    summary: Dict[str, Any] = {
        "commands": len(records),
        "statuses": dict(sorted(statuses.items())),
        "accepted": statuses.get("accepted", 0),
        "latency_ms": percentile_summary(latencies),
    }
    scored = [r["truth"] for r in records if isinstance(r.get("truth"), dict)]
    if scored:
        errors = [t["xyz_error"] for t in scored if "xyz_error" in t]
        summary["truth"] = {
            "commands": len(scored),
            "accepted": sum(1 for t in scored if "skill_correct" in t),
            "skill_correct": sum(1 for t in scored if t.get("skill_correct")),
            "xyz_error_m": percentile_summary(errors, digits=4),
        }
    return summary


def format_table(records: Sequence[Mapping[str, Any]], width: int = 36) -> str:
    rows = [("#", "command", "status", "cmd", "xyz_base (m)", "tokens", "latency ms")]
    for r in records:
        cmd = str(r.get("command", ""))
        cmd = cmd if len(cmd) <= width else cmd[: width - 3] + "..."
        xyz = r.get("xyz_base")
        lat = r.get("timings_ms", {}).get("latency") if "pipeline" in r.get("timings_ms", {}) else None
        rows.append((str(r.get("index", "")), cmd, str(r.get("status", "")),
                     str(r.get("cmd") or "") if r.get("status") == "accepted" else "",
                     "" if xyz is None else "(" + ", ".join(f"{v:.3f}" for v in xyz) + ")",
                     str(r.get("tokens_text", "")) if r.get("status") == "accepted" else "",
                     "" if lat is None else f"{lat:.1f}"))
        for step in r.get("plan") or [] if len(r.get("plan") or []) > 1 else []:  # a compound plan: one row a step
            xyz = step.get("xyz_base")
            chunk = " ".join("C" if w["gripper"] >= 0.5 else "O" for w in step.get("waypoints") or [])
            rows.append(("", f"  step {step['index']}: {step.get('skill')} {step.get('object') or ''}"[:width],
                         str(step.get("status", "")), str(step.get("cmd") or ""),
                         "" if xyz is None else "(" + ", ".join(f"{v:.3f}" for v in xyz) + ")",
                         f"chunk {chunk}" if chunk else "", ""))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_summary(summary: Mapping[str, Any]) -> str:
    lat = summary.get("latency_ms", {})
    statuses = ", ".join(f"{k} {v}" for k, v in summary.get("statuses", {}).items()) or "none"
    text = f"{summary.get('commands', 0)} commands: {statuses}"
    if lat.get("n"):
        text += f"; latency p50 {lat['p50']:.1f} ms, p95 {lat['p95']:.1f} ms ({lat['n']} inferences)"
    truth = summary.get("truth")
    if truth:
        err = truth["xyz_error_m"]
        text += (f"\nground truth: skill correct {truth['skill_correct']}/{truth['accepted']} accepted"
                 + (f", goal error p50 {err['p50']:.3f} m, p95 {err['p95']:.3f} m" if err.get("n") else ""))
    return text


# --------------------------------------------------------------------------- regression check
@dataclass
class Tolerances:
    xyz: float = 0.01  # metres, Euclidean distance of xyz_base
    theta: float = 0.05  # radians, angular distance
    tokens: int = 1  # bins per dimension (theta wraps); the cmd token must match exactly
    bins: int = 256  # workspace.bins, for theta token wrap-around


def load_expectation(path: Union[str, Path]) -> List[Dict[str, Any]]:
    """A report (``{"records": [...]}``) or a bare list of records."""
    with open(path, "r", encoding="utf-8") as fh:
        data = json.load(fh)
    records = data.get("records") if isinstance(data, dict) else data
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise ValueError(f"{path}: expected a replay report or a list of records")
    return records


def compare(records: Sequence[Mapping[str, Any]], expected: Sequence[Mapping[str, Any]],
            tol: Optional[Tolerances] = None) -> List[str]:
    """Regressions of ``records`` against ``expected``, one line each; empty when all match.

    Expected records match by ``index`` (else by position). Only the fields an expected record
    has are checked: ``command`` (text), ``status``, and for accepted goals ``cmd``, ``plan`` (per step,
    ``_compare_plan``), ``xyz_base``, ``theta`` and ``tokens`` within the tolerances. Commands missing from either
    side are regressions (the bag changed).
    """
    tol = tol or Tolerances()
    by_index = {int(r["index"]): r for r in records}
    use_index = all("index" in e for e in expected)
    seen = set()
    problems: List[str] = []
    for pos, exp in enumerate(expected):
        i = int(exp["index"]) if use_index else pos
        seen.add(i)
        label = f"#{i} '{exp.get('command', '')}'"
        act = by_index.get(i)
        if act is None:
            problems.append(f"{label}: missing from the replay ({len(records)} commands in the bag)")
            continue
        if "command" in exp and exp["command"] != act.get("command"):
            problems.append(f"{label}: command text is now '{act.get('command')}' (the bag changed?)")
            continue
        if "status" in exp and exp["status"] != act.get("status"):
            why = f" ({act.get('message')})" if act.get("message") else ""
            problems.append(f"{label}: status {act.get('status')}{why}, expected {exp['status']}")
            continue
        if act.get("status") != "accepted":
            continue
        if "cmd" in exp and exp["cmd"] != act.get("cmd"):
            problems.append(f"{label}: cmd {act.get('cmd')}, expected {exp['cmd']}")
        if exp.get("xyz_base") is not None:
            a, e = np.asarray(act.get("xyz_base"), float), np.asarray(exp["xyz_base"], float)
            dist = float(np.linalg.norm(a - e))
            if not dist <= tol.xyz:
                problems.append(f"{label}: xyz_base {_fmt(a)} is {dist:.4f} m from expected {_fmt(e)} "
                                f"(tolerance {tol.xyz} m)")
        if exp.get("theta") is not None:
            diff = abs(math.remainder(float(act.get("theta")) - float(exp["theta"]), math.tau))
            if not diff <= tol.theta:
                problems.append(f"{label}: theta {float(act.get('theta')):.4f} is {diff:.4f} rad from expected "
                                f"{float(exp['theta']):.4f} (tolerance {tol.theta} rad)")
        if exp.get("tokens") is not None:
            a_t, e_t = [int(v) for v in act.get("tokens")], [int(v) for v in exp["tokens"]]
            if len(a_t) != len(e_t):
                problems.append(f"{label}: tokens {a_t}, expected {e_t}")
            else:
                worst = 0
                for dim, (x, y) in enumerate(zip(a_t, e_t)):
                    d = abs(x - y)
                    if dim == 4:  # theta wraps
                        d = min(d, tol.bins - d)
                    worst = max(worst, d if dim else (0 if d == 0 else tol.tokens + 1))
                if worst > tol.tokens:
                    problems.append(f"{label}: tokens {' '.join(map(str, a_t))}, expected "
                                    f"{' '.join(map(str, e_t))} (tolerance {tol.tokens} bin, cmd exact)")
        if exp.get("plan") is not None:
            problems += _compare_plan(label, act.get("plan") or [], exp["plan"], tol)
    for i in sorted(set(by_index) - seen):
        problems.append(f"#{i} '{by_index[i].get('command', '')}': not in the expectation (the bag changed?)")
    return problems


def _compare_plan(label: str, actual: Sequence[Mapping[str, Any]], expected: Sequence[Mapping[str, Any]],
                  tol: Tolerances) -> List[str]:
    """Regressions of a command's plan: the steps' skills and statuses exactly, their goals within ``tol.xyz``
    and ``tol.theta``, every chunk waypoint within ``tol.xyz`` (position) and its gripper state exactly."""
    problems: List[str] = []
    if len(actual) != len(expected):
        return [f"{label}: plan has {len(actual)} grounded steps, expected {len(expected)}"]
    for a, e in zip(actual, expected):
        step = f"{label} step {e.get('index')}"
        for key in ("skill", "status", "cmd"):
            if key in e and e[key] != a.get(key):
                problems.append(f"{step}: {key} {a.get(key)}, expected {e[key]}")
        if e.get("xyz_base") is not None and a.get("xyz_base") is not None:
            dist = float(np.linalg.norm(np.subtract(a["xyz_base"], e["xyz_base"])))
            if not dist <= tol.xyz:
                problems.append(f"{step}: goal {dist:.4f} m from expected (tolerance {tol.xyz} m)")
        if e.get("theta") is not None and a.get("theta") is not None:
            diff = abs(math.remainder(float(a["theta"]) - float(e["theta"]), math.tau))
            if not diff <= tol.theta:
                problems.append(f"{step}: theta {diff:.4f} rad from expected (tolerance {tol.theta} rad)")
        wa, we = a.get("waypoints") or [], e.get("waypoints") or []
        if len(wa) != len(we):
            problems.append(f"{step}: chunk of {len(wa)} waypoints, expected {len(we)}")
            continue
        for i, (x, y) in enumerate(zip(wa, we)):
            dist = math.dist((x["x"], x["y"], x["z"]), (y["x"], y["y"], y["z"]))
            if not dist <= tol.xyz or round(x["gripper"]) != round(y["gripper"]):
                problems.append(f"{step}: chunk waypoint {i} ({y.get('label')}) {dist:.4f} m from expected, gripper "
                                f"{round(x['gripper'])} (expected {round(y['gripper'])}; tolerance {tol.xyz} m)")
    return problems


def _fmt(v: np.ndarray) -> str:
    return "(" + ", ".join(f"{x:.4f}" for x in np.asarray(v).reshape(-1)) + ")"


# --------------------------------------------------------------------------- goal bag
def node_records_of(r: ReplayResult, base_frame: str) -> Tuple[Optional[Dict[str, Any]], Dict[str, Any]]:
    """(``~/goal`` record or None, ``~/status`` record) the node would publish for this command.

    Built by ``clip_vla.core.records`` like the node's own: commands are numbered from 1 in bag
    order, goals are in ``base_frame`` (replay has no target_frame), and an answer given
    without running on a frame is stamped with the command's bag time (the node: its clock).
    """
    command_id = int(r.record["index"]) + 1
    text = r.pairing.command.text or ""
    goal = None
    if isinstance(r.result, ActionGoal):
        goal = node_records.goal_record(r.result, stamp=node_records.stamp_from_ns(r.frame_stamp_ns),
                                        frame_id=base_frame, token_frame=base_frame, camera_frame=r.frame_id,
                                        command=text, command_id=command_id)
    stamp_ns = r.frame_stamp_ns if r.frame_stamp_ns is not None else r.pairing.command.time_ns
    status = node_records.status_record(r.result, command_id=command_id, command=text,
                                        stamp=node_records.stamp_from_ns(stamp_ns),
                                        latency_ms=r.record["timings_ms"].get("latency", 0.0), mode=MODE, goal=goal,
                                        target_frame=base_frame,
                                        plan=r.plan.summary() if goal is not None and r.plan is not None else None)
    return goal, status


def plan_record_of(r: ReplayResult, base_frame: str) -> Optional[Dict[str, Any]]:
    """The ``~/plan`` record of an accepted command, its steps as grounded on the command's one frame."""
    if r.plan is None or not r.grounded or not r.grounded[0].accepted or r.frame_stamp_ns is None:
        return None
    command_id = int(r.record["index"]) + 1
    text = r.pairing.command.text or ""
    goals = [node_records.goal_record(g.result, stamp=node_records.stamp_from_ns(r.frame_stamp_ns), frame_id=base_frame,
                                      token_frame=base_frame, camera_frame=r.frame_id, command=text,
                                      command_id=command_id) if g.accepted else None for g in r.grounded]
    return plan_record(command_id, bags.ns_to_seconds(r.frame_stamp_ns), r.plan, r.grounded, goals)


def write_goal_bag(path: Union[str, Path], results: Sequence[ReplayResult], base_frame: str = "base_link",
                   storage: str = "mcap", namespace: str = "/clip_vla") -> Dict[str, int]:
    """The node's outputs as a bag: ``<ns>/goal`` and ``<ns>/goal_pose`` per accepted goal (pose stamp =
    source image stamp, frame = base frame), ``<ns>/plan`` per accepted command and ``<ns>/status`` per
    command, at the commands' bag times."""
    ns = "/" + namespace.strip("/") if namespace.strip("/") else ""
    goal_t, pose_t, status_t = f"{ns}/{GOAL_SUFFIX}", f"{ns}/{POSE_SUFFIX}", f"{ns}/{STATUS_SUFFIX}"
    plan_t = f"{ns}/{PLAN_SUFFIX}"
    with bags.BagWriter(path, storage) as out:
        for r in results:
            t = r.pairing.command.time_ns
            goal, status = node_records_of(r, base_frame)
            if goal is not None:
                out.write(goal_t, bags.STRING, bags.string_msg(json.dumps(goal)), t)
                pose = goal["pose"]
                out.write(pose_t, bags.POSE_STAMPED, bags.pose_stamped_msg(
                    (pose["x"], pose["y"], pose["z"]), pose["theta"], r.frame_stamp_ns, base_frame), t)
            plan = plan_record_of(r, base_frame)
            if plan is not None:
                out.write(plan_t, bags.STRING, bags.string_msg(json.dumps(plan)), t)
            out.write(status_t, bags.STRING, bags.string_msg(json.dumps(status)), t)
        return dict(out.counts)


# --------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    from clip_vla.tools.cli import add_config_flags

    p = argparse.ArgumentParser(
        prog="clip-vla replay",
        description="Replay a rosbag2 bag through the pipeline: one result per command; compare with "
                    "expected goals (exit 1 on regression); write the goal topics to a bag.")
    p.add_argument("bag", help="rosbag2 directory (sqlite3 or mcap), from `clip-vla record` or `ros2 bag record`")
    p.add_argument("--expect", metavar="EXPECTED.json", help="expected records (a previous --out report works)")
    p.add_argument("--out", metavar="REPORT.json", help="write the records and summary as JSON")
    p.add_argument("--write-bag", metavar="OUT", help="write /clip_vla/goal, goal_pose, status to a new bag")
    p.add_argument("--storage", choices=bags.STORAGES, help="storage of --write-bag (default: the input's)")
    p.add_argument("--ground-truth", metavar="FILE",
                   help="score goals against the simulator's truth (default: BAG/ground_truth.json when present)")
    g = p.add_argument_group("topics")
    g.add_argument("--color-topic", default=bags.COLOR_TOPIC, help="sensor_msgs/Image or CompressedImage")
    g.add_argument("--depth-topic", default=bags.DEPTH_TOPIC, help="16UC1 (mm) or 32FC1 (m); '' for none")
    g.add_argument("--camera-info-topic", default=bags.CAMERA_INFO_TOPIC, help="'' for none")
    g.add_argument("--command-topic", default=bags.COMMAND_TOPIC, help="std_msgs/String")
    g.add_argument("--goal-namespace", default="/clip_vla", help="namespace of the --write-bag topics")
    g = p.add_argument_group("pairing (the node's parameters)")
    g.add_argument("--max-frame-age", type=float, default=1.0,
                   help="seconds: a command whose latest frame arrived longer ago answers stale_frame")
    g.add_argument("--sync-tolerance", type=float, default=0.05,
                   help="seconds between depth/camera_info and colour header stamps")
    g.add_argument("--max-camera-info-age", type=float, default=framesync.MAX_CAMERA_INFO_AGE,
                   help="seconds: the latest camera_info stands in for a frame's own only if it arrived at most "
                        "this long before the frame; 0: no bound")
    g.add_argument("--depth-registered", action="store_true",
                   help="depth is registered to colour: resize depth of another resolution instead of bad_input")
    g.add_argument("--no-tf", action="store_true",
                   help="ignore /tf and /tf_static in the bag: use the config's static extrinsics")
    g = p.add_argument_group("regression tolerances (--expect)")
    g.add_argument("--tol-xyz", type=float, default=0.01, help="metres (Euclidean)")
    g.add_argument("--tol-theta", type=float, default=0.05, help="radians (angular distance)")
    g.add_argument("--tol-tokens", type=int, default=1, help="bins per dimension (cmd token exact)")
    p.add_argument("--quiet", action="store_true", help="no table, only regressions and errors")
    replay_commands.add_arguments(p)
    add_config_flags(p)
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    from clip_vla.tools.cli import load_config
    from clip_vla.core.config import ConfigError
    from clip_vla.perception.loading import ModelUnavailableError

    try:
        cfg = load_config(args)
        options = ReplayOptions(
            color_topic=args.color_topic, depth_topic=args.depth_topic, camera_info_topic=args.camera_info_topic,
            command_topic=args.command_topic, max_frame_age=args.max_frame_age, sync_tolerance=args.sync_tolerance,
            max_camera_info_age=args.max_camera_info_age,
            use_tf=not args.no_tf, depth_registered=args.depth_registered,
            commands=replay_commands.from_arguments(args))
        expected = load_expectation(args.expect) if args.expect else None
        gt_path = args.ground_truth or (Path(args.bag) / "ground_truth.json")
        ground_truth = load_ground_truth(gt_path) if Path(gt_path).is_file() else None
        if args.ground_truth and ground_truth is None:
            raise FileNotFoundError(f"ground truth not found: {args.ground_truth}")
        if args.write_bag and Path(args.write_bag).exists():
            raise bags.BagError(f"{args.write_bag} exists already: rosbag2 bags are never overwritten")
        replay_commands.check_topics(bags.bag_topics(args.bag), options)  # fail on a bad bag before loading models
        from clip_vla.pipeline import VLAPipeline

        pipeline = VLAPipeline(cfg)
        report = replay_bag(args.bag, pipeline, options, ground_truth=ground_truth)
    except (bags.BagError, ConfigError, ModelUnavailableError, ValueError, FileNotFoundError) as exc:
        print(f"clip-vla replay: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    for note in report.summary.get("notes", []):
        print(f"clip-vla replay: warning: {note}", file=sys.stderr)
    if not args.quiet:
        print(format_table(report.records))
        print(format_summary(report.summary))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report.to_dict(), indent=2) + "\n", encoding="utf-8")
    if args.write_bag:
        storage = args.storage or report.summary.get("storage") or "mcap"
        counts = write_goal_bag(args.write_bag, report.results, cfg.base_frame, storage, args.goal_namespace)
        if not args.quiet:
            print(f"wrote {args.write_bag} ({storage}): " + ", ".join(f"{t} {n}" for t, n in sorted(counts.items())))
    if expected is not None:
        problems = compare(report.records, expected,
                           Tolerances(args.tol_xyz, args.tol_theta, args.tol_tokens, cfg.workspace.bins))
        for line in problems:
            print(f"REGRESSION {line}")
        if problems:
            print(f"{len(problems)} regression(s) against {args.expect}", file=sys.stderr)
            return EXIT_REGRESSION
        if not args.quiet:
            print(f"no regression against {args.expect} ({len(expected)} expected records)")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
