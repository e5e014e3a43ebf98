"""The debug image: a colour frame annotated with what the pipeline saw and decided.

ROS-free (numpy + cv2) so the node's ``~/debug_image``, the CLI (``clip-vla infer --annotate``)
and notebooks all draw the same picture::

    annotated = annotate(rgb, result)        # HxWx3 uint8 RGB in, a new HxWx3 uint8 RGB out
    annotated = annotate(rgb, result, chunk=project_chunk(chunk.decoded, camera_to_base, intrinsics))

What is drawn, when the result has it:
- the target mask as a translucent overlay (green for a goal, red for a refusal) and the
  destination mask in blue;
- the bounding box and a cross at the centroid (the pixel that became the 3D point);
- a header line: the chosen skill, object and confidence, or the refusal reason;
- the goal tokens ``(cmd, x, y, z, theta)`` and base-frame pose;
- the top skill scores as bars;
- the step's action chunk, when given: its waypoints projected into the image, joined in
  order, numbered from 0, each dot coloured by the gripper (green open, magenta closed).

``annotate_suggestions`` draws a suggestion round instead: each suggested object's box with
the numbers of its suggestions ("1", "2,5"), so a person can say "option 2" looking at it.

Drawing never raises for a well-formed RGB frame: a detection whose mask does not match the
frame (e.g. a stale result) is drawn without its mask.
"""
from __future__ import annotations

from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import cv2
import numpy as np

Color = Tuple[int, int, int]

GOAL_COLOR: Color = (40, 200, 60)  # RGB
REFUSAL_COLOR: Color = (230, 50, 40)
DESTINATION_COLOR: Color = (50, 120, 240)
TEXT_COLOR: Color = (255, 255, 255)
PANEL_COLOR: Color = (0, 0, 0)
GRIPPER_OPEN_COLOR: Color = (60, 230, 90)
GRIPPER_CLOSED_COLOR: Color = (235, 60, 210)
MASK_ALPHA = 0.45

ChunkPoint = Tuple[float, float, float]  # (u, v) pixel and gripper (0 open .. 1 closed)


def project_chunk(waypoints: Sequence[Any], camera_to_base: Any, intrinsics: Any) -> List[Optional[ChunkPoint]]:
    """Where each chunk waypoint (base frame, ``x y z gripper``) is in the image: (u, v, gripper), None behind it."""
    from clip_vla.core.geometry import project

    base_to_camera = camera_to_base.inverse()
    points: List[Optional[ChunkPoint]] = []
    for w in waypoints:
        uv = project(base_to_camera.apply(np.array([w.x, w.y, w.z], dtype=np.float64)), intrinsics)
        points.append(None if uv is None else (float(uv[0]), float(uv[1]), float(w.gripper)))
    return points


def annotate(rgb: np.ndarray, result: Any, top_k: int = 3,
             chunk: Optional[Sequence[Optional[ChunkPoint]]] = None) -> np.ndarray:
    """A copy of ``rgb`` (HxWx3 uint8) with ``result`` (ActionGoal | NoAction | None) drawn on it.

    ``chunk`` is the step's chunk as ``project_chunk`` places it in this image.
    """
    image = _as_rgb(rgb)
    out = image.copy()
    if result is None:
        if chunk:
            _draw_chunk(out, chunk)
        _text_panel(out, ["no result"], REFUSAL_COLOR)
        return out
    accepted = bool(getattr(result, "accepted", False))
    color = GOAL_COLOR if accepted else REFUSAL_COLOR
    target = getattr(result, "detection", None)
    destination = getattr(result, "destination", None) if accepted else None

    _overlay_mask(out, getattr(destination, "mask", None), DESTINATION_COLOR)
    _overlay_mask(out, getattr(target, "mask", None), color)
    found = [(det, det_color) for det, det_color in ((destination, DESTINATION_COLOR), (target, color))
             if det is not None and getattr(det, "found", False)]
    for det, det_color in found:
        _draw_box(out, getattr(det, "bbox", None), det_color)
        _draw_cross(out, getattr(det, "centroid", None), det_color)
    if accepted:
        _draw_cross(out, getattr(result, "pixel", None), (255, 255, 0), size=10)
    keep_visible = [det.bbox for det, _ in found if getattr(det, "bbox", None)]
    drawn = [p for p in chunk or () if p is not None]
    if drawn:
        _draw_chunk(out, chunk)
        us, vs = [p[0] for p in drawn], [p[1] for p in drawn]
        keep_visible.append((int(min(us)), int(min(vs)) - 12, int(max(us)), int(max(vs))))

    lines = _summary_lines(result, accepted)
    bars = _top_scores(getattr(result, "skill_probabilities", {}) or {}, top_k)
    _text_panel(out, lines, color, bars=bars, chosen=getattr(result, "cmd", None) or getattr(result, "skill", None),
                keep_visible=keep_visible)
    return out


SUGGESTION_COLOR: Color = (255, 200, 0)


def annotate_suggestions(rgb: np.ndarray, suggestions: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """A copy of ``rgb`` with each suggested object boxed and labelled with its suggestion numbers.

    ``suggestions`` are ``Suggestion.to_dict()`` records (``rank``, ``box``, ``pixel``, ``command``);
    suggestions about one object (same box) share one label. A one-line legend lists the first ones.
    """
    out = _as_rgb(rgb).copy()
    by_box: Dict[Tuple[int, ...], List[int]] = {}
    for s in suggestions:
        if s.get("box") is not None:
            by_box.setdefault(tuple(int(b) for b in s["box"]), []).append(int(s["rank"]))
    scale = max(0.4, min(1.2, out.shape[1] / 600.0))
    thick = max(1, _thickness(out) + 1)
    for box, ranks in by_box.items():
        _draw_box(out, box, SUGGESTION_COLOR)
        label = ",".join(str(r) for r in sorted(ranks))
        (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
        u0 = min(max(0, box[0]), max(0, out.shape[1] - tw - 6))
        v0 = max(th + base + 4, box[1])
        cv2.rectangle(out, (u0, v0 - th - base - 4), (u0 + tw + 6, v0), SUGGESTION_COLOR, -1)
        cv2.putText(out, label, (u0 + 3, v0 - base - 2), cv2.FONT_HERSHEY_SIMPLEX, scale, PANEL_COLOR, thick,
                    cv2.LINE_AA)
    legend = [f"{s['rank']}: {s['command']}" for s in suggestions[:3]]
    _text_panel(out, legend or ["no suggestion"], SUGGESTION_COLOR, keep_visible=list(by_box))
    return out


# --------------------------------------------------------------------------- pieces
def _draw_chunk(out: np.ndarray, points: Sequence[Optional[ChunkPoint]]) -> None:
    """The chunk's path: a line through the waypoints in order, a numbered dot per waypoint."""
    t = _thickness(out)
    seen = [(int(round(u)), int(round(v)), g) for p in points if p is not None for u, v, g in [p]]
    for (u0, v0, _), (u1, v1, _) in zip(seen, seen[1:]):
        cv2.line(out, (u0, v0), (u1, v1), TEXT_COLOR, t, cv2.LINE_AA)
    radius = max(3, 3 * t)
    for i, p in enumerate(points):
        if p is None:
            continue
        u, v = int(round(p[0])), int(round(p[1]))
        color = GRIPPER_CLOSED_COLOR if p[2] >= 0.5 else GRIPPER_OPEN_COLOR
        cv2.circle(out, (u, v), radius, color, -1, cv2.LINE_AA)
        cv2.putText(out, str(i), (u + radius + 1, v - radius), cv2.FONT_HERSHEY_SIMPLEX, 0.35 * t, TEXT_COLOR, t,
                    cv2.LINE_AA)


def _as_rgb(rgb: np.ndarray) -> np.ndarray:
    arr = np.asarray(rgb)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4) or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"annotate needs an HxWx3 RGB image, got shape {arr.shape}")
    if arr.shape[2] == 4:
        arr = arr[:, :, :3]
    if arr.dtype != np.uint8:
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(arr)


def _overlay_mask(out: np.ndarray, mask: Optional[np.ndarray], color: Color) -> None:
    if mask is None:
        return
    m = np.asarray(mask)
    if m.shape != out.shape[:2]:
        return
    m = m.astype(bool)
    if not m.any():
        return
    tint = np.array(color, dtype=np.float32)
    region = out[m].astype(np.float32)
    out[m] = np.clip(region * (1.0 - MASK_ALPHA) + tint * MASK_ALPHA, 0, 255).astype(np.uint8)
    contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(out, contours, -1, color, max(1, _thickness(out)))


def _draw_box(out: np.ndarray, bbox: Optional[Sequence[int]], color: Color) -> None:
    if bbox is None or len(bbox) != 4:
        return
    u0, v0, u1, v1 = (int(round(float(b))) for b in bbox)
    cv2.rectangle(out, (u0, v0), (u1, v1), color, _thickness(out))


def _draw_cross(out: np.ndarray, point: Optional[Sequence[float]], color: Color, size: int = 0) -> None:
    if point is None or len(point) != 2 or not all(np.isfinite(float(p)) for p in point):
        return
    u, v = int(round(float(point[0]))), int(round(float(point[1])))
    size = size or max(4, min(out.shape[:2]) // 30)
    t = _thickness(out)
    cv2.line(out, (u - size, v), (u + size, v), color, t)
    cv2.line(out, (u, v - size), (u, v + size), color, t)
    cv2.circle(out, (u, v), max(2, size // 3), color, t)


def _summary_lines(result: Any, accepted: bool) -> List[str]:
    if accepted:
        obj = getattr(result, "object_phrase", None) or "-"
        dest = getattr(result, "destination_phrase", None)
        head = f"{result.cmd} {obj}" + (f" -> {dest}" if dest else "")
        head += f"  conf {float(getattr(result, 'confidence', 0.0)):.2f}"
        x, y, z = (float(v) for v in result.xyz_base)
        return [
            head,
            f"tokens {' '.join(str(t) for t in result.tokens)}",
            f"xyz ({x:+.3f}, {y:+.3f}, {z:+.3f}) m  yaw {float(result.theta):+.2f} rad",
        ]
    reason = getattr(getattr(result, "reason", None), "value", None) or str(getattr(result, "reason", "no action"))
    message = str(getattr(result, "message", ""))
    return [f"NO ACTION: {reason}", *(_wrap(message, 60)[:2])]


def _top_scores(probabilities: dict, k: int) -> List[Tuple[str, float]]:
    items = []
    for name, p in probabilities.items():
        try:
            value = float(p)
        except (TypeError, ValueError):
            continue
        if np.isfinite(value):
            items.append((str(name), value))
    items.sort(key=lambda item: item[1], reverse=True)
    return items[: max(0, int(k))]


def _wrap(text: str, width: int) -> List[str]:
    words, lines, line = text.split(), [], ""
    for word in words:
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    if line:
        lines.append(line)
    return lines


def _thickness(out: np.ndarray) -> int:
    return max(1, min(out.shape[:2]) // 240)


def _text_panel(out: np.ndarray, lines: Iterable[str], color: Color,
                bars: Sequence[Tuple[str, float]] = (), chosen: Optional[str] = None,
                keep_visible: Sequence[Sequence[int]] = ()) -> None:
    """A dark band with the summary lines, then one bar per top skill score.

    The band sits at the top unless it would cover a box of ``keep_visible`` (x0, y0, x1, y1)
    that the bottom band would not: the object the goal is about stays in view.
    """
    lines = [ln.encode("ascii", "replace").decode("ascii") for ln in lines]
    h, w = out.shape[:2]
    scale = max(0.3, min(1.0, w / 1000.0))
    thick = 1 if scale < 0.8 else 2
    (_, text_h), base = cv2.getTextSize("Ag", cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    row = text_h + base + 4
    rows = len(lines) + len(bars)
    panel_h = min(h, rows * row + 6)
    if panel_h <= 0:
        return
    top0 = _panel_top(h, panel_h, keep_visible)
    band = out[top0:top0 + panel_h].astype(np.float32)
    out[top0:top0 + panel_h] = (band * 0.35 + np.array(PANEL_COLOR, np.float32) * 0.65).astype(np.uint8)
    cv2.rectangle(out, (0, top0), (w - 1, top0 + panel_h - 1), color, 1)
    y = top0 + row
    for i, line in enumerate(lines):
        cv2.putText(out, line, (6, y - base), cv2.FONT_HERSHEY_SIMPLEX, scale,
                    color if i == 0 else TEXT_COLOR, thick, cv2.LINE_AA)
        y += row
    bar_x0 = 6
    label_w = int(w * 0.35)
    for name, p in bars:
        p = min(max(p, 0.0), 1.0)
        bar_w = int((w - label_w - 3 * bar_x0) * p)
        bar_color = color if name == chosen else (170, 170, 170)
        cv2.putText(out, f"{name} {p:.2f}", (bar_x0, y - base), cv2.FONT_HERSHEY_SIMPLEX, scale * 0.85,
                    TEXT_COLOR, 1, cv2.LINE_AA)
        top = y - row + 4
        cv2.rectangle(out, (label_w, top), (label_w + max(1, bar_w), y - base), bar_color, -1)
        y += row


def _panel_top(h: int, panel_h: int, keep_visible: Sequence[Sequence[int]]) -> int:
    """Row where the text band starts: 0, or the bottom when only that leaves the boxes uncovered."""
    def covered(top: int) -> bool:
        return any(int(b[1]) < top + panel_h and int(b[3]) >= top for b in keep_visible)

    bottom = h - panel_h
    return bottom if covered(0) and not covered(bottom) else 0
