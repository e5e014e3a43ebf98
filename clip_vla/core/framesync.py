"""What a command is run on: the rules the node and ``clip-vla replay`` share, with their refusals.

The node applies them to live messages, replay to a bag's; both answer a refusal the same way
(same reason, same message), which ``test/tools/test_node_replay_equivalence.py`` checks::

    command ──check_command_text()──► refused at once (empty, too long, not UTF-8)
       │
       ▼  the latest colour frame received before it ──check_frame_age()──► no_frame | bad_input | stale_frame
       │
       ▼  depth, camera_info: closest() header stamp within sync_tolerance
       │        (else the latest camera_info of the frame's size, unless stale_camera_info())
       │        ──check_depth_size() / check_intrinsics_size()──► bad_input when they do not fit the frame
       ▼
    pipeline.run(frame, command)

Stamps and times are plain numbers; each function says its unit.
"""
from __future__ import annotations

from bisect import bisect_right
from typing import Any, Callable, Iterable, Optional, Sequence, Tuple, TypeVar

from clip_vla.core.records import echo
from clip_vla.core.types import NoAction, Reason

T = TypeVar("T")

COLOUR_IMAGE, DEPTH_IMAGE, CAMERA_INFO = "colour image", "depth image", "camera_info"
STAMP_SLACK = 1e-9  # forgiven beyond a tolerance: float seconds near 1.7e9 round in the last bits
# Depth/camera_info may arrive a little after their colour frame: a command waits for them up to
# min(sync_tolerance, SYNC_WAIT_MAX) seconds (the node), so replay pairs what arrived by then.
SYNC_WAIT_MAX = 0.2
MAX_CAMERA_INFO_AGE = 10.0  # seconds: the default bound of stale_camera_info (node parameter, replay flag)


def sync_wait(sync_tolerance: float) -> float:
    """Seconds a command waits for the depth/camera_info of its frame."""
    return min(sync_tolerance, SYNC_WAIT_MAX)


class Refusal(Exception):
    """A reason to answer a command without running the pipeline (``reason`` + ``message``)."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def refused(refusal: Refusal, text: str, prepared: Any = None) -> NoAction:
    """The answer of a command refused before the pipeline ran; once parsed (``prepared``), it names
    the skill and object it asked for."""
    parsed = getattr(prepared, "parsed", None)
    return NoAction(refusal.reason, refusal.message, command=echo(text), skill=getattr(parsed, "skill", None),
                    object_phrase=getattr(parsed, "object", None))


def invalid(kind: str, error: object) -> str:
    """The message of an input that could not be converted (``kind``: COLOUR_IMAGE, DEPTH_IMAGE, CAMERA_INFO)."""
    return f"invalid {kind}: {error}"


# --------------------------------------------------------------------------- commands
def check_command_text(text: str, max_length: int) -> None:
    """Refuse a command text that no parser should see.

    Raises:
        Refusal: ``bad_command`` (longer than ``max_length`` characters, not valid UTF-8,
            unpaired surrogates) or ``empty_command`` (only white space).
    """
    if len(text) > max_length:
        raise Refusal(Reason.BAD_COMMAND, f"command has {len(text)} characters; the limit is {max_length} "
                      "(max_command_length)")
    if "\ufffd" in text:
        raise Refusal(Reason.BAD_COMMAND, "command is not valid UTF-8 text")
    if any(0xD800 <= ord(ch) <= 0xDFFF for ch in text):
        raise Refusal(Reason.BAD_COMMAND, "command contains unpaired surrogate code points")
    if not text.strip():
        raise Refusal(Reason.EMPTY_COMMAND, "command is empty")


# --------------------------------------------------------------------------- the colour frame
def latest_at_or_before(times: Sequence[float], t: float) -> Optional[int]:
    """Index of the last of the sorted ``times`` at or before ``t`` (None when all are later)."""
    i = bisect_right(times, t) - 1
    return i if i >= 0 else None


def check_frame_age(age: Optional[float], max_frame_age: float, topic: str, error: Optional[str] = None) -> None:
    """Refuse a command whose latest colour frame is missing, invalid or too old.

    ``age``: seconds between the frame's arrival and the command's (None: no frame yet);
    ``error``: why the latest colour message was invalid, when it was.

    Raises:
        Refusal: ``bad_input`` (``error``), ``no_frame``, or ``stale_frame`` (older than ``max_frame_age`` s).
    """
    if error is not None:
        raise Refusal(Reason.BAD_INPUT, error)
    if age is None:
        raise Refusal(Reason.NO_FRAME, f"no colour frame received yet on {topic}")
    if age > max_frame_age:
        raise Refusal(Reason.STALE_FRAME, f"the latest colour frame arrived {age:.2f} s ago "
                      f"(max_frame_age {max_frame_age:.2f} s)")


# --------------------------------------------------------------------------- depth and camera_info
def closest(candidates: Iterable[T], stamp: float, tol: float, stamp_of: Callable[[T], float]) -> Optional[T]:
    """The candidate whose stamp is closest to ``stamp`` and within ``tol`` (same unit); ties: the first."""
    best, best_dt = None, None
    for candidate in candidates:
        dt = abs(stamp_of(candidate) - stamp)
        if dt <= tol + STAMP_SLACK and (best_dt is None or dt < best_dt):
            best, best_dt = candidate, dt
    return best


def stale_camera_info(age: float, max_camera_info_age: float) -> Optional[str]:
    """Why the latest camera_info may not stand in for a frame's own (None when it may).

    Intrinsics are static, so without a camera_info of the frame's stamp the latest one is
    used, but not forever: a camera_info stream that stopped long ago may describe another
    calibration or zoom. ``age``: seconds between the camera_info's arrival and the frame's;
    ``max_camera_info_age`` 0 means no bound (a camera_info published once).
    """
    if max_camera_info_age <= 0 or age <= max_camera_info_age + STAMP_SLACK:
        return None
    return (f"the latest camera_info arrived {age:.1f} s before the frame "
            f"(max_camera_info_age {max_camera_info_age:.1f} s)")


def check_depth_size(depth_size: Tuple[int, int], colour_size: Tuple[int, int], registered: bool) -> bool:
    """Whether depth of ``depth_size`` (width, height) must be resized to the colour frame's.

    Raises:
        Refusal: ``bad_input`` when the sizes differ and depth is not registered to the colour camera.
    """
    if depth_size == colour_size:
        return False
    if not registered:
        (dw, dh), (w, h) = depth_size, colour_size
        raise Refusal(Reason.BAD_INPUT, f"depth is {dw}x{dh} but colour is {w}x{h}; set depth_registered:=true "
                      "if depth is registered to the colour camera, or publish aligned depth")
    return True


def fits(info_size: Tuple[int, int], colour_size: Tuple[int, int]) -> bool:
    """Whether camera_info of ``info_size`` (width, height; (0, 0) = not given) describes the colour frame."""
    return info_size in (colour_size, (0, 0))


def check_intrinsics_size(info_size: Tuple[int, int], colour_size: Tuple[int, int]) -> None:
    """Refuse camera_info made for another image size.

    Raises:
        Refusal: ``bad_input`` when ``info_size`` is given and differs from ``colour_size``.
    """
    if not fits(info_size, colour_size):
        raise Refusal(Reason.BAD_INPUT, f"camera_info is for {info_size[0]}x{info_size[1]} but the colour image is "
                      f"{colour_size[0]}x{colour_size[1]}")
