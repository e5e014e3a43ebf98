"""clip_vla.core.visualize.annotate: the debug image of goals and refusals (ROS-free)."""
from __future__ import annotations

import numpy as np

from clip_vla.core.types import ActionGoal, Detection, NoAction, Reason
from clip_vla.core.visualize import annotate


def _detection(h=48, w=64):
    mask = np.zeros((h, w), bool)
    mask[10:30, 20:44] = True
    return Detection("red cup", True, 0.8, mask, (31.5, 19.5), (20, 10, 43, 29), int(mask.sum()), 0.9)


def _goal():
    return ActionGoal(cmd="pick", cmd_token=1, skill_probabilities={"pick": 0.9, "push": 0.07, "none": 0.03},
                      object_phrase="red cup", destination_phrase=None, pixel=(31.5, 19.5), detection=_detection(),
                      xyz_camera=(0.0, 0.0, 0.8), xyz_base=(0.5, 0.0, 0.0), theta=0.0, tokens=(1, 128, 128, 36, 128),
                      confidence=0.8, depth_source="depth")


def test_goal_is_drawn_on_a_copy():
    rgb = np.full((48, 64, 3), 100, np.uint8)
    out = annotate(rgb, _goal())
    assert out.shape == rgb.shape and out.dtype == np.uint8
    assert (rgb == 100).all(), "the input frame must not be modified"
    assert not np.array_equal(out, rgb)
    assert (out[20, 32] != rgb[20, 32]).any(), "the mask is overlaid"


def test_refusals_and_odd_inputs_never_raise():
    rgb = np.zeros((480, 640, 3), np.uint8)
    refusal = NoAction(Reason.NO_OBJECT, "'red cup' not found (peak probability 0.10 < threshold 0.40)",
                       detection=Detection("red cup", False, 0.0))
    assert annotate(rgb, refusal).shape == rgb.shape
    assert annotate(rgb, None).shape == rgb.shape
    stale = _goal()
    stale.detection = _detection(10, 10)  # mask of another size: drawn without it
    assert annotate(rgb, stale).shape == rgb.shape
    assert annotate(np.zeros((2, 2, 3), np.uint8), _goal()).shape == (2, 2, 3)


def _goal_at(top: int, h=480, w=640):
    mask = np.zeros((h, w), bool)
    mask[top:top + 40, 300:340] = True
    goal = _goal()
    goal.detection = Detection("red cup", True, 0.8, mask, (319.5, top + 19.5), (300, top, 339, top + 39), 1600, 0.9)
    goal.pixel = goal.detection.centroid
    return goal


def _band_rows(out, rgb):
    """Rows darkened across the whole width away from the object: where the text band is."""
    dark = (out[:, :200].astype(int).sum(axis=2) < rgb[:, :200].astype(int).sum(axis=2) - 100).all(axis=1)
    return np.flatnonzero(dark)


def test_the_text_band_leaves_the_object_in_view():
    rgb = np.full((480, 640, 3), 200, np.uint8)
    low = _band_rows(annotate(rgb, _goal_at(300)), rgb)  # object low in the frame: band on top
    assert low.size and low.min() == 0 and low.max() < 300
    high = _band_rows(annotate(rgb, _goal_at(20)), rgb)  # object under the top band: band at the bottom
    assert high.size and high.min() > 60 and high.max() == 479


def test_a_chunk_is_drawn_numbered_with_the_gripper_state_by_colour():
    from clip_vla.core import visualize
    from clip_vla.core.config import ClipVlaConfig
    from clip_vla.core.chunks import chunk_waypoints
    from clip_vla.core.geometry import camera_to_base_from_config
    from clip_vla.core.tokenizer import Waypoint
    from clip_vla.core.types import Intrinsics

    config = ClipVlaConfig()
    pick = chunk_waypoints("pick", (0.5, 0.0, 0.03), 0.0, config.motion)
    k = Intrinsics(fx=500.0, fy=500.0, cx=319.5, cy=239.5)
    camera_to_base = camera_to_base_from_config(config.geometry)
    points = visualize.project_chunk(pick, camera_to_base, k)
    assert all(p is not None and 0 <= p[0] < 640 and 0 <= p[1] < 480 for p in points)
    assert [round(p[2]) for p in points] == [0, 0, 1, 1]
    apart = [Waypoint(0.45, -0.1, 0.05, 0.0, 0.0), Waypoint(0.55, 0.1, 0.05, 0.0, 1.0)]  # far apart in the image
    points = visualize.project_chunk(apart, camera_to_base, k)
    rgb = np.full((480, 640, 3), 100, dtype=np.uint8)
    out = visualize.annotate(rgb, None, chunk=points)
    for p, color in zip(points, (visualize.GRIPPER_OPEN_COLOR, visualize.GRIPPER_CLOSED_COLOR)):
        u, v = (int(round(c)) for c in p[:2])
        assert tuple(int(c) for c in out[v, u]) == color
    assert (rgb == 100).all()
