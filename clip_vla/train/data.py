"""Datasets for ``clip-vla train``: a directory of frames + labels, or a rosbag + a label sidecar.

Directory format (what ``clip-vla train generate`` writes; also the format for your own data)::

    DIR/samples.jsonl      one JSON object per frame, for example
      {"image": "frames/000001.png",                       # RGB image (PNG/JPEG), relative to DIR
       "masks": {"red block": "masks/000001_red_block.png", # binary masks (non-zero = object), or:
                 "bowl": "masks/000001_bowl.png"},
       "segmentation": "frames/000001_seg.png",            # a label image (uint8/uint16 ids) ...
       "labels": {"1": "red block", "5": "bowl"},          # ... and the phrase of each id
       "negatives": ["red ball"],                          # optional: phrases absent from the frame
       "command": "pick up the red block", "skill": "pick", # optional: for --task skills
       "object": "red block", "destination": null}

Rosbag format (ROS 2 bag directory or .mcap/.db3 file, or a ROS 1 .bag): images on a
``sensor_msgs/msg/Image`` (rgb8, bgr8, rgba8, bgra8, mono8) or ``sensor_msgs/msg/CompressedImage``
topic, and a sidecar ``labels.jsonl`` (next to the bag, or given with ``--labels``) with one
line per labelled frame; ``stamp`` is the image header stamp in nanoseconds (or
``{"sec": s, "nanosec": ns}``), matched to the nearest image within 5 ms; mask paths are
relative to the sidecar; every other key is as in ``samples.jsonl``::

    {"stamp": 1700000000123456789, "topic": "/camera/color/image_raw",
     "masks": {"red block": "masks/0001.png"}, "command": "pick up the red block", "skill": "pick"}
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import numpy as np

# Phrases whose regions are derived from a label image rather than named objects.
BACKGROUND_PHRASES = ("background",)
TABLE_PHRASES = ("table surface", "table")
ARM_PHRASES = ("robot arm", "gripper")
NON_OBJECT_LABELS = ("table", "gripper", "robot arm")


@dataclass
class Sample:
    """One labelled frame. ``image`` and masks load lazily (``load_image`` / ``load_masks``)."""

    image: Union[str, np.ndarray]
    masks: Dict[str, Union[str, np.ndarray]] = field(default_factory=dict)
    segmentation: Optional[Union[str, np.ndarray]] = None
    labels: Dict[int, str] = field(default_factory=dict)
    negatives: List[str] = field(default_factory=list)
    command: Optional[str] = None
    skill: Optional[str] = None
    object: Optional[str] = None
    destination: Optional[str] = None
    meta: Dict[str, object] = field(default_factory=dict)

    def load_image(self) -> np.ndarray:
        """HxWx3 uint8 RGB."""
        return _read_rgb(self.image) if isinstance(self.image, str) else self.image

    def load_label_image(self) -> Optional[np.ndarray]:
        if self.segmentation is None:
            return None
        return _read_gray(self.segmentation) if isinstance(self.segmentation, str) else self.segmentation

    def phrase_masks(self) -> Dict[str, np.ndarray]:
        """Phrase -> HxW bool for every labelled phrase (label image and explicit masks)."""
        out: Dict[str, np.ndarray] = {}
        seg = self.load_label_image()
        if seg is not None:
            for k, phrase in self.labels.items():
                out[phrase] = seg == int(k)
        for phrase, m in self.masks.items():
            out[phrase] = (_read_gray(m) if isinstance(m, str) else np.asarray(m)) > 0
        return out

    @property
    def phrases(self) -> List[str]:
        return list(self.labels.values()) + list(self.masks)


def _read_rgb(path: str) -> np.ndarray:
    import cv2

    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        raise FileNotFoundError(f"cannot read image {path}")
    return np.ascontiguousarray(img[:, :, ::-1])


def _read_gray(path: str) -> np.ndarray:
    import cv2

    img = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if img is None:
        raise FileNotFoundError(f"cannot read mask {path}")
    return img if img.ndim == 2 else img[..., 0]


def _sample_from_record(record: Dict[str, object], root: Path, image: Optional[np.ndarray] = None) -> Sample:
    def rel(p: object) -> str:
        return str((root / str(p)).resolve())

    labels = {int(k): str(v) for k, v in dict(record.get("labels") or {}).items()}
    return Sample(
        image=image if image is not None else rel(record["image"]),
        masks={str(k): rel(v) for k, v in dict(record.get("masks") or {}).items()},
        segmentation=rel(record["segmentation"]) if record.get("segmentation") else None,
        labels=labels,
        negatives=[str(n) for n in record.get("negatives") or []],
        command=record.get("command"), skill=record.get("skill"),  # type: ignore[arg-type]
        object=record.get("object"), destination=record.get("destination"),  # type: ignore[arg-type]
        meta={k: v for k, v in record.items() if k in ("seed", "stamp", "topic")},
    )


def load_directory(path: Union[str, Path]) -> List[Sample]:
    root = Path(path)
    index = root / "samples.jsonl"
    if not index.is_file():
        raise FileNotFoundError(f"{root} has no samples.jsonl (see clip_vla.train.data for the format)")
    samples = []
    with open(index, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                samples.append(_sample_from_record(json.loads(line), root))
    return samples


def _stamp_ns(value: object) -> int:
    if isinstance(value, dict):
        return int(value.get("sec", 0)) * 1_000_000_000 + int(value.get("nanosec", value.get("nsec", 0)))
    return int(value)  # type: ignore[arg-type]


def image_from_msg(msg: object, msgtype: str) -> np.ndarray:
    """sensor_msgs Image / CompressedImage -> HxWx3 uint8 RGB."""
    import cv2

    if msgtype.endswith("CompressedImage"):
        img = cv2.imdecode(np.frombuffer(bytes(msg.data), np.uint8), cv2.IMREAD_COLOR)  # type: ignore[attr-defined]
        return np.ascontiguousarray(img[:, :, ::-1])
    h, w, enc = int(msg.height), int(msg.width), str(msg.encoding).lower()  # type: ignore[attr-defined]
    step = int(msg.step)  # type: ignore[attr-defined]
    channels = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1}
    if enc not in channels:
        raise ValueError(f"unsupported image encoding '{enc}' (supported: {', '.join(channels)})")
    c = channels[enc]
    rows = np.frombuffer(bytes(msg.data), np.uint8).reshape(h, step)  # type: ignore[attr-defined]
    buf = rows[:, :w * c].reshape(h, w, c)
    if enc == "mono8":
        return np.repeat(buf, 3, axis=2)
    if enc.startswith("bgr"):
        buf = buf[:, :, 2::-1]
    return np.ascontiguousarray(buf[:, :, :3])


def load_rosbag(bag: Union[str, Path], labels: Optional[Union[str, Path]] = None,
                tolerance_ns: int = 5_000_000) -> List[Sample]:
    """Labelled frames of a bag: images matched by header stamp to the lines of ``labels.jsonl``."""
    from rosbags.highlevel import AnyReader
    from rosbags.typesys import Stores, get_typestore

    bag = Path(bag)
    sidecar = Path(labels) if labels else (bag / "labels.jsonl" if bag.is_dir() else bag.with_name("labels.jsonl"))
    if not sidecar.is_file():
        raise FileNotFoundError(f"no label sidecar {sidecar} for bag {bag} (see clip_vla.train.data)")
    records = [json.loads(line) for line in sidecar.read_text(encoding="utf-8").splitlines() if line.strip()]
    wanted = {}
    for r in records:
        wanted.setdefault(r.get("topic"), []).append(r)
    images: Dict[int, List[tuple]] = {}
    kinds = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
    with AnyReader([bag], default_typestore=get_typestore(Stores.ROS2_HUMBLE)) as reader:
        conns = [c for c in reader.connections if c.msgtype in kinds]
        topics = {t for t in wanted if t}
        if topics:
            conns = [c for c in conns if c.topic in topics]
        if not conns:
            raise ValueError(f"bag {bag} has no image topic ({', '.join(kinds)})")
        stamps = [(r, _stamp_ns(r["stamp"])) for r in records]
        for conn, _, raw in reader.messages(connections=conns):
            msg = reader.deserialize(raw, conn.msgtype)
            stamp = int(msg.header.stamp.sec) * 1_000_000_000 + int(msg.header.stamp.nanosec)
            for i, (r, s) in enumerate(stamps):
                if abs(s - stamp) <= tolerance_ns and (not r.get("topic") or r["topic"] == conn.topic):
                    images.setdefault(i, []).append((abs(s - stamp), image_from_msg(msg, conn.msgtype), conn.topic))
    samples = []
    for i, (r, s) in enumerate(stamps):
        if i not in images:
            raise ValueError(f"labels line {i + 1} (stamp {s}) matches no image in {bag} within "
                             f"{tolerance_ns / 1e6:.1f} ms")
        _, img, topic = min(images[i], key=lambda t: t[0])
        sample = _sample_from_record({**r, "image": "", "topic": topic}, sidecar.parent, image=img)
        samples.append(sample)
    return samples


def is_rosbag(path: Union[str, Path]) -> bool:
    p = Path(path)
    if p.is_file():
        return p.suffix in (".bag", ".mcap", ".db3")
    return p.is_dir() and (p / "metadata.yaml").is_file()


def load_dataset(path: Union[str, Path], labels: Optional[Union[str, Path]] = None) -> List[Sample]:
    """A dataset directory (``samples.jsonl``) or a rosbag with its label sidecar."""
    return load_rosbag(path, labels) if is_rosbag(path) else load_directory(path)


# --------------------------------------------------------------------------- segmentation targets
def derived_masks(sample: Sample, masks: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """Add the distractor regions the pipeline prompts for: background, table surface, robot arm."""
    out = dict(masks)
    if not masks:
        return out
    shape = next(iter(masks.values())).shape
    if "table" in masks:
        out.setdefault("table surface", masks["table"])
    if "gripper" in masks:
        out.setdefault("robot arm", masks["gripper"])
    else:
        out.setdefault("robot arm", np.zeros(shape, bool))
    if sample.segmentation is not None and "background" not in out:
        # Background is what lies behind the scene: every unlabelled pixel (the floor), not the
        # table. On the table the competitor of an object is "table surface"; a background that
        # also covered the table would have to be learned off every small object to let it win.
        fg = np.zeros(shape, bool)
        for m in masks.values():
            fg |= m
        out["background"] = ~fg
    out.setdefault("shadow", np.zeros(shape, bool))
    return out


def hard_negatives(present: Sequence[str], catalogue: Sequence[str], rng: np.random.Generator, k: int) -> List[str]:
    """Absent phrases, preferring those sharing a word with a present one ("red ball" for "red block")."""
    present_set = set(present)
    words = {w for p in present for w in p.split()}
    absent = [p for p in catalogue if p not in present_set]
    hard = [p for p in absent if set(p.split()) & words]
    easy = [p for p in absent if p not in hard]
    rng.shuffle(hard)
    rng.shuffle(easy)
    return (hard + easy)[:k]


def sim_catalogue() -> List[str]:
    """Every object phrase the simulator can produce (default colours x shapes)."""
    try:
        from clip_vla.sim.objects import DEFAULT_COLOURS, DEFAULT_SHAPES, SHAPES

        return [f"{c} {SHAPES[s]}" for c in DEFAULT_COLOURS for s in DEFAULT_SHAPES]
    except Exception:  # noqa: BLE001 - the simulator is optional for user data
        return []
