"""The Gazebo world and bridge config cannot run here (no gz sim): validate them as files."""
import math
import xml.etree.ElementTree as ET

import numpy as np
import yaml

from clip_vla.core.config import ClipVlaConfig
from clip_vla.core.geometry import camera_to_base_from_config
from conftest import REPO

SDF = REPO / "config" / "tabletop.sdf"
BRIDGE = REPO / "config" / "gz_bridge.yaml"
# What a gz-sim rgbd_camera publishes under its <topic>.
RGBD_SUFFIXES = {"/image", "/depth_image", "/camera_info", "/points"}


def world():
    root = ET.parse(SDF).getroot()
    assert root.tag == "sdf"
    return root.find("world")


def camera_sensor():
    sensors = world().findall(".//sensor")
    assert len(sensors) == 1 and sensors[0].get("type") == "rgbd_camera"
    return sensors[0]


def test_sdf_is_well_formed_with_table_bowl_objects_and_camera():
    names = {m.get("name") for m in world().findall("model")}
    assert {"table", "bowl", "camera"} <= names
    assert len(names - {"table", "bowl", "camera", "ground_plane"}) >= 4
    plugins = {p.get("name") for p in world().findall("plugin")}
    assert "gz::sim::systems::Sensors" in plugins and "gz::sim::systems::Physics" in plugins


def test_bridge_topics_exist_in_the_world():
    entries = yaml.safe_load(BRIDGE.read_text())
    base = camera_sensor().find("topic").text
    for entry in entries:
        assert {"ros_topic_name", "gz_topic_name", "ros_type_name", "gz_type_name", "direction"} <= set(entry)
        assert entry["direction"] == "GZ_TO_ROS"
        if entry["gz_topic_name"] != "/clock":
            suffix = entry["gz_topic_name"][len(base):]
            assert entry["gz_topic_name"].startswith(base) and suffix in RGBD_SUFFIXES, entry
    types = {e["ros_topic_name"]: e["ros_type_name"] for e in entries}
    assert types["camera/color/image_raw"] == "sensor_msgs/msg/Image"
    assert types["camera/depth/image_raw"] == "sensor_msgs/msg/Image"
    assert types["camera/color/camera_info"] == "sensor_msgs/msg/CameraInfo"


def test_camera_pose_matches_the_default_extrinsics():
    """The node's default camera_to_base parameters describe the SDF camera."""
    model = next(m for m in world().findall("model") if m.get("name") == "camera")
    x, y, z, roll, pitch, yaw = (float(v) for v in model.find("pose").text.split())
    cfg = ClipVlaConfig.from_yaml(REPO / "config" / "clip_vla.yaml")
    t = camera_to_base_from_config(cfg.geometry)
    assert np.allclose(t.translation, [x, y, z], atol=1e-6)
    # gz camera link: x = viewing direction, y = image left, z = image up.
    # Optical frame: z = viewing direction, x = image right, y = image down.
    cy, sy, cp, sp = math.cos(yaw), math.sin(yaw), math.cos(pitch), math.sin(pitch)
    rz = np.array([[cy, -sy, 0], [sy, cy, 0], [0, 0, 1]])
    ry = np.array([[cp, 0, sp], [0, 1, 0], [-sp, 0, cp]])
    link = rz @ ry  # roll is 0
    view, left, up = link[:, 0], link[:, 1], link[:, 2]
    assert np.allclose(t.rotation[:, 2], view, atol=1e-6)   # optical z
    assert np.allclose(t.rotation[:, 0], -left, atol=1e-6)  # optical x = image right
    assert np.allclose(t.rotation[:, 1], -up, atol=1e-6)    # optical y = image down
