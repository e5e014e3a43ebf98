"""The camera side of the node: the latest colour frame, recent depth and camera_info, and their checks.

Frames are never queued: each colour message replaces the one slot (a continuous job that had
not used the old one counts it dropped). Depth and camera_info keep the last few messages, so
the worker can pair them with the frame by header stamp (``framesync.closest``), waiting a
little for a driver that publishes depth a few milliseconds after colour. Messages are
validated when they arrive (cheap header checks) and converted only when a command uses them.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Deque, Optional, Tuple


from clip_vla.core import framesync
from clip_vla.core.framesync import Refusal
from clip_vla.core.types import Frame, Intrinsics, Reason
from clip_vla.ros import conversions as conv
from clip_vla.ros.vla_node.diagnostics import FrameHealth, Stats
from clip_vla.ros.vla_node.settings import NodeSettings

BUFFERED = 10  # depth and camera_info messages kept for pairing


def _size(msg: Any) -> Tuple[int, int]:
    return int(msg.width), int(msg.height)


@dataclass
class FrameSlot:
    """The latest valid colour message; ``used`` once a command or job ran on it."""

    msg: Any
    stamp: float  # header stamp, seconds
    received: float  # time.monotonic()
    version: int
    used: bool = False

    @property
    def size(self) -> Tuple[int, int]:
        return _size(self.msg)


@dataclass(frozen=True)
class Stamped:
    """A depth or camera_info message as received: the message (or converted value) or why it is invalid."""

    stamp: float
    received: float
    msg: Any = None  # the depth Image when valid
    value: Optional[Intrinsics] = None  # the camera_info's intrinsics when valid
    error: Optional[str] = None
    size: Tuple[int, int] = (0, 0)  # (width, height)


class CameraInputs:
    """Filled by the camera subscriptions, read by the worker; every access holds ``cond``."""

    def __init__(self, cond: threading.Condition, stats: Stats) -> None:
        self._cond = cond
        self._stats = stats
        self._frame: Optional[FrameSlot] = None
        self._frame_error: Optional[Tuple[str, float]] = None  # (message, time.monotonic())
        self._depths: Deque[Stamped] = deque(maxlen=BUFFERED)
        self._infos: Deque[Stamped] = deque(maxlen=BUFFERED)
        self._version = 0

    # ---- subscriptions
    def on_image(self, msg: Any, max_pixels: int, job_running: bool) -> Optional[str]:
        """Take a colour message; returns why it was dropped as invalid (None when kept)."""
        now = time.monotonic()
        try:
            conv.validate_image(msg, conv.COLOR_ENCODINGS, max_pixels)
        except conv.ConversionError as exc:
            error = framesync.invalid(framesync.COLOUR_IMAGE, exc)
            with self._cond:
                self._stats.frames_received += 1
                self._stats.frames_bad += 1
                self._frame_error = (error, now)
            return error
        with self._cond:
            self._stats.frames_received += 1
            old = self._frame
            if old is not None and not old.used and job_running:
                self._stats.frames_dropped += 1  # continuous mode could not keep up: latest wins
            self._version += 1
            self._frame = FrameSlot(msg, conv.stamp_to_seconds(msg.header.stamp), now, self._version)
            self._cond.notify_all()
        return None

    def on_depth(self, msg: Any, max_pixels: int) -> Optional[str]:
        """Keep a depth message for pairing; returns why it is invalid (kept too: it refuses its frame)."""
        error = None
        try:
            conv.validate_image(msg, conv.DEPTH_ENCODINGS, max_pixels)
        except conv.ConversionError as exc:
            error = framesync.invalid(framesync.DEPTH_IMAGE, exc)
        with self._cond:
            self._stats.depth_received += 1
            self._stats.depth_bad += error is not None
            self._depths.append(Stamped(conv.stamp_to_seconds(msg.header.stamp), time.monotonic(),
                                        msg=None if error else msg, error=error, size=_size(msg)))
            self._cond.notify_all()
        return error

    def on_camera_info(self, msg: Any) -> Optional[str]:
        """Keep a camera_info message for pairing; returns why it is invalid."""
        value, error = None, None
        try:
            value = conv.camera_info_to_intrinsics(msg)
        except (conv.ConversionError, ValueError) as exc:
            error = framesync.invalid(framesync.CAMERA_INFO, exc)
        with self._cond:
            self._stats.camera_info_received += 1
            self._stats.camera_info_bad += error is not None
            self._infos.append(Stamped(conv.stamp_to_seconds(msg.header.stamp), time.monotonic(), value=value,
                                       error=error, size=_size(msg)))
            self._cond.notify_all()
        return error

    def clear(self) -> None:
        """Forget every message (the node is pausing)."""
        with self._cond:
            self._frame = None
            self._frame_error = None
            self._depths.clear()
            self._infos.clear()

    # ---- the worker
    def version(self) -> Optional[int]:
        """The latest frame's number (None before the first), to tell a job when a newer frame is in."""
        with self._cond:
            return None if self._frame is None else self._frame.version

    def latest_stamp(self) -> Optional[float]:
        """The latest frame's header stamp (s, None before the first): a plan's next step waits for a newer one."""
        with self._cond:
            return None if self._frame is None else self._frame.stamp

    def select(self, settings: NodeSettings, topic: str) -> FrameSlot:
        """The frame a command runs on: the latest valid one.

        Raises:
            Refusal: no frame yet, the newest colour message was invalid, or the frame is stale.
        """
        with self._cond:
            slot, error = self._frame, self._frame_error
        newer_error = error is not None and (slot is None or error[1] >= slot.received)
        age = None if slot is None else time.monotonic() - slot.received
        framesync.check_frame_age(age, settings.max_frame_age, topic, error[0] if newer_error else None)
        return slot

    def match(self, slot: FrameSlot, settings: NodeSettings,
              stopping: Callable[[], bool]) -> Tuple[Optional[Stamped], Optional[Stamped]]:
        """Depth and camera_info within ``sync_tolerance`` of the frame's stamp (closest wins).

        When a stream is live but its message for this frame has not arrived yet, waits for it up
        to ``framesync.sync_wait(sync_tolerance)``. Without a synced camera_info, the latest
        valid one of the frame's size is used (intrinsics are static), unless it is older than
        ``max_camera_info_age`` (``framesync.stale_camera_info``).
        """
        tol = settings.sync_tolerance
        deadline = time.monotonic() + framesync.sync_wait(tol)
        live_window = max(1.0, 2.0 * settings.max_frame_age)

        def stamp_of(rec: Stamped) -> float:
            return rec.stamp

        with self._cond:
            while True:
                depth = framesync.closest(self._depths, slot.stamp, tol, stamp_of)
                # camera_info of this image size first (a resized stream may share stamps)
                sized = [r for r in self._infos if framesync.fits(r.size, slot.size)]
                info = framesync.closest(sized, slot.stamp, tol, stamp_of)
                now = time.monotonic()
                missing = [q for q, m in ((self._depths, depth), (self._infos, info))
                           if m is None and q and now - q[-1].received < live_window
                           and q[-1].stamp < slot.stamp + tol]
                if not missing or now >= deadline or stopping():
                    break
                self._cond.wait(deadline - now)
            if info is None:
                info = self._latest_info(slot)
                if info is not None and framesync.stale_camera_info(slot.received - info.received,
                                                                    settings.max_camera_info_age):
                    info = None
        return depth, info

    def _latest_info(self, slot: FrameSlot) -> Optional[Stamped]:
        """The latest valid camera_info of ``slot``'s size (call with ``cond`` held)."""
        return next((r for r in reversed(self._infos) if r.error is None and r.size == slot.size), None)

    def frame(self, slot: FrameSlot, depth: Optional[Stamped], info: Optional[Stamped],
              settings: NodeSettings) -> Frame:
        """The pipeline's Frame of a colour message and its paired depth and camera_info.

        Raises:
            Refusal: invalid depth/camera_info, or of a size that does not fit the frame.
            conv.ConversionError, ValueError: the colour or depth data cannot be converted.
        """
        rgb = conv.image_to_rgb(slot.msg, settings.max_image_pixels)
        h, w = rgb.shape[:2]
        depth_m = None
        if depth is not None:
            if depth.error:
                raise Refusal(Reason.BAD_INPUT, depth.error)
            depth_m = conv.depth_to_array(depth.msg, settings.max_image_pixels)
            if framesync.check_depth_size((depth_m.shape[1], depth_m.shape[0]), (w, h), settings.depth_registered):
                depth_m = conv.resize_depth(depth_m, w, h)
        intrinsics = None
        if info is not None:
            if info.error:
                raise Refusal(Reason.BAD_INPUT, info.error)
            framesync.check_intrinsics_size(info.size, (w, h))
            intrinsics = info.value
        return Frame(rgb=rgb, depth=depth_m, intrinsics=intrinsics, stamp=slot.stamp,
                     frame_id=slot.msg.header.frame_id or "camera_color_optical_frame")

    def used(self, slot: FrameSlot, inference_ms: float) -> None:
        """Count an inference on ``slot``."""
        with self._cond:
            slot.used = True
            self._stats.frames_processed += 1
            self._stats.inference_ms.append(inference_ms)

    def why_no_camera_info(self, slot: FrameSlot, settings: NodeSettings) -> Optional[str]:
        """Why no camera_info gave ``slot`` its intrinsics, when some arrived (None when none did): the
        end of a ``no_intrinsics`` message."""
        with self._cond:
            latest = self._latest_info(slot)
            sizes = sorted({f"{r.size[0]}x{r.size[1]}" for r in self._infos})
        if latest is not None:
            return framesync.stale_camera_info(slot.received - latest.received, settings.max_camera_info_age)
        if sizes:
            w, h = slot.size
            return f"camera_info received only for {', '.join(sizes)}, not for this {w}x{h} image"
        return None

    def health(self) -> FrameHealth:
        """The colour stream for the diagnostics."""
        with self._cond:
            slot, error = self._frame, self._frame_error
        return FrameHealth(last_error=error[0] if error else "",
                           error_is_latest=error is not None and (slot is None or error[1] >= slot.received),
                           age=None if slot is None else time.monotonic() - slot.received)
