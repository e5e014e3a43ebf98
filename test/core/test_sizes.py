"""Object sizes from depth (``clip_vla.core.sizes``) with hand-made depth images.

The default camera mounting looks straight down from 0.8 m onto the table (z = 0), so a box's
top face is the only part of it seen, at depth 0.8 - height: the depth images below are built
by back-projecting every pixel at that depth and keeping those over the box's footprint.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from clip_vla.core.config import ClipVlaConfig, ConfigError, GeometryConfig
from clip_vla.core.geometry import backproject, camera_to_base_from_config
from clip_vla.core.sizes import MeasuredSize, SizeRange, measure_object, parse_object_sizes, size_range_for
from clip_vla.core.types import Intrinsics

K = Intrinsics(fx=500.0, fy=500.0, cx=320.0, cy=240.0)
SHAPE = (480, 640)
GEOMETRY = GeometryConfig()
DOWN = camera_to_base_from_config(GEOMETRY)
CAMERA_HEIGHT = float(DOWN.translation[2])


def scene(*boxes):
    """Depth (metres, float32) of boxes (centre_xy, length, width, height, yaw) on the bare table, and
    each box's true mask, as the downward camera sees them (top faces only)."""
    v, u = np.mgrid[0:SHAPE[0], 0:SHAPE[1]]
    depth = np.full(SHAPE, CAMERA_HEIGHT - GEOMETRY.table_height, dtype=np.float32)
    masks = []
    for (cx, cy), length, width, height, yaw in boxes:
        z = np.full(u.size, CAMERA_HEIGHT - GEOMETRY.table_height - height)
        xy = DOWN.apply(backproject(u.ravel(), v.ravel(), z, K))[:, :2] - (cx, cy)
        c, s = math.cos(yaw), math.sin(yaw)
        along, across = xy @ (c, s), xy @ (-s, c)
        inside = ((np.abs(along) <= length / 2) & (np.abs(across) <= width / 2)).reshape(SHAPE)
        depth[inside] = z[0]
        masks.append(inside)
    return depth, masks


def measure(depth, mask, above=0.006):
    return measure_object(mask, depth, K, DOWN, GEOMETRY, above)


SIZES = ["cup 0.060 0.084 0.042 0.058", "bar 0.028 0.032 0.100 0.130", "coffee cup 0.09 0.12 0.07 0.09"]


# --------------------------------------------------------------------------- the sizes table
def test_entries_parse_to_ranges_and_blank_entries_are_no_size():
    ranges = parse_object_sizes(SIZES + [""])
    assert set(ranges) == {"cup", "bar", "coffee cup"}
    assert ranges["bar"] == SizeRange("bar", (0.028, 0.032), (0.100, 0.130))
    assert parse_object_sizes([""]) == {} and parse_object_sizes([]) == {}


@pytest.mark.parametrize("entry", ["cup 0.06 0.084 0.042", "0.06 0.084 0.042 0.058 0.1", "cup a b c d",
                                   "cup 0.09 0.06 0.04 0.05", "cup 0.06 0.08 -0.01 0.05", "cup nan 0.08 0.04 0.05",
                                   "cup 0.06 0.084 0.042 0.058 square", "0.06 0.084 0.042 0.058 round"])
def test_a_malformed_entry_is_refused_naming_it(entry):
    with pytest.raises(ValueError, match="expected|must be"):
        parse_object_sizes([entry])


def test_a_noun_given_twice_is_refused():
    with pytest.raises(ValueError, match="has a size already"):
        parse_object_sizes(["cup 0.06 0.08 0.04 0.05", "Cup 0.07 0.09 0.04 0.05"])


def test_the_config_refuses_a_bad_sizes_table_and_keeps_the_empty_one():
    config = ClipVlaConfig()
    assert config.verify.object_sizes == []
    assert config.replace(**{"verify.object_sizes": SIZES}).verify.object_sizes == SIZES
    with pytest.raises(ConfigError, match="verify.object_sizes.*'cup 0.06'"):
        config.replace(**{"verify.object_sizes": ["cup 0.06"]})


def test_a_name_takes_the_range_of_the_longest_noun_it_ends_with():
    ranges = parse_object_sizes(SIZES)
    assert size_range_for("red cup", ranges).noun == "cup"
    assert size_range_for("the blue coffee cup", ranges).noun == "coffee cup"
    assert size_range_for("Red BAR", ranges).noun == "bar"
    assert size_range_for("red block", ranges) is None
    assert size_range_for("cup holder", ranges) is None  # the noun is the last word, "holder"


def test_excess_is_the_larger_distance_outside_past_its_tolerance():
    cup = SizeRange("cup", (0.06, 0.084), (0.042, 0.058))
    assert cup.excess(MeasuredSize(0.07, 0.05, 100)) == 0.0
    assert cup.excess(MeasuredSize(0.03, 0.12, 100)) == pytest.approx(0.062)  # length 6.2 cm over, height 3 cm
    assert cup.excess(MeasuredSize(0.03, 0.05, 100), height_tolerance_m=0.01) == pytest.approx(0.02)
    assert cup.excess(MeasuredSize(0.057, 0.04, 100), 0.004, 0.004) == 0.0  # both within their tolerances


# --------------------------------------------------------------------------- measuring from depth
@pytest.mark.parametrize("yaw", [0.0, 0.5, math.pi / 2])
def test_a_bar_measures_its_height_and_length_whatever_its_yaw(yaw):
    depth, (mask,) = scene(((0.5, 0.0), 0.12, 0.03, 0.03, yaw))
    size = measure(depth, mask)
    assert size.height_m == pytest.approx(0.03, abs=1e-4)
    assert size.length_m == pytest.approx(0.12 * 0.96, abs=0.004)  # 2nd-98th percentile of the extent


def test_the_blob_is_measured_not_the_mask():
    """CLIPSeg lit a corner of the bar: depth still outlines the whole bar."""
    depth, (mask,) = scene(((0.5, 0.0), 0.12, 0.03, 0.03, 0.0))
    corner = mask.copy()
    cols = np.flatnonzero(mask.any(axis=0))
    corner[:, cols[len(cols) // 4]:] = False
    assert corner.sum() < mask.sum() / 3
    assert measure(depth, corner).length_m == pytest.approx(measure(depth, mask).length_m)


def test_each_object_is_measured_apart_from_its_neighbours():
    depth, (cup, bar) = scene(((0.45, -0.1), 0.05, 0.05, 0.07, 0.0), ((0.55, 0.1), 0.12, 0.03, 0.03, 0.3))
    assert measure(depth, cup).height_m == pytest.approx(0.07, abs=1e-4)
    assert measure(depth, cup).length_m < 0.07
    assert measure(depth, bar).height_m == pytest.approx(0.03, abs=1e-4)


def ball(centre_xy, radius):
    """Depth of a ball resting on the bare table and its mask, as the downward camera sees it."""
    v, u = np.mgrid[0:SHAPE[0], 0:SHAPE[1]]
    table = CAMERA_HEIGHT - GEOMETRY.table_height
    xy = DOWN.apply(backproject(u.ravel(), v.ravel(), np.full(u.size, table - radius), K))[:, :2]
    d2 = ((xy - centre_xy) ** 2).sum(axis=1).reshape(SHAPE)
    inside = d2 < radius ** 2
    depth = np.full(SHAPE, table, dtype=np.float32)
    depth[inside] = (table - radius - np.sqrt(radius ** 2 - d2[inside])).astype(np.float32)
    return depth, inside


def test_a_ball_has_a_round_top_and_a_box_a_flat_one():
    """Only a cap of a ball lies within 5 mm of its height; a box's whole top does. A noun's top
    (``flat``/``round``, optional in ``verify.object_sizes``) of the other shape is a misfit."""
    depth, mask = ball((0.5, 0.0), 0.025)
    round_ = measure(depth, mask)
    assert round_.height_m == pytest.approx(0.05, abs=0.002) and round_.top == "round"
    assert round_.top_fraction < 0.5
    depth, (box,) = scene(((0.5, 0.0), 0.05, 0.05, 0.05, 0.0))
    flat = measure(depth, box)
    assert flat.top == "flat" and flat.top_fraction > 0.95
    ranges = parse_object_sizes(["ball 0.04 0.06 0.04 0.06 round", "block 0.04 0.06 0.04 0.08 flat",
                                 "cube 0.04 0.06 0.04 0.08"])
    assert ranges["ball"].top == "round" and ranges["cube"].top is None
    assert ranges["ball"].excess(round_) == 0 and ranges["ball"].excess(flat) == pytest.approx(0.01)
    assert ranges["block"].excess(flat) == 0 and ranges["block"].excess(round_) == pytest.approx(0.01)
    assert ranges["cube"].excess(round_) == 0  # no top given: not checked
    assert ranges["block"].to_dict()["top"] == "flat" and round_.to_dict()["top"] == "round"


def test_a_mask_over_two_objects_measures_the_one_at_the_goal():
    """A mask lighting a bar and part of a cup beside it: most of it is on the bar, but the gripper
    went to the cup (``at_xy``), so the cup is measured (validation seed 52,786)."""
    depth, (bar, cup) = scene(((0.5, 0.0), 0.12, 0.03, 0.03, 0.0), ((0.5, 0.06), 0.05, 0.05, 0.07, 0.0))
    cols = np.flatnonzero(cup.any(axis=0))
    both = bar | (cup & (np.arange(SHAPE[1]) < cols[len(cols) // 3]))  # a third of the cup
    assert (both & bar).sum() > (both & cup).sum()
    assert measure(depth, both).height_m == pytest.approx(0.03, abs=1e-4)  # most of the mask: the bar
    at_cup = measure_object(both, depth, K, DOWN, GEOMETRY, 0.006, at_xy=(0.5, 0.06))
    assert at_cup.height_m == pytest.approx(0.07, abs=1e-4) and at_cup.length_m < 0.07
    at_bar = measure_object(both, depth, K, DOWN, GEOMETRY, 0.006, at_xy=(0.47, 0.0))
    assert at_bar.height_m == pytest.approx(0.03, abs=1e-4)


def test_a_mask_on_the_bare_table_or_without_depth_measures_nothing():
    depth, (mask,) = scene(((0.5, 0.0), 0.05, 0.05, 0.05, 0.0))
    table = np.roll(mask, 150, axis=1)
    assert not (table & mask).any()
    assert measure(depth, table) is None
    assert measure(np.full(SHAPE, np.nan, np.float32), mask) is None


def test_a_thin_object_below_the_above_table_threshold_is_not_seen():
    depth, (mask,) = scene(((0.5, 0.0), 0.1, 0.1, 0.004, 0.0))  # a 4 mm coaster
    assert measure(depth, mask, above=0.006) is None
    assert measure(depth, mask, above=0.002).height_m == pytest.approx(0.004, abs=1e-4)


# --------------------------------------------------------------------------- setting an object aside
def test_pixel_points_come_from_depth_where_it_is_valid_else_from_the_table_plane():
    from clip_vla.core.geometry import pixel_points

    depth, (mask,) = scene(((0.5, 0.0), 0.05, 0.05, 0.05, 0.0))
    depth[0, 0] = np.nan
    points = pixel_points(SHAPE, K, DOWN, GEOMETRY, depth)
    assert np.allclose(points[mask][:, 2], 0.05, atol=1e-6) and np.allclose(points[~mask][:, 2], 0.0, atol=1e-6)
    flat = pixel_points(SHAPE, K, DOWN, GEOMETRY)
    assert np.allclose(flat[..., 2], GEOMETRY.table_height)
    assert np.allclose(flat[240, 320, :2], DOWN.translation[:2])  # the optical axis meets the table below


def test_the_body_at_a_point_is_the_whole_object_however_far_it_reaches_and_nothing_else():
    from clip_vla.core.sizes import bodies_at

    depth, (bar, cup) = scene(((0.5, 0.0), 0.12, 0.03, 0.03, 0.0), ((0.5, 0.15), 0.05, 0.05, 0.07, 0.0))
    body = bodies_at([(0.5, 0.0)], SHAPE, K, DOWN, GEOMETRY, 0.006, 0.03, depth)
    assert body[bar].all() and not body[cup].any()
    blind = bodies_at([(0.5, 0.0)], SHAPE, K, DOWN, GEOMETRY, 0.006, 0.03)  # no depth: a 3 cm disc on the table
    assert 0.3 < blind[bar].mean() < 0.7 and not blind[cup].any()
    assert not bodies_at([], SHAPE, K, DOWN, GEOMETRY, 0.006, 0.03, depth).any()


def test_objects_that_touch_in_the_image_are_split_where_their_surfaces_step_apart():
    """A bar lying against a cup: one blob of above-table pixels, but a 4 cm step between their tops."""
    depth, (bar, cup) = scene(((0.5, 0.0), 0.12, 0.03, 0.03, 0.0), ((0.5, 0.036), 0.05, 0.05, 0.07, 0.0))
    assert measure(depth, bar).height_m == pytest.approx(0.03, abs=1e-4)
    assert measure(depth, bar).length_m == pytest.approx(0.115, abs=0.005)
    assert measure(depth, cup).height_m == pytest.approx(0.07, abs=1e-4)
    merged = measure_object(bar, depth, K, DOWN, GEOMETRY, 0.006, surface_step_m=1.0)  # no split: one blob
    assert merged.height_m == pytest.approx(0.07, abs=1e-4)
