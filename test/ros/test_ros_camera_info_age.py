"""The latest camera_info stands in for a frame's own only while it is younger than max_camera_info_age.

The rule lives in ``framesync.stale_camera_info``; the node's inputs and replay's pairing both
apply it, and the node's ``no_intrinsics`` answer says why a received camera_info was not used.
"""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("rclpy")

from builtin_interfaces.msg import Time  # noqa: E402

from clip_vla.ros import params  # noqa: E402
from clip_vla.ros.vla_node.diagnostics import Stats  # noqa: E402
from clip_vla.ros.vla_node.inputs import CameraInputs  # noqa: E402
from clip_vla.ros.vla_node.settings import NodeSettings  # noqa: E402
from clip_vla.testing.harness import start_ready, tabletop_scene, tiny_model_overrides, unique_domain_id  # noqa: E402
from clip_vla.tools import bags  # noqa: E402
from clip_vla.tools.replay import ReplayOptions, pair_commands  # noqa: E402

STALE_S = 0.3


def settings(**changes) -> NodeSettings:
    values = {name: spec.default for name, spec in params.parameter_specs().items()}
    return NodeSettings.from_values({**values, **changes})


def test_the_node_inputs_drop_a_stale_camera_info_and_say_why():
    from sensor_msgs.msg import CameraInfo

    from clip_vla.ros.conversions import numpy_to_image

    inputs = CameraInputs(threading.Condition(threading.RLock()), Stats())
    rgb, _, _ = tabletop_scene(8, 6)
    info = CameraInfo(width=8, height=6, k=[5.0, 0.0, 3.5, 0.0, 5.0, 2.5, 0.0, 0.0, 1.0])
    info.header.stamp = Time(sec=1)
    inputs.on_camera_info(info)
    time.sleep(STALE_S + 0.05)
    inputs.on_image(numpy_to_image(rgb, "rgb8", Time(sec=5), "cam"), 1 << 20, job_running=False)
    bounded, unbounded = settings(max_camera_info_age=STALE_S), settings(max_camera_info_age=0.0)
    slot = inputs.select(bounded, "/image")
    assert inputs.match(slot, bounded, lambda: False)[1] is None
    assert "max_camera_info_age 0.3 s" in inputs.why_no_camera_info(slot, bounded)
    assert inputs.match(slot, unbounded, lambda: False)[1].value.fx == 5.0


def test_replay_pairs_a_stale_camera_info_as_the_node_does():
    s = 1_000_000_000
    options = ReplayOptions(max_camera_info_age=5.0)
    messages = {options.color_topic: [bags.TopicMessage(0, 20 * s, stamp_ns=20 * s, size=(8, 6))],
                options.camera_info_topic: [bags.TopicMessage(0, 1 * s, stamp_ns=1 * s, size=(8, 6)),
                                            bags.TopicMessage(1, 16 * s, stamp_ns=16 * s, size=(8, 6))],
                options.command_topic: [bags.TopicMessage(0, 20 * s + s // 10, text="pick up the red cup")]}
    index = bags.BagIndex(Path("bag"), topics={})
    index.messages = messages
    assert pair_commands(index, options)[0].info.ordinal == 1  # 4 s before the frame: fresh
    messages[options.camera_info_topic].pop()
    assert pair_commands(index, options)[0].info is None  # 19 s before the frame: stale
    assert pair_commands(index, ReplayOptions(max_camera_info_age=0.0))[0].info.ordinal == 0


def test_a_stale_camera_info_answers_no_intrinsics_over_dds(tiny_models, open_vocabulary_file):
    overrides = tiny_model_overrides(tiny_models, open_vocabulary_file, max_camera_info_age=STALE_S)
    try:
        proc, c = start_ready(overrides, f"/test_info_age_{os.getpid()}", unique_domain_id(45))
    except RuntimeError as exc:
        pytest.fail(str(exc))
    try:
        rgb, depth, k = tabletop_scene(64, 48)
        c.publish_frame(rgb, depth, k, wait_acked=2.0)
        assert c.ask("pick up the red cup")["status"] == "accepted"
        time.sleep(STALE_S + 0.2)
        c.publish_frame(rgb, depth, None, wait_acked=2.0)  # camera_info stopped: the last one is stale
        status = c.ask("pick up the red cup")
        assert status["status"] == "no_intrinsics", status
        assert f"(max_camera_info_age {STALE_S:.1f} s)" in status["message"], status
    finally:
        c.close()
        proc.stop()
