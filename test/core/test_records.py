"""The ~/goal and ~/status JSON (clip_vla.core.records), shared by the node and replay."""
from __future__ import annotations

import json
import math

import pytest

from clip_vla.core import records
from clip_vla.core.geometry import RigidTransform
from clip_vla.core.types import ActionGoal, Detection, NoAction, Reason


def goal(theta: float = 0.3, object_xyz=None) -> ActionGoal:
    return ActionGoal(cmd="pick", cmd_token=1, skill_probabilities={"pick": 1.0}, object_phrase="red cup",
                      destination_phrase=None, pixel=(319.456, 239.5), detection=None, xyz_camera=(0.0, 0.0, 0.8),
                      xyz_base=(0.5, 0.0, 0.0), theta=theta, tokens=(1, 128, 128, 36, 140), confidence=0.912345,
                      depth_source="depth", object_xyz_base=object_xyz)


def test_goal_record_has_the_19_keys_and_is_json():
    record = records.goal_record(goal(), stamp={"sec": 1, "nanosec": 2}, frame_id="base_link",
                                 token_frame="base_link", camera_frame="cam", command="pick up the red cup",
                                 command_id=3)
    assert tuple(record) == records.GOAL_KEYS and len(records.GOAL_KEYS) == 19
    assert json.loads(json.dumps(record)) == record
    assert record["pixel"] == [319.46, 239.5] and record["confidence"] == 0.9123 and record["update"] == 0


@pytest.mark.parametrize("theta", [0.3, -3.0, 3.1, math.pi - 1e-9])
def test_theta_and_quaternion_describe_one_rotation(theta):
    for tf in (None, RigidTransform.from_xyz_rpy([1.0, 2.0, 0.0], [0.0, 0.0, math.pi / 2])):
        pose = records.goal_pose(goal(theta), tf)
        qx, qy, qz, qw = pose.quaternion
        assert qx == pytest.approx(0.0) and qy == pytest.approx(0.0) and qw >= 0
        assert math.atan2(2 * qw * qz, 1 - 2 * qz * qz) == pytest.approx(pose.theta, abs=1e-12)


def test_the_object_position_follows_the_target_frame():
    tf = RigidTransform.from_xyz_rpy([1.0, 2.0, 0.0], [0.0, 0.0, math.pi / 2])
    pose = records.goal_pose(goal(object_xyz=(0.4, 0.1, 0.0)), tf)
    assert pose.xyz == pytest.approx((1.0, 2.5, 0.0)) and pose.object_xyz == pytest.approx((0.9, 2.4, 0.0))


def test_an_accepted_answer_without_its_goal_record_is_bad_input():
    status = records.status_record(goal(), command_id=1, command="pick", stamp={"sec": 0, "nanosec": 0},
                                   latency_ms=1.234, mode="on_command", goal=None, target_frame="world")
    assert status["status"] == "bad_input" and "'world'" in status["message"] and status["latency_ms"] == 1.23


def test_a_refusal_carries_skill_object_and_detection():
    det = Detection(phrase="cup", found=False, confidence=0.0)
    status = records.status_record(NoAction(Reason.NO_OBJECT, "not found", skill="pick", object_phrase="cup",
                                            detection=det), command_id=2, command="x" * 300,
                                   stamp=records.stamp_from_ns(1_500_000_001), latency_ms=0.0, mode="continuous")
    assert status["status"] == "no_object" and status["skill"] == "pick" and status["detection"]["found"] is False
    assert status["stamp"] == {"sec": 1, "nanosec": 500_000_001}
    assert status["command"] == "x" * records.ECHO_LIMIT + "..."


def test_echo_is_bounded_and_printable():
    assert records.echo("a\nb\x00") == "a\ufffdb\ufffd"
    assert records.echo("abc", limit=2) == "ab..."


def test_every_answer_carries_clips_skill_probabilities():
    stamp = {"sec": 0, "nanosec": 0}
    accepted = records.status_record(goal(), command_id=1, command="pick", stamp=stamp, latency_ms=0.0,
                                     mode="on_command", goal={"cmd": "pick"})
    refused = records.status_record(NoAction(Reason.LOW_CONFIDENCE, "CLIP contradicts", skill="open",
                                             skill_probabilities={"pick": 0.99, "open": 0.01}),
                                    command_id=2, command="open the cup", stamp=stamp, latency_ms=0.0,
                                    mode="on_command")
    assert accepted["skill_probabilities"] == {"pick": 1.0}
    assert refused["skill_probabilities"] == {"pick": 0.99, "open": 0.01}
