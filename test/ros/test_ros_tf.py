"""The TF path of vla_node (tf2_ros is not installed here: a stand-in Buffer answers the lookups).

The node is built in-process without configuring it (no models): only the transform code runs.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from geometry_msgs.msg import TransformStamped  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from clip_vla.core import geometry  # noqa: E402
from clip_vla.core.framesync import Refusal  # noqa: E402
from clip_vla.core.geometry import rotation_to_quaternion  # noqa: E402
from clip_vla.ros.vla_node import VlaNode  # noqa: E402
from clip_vla.ros.vla_node import tf as tf_module  # noqa: E402
from clip_vla.ros.vla_node.commands import Command  # noqa: E402
from clip_vla.ros.vla_node.outputs import goal_record  # noqa: E402
from clip_vla.core.types import ActionGoal, Reason  # noqa: E402

DEFAULT_XYZ = [0.5, 0.0, 0.8]
DEFAULT_RPY = [math.pi, 0.0, -math.pi / 2]


def _tf(xyz, quat) -> TransformStamped:
    t = TransformStamped()
    t.transform.translation.x, t.transform.translation.y, t.transform.translation.z = xyz
    (t.transform.rotation.x, t.transform.rotation.y, t.transform.rotation.z, t.transform.rotation.w) = quat
    return t


class FakeBuffer:
    """lookup_transform(target, source, time, timeout) like tf2_ros.Buffer."""

    def __init__(self) -> None:
        cam = geometry.RigidTransform.from_xyz_rpy(DEFAULT_XYZ, DEFAULT_RPY)
        self.table = {
            ("base_link", "camera_color_optical_frame"): _tf(DEFAULT_XYZ, rotation_to_quaternion(cam.rotation)),
            ("world", "base_link"): _tf([1.0, 2.0, 0.0], [0.0, 0.0, math.sin(math.pi / 4), math.cos(math.pi / 4)]),
        }
        self.calls = []

    def lookup_transform(self, target, source, time, timeout=None):
        self.calls.append((target, source))
        if (target, source) not in self.table:
            raise RuntimeError(f'"{source}" passed to lookupTransform argument source_frame does not exist')
        return self.table[(target, source)]


class FakeTf2:
    Buffer = FakeBuffer

    @staticmethod
    def TransformListener(buffer, node):  # noqa: N802 - mimics the tf2_ros class
        return object()


@pytest.fixture()
def node(monkeypatch, open_vocabulary_file):
    monkeypatch.setattr(tf_module, "TF2", FakeTf2)
    context = rclpy.Context()
    rclpy.init(args=[], context=context)
    n = VlaNode(context=context, parameter_overrides=[
        Parameter("target_frame", value="world"),
        Parameter("vocabulary_file", value=open_vocabulary_file),
        Parameter("autostart", value=False),
    ])
    yield n
    n.close()
    n.destroy_node()
    context.try_shutdown()


def _image(frame_id="camera_color_optical_frame") -> Image:
    msg = Image()
    msg.header.frame_id = frame_id
    msg.header.stamp.sec = 42
    return msg


def test_camera_to_base_comes_from_tf(node):
    assert node.tf_backend == "tf2_ros"
    rt = node.tf.camera_to_base(_image().header, node.settings)
    expected = geometry.RigidTransform.from_xyz_rpy(DEFAULT_XYZ, DEFAULT_RPY)
    np.testing.assert_allclose(rt.matrix(), expected.matrix(), atol=1e-9)
    assert node.tf.buffer.calls[-1] == ("base_link", "camera_color_optical_frame")


def test_missing_transform_is_a_clear_refusal(node):
    with pytest.raises(Refusal) as err:
        node.tf.camera_to_base(_image("other_camera").header, node.settings)
    assert err.value.reason == Reason.BAD_INPUT
    assert "other_camera" in err.value.message and "base_link" in err.value.message


def test_goal_is_expressed_in_target_frame(node):
    goal = ActionGoal(cmd="pick", cmd_token=1, skill_probabilities={"pick": 1.0}, object_phrase="red cup",
                      destination_phrase=None, pixel=(319.5, 239.5), detection=None, xyz_camera=(0.0, 0.0, 0.8),
                      xyz_base=(0.5, 0.0, 0.0), theta=0.3, tokens=(1, 128, 128, 36, 140), confidence=0.9,
                      depth_source="depth")
    cmd = Command(7, "pick up the red cup", 0.0)
    record = goal_record(cmd, goal, _image().header, 0, node.settings, node.tf)
    quat = tuple(record["orientation"][k] for k in "xyzw")
    assert record["frame_id"] == "world" and record["token_frame"] == "base_link"
    # world <- base: yaw +90 deg, then +(1, 2, 0): base (0.5, 0, 0) is world (1.0, 2.5, 0)
    assert record["pose"]["x"] == pytest.approx(1.0) and record["pose"]["y"] == pytest.approx(2.5)
    assert record["pose"]["theta"] == pytest.approx(0.3 + math.pi / 2)
    assert quat[2] == pytest.approx(math.sin((0.3 + math.pi / 2) / 2))
    assert record["tokens"] == [1, 128, 128, 36, 140]  # tokens stay in the workspace (base) frame
    assert record["stamp"] == {"sec": 42, "nanosec": 0} and record["command_id"] == 7


def test_quaternion_round_trip():
    for rpy in ([0.1, -0.2, 0.3], DEFAULT_RPY, [math.pi, 0.0, 0.0], [0.0, math.pi / 2, 0.0]):
        r = geometry.RigidTransform.from_xyz_rpy([0, 0, 0], rpy).rotation
        back = geometry.RigidTransform.from_xyz_quat([0, 0, 0], rotation_to_quaternion(r)).rotation
        np.testing.assert_allclose(back, r, atol=1e-9)
