"""Action chunks: the waypoints of each skill, their refusals, and agreement with the simulated gripper."""
from __future__ import annotations

import math

import numpy as np
import pytest

from clip_vla.core.chunks import MOTION_SKILLS, ChunkError, build_chunk, chunk_waypoints
from clip_vla.core.config import ClipVlaConfig, ConfigError, MotionConfig, WorkspaceConfig
from clip_vla.core.tokenizer import GRIPPER_CLOSED, GRIPPER_OPEN, ActionTokenizer
from clip_vla.core.types import Reason
from clip_vla.sim.executor import SkillParams

M = MotionConfig()
TOKENIZER = ActionTokenizer.from_config(WorkspaceConfig(), num_commands=8)


def poses(skill, xyz=(0.5, 0.1, 0.03), theta=0.4, table_z=0.0):
    return [(w.label, round(w.x, 6), round(w.y, 6), round(w.z, 6), round(w.theta, 6), w.gripper)
            for w in chunk_waypoints(skill, xyz, theta, M, table_z)]


def test_pick_comes_down_over_the_object_closes_and_lifts():
    grasp = 0.03 - M.grasp_depth
    grasp = max(M.min_tip_clearance, grasp)
    assert poses("pick") == [
        ("above", 0.5, 0.1, round(0.03 + M.approach_height, 6), 0.4, GRIPPER_OPEN),
        ("grasp", 0.5, 0.1, round(grasp, 6), 0.4, GRIPPER_OPEN),
        ("close", 0.5, 0.1, round(grasp, 6), 0.4, GRIPPER_CLOSED),
        ("lift", 0.5, 0.1, round(grasp + M.lift_height, 6), 0.4, GRIPPER_CLOSED),
    ]


def test_pick_never_drives_the_fingertips_into_the_table():
    for table_z in (0.0, 0.2):
        grasp = chunk_waypoints("pick", (0.5, 0.0, table_z + 0.01), 0.0, M, table_z)[1]
        assert grasp.z == pytest.approx(table_z + M.min_tip_clearance)


def test_place_lowers_over_the_destination_opens_and_retreats():
    release = 0.03 + M.release_height
    assert poses("place") == [
        ("above", 0.5, 0.1, round(0.03 + M.approach_height, 6), 0.4, GRIPPER_CLOSED),
        ("release", 0.5, 0.1, round(release, 6), 0.4, GRIPPER_CLOSED),
        ("open", 0.5, 0.1, round(release, 6), 0.4, GRIPPER_OPEN),
        ("retreat", 0.5, 0.1, round(release + M.retreat_height, 6), 0.4, GRIPPER_OPEN),
    ]


@pytest.mark.parametrize("skill", ["push", "pull"])
@pytest.mark.parametrize("theta", [0.0, math.pi / 2, -math.pi / 2, math.pi, 0.7])
def test_push_and_pull_start_behind_the_object_and_sweep_through_it(skill, theta):
    x, y = 0.5, 0.1
    above, down, through, up = chunk_waypoints(skill, (x, y, 0.03), theta, M)
    d = np.array([math.cos(theta), math.sin(theta)])
    start, end = np.array([x, y]) - M.push_standoff * d, np.array([x, y]) + M.push_follow_through * d
    assert [w.label for w in (above, down, through, up)] == ["above_start", "down", "through", "up"]
    np.testing.assert_allclose([above.x, above.y], start)
    np.testing.assert_allclose([down.x, down.y], start)
    np.testing.assert_allclose([through.x, through.y], end)
    np.testing.assert_allclose([up.x, up.y], end)
    assert down.z == through.z == pytest.approx(M.push_height)
    assert above.z == up.z == pytest.approx(M.push_height + M.approach_height)
    assert all(w.gripper == GRIPPER_CLOSED and w.theta == theta for w in (above, down, through, up))


def test_point_at_hovers_over_the_point():
    assert poses("point_at") == [
        ("above", 0.5, 0.1, round(0.03 + M.approach_height, 6), 0.4, GRIPPER_CLOSED),
        ("hover", 0.5, 0.1, round(0.03 + M.point_height, 6), 0.4, GRIPPER_CLOSED),
    ]


@pytest.mark.parametrize("skill", ["open", "close", "none", "juggle"])
def test_skills_without_a_motion_are_refused(skill):
    with pytest.raises(ChunkError) as info:
        chunk_waypoints(skill, (0.5, 0.0, 0.03), 0.0, M)
    assert info.value.reason is Reason.NO_MOTION and f"'{skill}'" in str(info.value)


def test_build_chunk_tokenizes_every_waypoint_and_decodes_within_half_a_bin():
    chunk = build_chunk("pick", 1, (0.5, 0.1, 0.03), 0.4, M, TOKENIZER)
    assert chunk.tokens[0] == 1 and len(chunk.tokens) == 1 + 6 * 4
    assert TOKENIZER.chunk_from_text(chunk.text) == chunk.tokens
    for exact, decoded in zip(chunk.waypoints, chunk.decoded):
        for dim, name in enumerate("xyz"):
            assert abs(getattr(exact, name) - getattr(decoded, name)) <= TOKENIZER.bin_width(dim) / 2 + 1e-12
    record = chunk.to_dict()
    assert record["tokens"] == list(chunk.tokens) and record["text"] == chunk.text
    assert [w["label"] for w in record["waypoints"]] == ["above", "grasp", "close", "lift"]


@pytest.mark.parametrize("skill,xyz,theta,label", [
    ("pick", (0.5, 0.1, 0.5), 0.0, "waypoint 0 (above)"),  # a goal 50 cm up: the approach leaves z <= 0.6
    ("push", (0.98, 0.0, 0.03), 0.0, "waypoint 2 (through)"),  # sweeps past x = 1
    ("pull", (0.03, 0.0, 0.03), math.pi, "waypoint 2 (through)"),  # drags behind x = 0
    ("push", (0.5, -0.45, 0.03), math.pi / 2, "waypoint 0 (above_start)"),  # starts beyond y = -0.5
])
def test_a_chunk_leaving_the_workspace_is_refused_naming_the_waypoint(skill, xyz, theta, label):
    with pytest.raises(ChunkError) as info:
        build_chunk(skill, 1, xyz, theta, M, TOKENIZER)
    assert info.value.reason is Reason.OUTSIDE_WORKSPACE
    assert label in str(info.value) and "outside the workspace" in str(info.value)


# --------------------------------------------------------------------------- the simulated gripper
# Object centre heights of the simulated catalogue (clip_vla.sim.objects): bar, ball, block, cup.
SIM_CENTRE_HEIGHTS = (0.014, 0.016, 0.021, 0.029, 0.020, 0.028, 0.030, 0.042)


def test_defaults_match_the_simulated_gripper_skills():
    """The chunk reproduces the sim's scripted skill heights (clip_vla.sim.executor.SkillParams)."""
    sim = SkillParams()
    for z in SIM_CENTRE_HEIGHTS:
        grasp = chunk_waypoints("pick", (0.5, 0.0, z), 0.0, M)[1].z
        sim_grasp = max(sim.table_z + sim.min_tip_clearance, z - sim.grasp_depth)
        assert grasp == pytest.approx(sim_grasp)
        for dest_z in (0.0, 0.02, 0.045):  # the sim releases relative to where the object was grasped
            release = chunk_waypoints("place", (0.5, 0.0, dest_z), 0.0, M)[1].z
            sim_release = dest_z + sim.release_height + (sim_grasp - sim.table_z)
            assert abs(release - sim_release) <= 0.003
    push = chunk_waypoints("push", (0.5, 0.0, 0.03), 0.0, M)
    assert push[1].x == pytest.approx(0.5 - sim.push_standoff) and push[2].x == pytest.approx(0.5 + sim.push_through)
    assert push[1].z == pytest.approx(sim.push_tip_height)
    assert chunk_waypoints("point_at", (0.5, 0.0, 0.03), 0.0, M)[1].z == pytest.approx(0.03 + sim.point_height)
    assert M.lift_height == sim.lift


def test_approach_clears_the_tallest_simulated_object():
    for skill in MOTION_SKILLS:
        first = chunk_waypoints(skill, (0.5, 0.0, 0.014), 0.0, M)[0]
        assert first.z >= 0.085 + 0.03, skill  # 8.5 cm objects, 3 cm margin


# --------------------------------------------------------------------------- configuration
def test_motion_section_loads_from_the_parameter_file_and_overrides():
    cfg = ClipVlaConfig.from_yaml()
    assert cfg.motion == MotionConfig()
    assert cfg.replace(**{"motion.lift_height": 0.2}).motion.lift_height == 0.2
    assert "motion.push_standoff" in cfg.to_flat()


@pytest.mark.parametrize("name,value,message", [
    ("approach_height", 0.0, r"motion.approach_height: expected a number in \[0.001, 1.0\], got 0.0"),
    ("grasp_depth", -0.01, r"motion.grasp_depth: expected a number in \[0.0, 0.5\], got -0.01"),
    ("push_follow_through", float("nan"), "motion.push_follow_through: expected a number .* got nan"),
    ("lift_height", "high", "motion.lift_height: expected a number .* got 'high'"),
    ("release_height", True, "motion.release_height: expected a number .* got True"),
])
def test_motion_values_are_validated(name, value, message):
    with pytest.raises(ConfigError, match=message):
        MotionConfig(**{name: value})
