"""How the node reports its health: counters, ``/diagnostics`` and rate-limited log lines.

``Stats`` is written by the callbacks and the worker under the node's lock; ``diagnostic_status``
turns a snapshot of it into the one ``DiagnosticStatus`` the node publishes every
``diagnostics_period`` (the tests and ``clip-vla soak`` read its values by key).
"""
from __future__ import annotations

import json
import os
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Deque, Dict, Optional

from diagnostic_msgs.msg import DiagnosticStatus, KeyValue

from clip_vla.core.stats import percentile


@dataclass
class Stats:
    """What the node has seen and answered since it started."""

    frames_received: int = 0
    frames_bad: int = 0
    frames_processed: int = 0
    frames_dropped: int = 0
    depth_received: int = 0
    depth_bad: int = 0
    camera_info_received: int = 0
    camera_info_bad: int = 0
    commands_received: int = 0
    commands_answered: int = 0
    commands_accepted: int = 0
    queue_full: int = 0
    goals_published: int = 0
    inference_ms: Deque[float] = field(default_factory=lambda: deque(maxlen=200))
    answer_ms: Deque[float] = field(default_factory=lambda: deque(maxlen=200))
    statuses: Dict[str, int] = field(default_factory=dict)

    def answered(self, status: str, latency_ms: float) -> None:
        """Count one answer on ``~/status``."""
        self.commands_answered += 1
        self.commands_accepted += status == "accepted"
        self.answer_ms.append(latency_ms)
        self.statuses[status] = self.statuses.get(status, 0) + 1


@dataclass(frozen=True)
class FrameHealth:
    """The colour stream as the diagnostics see it."""

    last_error: str  # "" when no colour message was invalid
    error_is_latest: bool  # the newest colour message was the invalid one
    age: Optional[float]  # seconds since the latest valid frame arrived (None: none yet)


class Throttle:
    """Log a message at most once per ``period`` seconds per key (a bad stream must not flood the log)."""

    def __init__(self, logger: Any, period: float = 5.0) -> None:
        self._logger = logger
        self._period = period
        self._last: Dict[str, float] = {}

    def __call__(self, key: str, level: str, message: str) -> None:
        now = time.monotonic()
        if now - self._last.get(key, -1e9) >= self._period:
            self._last[key] = now
            getattr(self._logger, level)(message)


def rss_mb() -> float:
    """Resident memory of this process in MB (NaN where /proc is not available)."""
    try:
        with open("/proc/self/statm", "r", encoding="ascii") as fh:
            pages = int(fh.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 1e6
    except (OSError, ValueError, IndexError):
        return float("nan")


def _ms(value: Optional[float]) -> float:
    """A latency for display: rounded, NaN when there is none yet."""
    return float("nan") if value is None else round(value, 2)


def diagnostic_status(name: str, state: str, mode: str, load_error: Optional[str], stats: Stats, queued: int,
                      job_id: Optional[int], frame: FrameHealth, max_frame_age: float,
                      backends: Dict[str, Any]) -> DiagnosticStatus:
    """The node's ``DiagnosticStatus``: ERROR when the models failed to load, WARN when not serving.

    ``backends``: the model ids, device, image conversion and TF in use (shown as they are).
    """
    inference = list(stats.inference_ms)
    values: Dict[str, Any] = {
        "state": state,
        "mode": mode,
        "frames received": stats.frames_received,
        "frames bad": stats.frames_bad,
        "frames processed": stats.frames_processed,
        "frames dropped": stats.frames_dropped,
        "depth received": stats.depth_received,
        "camera_info received": stats.camera_info_received,
        "commands received": stats.commands_received,
        "commands answered": stats.commands_answered,
        "commands accepted": stats.commands_accepted,
        "commands queued": queued,
        "queue full": stats.queue_full,
        "goals published": stats.goals_published,
        "continuous job": "none" if job_id is None else str(job_id),
        "inference latency last ms": _ms(inference[-1] if inference else None),
        "inference latency p50 ms": _ms(percentile(inference, 50)),
        "inference latency p95 ms": _ms(percentile(inference, 95)),
        "inference latency max ms": _ms(max(inference) if inference else None),
        "statuses": json.dumps(stats.statuses, sort_keys=True),
        "last frame error": frame.last_error,
        "last frame age s": float("nan") if frame.age is None else round(frame.age, 3),
    }
    values.update(backends)
    values.update({"pid": os.getpid(), "rss mb": round(rss_mb(), 1)})
    st = DiagnosticStatus()
    st.name = name
    st.hardware_id = str(backends.get("device", ""))
    if load_error:
        st.level, st.message = DiagnosticStatus.ERROR, f"model load failed: {load_error}"[:500]
    elif state != "active":
        st.level, st.message = DiagnosticStatus.WARN, f"node is {state}"
    elif frame.error_is_latest:
        st.level, st.message = DiagnosticStatus.WARN, "latest colour frame is invalid"
    elif frame.age is None or frame.age > max(2.0, max_frame_age):
        st.level, st.message = DiagnosticStatus.WARN, "no recent colour frame"
    else:
        st.level, st.message = DiagnosticStatus.OK, "active"
    st.values = [KeyValue(key=k, value=str(v)) for k, v in values.items()]
    return st
