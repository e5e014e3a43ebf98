"""`clip-vla soak`: load a running vla_node like a camera and an operator would, then report.

Publishes colour (rgb8) + registered depth (16UC1) + camera_info at ``--fps`` and a command every
``--command-period`` seconds for ``--minutes``, then reports:

- commands sent / answered / answered exactly once (none missing, none twice);
- command -> status latency p50 / p95 / max (measured here, over DDS) and the node's own
  inference latency from /diagnostics;
- frames sent / received by the node / lost in transport / processed;
- the node's RSS after the warm-up and at the end, and its growth (target: < 5 %).

It starts the node itself (``--tiny`` for generated tiny models, or ``--config/--clipseg/--clip``)
or talks to one already running (``--connect``, matching ``--namespace`` and ROS_DOMAIN_ID)::

    clip-vla soak --minutes 1 --fps 30 --tiny
    clip-vla soak --minutes 10 --fps 30 --connect --namespace /robot

Exit status: 0 when every command was answered exactly once and RSS grew < 5 %, else 1.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from collections import deque
from pathlib import Path
from typing import Any, Callable, Deque, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from clip_vla.core.stats import percentile
from clip_vla.tools.cli import add_config_flags, config_overrides

DEFAULT_COMMANDS = (
    "pick up the red cup",
    "push the blue cup to the left",
    "point at the bowl",
    "pick up the banana",
)
RSS_GROWTH_LIMIT = 0.05


def _round(value: Optional[float]) -> Optional[float]:
    """A latency for the report, 0.1 ms; None when there was none."""
    return None if value is None else round(value, 1)


def _frames(width: int, height: int, count: int = 4) -> List[Tuple[np.ndarray, np.ndarray]]:
    """A few distinct synthetic tabletop frames (an object moving across), reused cyclically."""
    out = []
    yy, xx = np.mgrid[0:height, 0:width]
    for i in range(count):
        rgb = np.full((height, width, 3), 115 + 5 * i, np.uint8)
        cx, cy = int(width * (0.35 + 0.1 * i)), height // 2
        r = max(2, min(width, height) // 10)
        blob = (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
        rgb[blob] = (200, 30, 30)
        depth = np.full((height, width), 800, np.uint16)  # millimetres: the table 0.8 m away
        depth[blob] = 760
        depth[:2] = 0  # a few invalid readings, as real sensors have
        out.append((rgb, depth))
    return out


def tiny_setup(workdir: Optional[str] = None) -> Dict[str, Any]:
    """Generated tiny models + an open vocabulary: every command is accepted (fast, deterministic)."""
    import yaml

    from clip_vla.core.config import default_vocabulary_path
    from clip_vla.testing.model_factory import build_model_pair
    from clip_vla.testing.harness import tiny_model_overrides

    root = Path(workdir or tempfile.mkdtemp(prefix="clip_vla_soak_"))
    models = build_model_pair(root / "models", size="tiny", seed=0)
    vocab = yaml.safe_load(Path(default_vocabulary_path()).read_text(encoding="utf-8"))
    vocab["distractors"] = []
    vocab_path = root / "vocabulary.yaml"
    vocab_path.write_text(yaml.safe_dump(vocab), encoding="utf-8")
    return tiny_model_overrides(models, str(vocab_path), diagnostics_period=1.0)


def run_soak(minutes: float = 1.0, fps: float = 30.0, command_period: float = 1.0,
             width: int = 640, height: int = 480, namespace: str = "/soak",
             domain_id: Optional[int] = None, start_node: bool = True,
             overrides: Optional[Mapping[str, Any]] = None, params_file: Optional[str] = None,
             commands: Sequence[str] = DEFAULT_COMMANDS, warmup_s: float = 10.0, drain_s: float = 10.0,
             large_data: bool = True, ready_timeout: float = 180.0,
             log: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True)) -> Dict[str, Any]:
    """Run the load; returns the report (a JSON-serialisable dict). See the module docstring."""
    from clip_vla.testing.harness import Client, NodeProcess

    duration = max(1.0, float(minutes) * 60.0)
    warmup_s = min(warmup_s, duration / 3.0)
    proc = None
    if start_node:
        proc = NodeProcess(overrides or {}, namespace=namespace, domain_id=domain_id, params_file=params_file,
                           large_data=large_data).start()
        log(f"soak: started vla_node pid {proc.pid} in {namespace or '/'}")
    client = Client(namespace, domain_id=domain_id, camera_reliability="reliable", large_data=large_data)
    report: Dict[str, Any] = {"minutes": minutes, "fps_target": fps, "command_period_s": command_period,
                              "size": [width, height], "namespace": namespace, "started_node": start_node}
    try:
        try:
            client.wait_ready(ready_timeout)
        except TimeoutError as exc:
            detail = proc.output()[-3000:] if proc is not None else ""
            raise RuntimeError(f"vla_node at {namespace or '/'} did not become ready: {exc}\n{detail}") from exc
        ready = client.diagnostics[-1]
        report["models"] = {"clipseg": ready.get("model clipseg"), "clip": ready.get("model clip")}
        report["device"] = ready.get("device")
        report["node_pid"] = int(ready.get("pid", "0") or 0)
        log(f"soak: node ready ({report['models']}, {report['device']}); {duration:.0f} s at {fps} fps")

        frames = _frames(width, height)
        from clip_vla.core.types import Intrinsics

        f = width * 500.0 / 640.0
        intrinsics = Intrinsics(f, f, (width - 1) / 2.0, (height - 1) / 2.0)
        images = [(client.make_image(rgb, "rgb8", client.now()), client.make_image(d, "16UC1", client.now()))
                  for rgb, d in frames]
        info = client.make_camera_info(intrinsics, width, height, client.now())
        diag_start = dict(client.diagnostics[-1])

        pending: Deque[Tuple[str, float]] = deque()
        latencies: List[float] = []
        node_latencies: List[float] = []
        statuses: Dict[str, int] = {}
        unexpected = 0
        seen = 0
        sent = frames_sent = 0
        start = time.monotonic()
        next_frame, next_command = start, start + min(1.0, command_period)
        end = start + duration
        last_log = start

        def collect() -> None:
            nonlocal seen, unexpected
            with client._cond:  # noqa: SLF001 - the harness's own lock
                new = list(zip(client.statuses[seen:], client.status_times[seen:]))
            seen += len(new)
            for status, t in new:
                statuses[status["status"]] = statuses.get(status["status"], 0) + 1
                match = next((i for i, (text, _) in enumerate(pending) if text == status["command"]), None)
                if match is None:
                    unexpected += 1
                    continue
                _, t_sent = pending[match]
                del pending[match]
                latencies.append((t - t_sent) * 1e3)
                node_latencies.append(float(status.get("latency_ms", math.nan)))

        while True:
            now = time.monotonic()
            if now >= end and (not pending or now >= end + drain_s):
                break
            if now >= next_frame:
                image, depth = images[frames_sent % len(images)]
                stamp = client.now()
                image.header.stamp = depth.header.stamp = info.header.stamp = stamp
                client.pub_depth.publish(depth)
                client.pub_info.publish(info)
                client.pub_image.publish(image)
                frames_sent += 1
                next_frame += 1.0 / fps
                if next_frame < now - 1.0:  # fell far behind: do not burst to catch up
                    next_frame = now
            if now >= next_command and now < end:
                text = commands[sent % len(commands)]
                pending.append((text, time.monotonic()))
                client.pub_command.publish(client._string_cls(data=text))  # noqa: SLF001
                sent += 1
                next_command += command_period
            collect()
            if now - last_log >= 10.0:
                last_log = now
                d = client.diagnostics[-1] if client.diagnostics else {}
                log(f"soak: t={now - start:5.0f}s sent {sent} answered {sum(statuses.values())} "
                    f"frames {frames_sent} rss {d.get('rss mb', '?')} MB")
            time.sleep(max(0.0, min(next_frame, next_command if now < end else next_frame) - time.monotonic()))
        elapsed = time.monotonic() - start
        # a diagnostics message published after the last frame had time to arrive
        settled = time.monotonic() + 0.3
        try:
            client.wait_for(lambda: client.diagnostics and client.diagnostics[-1].get("_t", 0) > settled,
                            timeout=10.0)
        except TimeoutError:
            pass
        collect()
        diag_end = dict(client.diagnostics[-1])

        rss = [(d["_t"] - start, float(d["rss mb"])) for d in client.diagnostics
               if "_t" in d and d["_t"] >= start and d.get("rss mb") not in (None, "nan")]
        after_warmup = [v for t, v in rss if t >= warmup_s]
        baseline = after_warmup[0] if after_warmup else (rss[0][1] if rss else math.nan)
        final = rss[-1][1] if rss else math.nan
        answered = sum(statuses.values())

        def delta(key: str) -> int:
            return int(diag_end.get(key, 0)) - int(diag_start.get(key, 0))

        frames_received = delta("frames received")
        report.update({
            "elapsed_s": round(elapsed, 1),
            "commands_sent": sent,
            "commands_answered": answered,
            "commands_unanswered": len(pending),
            "answers_unexpected": unexpected,
            "every_command_answered_once": len(pending) == 0 and unexpected == 0 and answered == sent,
            "statuses": statuses,
            "latency_ms": {"p50": _round(percentile(latencies, 50)), "p95": _round(percentile(latencies, 95)),
                           "max": _round(max(latencies) if latencies else None)},
            "node_answer_latency_ms": {"p50": _round(percentile(node_latencies, 50)),
                                       "p95": _round(percentile(node_latencies, 95))},
            "node_inference_ms": {"p50": diag_end.get("inference latency p50 ms"),
                                  "p95": diag_end.get("inference latency p95 ms"),
                                  "max": diag_end.get("inference latency max ms")},
            "frames_sent": frames_sent,
            "fps_achieved": round(frames_sent / max(elapsed, 1e-9), 1),
            "frames_received_by_node": frames_received,
            "frames_dropped_in_transport": max(0, frames_sent - frames_received),
            "frames_dropped_by_node": delta("frames dropped"),
            "frames_bad": delta("frames bad"),
            "frames_processed": delta("frames processed"),
            "rss_mb": {"after_warmup": baseline, "final": final, "max": max((v for _, v in rss), default=math.nan)},
            "rss_growth_pct": round(100.0 * (final - baseline) / baseline, 2) if baseline and baseline == baseline
            else math.nan,
            "warmup_s": warmup_s,
        })
        report["passed"] = bool(report["every_command_answered_once"]) and (
            report["rss_growth_pct"] == report["rss_growth_pct"] and report["rss_growth_pct"] < 100 * RSS_GROWTH_LIMIT)
    finally:
        client.close()
        if proc is not None:
            rc = proc.stop()
            report["node_exit_code"] = rc
            report["node_stop_s"] = None if proc.stop_seconds is None else round(proc.stop_seconds, 2)
            report["node_traceback"] = "Traceback" in proc.output()
            proc.close()
    return report


def format_report(r: Mapping[str, Any]) -> str:
    lat, inf, rss = r.get("latency_ms", {}), r.get("node_inference_ms", {}), r.get("rss_mb", {})
    lines = [
        f"soak {r.get('elapsed_s')} s, {r['size'][0]}x{r['size'][1]} @ {r.get('fps_achieved')} fps "
        f"(target {r['fps_target']}), models {r.get('models')}, device {r.get('device')}",
        f"commands: sent {r.get('commands_sent')}, answered {r.get('commands_answered')}, unanswered "
        f"{r.get('commands_unanswered')}, unexpected answers {r.get('answers_unexpected')} -> "
        f"{'every command answered exactly once' if r.get('every_command_answered_once') else 'NOT exactly once'}",
        f"statuses: {json.dumps(r.get('statuses', {}), sort_keys=True)}",
        f"command->status latency ms: p50 {lat.get('p50')}  p95 {lat.get('p95')}  max {lat.get('max')}",
        f"node inference ms: p50 {inf.get('p50')}  p95 {inf.get('p95')}  max {inf.get('max')}",
        f"frames: sent {r.get('frames_sent')}, received by node {r.get('frames_received_by_node')}, "
        f"dropped in transport {r.get('frames_dropped_in_transport')}, dropped by node "
        f"{r.get('frames_dropped_by_node')}, processed {r.get('frames_processed')}, bad {r.get('frames_bad')}",
        f"RSS MB: after warm-up {rss.get('after_warmup')}, final {rss.get('final')}, max {rss.get('max')} -> "
        f"growth {r.get('rss_growth_pct')} % (limit {100 * RSS_GROWTH_LIMIT:.0f} %)",
    ]
    if "node_exit_code" in r:
        lines.append(f"node stop: exit {r['node_exit_code']} in {r.get('node_stop_s')} s, "
                     f"traceback: {r.get('node_traceback')}")
    lines.append("PASS" if r.get("passed") else "FAIL")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="clip-vla soak", description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=1.0)
    p.add_argument("--fps", type=float, default=30.0)
    p.add_argument("--command-period", type=float, default=1.0, help="seconds between commands")
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--namespace", default="/soak")
    p.add_argument("--domain-id", type=int, default=None, help="ROS_DOMAIN_ID (default: the environment's)")
    p.add_argument("--connect", action="store_true", help="talk to a running node instead of starting one")
    p.add_argument("--tiny", action="store_true", help="start the node on generated tiny models")
    add_config_flags(p)  # --config and the model/device/vocabulary flags, for the node it starts
    p.add_argument("-p", "--param", action="append", default=[], metavar="NAME:=VALUE",
                   help="extra parameter for the node it starts (repeatable)")
    p.add_argument("--command", action="append", dest="commands", help="command text (repeatable; cycled)")
    p.add_argument("--warmup", type=float, default=10.0, help="seconds before the RSS baseline")
    p.add_argument("--no-large-data", action="store_true",
                   help="do not set FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA for the node and this peer")
    p.add_argument("--json", help="also write the report here")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(list(argv) if argv is not None else None)
    overrides: Dict[str, Any] = {}
    if not args.connect:
        if args.tiny:
            overrides.update(tiny_setup())
        overrides.update(config_overrides(args))
        for item in args.param:
            name, sep, value = item.partition(":=")
            if not sep:
                print(f"clip-vla soak: --param expects NAME:=VALUE, got '{item}'", file=sys.stderr)
                return 2
            import yaml

            overrides[name] = yaml.safe_load(value)
    domain = args.domain_id
    if domain is None and os.environ.get("ROS_DOMAIN_ID", "").isdigit():
        domain = int(os.environ["ROS_DOMAIN_ID"])
    try:
        report = run_soak(minutes=args.minutes, fps=args.fps, command_period=args.command_period,
                          width=args.width, height=args.height, namespace=args.namespace, domain_id=domain,
                          start_node=not args.connect, overrides=overrides, params_file=args.config,
                          commands=tuple(args.commands or DEFAULT_COMMANDS), warmup_s=args.warmup,
                          large_data=not args.no_large_data)
    except (RuntimeError, TimeoutError) as exc:
        print(f"clip-vla soak: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    print(format_report(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2), encoding="utf-8")
    return 0 if report.get("passed") else 1


if __name__ == "__main__":
    sys.exit(main())
