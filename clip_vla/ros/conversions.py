"""sensor_msgs <-> numpy, strictly validated, with cv_bridge when importable.

Every incoming image is checked against its own header *before* anything is allocated:

- the encoding is one of ``COLOR_ENCODINGS`` / ``DEPTH_ENCODINGS``;
- width and height are positive and ``width * height <= max_pixels`` (a 10000x10000 header
  with a few bytes of data is refused without allocating 300 MB);
- ``step >= width * channels * bytes_per_channel`` (rows may be padded: the padding is dropped);
- ``len(data) == height * step`` exactly.

Then the pixels are viewed (no copy) as a strided numpy array, byte-swapped when the message
is big-endian, and converted: colour to HxWx3 uint8 RGB, depth to HxW uint16 (16UC1/mono16,
millimetres by ``geometry.depth_scale``) or HxW float32 (32FC1, metres).

When ``cv_bridge`` is importable it does the raw view of packed images
(``imgmsg_to_cv2(passthrough)``), as ROS users expect; otherwise, and for rows padded beyond
``width * channels`` (cv_bridge releases disagree on those), a built-in numpy view is used.
Both go through the same validation and the same colour conversion, so they give identical
arrays. ``BACKEND`` says which is in use.
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

import cv2
import numpy as np

from clip_vla.core.types import Intrinsics

DEFAULT_MAX_PIXELS = 8192 * 8192


@dataclass(frozen=True)
class Encoding:
    channels: int
    dtype: Any  # numpy dtype
    to_rgb: Optional[int]  # cv2 conversion code to RGB, None when already RGB (or depth)


COLOR_ENCODINGS: Dict[str, Encoding] = {
    "rgb8": Encoding(3, np.uint8, None),
    "bgr8": Encoding(3, np.uint8, cv2.COLOR_BGR2RGB),
    "rgba8": Encoding(4, np.uint8, cv2.COLOR_RGBA2RGB),
    "bgra8": Encoding(4, np.uint8, cv2.COLOR_BGRA2RGB),
    "mono8": Encoding(1, np.uint8, cv2.COLOR_GRAY2RGB),
}
DEPTH_ENCODINGS: Dict[str, Encoding] = {
    "16UC1": Encoding(1, np.uint16, None),
    "mono16": Encoding(1, np.uint16, None),
    "32FC1": Encoding(1, np.float32, None),
}
ALL_ENCODINGS: Dict[str, Encoding] = {**COLOR_ENCODINGS, **DEPTH_ENCODINGS}


class ConversionError(ValueError):
    """A message cannot be converted; the message says what is wrong with it."""


# --------------------------------------------------------------------------- backend
def _load_cv_bridge():
    try:
        from cv_bridge import CvBridge  # type: ignore

        return CvBridge()
    except Exception:  # noqa: BLE001 - ImportError, or a cv_bridge built for another numpy
        return None


_BRIDGE = _load_cv_bridge()
BACKEND = "cv_bridge" if _BRIDGE is not None else "numpy"


def backend_description() -> str:
    if _BRIDGE is not None:
        return "cv_bridge (imgmsg_to_cv2 passthrough, validated and converted by clip_vla)"
    return "built-in numpy conversion (cv_bridge not importable)"


# --------------------------------------------------------------------------- validation
def validate_image(msg: Any, allowed: Dict[str, Encoding], max_pixels: int = DEFAULT_MAX_PIXELS) -> Encoding:
    """Check an Image header against its data; cheap (no pixel is touched). Raises ConversionError."""
    encoding = str(msg.encoding)
    spec = allowed.get(encoding)
    if spec is None:
        shown = encoding if len(encoding) <= 40 else encoding[:40] + "..."
        raise ConversionError(f"unsupported encoding '{shown}' (supported: {', '.join(allowed)})")
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height <= 0 or width <= 0:
        raise ConversionError(f"empty image: {width}x{height}")
    if width * height > int(max_pixels):
        raise ConversionError(
            f"image {width}x{height} ({width * height} pixels) exceeds max_image_pixels={int(max_pixels)}")
    row_bytes = width * spec.channels * np.dtype(spec.dtype).itemsize
    if step < row_bytes:
        raise ConversionError(f"step {step} is smaller than width*channels*bytes = {row_bytes} for '{encoding}'")
    size = len(msg.data)
    if size != height * step:
        raise ConversionError(f"data has {size} bytes but height*step = {height}*{step} = {height * step}")
    return spec


# --------------------------------------------------------------------------- Image -> numpy
def _numpy_view(msg: Any, spec: Encoding) -> np.ndarray:
    """HxWxC (or HxW) view of the message buffer, padding dropped; native byte order."""
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    dtype = np.dtype(spec.dtype)
    big = bool(msg.is_bigendian)
    if dtype.itemsize > 1:
        dtype = dtype.newbyteorder(">" if big else "<")
    buf = np.frombuffer(msg.data, dtype=np.uint8)
    shape: Tuple[int, ...] = (height, width, spec.channels) if spec.channels > 1 else (height, width)
    strides: Tuple[int, ...] = ((step, dtype.itemsize * spec.channels, dtype.itemsize) if spec.channels > 1
                                else (step, dtype.itemsize))
    view = np.lib.stride_tricks.as_strided(buf, shape=shape, strides=strides, writeable=False)
    # as_strided keeps uint8; reinterpret rows with the real dtype via a contiguous copy of the rows.
    if dtype.itemsize == 1:
        return view
    rows = buf.reshape(height, step)[:, : width * spec.channels * dtype.itemsize]
    arr = np.ascontiguousarray(rows).view(dtype).reshape(shape[:2] if spec.channels == 1 else shape)
    return arr.astype(dtype.newbyteorder("="), copy=False)


def _bridge_view(msg: Any, spec: Encoding) -> np.ndarray:
    arr = np.asarray(_BRIDGE.imgmsg_to_cv2(msg, desired_encoding="passthrough"))
    width = int(msg.width)
    if arr.ndim >= 2 and arr.shape[1] != width:  # some versions keep the row padding
        arr = arr[:, :width]
    if spec.channels == 1 and arr.ndim == 3:
        arr = arr[:, :, 0]
    return arr.astype(np.dtype(spec.dtype), copy=False)


def raw_array(msg: Any, allowed: Dict[str, Encoding] = ALL_ENCODINGS,
              max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """The message's pixels in their own encoding (HxWxC or HxW), validated."""
    spec = validate_image(msg, allowed, max_pixels)
    packed = int(msg.step) == int(msg.width) * spec.channels * np.dtype(spec.dtype).itemsize
    # cv_bridge releases differ on padded rows (some ignore the padding, some misread it): padded
    # images always take the numpy path, which honours ``step``.
    if _BRIDGE is not None and packed:
        try:
            return _bridge_view(msg, spec)
        except Exception as exc:  # noqa: BLE001 - cv_bridge raises its own CvBridgeError
            raise ConversionError(f"cv_bridge could not convert the image: {exc}") from exc
    return _numpy_view(msg, spec)


def image_to_rgb(msg: Any, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """A colour Image (rgb8, bgr8, rgba8, bgra8, mono8) as a new HxWx3 uint8 RGB array."""
    spec = validate_image(msg, COLOR_ENCODINGS, max_pixels)
    arr = raw_array(msg, COLOR_ENCODINGS, max_pixels)
    if spec.to_rgb is None:
        return np.ascontiguousarray(arr, dtype=np.uint8).copy()
    return cv2.cvtColor(np.ascontiguousarray(arr), spec.to_rgb)


def depth_to_array(msg: Any, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """A depth Image as HxW uint16 (16UC1/mono16) or HxW float32 metres (32FC1); a new array."""
    validate_image(msg, DEPTH_ENCODINGS, max_pixels)
    return np.array(raw_array(msg, DEPTH_ENCODINGS, max_pixels), copy=True)


def resize_depth(depth: np.ndarray, width: int, height: int) -> np.ndarray:
    """Registered depth at another resolution, resampled to (width, height) with nearest neighbour.

    Nearest keeps invalid readings (0/NaN) invalid instead of blending them into object edges.
    """
    return cv2.resize(depth, (int(width), int(height)), interpolation=cv2.INTER_NEAREST)


# --------------------------------------------------------------------------- numpy -> Image
def numpy_to_image(arr: np.ndarray, encoding: str, stamp: Any = None, frame_id: str = "", image_cls: Any = None):
    """A sensor_msgs/Image from an array already in ``encoding`` (no padding, little-endian)."""
    import array as _array

    if image_cls is None:
        from sensor_msgs.msg import Image as image_cls  # noqa: N813
    spec = ALL_ENCODINGS.get(encoding)
    if spec is None:
        raise ConversionError(f"unsupported encoding '{encoding}'")
    a = np.asarray(arr)
    expected_ndim = 3 if spec.channels > 1 else 2
    if a.ndim == 3 and spec.channels == 1 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim != expected_ndim or (spec.channels > 1 and a.shape[2] != spec.channels):
        raise ConversionError(f"array of shape {a.shape} is not '{encoding}' ({spec.channels} channels)")
    a = np.ascontiguousarray(a, dtype=np.dtype(spec.dtype).newbyteorder("<"))
    msg = image_cls()
    if stamp is not None:
        msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.height, msg.width = int(a.shape[0]), int(a.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = int(a.shape[1] * spec.channels * a.dtype.itemsize)
    msg.data = _array.array("B", a.tobytes())
    return msg


def rgb_to_image(rgb: np.ndarray, stamp: Any = None, frame_id: str = "", encoding: str = "rgb8"):
    """An HxWx3 RGB array as an Image in ``encoding`` (rgb8 or bgr8), e.g. for ~/debug_image."""
    if encoding == "bgr8":
        rgb = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR)
    return numpy_to_image(rgb, encoding, stamp, frame_id)


# --------------------------------------------------------------------------- CameraInfo
def camera_info_to_intrinsics(msg: Any) -> Intrinsics:
    """fx, fy, cx, cy from CameraInfo.k; an uncalibrated camera (zero focal length) is an error."""
    k = [float(v) for v in msg.k]
    if len(k) != 9:
        raise ConversionError(f"camera_info k must have 9 numbers, got {len(k)}")
    fx, fy, cx, cy = k[0], k[4], k[2], k[5]
    if not all(math.isfinite(v) for v in (fx, fy, cx, cy)):
        raise ConversionError(f"camera_info K is not finite (fx={fx}, fy={fy}, cx={cx}, cy={cy})")
    if fx <= 0.0 or fy <= 0.0:
        raise ConversionError(
            f"camera_info K has a zero or negative focal length (fx={fx}, fy={fy}): the camera is not "
            "calibrated; calibrate it or set geometry.intrinsics")
    return Intrinsics(fx=fx, fy=fy, cx=cx, cy=cy)


# --------------------------------------------------------------------------- stamps
def stamp_to_seconds(stamp: Any) -> float:
    return float(stamp.sec) + float(stamp.nanosec) * 1e-9


def stamp_to_dict(stamp: Any) -> Dict[str, int]:
    return {"sec": int(stamp.sec), "nanosec": int(stamp.nanosec)}


def seconds_to_stamp(seconds: float, stamp_cls: Any = None):
    if stamp_cls is None:
        from builtin_interfaces.msg import Time as stamp_cls  # noqa: N813
    sec = int(math.floor(seconds))
    nanosec = int(round((seconds - sec) * 1e9))
    if nanosec >= 1_000_000_000:
        sec, nanosec = sec + 1, nanosec - 1_000_000_000
    return stamp_cls(sec=sec, nanosec=nanosec)


def yaw_to_quaternion(yaw: float) -> Tuple[float, float, float, float]:
    """(x, y, z, w) of a rotation by ``yaw`` about +z."""
    half = 0.5 * float(yaw)
    return (0.0, 0.0, math.sin(half), math.cos(half))


def native_is_little_endian() -> bool:
    return sys.byteorder == "little"
