"""rosbag2 files without ROS: reading, writing and message <-> numpy, on the ``rosbags`` library.

This is the ROS-free layer under ``clip-vla record`` and ``clip-vla replay``: it never imports
rclpy, so a CI runner can replay a bag that ``ros2 bag record`` wrote on a robot, and write
bags that ``ros2 bag play`` publishes.

- **Reading** goes through ``BagReader`` on rosbags' storage readers (sqlite3 and mcap, message
  definitions from the bag, or the Humble typestore for old bags that carry none).
  ``scan_bag`` makes one cheap pass that keeps only timestamps, header stamps, commands and
  transforms (images are not decoded: their header stamp is read from the CDR bytes);
  ``iter_messages`` then deserialises only the messages asked for.
- **Conversion** of Image / CameraInfo messages reuses ``clip_vla.ros.conversions`` (strictly
  validated, row padding via ``step``, byte order, no rclpy at import time): a rosbags message
  has the same field names as an rclpy one, so the node and the bag tools share one converter.
  ``compressed_to_rgb`` adds CompressedImage (JPEG/PNG via OpenCV).
- **Writing** goes through ``BagWriter`` (a thin wrapper of ``rosbags.rosbag2.Writer`` that
  adds a connection per topic on first use) and the ``*_msg`` builders below.

Times: bag (receive) times and header stamps are integer nanoseconds everywhere in this
module; ``ns_to_seconds`` converts for JSON.
"""
from __future__ import annotations

import heapq
import struct
from bisect import bisect_right
from collections import defaultdict
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Set, Tuple, Union

import numpy as np

from clip_vla.core.geometry import RigidTransform, rotation_to_quaternion
from clip_vla.ros.conversions import (  # ROS-free: numpy/cv2 only (cv_bridge used when importable)
    COLOR_ENCODINGS,
    DEPTH_ENCODINGS,
    ConversionError,
    camera_info_to_intrinsics,
    depth_to_array,
    image_to_rgb,
    resize_depth,
    yaw_to_quaternion,
)
from clip_vla.core.types import Intrinsics

__all__ = [
    "BagError", "ConversionError", "BagWriter", "BagIndex", "TopicMessage", "Transforms",
    "COLOR_TOPIC", "DEPTH_TOPIC", "CAMERA_INFO_TOPIC", "COMMAND_TOPIC", "TF_TOPIC", "TF_STATIC_TOPIC",
    "IMAGE", "COMPRESSED_IMAGE", "CAMERA_INFO", "STRING", "POSE_STAMPED", "TF_MESSAGE",
    "TopicInfo", "BagReader", "typestore", "open_reader", "scan_bag", "iter_messages", "read_messages", "bag_topics",
    "color_to_rgb", "image_to_rgb", "compressed_to_rgb", "depth_to_array", "camera_info_to_intrinsics",
    "resize_depth", "image_msg", "camera_info_msg", "string_msg", "pose_stamped_msg", "transform_msg",
    "tf_message", "header", "ns_to_seconds", "seconds_to_ns", "stamp_to_ns",
]

# Topics of the node (relative names resolved in the root namespace) and of a RealSense-style driver.
COLOR_TOPIC = "/camera/color/image_raw"
DEPTH_TOPIC = "/camera/depth/image_raw"
CAMERA_INFO_TOPIC = "/camera/color/camera_info"
COMMAND_TOPIC = "/command"
TF_TOPIC = "/tf"
TF_STATIC_TOPIC = "/tf_static"

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
STRING = "std_msgs/msg/String"
POSE_STAMPED = "geometry_msgs/msg/PoseStamped"
TF_MESSAGE = "tf2_msgs/msg/TFMessage"

# Message types whose first field is std_msgs/Header: the stamp is the first 8 bytes of the payload.
_HEADER_FIRST = {IMAGE, COMPRESSED_IMAGE, CAMERA_INFO, POSE_STAMPED}

STORAGES = ("mcap", "sqlite3")
DEFAULT_VERSION = 8  # rosbags writes 8 or 9; 8 is what Iron reads (Jazzy reads both)


class BagError(ValueError):
    """A bag cannot be read or written as asked; the message says why."""


# --------------------------------------------------------------------------- time
def ns_to_seconds(ns: Optional[int]) -> Optional[float]:
    return None if ns is None else round(int(ns) * 1e-9, 9)


def seconds_to_ns(seconds: float) -> int:
    return int(round(float(seconds) * 1e9))


def stamp_to_ns(stamp: Any) -> int:
    """builtin_interfaces/Time (``sec``, ``nanosec``) -> integer nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


# --------------------------------------------------------------------------- typestore
_TYPESTORE = None


def typestore():
    """The ROS 2 Humble typestore (message definitions identical to later distros for the types used here)."""
    global _TYPESTORE
    if _TYPESTORE is None:
        from rosbags.typesys import Stores, get_typestore

        _TYPESTORE = get_typestore(Stores.ROS2_HUMBLE)
    return _TYPESTORE


def _types():
    return typestore().types


# --------------------------------------------------------------------------- message builders
def _time(ns: int):
    ns = int(ns)
    return _types()["builtin_interfaces/msg/Time"](sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def header(stamp_ns: int, frame_id: str = ""):
    return _types()["std_msgs/msg/Header"](stamp=_time(stamp_ns), frame_id=str(frame_id))


def image_msg(array: np.ndarray, encoding: str, stamp_ns: int, frame_id: str = "", row_padding: int = 0):
    """A sensor_msgs/Image from an array already in ``encoding``; ``row_padding`` extra bytes per row
    (zeros) exercise readers that must honour ``step``."""
    spec = {**COLOR_ENCODINGS, **DEPTH_ENCODINGS}.get(encoding)
    if spec is None:
        raise ConversionError(f"unsupported encoding '{encoding}'")
    a = np.asarray(array)
    if a.ndim == 3 and spec.channels == 1 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim != (3 if spec.channels > 1 else 2) or (spec.channels > 1 and a.shape[2] != spec.channels):
        raise ConversionError(f"array of shape {a.shape} is not '{encoding}' ({spec.channels} channels)")
    a = np.ascontiguousarray(a, dtype=np.dtype(spec.dtype).newbyteorder("<"))
    height, width = int(a.shape[0]), int(a.shape[1])
    rows = a.reshape(height, -1).view(np.uint8)
    if row_padding:
        rows = np.concatenate([rows, np.zeros((height, int(row_padding)), np.uint8)], axis=1)
    data = np.ascontiguousarray(rows).reshape(-1)
    return _types()[IMAGE](header=header(stamp_ns, frame_id), height=height, width=width, encoding=encoding,
                           is_bigendian=0, step=int(rows.shape[1]), data=data)


def compressed_image_msg(rgb: np.ndarray, stamp_ns: int, frame_id: str = "", fmt: str = "png"):
    """A sensor_msgs/CompressedImage (``fmt`` png or jpeg) of an HxWx3 RGB array."""
    import cv2

    ok, buf = cv2.imencode("." + ("jpg" if fmt in ("jpeg", "jpg") else fmt),
                           cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR))
    if not ok:
        raise ConversionError(f"cannot encode the image as {fmt}")
    return _types()[COMPRESSED_IMAGE](header=header(stamp_ns, frame_id), format=f"rgb8; {fmt} compressed bgr8",
                                      data=np.asarray(buf, np.uint8).reshape(-1))


def camera_info_msg(intrinsics: Intrinsics, width: int, height: int, stamp_ns: int, frame_id: str = ""):
    """A calibrated, undistorted pinhole CameraInfo (K, R = I, P = [K | 0])."""
    k = intrinsics.matrix()
    p = np.zeros((3, 4))
    p[:, :3] = k
    roi = _types()["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
    return _types()[CAMERA_INFO](
        header=header(stamp_ns, frame_id), height=int(height), width=int(width), distortion_model="plumb_bob",
        d=np.zeros(5, np.float64), k=k.reshape(-1).astype(np.float64), r=np.eye(3).reshape(-1),
        p=p.reshape(-1), binning_x=0, binning_y=0, roi=roi)


def string_msg(text: str):
    return _types()[STRING](data=str(text))


def pose_stamped_msg(xyz: Sequence[float], yaw: float, stamp_ns: int, frame_id: str):
    t = _types()
    qx, qy, qz, qw = yaw_to_quaternion(yaw)
    pose = t["geometry_msgs/msg/Pose"](
        position=t["geometry_msgs/msg/Point"](x=float(xyz[0]), y=float(xyz[1]), z=float(xyz[2])),
        orientation=t["geometry_msgs/msg/Quaternion"](x=qx, y=qy, z=qz, w=qw))
    return t[POSE_STAMPED](header=header(stamp_ns, frame_id), pose=pose)


def transform_msg(parent: str, child: str, matrix: np.ndarray, stamp_ns: int):
    """geometry_msgs/TransformStamped: ``matrix`` (4x4) maps ``child`` coordinates into ``parent``."""
    t = _types()
    rt = RigidTransform.from_matrix(np.asarray(matrix, np.float64))
    qx, qy, qz, qw = rotation_to_quaternion(rt.rotation)
    x, y, z = (float(v) for v in rt.translation)
    tf = t["geometry_msgs/msg/Transform"](
        translation=t["geometry_msgs/msg/Vector3"](x=x, y=y, z=z),
        rotation=t["geometry_msgs/msg/Quaternion"](x=qx, y=qy, z=qz, w=qw))
    return t["geometry_msgs/msg/TransformStamped"](header=header(stamp_ns, parent), child_frame_id=child,
                                                   transform=tf)


def tf_message(transforms: Sequence[Any]):
    return _types()[TF_MESSAGE](transforms=list(transforms))


# --------------------------------------------------------------------------- message -> numpy
# Single-channel encodings wider than 8 bits: depth or raw sensor values, never a colour image
# (as a raw Image they are refused as colour too).
_NOT_COLOUR = frozenset({"16UC1", "16SC1", "32FC1", "32SC1", "64FC1", "mono16"})
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def compressed_to_rgb(msg: Any) -> np.ndarray:
    """A colour CompressedImage (JPEG/PNG; any format OpenCV decodes) as HxWx3 uint8 RGB.

    Refused, as the same data in a raw Image is: compressed depth, a format whose declared
    encoding is depth or 16-bit mono (``"16UC1; png compressed"``), and 16-bit single-channel
    PNGs. A 16-bit colour PNG is brought to 8 bits by its significant bits (``_significant_bits``):
    cameras store 10- or 12-bit data in 16-bit PNGs, which a plain 16 -> 8 bit conversion turns
    near-black.

    Raises:
        ConversionError: no data, not a colour image, or not decodable.
    """
    import cv2

    data = np.frombuffer(bytes(msg.data), np.uint8) if not isinstance(msg.data, np.ndarray) else msg.data
    if data.size == 0:
        raise ConversionError("compressed image has no data")
    fmt = str(getattr(msg, "format", ""))
    if "compresseddepth" in fmt.lower().replace(" ", ""):
        raise ConversionError(f"'{fmt}' is a compressed depth image, not a colour image")
    declared = fmt.split(";")[0].strip() if ";" in fmt else ""
    if declared in _NOT_COLOUR:
        raise ConversionError(f"'{fmt.strip()}' holds {declared} data (depth or 16-bit mono), not a colour image")
    data = np.ascontiguousarray(data, np.uint8)
    png = _png_header(data)
    if png is not None and png[0] == 16:
        bgr = _png16_to_bgr8(data, png)
    else:
        bgr = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if bgr is None:
        raise ConversionError(f"cannot decode compressed image (format '{fmt}')")
    if "rgb" in fmt.split(";")[-1].lower():  # "...; jpeg compressed rgb8": the codec holds RGB bytes
        return np.ascontiguousarray(bgr)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _png_header(data: np.ndarray) -> Optional[Tuple[int, int, Optional[int]]]:
    """``(bit depth, colour type, significant bits from sBIT or None)`` of a PNG; None when not a PNG."""
    raw = data[:65536].tobytes()  # sBIT precedes the image data, near the start
    if not raw.startswith(_PNG_SIGNATURE) or len(raw) < 26 or raw[12:16] != b"IHDR":
        return None
    depth, colour_type = raw[24], raw[25]
    pos, sbit = 8, None
    while pos + 8 <= len(raw):
        length, kind = struct.unpack_from(">I4s", raw, pos)
        if kind in (b"IDAT", b"IEND"):
            break
        if kind == b"sBIT" and length and pos + 8 + length <= len(raw):
            channels = raw[pos + 8: pos + 8 + length]
            sbit = max(channels[:3]) if colour_type in (2, 6) else channels[0]
            break
        pos += 12 + length
    return int(depth), int(colour_type), sbit


def _significant_bits(image: np.ndarray, sbit: Optional[int]) -> int:
    """The bits a 16-bit image's values use: the PNG's sBIT when it has one, else the smallest
    common sensor depth (10, 12, 14, 16 bits) that holds its largest value."""
    if sbit and 8 <= sbit <= 16:
        return int(sbit)
    peak = int(image.max()) if image.size else 0
    return next(bits for bits in (10, 12, 14, 16) if peak < (1 << bits))


def _png16_to_bgr8(data: np.ndarray, png: Tuple[int, int, Optional[int]]) -> np.ndarray:
    """A 16-bit colour PNG as 8-bit BGR, scaled by its significant bits.

    Raises:
        ConversionError: a grey (single-channel) 16-bit PNG, or undecodable bytes.
    """
    import cv2

    _depth, colour_type, sbit = png
    if colour_type in (0, 4):  # grey, grey + alpha
        raise ConversionError("a 16-bit single-channel PNG is depth or 16-bit mono, not a colour image")
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if image is None or image.dtype != np.uint16 or image.ndim != 3:
        raise ConversionError("cannot decode the 16-bit colour PNG")
    shift = _significant_bits(image[:, :, :3], sbit) - 8
    bgr = np.minimum(image[:, :, :3] >> shift, 255).astype(np.uint8)
    return np.ascontiguousarray(bgr)


def color_to_rgb(msg: Any, msgtype: str = IMAGE) -> np.ndarray:
    """Image (rgb8/bgr8/rgba8/bgra8/mono8, padded rows allowed) or CompressedImage -> HxWx3 uint8 RGB."""
    if msgtype == COMPRESSED_IMAGE:
        return compressed_to_rgb(msg)
    return image_to_rgb(msg)


# --------------------------------------------------------------------------- reading
@dataclass(frozen=True)
class TopicInfo:
    """One topic of a bag: its type, how many messages the bag states and holds, and whether its
    messages can be decoded (``unreadable`` says why not; empty when they can)."""

    msgtype: str
    expected: int  # metadata.yaml's count; for a bare storage file, that file's own index
    stored: int  # what the storage files' indexes hold, i.e. what reading yields
    unreadable: str = ""


class BagReader:
    """A rosbag2 bag (a directory with ``metadata.yaml``, or one bare ``.mcap``/``.db3`` file), read
    topic by topic with rosbags' own storage readers. Use as a context manager.

    Why not ``rosbags.highlevel.AnyReader`` on the directory: rosbags pairs the topics of
    ``metadata.yaml`` with the storage's connections only when their QoS text is identical, and in
    bags written by ``ros2 bag record`` it is not (the storage keeps the offered deadline, the YAML
    zeroes it), so whole topics read as empty without a word; and AnyReader refuses the whole bag
    when one type definition cannot be parsed (service-event topics). So every storage file is
    opened with ``rosbags.rosbag2.Reader`` (its own index: every message it holds), each topic's
    type is registered on its own (a topic whose definition fails is listed as unreadable, with the
    reason), and ``metadata.yaml`` is used for what it is authoritative for: which files make the
    bag and how many messages each topic has. Compressed bags are read through rosbags' directory
    reader (it decompresses them); a shortfall against ``metadata.yaml`` is then reported by
    ``scan_bag``.
    """

    def __init__(self, path: Union[str, Path]) -> None:
        """Raises:
            FileNotFoundError: ``path`` does not exist.
            BagError: a directory without ``metadata.yaml``.
        """
        p = Path(path)
        if not p.exists():
            raise FileNotFoundError(f"bag not found: {p}")
        if p.is_file() and p.suffix in (".mcap", ".db3") and (p.parent / "metadata.yaml").is_file():
            p = p.parent
        if p.is_dir() and not (p / "metadata.yaml").is_file():
            files = sorted(f.name for f in p.iterdir() if f.suffix in (".mcap", ".db3"))
            hint = f"; give one of its storage files: {', '.join(files)}" if files else ""
            raise BagError(f"{p} is not a rosbag2 directory (no metadata.yaml){hint}")
        self.path = p
        self.counted_by = "metadata.yaml" if p.is_dir() else "the storage file's index"
        self.storage = ""
        self.topics: Dict[str, TopicInfo] = {}
        self.connections: List[Any] = []  # readable connections of every storage file
        self.start_time = self.end_time = 0
        self._readers: List[Tuple[Any, List[Any]]] = []  # (rosbags Reader, its readable connections)
        self._decoders: Dict[str, Any] = {}  # msgtype -> the typestore that decodes it
        self._stack: Optional[ExitStack] = None

    def __enter__(self) -> "BagReader":
        """Open the storage files and register the types.

        Raises:
            BagError: the metadata or a storage file cannot be read (damaged, truncated, missing).
        """
        from rosbags.rosbag2 import Reader

        self._stack = ExitStack()
        try:
            catalog = self._stack.enter_context(Reader(self.path))
            if self.path.is_dir():
                info = _metadata(self.path)
                self.storage = str(info.get("storage_identifier", ""))
                files = [self.path / Path(str(f)).name for f in info.get("relative_file_paths", [])]
                compressed = bool(catalog.compression_mode)
                data = [catalog] if compressed else [self._stack.enter_context(Reader(f)) for f in files]
            else:
                self.storage = {".mcap": "mcap", ".db3": "sqlite3"}.get(self.path.suffix, "")
                data = [catalog]
            self._register(catalog, data)
        except BagError:
            self.__exit__(None, None, None)
            raise
        except Exception as exc:  # noqa: BLE001 - rosbags' and the storage's errors: one BagError
            self.__exit__(None, None, None)
            raise BagError(f"cannot open bag {self.path}: {_why(exc)}") from exc
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            stack.close()

    def _register(self, catalog: Any, data: Sequence[Any]) -> None:
        """Decide per connection whether its type can be decoded; fill ``topics`` and ``connections``."""
        from rosbags.typesys import Stores, get_typestore

        embedded = get_typestore(Stores.EMPTY)
        why_not: Dict[str, str] = {}  # topic -> why its type cannot be decoded
        stored: Dict[str, int] = defaultdict(int)
        types: Dict[str, str] = {}
        for reader in data:
            readable = []
            for conn in reader.connections:
                types.setdefault(conn.topic, conn.msgtype)
                stored[conn.topic] += int(conn.msgcount)
                why = self._decoder(conn, embedded)
                if why:
                    why_not[conn.topic] = why
                else:
                    readable.append(conn)
            self._readers.append((reader, readable))
            self.connections.extend(readable)
        expected = {name: int(t.msgcount) for name, t in catalog.topics.items()}
        for name, t in catalog.topics.items():
            types.setdefault(name, t.msgtype or "")
        self.topics = {name: TopicInfo(types[name], expected.get(name, stored.get(name, 0)), stored.get(name, 0),
                                       why_not.get(name, "")) for name in sorted(types)}
        with_messages = [r for r in data if r.message_count]
        if with_messages:
            self.start_time = min(int(r.start_time) for r in with_messages)
            self.end_time = max(int(r.end_time) for r in with_messages)

    def _decoder(self, conn: Any, embedded: Any) -> str:
        """Register ``conn``'s type (from the bag's definition, else ROS 2 Humble's); "" or why it fails."""
        msgtype = conn.msgtype
        if msgtype in self._decoders:
            return ""
        from rosbags.interfaces import MessageDefinitionFormat
        from rosbags.typesys import get_types_from_idl, get_types_from_msg

        definition = conn.msgdef
        if definition.format == MessageDefinitionFormat.NONE:
            if msgtype in typestore().fielddefs:
                self._decoders[msgtype] = typestore()
                return ""
            return f"the bag has no definition of {msgtype} and ROS 2 Humble has none either"
        try:
            if definition.format == MessageDefinitionFormat.MSG:
                types = get_types_from_msg(definition.data, msgtype)
            else:  # IDL, possibly several concatenated as rosbag2 writes them
                sep = "=" * 80 + "\n"
                parts = definition.data.split(sep)[1:] if definition.data.startswith(sep + "IDL: ") else [
                    "\n" + definition.data]
                types = {}
                for part in parts:
                    types.update(get_types_from_idl(part.split("\n", 1)[1]))
            embedded.register(types)
            if conn.digest and embedded.hash_rihs01(msgtype) != conn.digest:
                return f"its definition of {msgtype} does not match the type hash the bag records"
        except Exception as exc:  # noqa: BLE001 - rosbags' parser errors, and whatever a bad definition raises
            return f"cannot parse the bag's definition of {msgtype} ({_why(exc)})"
        self._decoders[msgtype] = embedded
        return ""

    def messages(self, connections: Sequence[Any]) -> Iterator[Tuple[Any, int, bytes]]:
        """``(connection, bag time ns, CDR bytes)`` of ``connections``, in bag-time order across files.

        Raises:
            BagError: a storage file is damaged (what was read so far has been yielded).
        """
        wanted = {id(c) for c in connections}
        streams = []
        for reader, readable in self._readers:
            mine = [c for c in readable if id(c) in wanted]
            if mine:  # rosbags reads every connection when given none
                streams.append(reader.messages(connections=mine))
        merged = heapq.merge(*streams, key=lambda m: m[1])
        count, last = 0, None
        while True:
            try:
                item = next(merged)
            except StopIteration:
                return
            except Exception as exc:  # noqa: BLE001 - a damaged file raises anything (OverflowError, MemoryError...)
                after = "" if last is None else f" at bag time {ns_to_seconds(last)} s"
                raise BagError(f"bag {self.path} is damaged: reading stopped after {count} messages{after} "
                               f"({_why(exc)})") from exc
            count, last = count + 1, item[1]
            yield item

    def deserialize(self, raw: bytes, msgtype: str) -> Any:
        """A rosbags message object from CDR bytes.

        Raises:
            BagError: ``msgtype`` is unreadable, or the bytes are not a valid message of it.
        """
        store = self._decoders.get(msgtype)
        if store is None:
            raise BagError(f"{self.path}: messages of {msgtype} cannot be decoded")
        try:
            return store.deserialize_cdr(raw, msgtype)
        except Exception as exc:  # noqa: BLE001 - rosbags' SerdeError, or IndexError/struct.error on bad bytes
            # A bag may carry a placeholder definition (rosbag2's own test bags say "uint8 level" for
            # rcl_interfaces/msg/Log): when ROS 2 Humble's definition decodes the bytes, use it from now on.
            humble = typestore()
            if store is not humble and msgtype in humble.fielddefs:
                try:
                    msg = humble.deserialize_cdr(raw, msgtype)
                except Exception:  # noqa: BLE001 - neither definition fits: the bytes are bad
                    pass
                else:
                    self._decoders[msgtype] = humble
                    return msg
            raise BagError(f"{self.path}: a {msgtype} message cannot be decoded ({_why(exc)})") from exc

    def shortfalls(self, read: Mapping[str, int]) -> List[str]:
        """One line per topic of ``read`` (topic -> messages read) that yielded fewer than the bag states."""
        notes = []
        for topic, got in sorted(read.items()):
            info = self.topics.get(topic)
            if info is None or got >= info.expected:
                continue
            why = (f"its storage files hold only {info.stored}" if info.stored < info.expected
                   else "the rest could not be read")
            notes.append(f"{topic}: read {got} of the {info.expected} messages {self.counted_by} states ({why})")
        return notes


def open_reader(path: Union[str, Path]) -> BagReader:
    """A ``BagReader`` on a rosbag2 directory (or a .mcap/.db3 file). Use as a context manager.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        BagError: not a bag, or (on entering) not readable.
    """
    return BagReader(path)


def _metadata(directory: Path) -> Dict[str, Any]:
    """``rosbag2_bagfile_information`` of a bag directory (rosbags has already validated it)."""
    import yaml

    return yaml.safe_load((directory / "metadata.yaml").read_text(encoding="utf-8"))["rosbag2_bagfile_information"]


_DAMAGE = (MemoryError, OverflowError, struct.error, EOFError, UnicodeDecodeError, IndexError)


def _why(exc: BaseException) -> str:
    """One line about ``exc``: its type and first line, marked as damage for what a damaged file raises."""
    lines = str(exc).strip().splitlines()
    text = f"{type(exc).__name__}: {lines[0][:160]}" if lines else type(exc).__name__
    return f"damaged or truncated storage file, {text}" if isinstance(exc, _DAMAGE) else text


def bag_topics(path: Union[str, Path]) -> Dict[str, Tuple[str, int]]:
    """``{topic: (msgtype, message count the bag states)}`` of a bag, unreadable topics included.

    Raises:
        FileNotFoundError, BagError: as ``open_reader``.
    """
    with open_reader(path) as reader:
        return {name: (info.msgtype, info.expected) for name, info in reader.topics.items()}


def _header_stamp_ns(raw: bytes, msgtype: str, reader: Any) -> int:
    """The header stamp of a header-first message, from its CDR bytes (no image decoding)."""
    if msgtype in _HEADER_FIRST and len(raw) >= 12 and raw[0] == 0 and raw[1] in (0, 1):
        sec, nanosec = struct.unpack_from("<iI" if raw[1] == 1 else ">iI", raw, 4)
        return int(sec) * 1_000_000_000 + int(nanosec)
    msg = reader.deserialize(raw, msgtype)
    return stamp_to_ns(msg.header.stamp)


@dataclass(frozen=True)
class TopicMessage:
    """One message of a scanned topic: its position among that topic's messages, bag time, header stamp."""

    ordinal: int
    time_ns: int  # bag (receive) time
    stamp_ns: Optional[int] = None  # header stamp (None for header-less types)
    msgtype: str = ""
    text: Optional[str] = None  # std_msgs/String payload
    size: Optional[Tuple[int, int]] = None  # CameraInfo (width, height)


class Transforms:
    """A TF buffer from /tf_static and /tf: ``lookup(target, source, stamp)`` -> transform mapping
    ``source`` coordinates into ``target``. Dynamic edges use the latest transform at or before the
    stamp (no interpolation); static edges hold at every time."""

    def __init__(self) -> None:
        # child -> list of (stamp_ns or None for static, parent, RigidTransform parent<-child), sorted
        self._edges: Dict[str, List[Tuple[int, str, RigidTransform]]] = defaultdict(list)
        self._sorted = True

    def __len__(self) -> int:
        return sum(len(v) for v in self._edges.values())

    def add(self, msg: Any, static: bool) -> None:
        for ts in msg.transforms:
            t, q = ts.transform.translation, ts.transform.rotation
            try:
                rt = RigidTransform.from_xyz_quat((t.x, t.y, t.z), (q.x, q.y, q.z, q.w))
            except ValueError:
                continue  # a zero quaternion: not a transform
            parent, child = _strip(ts.header.frame_id), _strip(ts.child_frame_id)
            stamp = -(1 << 62) if static else stamp_to_ns(ts.header.stamp)
            self._edges[child].append((stamp, parent, rt))
            self._sorted = False

    def _edge(self, child: str, stamp_ns: int) -> Optional[Tuple[str, RigidTransform]]:
        edges = self._edges.get(child)
        if not edges:
            return None
        if not self._sorted:
            for v in self._edges.values():
                v.sort(key=lambda e: e[0])
            self._sorted = True
        i = bisect_right([e[0] for e in edges], int(stamp_ns))
        if i == 0:
            return None
        _, parent, rt = edges[i - 1]
        return parent, rt

    def _to_root(self, frame: str, stamp_ns: int) -> Tuple[List[str], Dict[str, RigidTransform]]:
        """Frames from ``frame`` up to its root, and each one's transform into ``frame``'s ancestors."""
        chain = [frame]
        to_frame_root: Dict[str, RigidTransform] = {frame: RigidTransform.identity()}  # ancestor <- frame
        current = frame
        for _ in range(64):
            edge = self._edge(current, stamp_ns)
            if edge is None:
                break
            parent, rt = edge
            if parent in to_frame_root:
                break  # a cycle
            to_frame_root[parent] = rt @ to_frame_root[current]
            chain.append(parent)
            current = parent
        return chain, to_frame_root

    def lookup(self, target: str, source: str, stamp_ns: int) -> Optional[RigidTransform]:
        """``target <- source`` at ``stamp_ns``, or None when the tree does not connect them."""
        target, source = _strip(target), _strip(source)
        if target == source:
            return RigidTransform.identity()
        s_chain, s_up = self._to_root(source, stamp_ns)  # X <- source for X in s_chain
        t_chain, t_up = self._to_root(target, stamp_ns)  # X <- target
        for ancestor in s_chain:
            if ancestor in t_up:
                return t_up[ancestor].inverse() @ s_up[ancestor]
        return None


def _strip(frame: str) -> str:
    return str(frame).lstrip("/")


@dataclass
class BagIndex:
    """What ``scan_bag`` found: per topic the messages (no pixels), plus the TF buffer."""

    path: Path
    topics: Dict[str, str]  # every topic of the bag -> msgtype
    messages: Dict[str, List[TopicMessage]] = field(default_factory=dict)
    transforms: Transforms = field(default_factory=Transforms)
    start_ns: int = 0
    end_ns: int = 0
    storage: str = ""
    read_topics: Set[str] = field(default_factory=set)  # the connections scanned (iter_messages reads the same)
    infos: Dict[str, TopicInfo] = field(default_factory=dict)  # every topic: counts, readable or why not
    notes: List[str] = field(default_factory=list)  # topics that yielded fewer messages than the bag states, and why


def scan_bag(path: Union[str, Path], topics: Iterable[str], text_topics: Iterable[str] = (),
             tf_topics: Iterable[str] = (TF_TOPIC, TF_STATIC_TOPIC)) -> BagIndex:
    """One pass over the bag keeping bag times and header stamps of ``topics`` (no pixel decoding),
    the text of std_msgs/String ``text_topics`` and every transform of ``tf_topics``.

    Ordinals count messages per topic in the order ``iter_messages`` yields them, so a second
    pass can pick messages by ``(topic, ordinal)``. A scanned topic that yields fewer messages
    than the bag states gets a line in ``notes`` (an unreadable TF topic too), never silence.

    Raises:
        FileNotFoundError: no bag at ``path``.
        BagError: the bag cannot be read, a wanted topic cannot be decoded or has a type this
            module does not read, or a storage file is damaged.
    """
    wanted = set(topics) | set(text_topics)
    tf_set = set(tf_topics)
    with open_reader(path) as reader:
        _require_readable(reader, wanted)
        conns = [c for c in reader.connections if c.topic in wanted or c.topic in tf_set]
        index = BagIndex(Path(path), {name: info.msgtype for name, info in reader.topics.items()},
                         {t: [] for t in wanted}, Transforms(), reader.start_time, reader.end_time,
                         reader.storage, {c.topic for c in conns}, dict(reader.topics))
        index.notes.extend(f"{t}: not used ({reader.topics[t].unreadable})" for t in sorted(tf_set - wanted)
                           if t in reader.topics and reader.topics[t].unreadable)
        text_set = set(text_topics)
        read: Dict[str, int] = defaultdict(int)
        for conn, time_ns, raw in reader.messages(conns):
            topic, msgtype = conn.topic, conn.msgtype
            read[topic] += 1
            if topic in tf_set:
                if msgtype == TF_MESSAGE:
                    index.transforms.add(reader.deserialize(raw, msgtype), static=topic == TF_STATIC_TOPIC)
                if topic not in wanted:
                    continue
            bucket = index.messages[topic]
            ordinal = len(bucket)
            if topic in text_set:
                if msgtype != STRING:
                    raise BagError(f"topic {topic} has type {msgtype}, expected {STRING}")
                bucket.append(TopicMessage(ordinal, int(time_ns), None, msgtype,
                                           text=str(reader.deserialize(raw, msgtype).data)))
            elif msgtype == CAMERA_INFO:
                msg = reader.deserialize(raw, msgtype)
                bucket.append(TopicMessage(ordinal, int(time_ns), stamp_to_ns(msg.header.stamp), msgtype,
                                           size=(int(msg.width), int(msg.height))))
            elif msgtype in _HEADER_FIRST:
                bucket.append(TopicMessage(ordinal, int(time_ns), _header_stamp_ns(raw, msgtype, reader), msgtype))
            else:
                raise BagError(f"topic {topic} has unsupported type {msgtype}")
        index.notes.extend(reader.shortfalls({t: read.get(t, 0) for t in index.read_topics}))
    return index


def iter_messages(index: BagIndex, wanted: Mapping[str, Set[int]]) -> Iterator[Tuple[str, int, int, str, Any]]:
    """``(topic, ordinal, time_ns, msgtype, message)`` in bag order for the ``{topic: {ordinals}}``
    that ``wanted`` names; others are skipped without being deserialised.

    It reads the same connections ``scan_bag`` read, so ordinals agree with ``index``.

    Raises:
        BagError: as ``scan_bag``.
    """
    counters: Dict[str, int] = defaultdict(int)
    with open_reader(index.path) as reader:
        conns = [c for c in reader.connections if c.topic in index.read_topics]
        for conn, time_ns, raw in reader.messages(conns):
            topic = conn.topic
            ordinal = counters[topic]
            counters[topic] += 1
            if ordinal in wanted.get(topic, ()):
                yield topic, ordinal, int(time_ns), conn.msgtype, reader.deserialize(raw, conn.msgtype)


def read_messages(path: Union[str, Path], topics: Iterable[str] = ()) -> Iterator[Tuple[str, int, str, Any]]:
    """``(topic, time_ns, msgtype, message)`` of ``topics`` (every readable topic when empty),
    deserialised, in bag order.

    Raises:
        BagError: a named topic cannot be decoded, or as ``open_reader`` and ``scan_bag``.
    """
    topics = set(topics)
    with open_reader(path) as reader:
        _require_readable(reader, topics)
        conns = [c for c in reader.connections if not topics or c.topic in topics]
        for conn, time_ns, raw in reader.messages(conns):
            yield conn.topic, int(time_ns), conn.msgtype, reader.deserialize(raw, conn.msgtype)


# --------------------------------------------------------------------------- writing
class BagWriter:
    """``with BagWriter(path, "mcap") as bag: bag.write(topic, msgtype, msg, time_ns)``.

    Connections are added on first use of a topic; ``qos`` may give offered QoS profiles per topic
    (``/tf_static`` gets transient-local by default, as ``ros2 bag play`` needs to latch it).
    """

    def __init__(self, path: Union[str, Path], storage: str = "mcap", version: int = DEFAULT_VERSION) -> None:
        from rosbags.rosbag2 import StoragePlugin, Writer

        if storage not in STORAGES:
            raise BagError(f"storage must be one of {STORAGES}, got '{storage}'")
        self.path = Path(path)
        if self.path.exists():
            raise BagError(f"{self.path} exists already: rosbag2 bags are never overwritten")
        plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
        self._writer = Writer(self.path, version=version, storage_plugin=plugin)
        self._conns: Dict[Tuple[str, str], Any] = {}
        self.counts: Dict[str, int] = defaultdict(int)

    def open(self) -> "BagWriter":
        self._writer.open()
        return self

    def close(self) -> None:
        self._writer.close()

    def __enter__(self) -> "BagWriter":
        return self.open()

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close()

    def write(self, topic: str, msgtype: str, msg: Any, time_ns: int) -> None:
        """Serialise a rosbags message (see the ``*_msg`` builders) at bag time ``time_ns``."""
        self.write_raw(topic, msgtype, typestore().serialize_cdr(msg, msgtype), time_ns)

    def write_raw(self, topic: str, msgtype: str, data: bytes, time_ns: int) -> None:
        """Already serialised CDR bytes (e.g. from ``rclpy.serialization.serialize_message``)."""
        key = (topic, msgtype)
        conn = self._conns.get(key)
        if conn is None:
            qos = [_latched_qos()] if topic == TF_STATIC_TOPIC else []
            conn = self._writer.add_connection(topic, msgtype, typestore=typestore(), offered_qos_profiles=qos)
            self._conns[key] = conn
        self._writer.write(conn, int(time_ns), bytes(data))
        self.counts[topic] += 1


def _latched_qos():
    from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime

    zero = QosTime(0, 0)
    return Qos(QosHistory.KEEP_LAST, 1, QosReliability.RELIABLE, QosDurability.TRANSIENT_LOCAL, zero, zero,
               QosLiveliness.AUTOMATIC, zero, False)


def _require_readable(reader: Any, topics: Iterable[str]) -> None:
    """Raise when one of ``topics`` is in the bag but cannot be decoded (a topic not there is no error here).

    Raises:
        BagError: naming the topic, the storage and why it cannot be read.
    """
    for topic in sorted(topics):
        info = reader.topics.get(topic)
        if info is not None and info.unreadable:
            raise BagError(f"topic {topic} of {reader.path} cannot be read: {info.unreadable}")
