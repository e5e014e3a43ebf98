"""sensor_msgs <-> numpy conversions: every encoding, row padding, strict validation, CameraInfo."""
from __future__ import annotations

import array
import math

import numpy as np
import pytest

pytest.importorskip("sensor_msgs.msg")

from sensor_msgs.msg import CameraInfo, Image  # noqa: E402

from clip_vla.ros import conversions as conv  # noqa: E402


def _rgb(h=5, w=7, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _msg(arr: np.ndarray, encoding: str, pad: int = 0, bigendian: bool = False) -> Image:
    """An Image with ``pad`` junk bytes at the end of every row."""
    a = np.asarray(arr)
    if bigendian:
        a = a.astype(a.dtype.newbyteorder(">"))
    rows = a.reshape(a.shape[0], -1).view(np.uint8).reshape(a.shape[0], -1)
    if pad:
        rows = np.concatenate([rows, np.full((a.shape[0], pad), 0xAB, np.uint8)], axis=1)
    msg = Image()
    msg.height, msg.width = a.shape[0], a.shape[1]
    msg.encoding = encoding
    msg.is_bigendian = int(bigendian)
    msg.step = rows.shape[1]
    msg.data = array.array("B", rows.tobytes())
    return msg


def test_backend_is_reported():
    assert conv.BACKEND in ("cv_bridge", "numpy")
    assert conv.BACKEND in conv.backend_description() or "numpy" in conv.backend_description()


@pytest.mark.parametrize("pad", [0, 3, 64])
@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8"])
def test_colour_encodings_give_rgb(encoding, pad):
    rgb = _rgb()
    if encoding == "rgb8":
        raw = rgb
    elif encoding == "bgr8":
        raw = rgb[:, :, ::-1]
    elif encoding == "rgba8":
        raw = np.dstack([rgb, np.full(rgb.shape[:2], 7, np.uint8)])
    else:
        raw = np.dstack([rgb[:, :, ::-1], np.full(rgb.shape[:2], 7, np.uint8)])
    out = conv.image_to_rgb(_msg(np.ascontiguousarray(raw), encoding, pad))
    assert out.dtype == np.uint8 and out.shape == rgb.shape
    np.testing.assert_array_equal(out, rgb)
    assert out.flags.writeable and out.flags.c_contiguous


@pytest.mark.parametrize("pad", [0, 5])
def test_mono8_is_grey_rgb(pad):
    grey = _rgb()[:, :, 0].copy()
    out = conv.image_to_rgb(_msg(grey, "mono8", pad))
    assert out.shape == (5, 7, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[:, :, c], grey)


@pytest.mark.parametrize("bigendian", [False, True])
@pytest.mark.parametrize("pad", [0, 4])
def test_depth_16uc1_and_32fc1(bigendian, pad):
    mm = np.arange(35, dtype=np.uint16).reshape(5, 7) * 100
    out = conv.depth_to_array(_msg(mm, "16UC1", pad, bigendian))
    assert out.dtype == np.uint16
    np.testing.assert_array_equal(out, mm)
    metres = (np.arange(35, dtype=np.float32).reshape(5, 7) / 10).astype(np.float32)
    metres[0, 0] = np.nan
    out = conv.depth_to_array(_msg(metres, "32FC1", pad, bigendian))
    assert out.dtype == np.float32 and out.dtype.byteorder in ("=", "<", "|")
    np.testing.assert_array_equal(out, metres)


def test_round_trip_through_numpy_to_image():
    rgb = _rgb(4, 6, seed=3)
    msg = conv.rgb_to_image(rgb, encoding="bgr8", frame_id="cam")
    assert msg.encoding == "bgr8" and msg.step == 18 and msg.header.frame_id == "cam"
    np.testing.assert_array_equal(conv.image_to_rgb(msg), rgb)
    depth = np.full((4, 6), 0.8, np.float32)
    np.testing.assert_array_equal(conv.depth_to_array(conv.numpy_to_image(depth, "32FC1")), depth)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda m: setattr(m, "data", m.data[:-1]), "data has"),
        (lambda m: setattr(m, "step", 20), "step"),
        (lambda m: setattr(m, "encoding", "yuv422"), "unsupported encoding"),
        (lambda m: setattr(m, "encoding", "16UC1"), "unsupported encoding"),
        (lambda m: (setattr(m, "height", 0), setattr(m, "width", 0), setattr(m, "step", 0),
                    setattr(m, "data", array.array("B"))), "empty image"),
        (lambda m: (setattr(m, "height", 10000), setattr(m, "width", 10000), setattr(m, "step", 30000)),
         "max_image_pixels"),
    ],
)
def test_malformed_colour_images_are_refused(mutate, message):
    msg = _msg(_rgb(), "rgb8")
    mutate(msg)
    with pytest.raises(conv.ConversionError, match=message):
        conv.image_to_rgb(msg, max_pixels=8192 * 8192)


def test_huge_header_is_refused_before_allocating():
    msg = Image(height=10000, width=10000, encoding="rgb8", step=30000)
    msg.data = array.array("B", b"\x00" * 100)
    with pytest.raises(conv.ConversionError, match="exceeds max_image_pixels"):
        conv.validate_image(msg, conv.COLOR_ENCODINGS, 8192 * 8192)
    # Under the pixel limit the data length check refuses it.
    with pytest.raises(conv.ConversionError, match="data has 100 bytes"):
        conv.validate_image(msg, conv.COLOR_ENCODINGS, 10 ** 9)


def test_depth_rejects_colour_encoding():
    with pytest.raises(conv.ConversionError, match="unsupported encoding 'rgb8'"):
        conv.depth_to_array(_msg(_rgb(), "rgb8"))


def test_resize_depth_is_nearest():
    d = np.array([[0, 1000], [2000, 3000]], np.uint16)
    out = conv.resize_depth(d, 4, 4)
    assert out.shape == (4, 4) and set(np.unique(out)) <= {0, 1000, 2000, 3000}


def test_camera_info_to_intrinsics():
    info = CameraInfo()
    info.k = [500.0, 0.0, 319.5, 0.0, 501.0, 239.5, 0.0, 0.0, 1.0]
    k = conv.camera_info_to_intrinsics(info)
    assert (k.fx, k.fy, k.cx, k.cy) == (500.0, 501.0, 319.5, 239.5)
    with pytest.raises(conv.ConversionError, match="focal length"):
        conv.camera_info_to_intrinsics(CameraInfo())  # all zeros: an uncalibrated camera
    info.k = [math.nan, 0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0]
    with pytest.raises(conv.ConversionError, match="not finite"):
        conv.camera_info_to_intrinsics(info)


def test_stamps_and_yaw():
    stamp = conv.seconds_to_stamp(12.25)
    assert (stamp.sec, stamp.nanosec) == (12, 250_000_000)
    assert conv.stamp_to_seconds(stamp) == pytest.approx(12.25)
    assert conv.stamp_to_dict(stamp) == {"sec": 12, "nanosec": 250_000_000}
    x, y, z, w = conv.yaw_to_quaternion(math.pi / 2)
    assert (x, y) == (0.0, 0.0) and z == pytest.approx(math.sqrt(0.5)) and w == pytest.approx(math.sqrt(0.5))


class _FakeBridge:
    """cv_bridge's imgmsg_to_cv2(passthrough) for packed rows (padded rows never reach cv_bridge)."""

    def imgmsg_to_cv2(self, msg, desired_encoding="passthrough"):
        spec = conv.ALL_ENCODINGS[msg.encoding]
        dtype = np.dtype(spec.dtype).newbyteorder(">" if msg.is_bigendian else "<")
        assert msg.step == msg.width * spec.channels * dtype.itemsize, "padded rows must take the numpy path"
        shape = (msg.height, msg.width, spec.channels) if spec.channels > 1 else (msg.height, msg.width)
        return np.ndarray(shape=shape, dtype=dtype, buffer=bytes(msg.data)).astype(dtype.newbyteorder("="))


@pytest.mark.parametrize("pad", [0, 4])
@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "mono8", "16UC1", "32FC1"])
def test_cv_bridge_path_matches_numpy_path(monkeypatch, encoding, pad):
    """Both backends give identical arrays (with a real cv_bridge when importable, else a faithful fake)."""
    rng = np.random.default_rng(1)
    spec = conv.ALL_ENCODINGS[encoding]
    shape = (6, 8, spec.channels) if spec.channels > 1 else (6, 8)
    if np.dtype(spec.dtype) == np.float32:
        data = rng.random(shape, dtype=np.float32)
    else:
        data = rng.integers(0, 255, shape).astype(spec.dtype)
    msg = _msg(data, encoding, pad=pad)
    convert = conv.depth_to_array if encoding in conv.DEPTH_ENCODINGS else conv.image_to_rgb
    monkeypatch.setattr(conv, "_BRIDGE", None)
    via_numpy = convert(msg)
    bridge = conv._load_cv_bridge() or _FakeBridge()
    monkeypatch.setattr(conv, "_BRIDGE", bridge)
    via_bridge = convert(msg)
    assert via_bridge.dtype == via_numpy.dtype
    np.testing.assert_array_equal(via_bridge, via_numpy)
