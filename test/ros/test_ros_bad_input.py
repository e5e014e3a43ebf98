"""Bad input over real DDS: each is answered with a status, and the next good command still works.

This module's node subscribes to the camera with ``image_reliability: reliable`` (the
parameter drivers that publish reliably use); frames are small so they never fragment.
"""
from __future__ import annotations

import array
import os

import numpy as np
import pytest

pytest.importorskip("rclpy")

from clip_vla.testing.harness import Client, start_ready, tabletop_scene, tiny_model_overrides, unique_domain_id  # noqa: E402,E501

SIZE = (64, 48)


@pytest.fixture(scope="module")
def peer(tiny_models, open_vocabulary_file):
    domain = unique_domain_id(2)
    namespace = f"/test_bad_{os.getpid()}"
    overrides = tiny_model_overrides(tiny_models, open_vocabulary_file, image_reliability="reliable")
    try:
        proc, client = start_ready(overrides, namespace, domain)
    except RuntimeError as exc:
        pytest.fail(str(exc))
    yield client
    client.close()
    rc = proc.stop()
    assert rc == 0 and "Traceback" not in proc.output(), proc.output()[-3000:]


def good(client: Client) -> dict:
    """A good frame and command: must be accepted after any bad input."""
    rgb, depth, k = tabletop_scene(*SIZE)
    client.publish_frame(rgb, depth, k)
    status = client.ask("pick up the red cup")
    assert status["status"] == "accepted", status
    assert status["goal"]["pose"]["x"] == pytest.approx(0.5, abs=1e-6)
    return status


def image(encoding="rgb8", width=SIZE[0], height=SIZE[1], step=None, data_len=None, stamp=None):
    from sensor_msgs.msg import Image

    channels = {"rgb8": 3, "bgr8": 3, "mono8": 1, "rgba8": 4, "bgra8": 4}.get(encoding, 2)
    step = width * channels if step is None else step
    msg = Image(height=height, width=width, encoding=encoding, step=step)
    msg.header.frame_id = "camera_color_optical_frame"
    n = height * step if data_len is None else data_len
    msg.data = array.array("B", bytes(n))
    return msg


def test_commands_before_any_frame(peer):
    peer.forget_frames()
    status = peer.ask("pick up the red cup")
    assert status["status"] == "no_frame"
    good(peer)


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda: image(data_len=100), "data has 100 bytes"),
        (lambda: image(step=10), "step"),
        (lambda: image(encoding="yuv422"), "unsupported encoding"),
        (lambda: image(encoding="16UC1"), "unsupported encoding"),
        (lambda: image(width=0, height=0, step=0, data_len=0), "empty image"),
        (lambda: image(width=10000, height=10000, step=30000, data_len=64), "max_image_pixels"),
    ],
    ids=["data_length", "step", "encoding", "depth_as_colour", "0x0", "10000x10000"],
)
def test_malformed_colour_frames(peer, make, words):
    msg = make()
    msg.header.stamp = peer.now()
    peer.publish_image(msg)
    status = peer.ask("pick up the red cup")
    assert status["status"] == "bad_input", status
    assert words in status["message"]
    good(peer)


@pytest.mark.parametrize("text, expected", [
    ("", "empty_command"),
    ("   \t\n ", "empty_command"),
    ("pick up the red cup " * 5000, "bad_command"),  # 100 kB
])
def test_bad_commands(peer, text, expected):
    rgb, depth, k = tabletop_scene(*SIZE)
    peer.publish_frame(rgb, depth, k)
    status = peer.ask(text)
    assert status["status"] == expected, status
    assert len(status["command"]) <= 210  # the echo is bounded
    good(peer)


def test_invalid_utf8_command(peer):
    payload = b"pick up the \xff\xfe cup"
    cdr = b"\x00\x01\x00\x00" + (len(payload) + 1).to_bytes(4, "little") + payload + b"\x00"
    rgb, depth, k = tabletop_scene(*SIZE)
    peer.publish_frame(rgb, depth, k)
    status = peer.status_after(peer.send_raw(cdr))
    assert status["status"] == "bad_command", status
    assert "UTF-8" in status["message"]
    good(peer)


@pytest.mark.parametrize("depth", [
    np.full(SIZE[::-1], np.nan, np.float32),
    np.zeros(SIZE[::-1], np.uint16),
], ids=["nan_32FC1", "zero_16UC1"])
def test_depth_without_any_valid_reading_is_no_depth_unless_the_table_is_allowed(peer, depth):
    rgb, _, k = tabletop_scene(*SIZE)
    peer.publish_frame(rgb, depth, k)
    status = peer.ask("pick up the red cup")
    assert status["status"] == "no_depth" and "no valid depth over the mask" in status["message"], status
    assert all(r.successful for r in peer.set_parameters({"geometry.depth_fallback": "table_plane"}))
    try:
        peer.publish_frame(rgb, depth, k)
        status = peer.ask("pick up the red cup")
        assert status["status"] == "accepted", status
        assert status["goal"]["depth_source"] == "table_plane"
    finally:
        assert all(r.successful for r in peer.set_parameters({"geometry.depth_fallback": "refuse"}))
    good(peer)


def test_malformed_depth(peer):
    rgb, _, k = tabletop_scene(*SIZE)
    stamp = peer.now()
    bad = image(encoding="16UC1", data_len=10)
    bad.header.stamp = stamp
    peer.pub_depth.publish(bad)
    peer.publish_frame(rgb, None, k, stamp=stamp)
    status = peer.ask("pick up the red cup")
    assert status["status"] == "bad_input", status
    assert "depth" in status["message"]
    good(peer)


def test_camera_info_with_zero_focal_length(peer):
    from clip_vla.core.types import Intrinsics

    rgb, depth, k = tabletop_scene(*SIZE)
    stamp = peer.now()
    info = peer.make_camera_info(Intrinsics(1.0, 1.0, 0.0, 0.0), SIZE[0], SIZE[1], stamp)
    info.k = [0.0] * 9
    peer.pub_info.publish(info)
    peer.publish_frame(rgb, depth, None, stamp=stamp)
    status = peer.ask("pick up the red cup")
    assert status["status"] == "bad_input", status
    assert "focal" in status["message"]
    good(peer)


def test_every_command_was_answered_exactly_once(peer):
    for _ in range(6):  # bad frames of its own: the test passes alone and in any order
        msg = image(encoding="yuv422")
        msg.header.stamp = peer.now()
        peer.publish_image(msg)
        assert peer.ask("pick up the red cup")["status"] == "bad_input"
    n = len(peer.diagnostics)
    diag = peer.wait_for(lambda: peer.diagnostics[-1] if len(peer.diagnostics) > n else None)
    assert int(diag["commands answered"]) == int(diag["commands received"]) == len(peer.statuses)
    ids = [s["command_id"] for s in peer.statuses]
    assert ids == list(range(1, len(ids) + 1))
    assert int(diag["frames bad"]) >= 6


@pytest.mark.parametrize("name, value, expected", [
    ("geometry.intrinsics", [500.0, 500.0], "geometry.intrinsics: expected 4 numbers"),
    ("geometry.depth_fallback", "guess", "geometry.depth_fallback: expected one of: refuse, table_plane"),
    ("workspace.x", [1.0, 0.0], "workspace.x: expected [min, max] with min < max"),
], ids=["intrinsics_length", "depth_fallback_choice", "workspace_inverted"])
def test_param_set_is_judged_by_the_config_validator(peer, name, value, expected):
    """``ros2 param set`` gets the config schema's one-line reason (two intrinsics were silently 'unset')."""
    result = peer.set_parameters({name: value})[0]
    assert not result.successful and result.reason.startswith(expected), result.reason
    good(peer)
