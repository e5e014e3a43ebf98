"""QoS profiles of the node's topics.

- Camera topics (image, depth, camera_info): keep-last, volatile, reliability from the
  ``image_reliability`` parameter. Best effort (default) receives from both best-effort and
  reliable publishers; reliable only from reliable ones, but never loses a frame on the wire.
  The colour image keeps a depth of 1: frames are never queued, the latest wins.
- Commands: reliable, keep-last 100, so a burst reaches the node; its own bounded queue
  (``command_queue_size``) then answers the overflow with ``queue_full``.
- Outputs (goal, goal_pose, status, markers, debug image, diagnostics): reliable, so both
  reliable and best-effort subscribers (RViz, Foxglove, rqt) receive them.
"""
from __future__ import annotations

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

RELIABILITIES = ("best_effort", "reliable")


def parse_reliability(name: str) -> ReliabilityPolicy:
    value = str(name).strip().lower().replace("-", "_")
    if value == "best_effort":
        return ReliabilityPolicy.BEST_EFFORT
    if value == "reliable":
        return ReliabilityPolicy.RELIABLE
    raise ValueError(f"image_reliability must be one of {', '.join(RELIABILITIES)}, got '{name}'")


def sensor_qos(reliability: str = "best_effort", depth: int = 1) -> QoSProfile:
    """Camera data: latest-wins, reliability as configured."""
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=max(1, int(depth)),
        reliability=parse_reliability(reliability),
        durability=DurabilityPolicy.VOLATILE,
    )


def command_qos(depth: int = 100) -> QoSProfile:
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=max(1, int(depth)),
        reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.VOLATILE,
    )


def output_qos(depth: int = 10) -> QoSProfile:
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=max(1, int(depth)),
        reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.VOLATILE,
    )


def latched_qos(depth: int = 1) -> QoSProfile:
    """Reliable and transient-local: a subscriber that joins later still gets the latest message(s)."""
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=max(1, int(depth)),
        reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.TRANSIENT_LOCAL,
    )
