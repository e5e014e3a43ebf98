"""rosbag2 bags written by ROS 2's own tools (``../shared/realdata/bags``, see its README): every
readable topic yields the message count the bag states, and ``clip-vla replay`` works on them.

The folder lives beside the repository, never in it; these tests skip only where it is absent.
"""
from __future__ import annotations

import json
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Dict, List

import pytest
import yaml

from clip_vla.tools import bags
from clip_vla.tools.replay import ReplayOptions, main as replay_main, replay_bag

REALDATA = Path(__file__).resolve().parents[2].parent / "shared" / "realdata"
BAGS = REALDATA / "bags"
SPOT_CONFIG = REALDATA / "config_spot_intrinsics.yaml"
SPOT = {storage: BAGS / f"spot_real_images_plus_commands_{storage}" for storage in bags.STORAGES}
HAND_RGB8, FRONT_MONO8 = "/spot/camera/hand_color/image", "/spot/camera/frontleft/image"
HAND_JPEG, DEPTH_PNG = "/spot/camera/hand_color/image/compressed", "/spot/depth/frontleft/image/compressed"

pytestmark = pytest.mark.skipif(not BAGS.is_dir(), reason=f"real bags not present at {BAGS}")


def bag_paths() -> List[Path]:
    """Every bag: directories with metadata.yaml, and each bare storage file of the others."""
    if not BAGS.is_dir():
        return []
    out: List[Path] = []
    for folder in sorted(p for p in BAGS.iterdir() if p.is_dir()):
        if (folder / "metadata.yaml").is_file():
            out.append(folder)
        else:
            out.extend(sorted(f for f in folder.iterdir() if f.suffix in (".mcap", ".db3")))
    return out


def stated_counts(bag: Path) -> Dict[str, int]:
    """What the bag itself states, read here without clip_vla: metadata.yaml, else the storage's index."""
    if bag.is_dir():
        info = yaml.safe_load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
        counts: Counter = Counter()
        for entry in info["topics_with_message_count"]:
            counts[entry["topic_metadata"]["name"]] += int(entry["message_count"])
        return dict(counts)
    if bag.suffix == ".db3":
        with sqlite3.connect(f"file:{bag}?mode=ro", uri=True) as db:
            rows = db.execute("SELECT t.name, COUNT(m.id) FROM topics t LEFT JOIN messages m ON m.topic_id = t.id "
                              "GROUP BY t.name").fetchall()
        return {name: int(n) for name, n in rows}
    from rosbags.rosbag2 import Reader  # the MCAP summary's statistics

    with Reader(bag) as reader:
        return {name: int(t.msgcount) for name, t in reader.topics.items()}


def model_args(tiny_models, vocabulary, config=None) -> List[str]:
    args = ["--clipseg", tiny_models["clipseg"], "--clip", tiny_models["clip"], "--vocabulary", vocabulary,
            "--device", "cpu"]
    return (["--config", str(config)] if config else []) + args


@pytest.fixture(scope="module")
def spot_pipeline(tiny_models, open_vocabulary_file):
    from clip_vla.core.config import ClipVlaConfig
    from clip_vla.pipeline import VLAPipeline

    cfg = ClipVlaConfig.from_yaml(SPOT_CONFIG).replace(**{
        "models.clipseg": tiny_models["clipseg"], "models.clip": tiny_models["clip"], "models.device": "cpu",
        "vocabulary_file": open_vocabulary_file})
    return VLAPipeline(cfg)


# --------------------------------------------------------------------------- every bag, whole
@pytest.mark.parametrize("bag", bag_paths(), ids=lambda p: str(p.relative_to(BAGS)))
def test_every_readable_topic_yields_the_count_the_bag_states(bag):
    stated = stated_counts(bag)
    with bags.open_reader(bag) as reader:
        infos = reader.topics
    assert set(infos) == set(stated)
    unreadable = {t for t, info in infos.items() if info.unreadable}
    # Only service-event topics (definitions rosbags cannot parse, or none at all) may be unreadable.
    assert all("/srv/" in infos[t].msgtype for t in unreadable), {t: infos[t].unreadable for t in unreadable}
    read = Counter(topic for topic, _t, _type, _msg in bags.read_messages(bag))  # every message decoded
    assert {t: read.get(t, 0) for t in infos if t not in unreadable} == {
        t: n for t, n in stated.items() if t not in unreadable}
    assert {t: infos[t].expected for t in infos} == stated


# --------------------------------------------------------------------------- regressions (issue 11, bags)
@pytest.mark.parametrize("name", ["rosbag2_talker_sqlite3", "rosbag2_talker_mcap",
                                  "rosbag2_talker_sqlite3_original_a1dae364"])
def test_ros2_bag_record_bags_are_read_whole(name, tiny_models, open_vocabulary_file, tmp_path, capsys):
    """Item 1: metadata.yaml's QoS text differs from the storage's; was "0 commands", exit 0."""
    bag = BAGS / name
    texts = [m.data for topic, _t, _type, m in bags.read_messages(bag, ["/topic"])]
    assert texts == [f"Hello, world! {i}" for i in range(10)]
    assert bags.scan_bag(bag, [], ["/topic"]).notes == []
    report = tmp_path / "report.json"
    assert replay_main([str(bag), "--command-topic", "/topic", "--out", str(report), "--quiet",
                        *model_args(tiny_models, open_vocabulary_file)]) == 0
    records = json.loads(report.read_text())["records"]
    assert [r["command"] for r in records] == texts
    assert "no colour topic '/camera/color/image_raw'" in capsys.readouterr().err  # said, not silent


def test_service_event_topics_do_not_hide_the_others(tiny_models, open_vocabulary_file, capsys):
    """Item 2: was "Could not parse: MSG: test_msgs/srv/BasicTypes_Event" for the whole bag."""
    bag = BAGS / "rosbag2_topics_services_mcap"
    topics = bags.bag_topics(bag)
    assert topics["/test_service1/_service_event"] == ("test_msgs/srv/BasicTypes_Event", 4)
    got = Counter(topic for topic, *_ in bags.read_messages(bag))
    assert got == {"/test_topic1": 1, "/test_topic2": 1}
    with bags.open_reader(bag) as reader:
        assert "test_msgs/srv/BasicTypes_Event" in reader.topics["/test_service2/_service_event"].unreadable
    with pytest.raises(bags.BagError, match="/test_service1/_service_event of .* cannot be read"):
        list(bags.read_messages(bag, ["/test_service1/_service_event"]))
    # A readable topic of the wrong type for commands: one line, exit 2, before any model loads.
    assert replay_main([str(bag), "--command-topic", "/test_topic1",
                        *model_args(tiny_models, open_vocabulary_file)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "has type test_msgs/msg/Strings, expected std_msgs/msg/String" in err


# --------------------------------------------------------------------------- the Spot bag
@pytest.mark.parametrize("storage", bags.STORAGES)
def test_spot_frames_decode(storage):
    frames = {topic: bags.color_to_rgb(m, t) for topic, _time, t, m in bags.read_messages(
        SPOT[storage], [HAND_RGB8, FRONT_MONO8, HAND_JPEG])}
    assert {t: a.shape for t, a in frames.items()} == {
        HAND_RGB8: (480, 640, 3), FRONT_MONO8: (480, 640, 3), HAND_JPEG: (480, 640, 3)}
    grey = frames[FRONT_MONO8]
    assert (grey[:, :, 0] == grey[:, :, 2]).all() and grey.std() > 10
    # The JPEG is the same hand frame as the raw rgb8 one, so channels are in the same order.
    diff = abs(frames[HAND_JPEG].astype(int) - frames[HAND_RGB8].astype(int)).mean()
    assert diff < 12, diff


@pytest.mark.parametrize("storage,color", [("mcap", HAND_RGB8), ("sqlite3", FRONT_MONO8), ("mcap", HAND_JPEG),
                                           ("sqlite3", HAND_JPEG)])
def test_spot_replay_answers_every_command(storage, color, spot_pipeline):
    options = ReplayOptions(color_topic=color, depth_topic="", camera_info_topic="")
    report = replay_bag(SPOT[storage], spot_pipeline, options)
    assert len(report.records) == 21 and report.summary["notes"] == []
    assert [r["command"] for r in report.records][:2] == ["pick up the red box", "pick up the blue cup"]
    ran = [r for r in report.records if "decode" in r["timings_ms"]]  # paired with a frame, decoded, run
    assert len(ran) >= 4 and all(r["status"] != "bad_input" for r in ran), [r.get("message") for r in ran]


def test_spot_camera_only_replay_with_commands_of_your_choice(spot_pipeline, tiny_models, open_vocabulary_file,
                                                              tmp_path, capsys):
    """Item 3: --command (after the first colour frame, or at --command-at) instead of the bag's topic."""
    report = tmp_path / "report.json"
    assert replay_main([str(SPOT["mcap"]), "--color-topic", HAND_RGB8, "--depth-topic", "", "--camera-info-topic", "",
                        "--command", "pick up the red box", "--command", "push the block", "--out", str(report),
                        "--quiet", *model_args(tiny_models, open_vocabulary_file, SPOT_CONFIG)]) == 0
    records = json.loads(report.read_text())["records"]
    assert [r["command"] for r in records] == ["pick up the red box", "push the block"]
    frame = bags.scan_bag(SPOT["mcap"], [HAND_RGB8]).messages[HAND_RGB8][0]
    assert all(r["bag_time_ns"] == frame.time_ns and r["frame_age"] == 0 for r in records)
    assert all("decode" in r["timings_ms"] and r["status"] != "bad_input" for r in records)
    # --command-at: seconds from the bag's start (here long after the frame: stale).
    options = ReplayOptions(color_topic=HAND_RGB8, depth_topic="", camera_info_topic="",
                            commands=(bags_command("stop", None), bags_command("pick up the red box", 20000.0)))
    records = replay_bag(SPOT["sqlite3"], spot_pipeline, options).records
    assert [(r["command"], r["status"]) for r in records] == [("stop", "stopped"),
                                                              ("pick up the red box", "stale_frame")]


def bags_command(text, at):
    from clip_vla.tools.replay_commands import ScheduledCommand

    return ScheduledCommand(text, at)


def test_png_compressed_depth_is_not_a_colour_image(spot_pipeline):
    """Item 4: '16UC1; png compressed' was decoded as an 8-bit colour image and run."""
    (msg,) = [m for _topic, _t, _type, m in bags.read_messages(SPOT["mcap"], [DEPTH_PNG])]
    with pytest.raises(bags.ConversionError, match="16UC1"):
        bags.compressed_to_rgb(msg)
    options = ReplayOptions(color_topic=DEPTH_PNG, depth_topic="", camera_info_topic="", max_frame_age=5.0)
    ran = [r for r in replay_bag(SPOT["mcap"], spot_pipeline, options).records if "decode" in r["timings_ms"]]
    assert ran and all(r["status"] == "bad_input" and "16UC1" in r["message"] for r in ran)
