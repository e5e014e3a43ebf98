"""rosbag2 record/replay: real bags written with rosbags (mcap and sqlite3), replayed with tiny models.

The synthetic bag follows the fixture geometry of conftest: 640x480, fx = fy = 500,
principal point at the centre, depth 0.8 m everywhere and the default extrinsics (camera
0.8 m above the base origin's (0.5, 0, 0), looking down), so with tiny models, mask threshold
0 and no distractors every accepted goal is at base (0.5, 0, 0).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from clip_vla.tools import bags
from clip_vla.tools.replay import (ReplayOptions, Tolerances, compare, load_expectation, main as replay_main,
                                   pair_commands, replay_bag)
from clip_vla.core.types import Intrinsics

T0 = 1_700_000_000 * 10**9  # bag clock origin, ns
W, H = 640, 480
K = Intrinsics(500.0, 500.0, 319.5, 239.5)
FRAME = "camera_color_optical_frame"
RED_CUP = "pick up the red cup"


def ns(seconds: float) -> int:
    return T0 + int(round(seconds * 1e9))


def rgb_image(seed: int, width: int = W, height: int = H) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def write_frame(bag, t: float, encoding: str, seed: int, depth=None, depth_t=None, info_t=None, padding=0):
    """Colour (in ``encoding``) at bag time = stamp = t; depth/camera_info with their own stamps."""
    rgb = rgb_image(seed)
    arr = {"rgb8": rgb, "bgr8": rgb[:, :, ::-1], "rgba8": np.dstack([rgb, np.full((H, W), 255, np.uint8)]),
           "mono8": rgb[:, :, 0]}[encoding]
    bag.write(bags.COLOR_TOPIC, bags.IMAGE, bags.image_msg(arr, encoding, ns(t), FRAME, row_padding=padding), ns(t))
    if depth is not None:
        dt = t if depth_t is None else depth_t
        enc = "16UC1" if depth.dtype == np.uint16 else "32FC1"
        bag.write(bags.DEPTH_TOPIC, bags.IMAGE, bags.image_msg(depth, enc, ns(dt), FRAME), ns(max(t, dt)))
    if info_t is not None:
        bag.write(bags.CAMERA_INFO_TOPIC, bags.CAMERA_INFO, bags.camera_info_msg(K, W, H, ns(info_t), FRAME), ns(t))


def command(bag, t: float, text: str) -> None:
    bag.write(bags.COMMAND_TOPIC, bags.STRING, bags.string_msg(text), ns(t))


# Expected outcome of every command of the synthetic bag, in order.
EXPECTED = [
    ("no_frame", None),  # 0.00 before any frame
    ("empty_command", None),  # 0.05 parse refusals come first, frame or not (the node's order)
    ("accepted", 0.10),  # 0.15 rgb8 + 16UC1 depth stamped 10 ms later (within sync tolerance)
    ("accepted", 0.20),  # 0.20 same bag time as the bgr8 frame with row padding: pairs with it
    ("stale_frame", 0.20),  # 3.00 the latest frame is 2.8 s old
    ("accepted", 4.00),  # 4.05 rgba8, depth 0.2 s off (unpaired -> table plane), camera_info from 0.20
    ("bad_input", 5.00),  # 5.05 mono8 with a 320x240 depth: not registered
]


def write_synthetic_bag(path, storage: str) -> None:
    with bags.BagWriter(path, storage) as bag:
        command(bag, 0.00, RED_CUP)
        command(bag, 0.05, "   ")
        write_frame(bag, 0.10, "rgb8", 1, depth=np.full((H, W), 800, np.uint16), depth_t=0.11, info_t=0.10)
        command(bag, 0.15, RED_CUP)
        write_frame(bag, 0.20, "bgr8", 2, depth=np.full((H, W), 0.8, np.float32), info_t=0.20, padding=13)
        command(bag, 0.20, "pick up the apple")
        command(bag, 3.00, RED_CUP)
        write_frame(bag, 4.00, "rgba8", 3, depth=np.full((H, W), 0.8, np.float32), depth_t=4.20)
        command(bag, 4.05, RED_CUP)
        write_frame(bag, 5.00, "mono8", 4, depth=np.full((240, 320), 0.8, np.float32), info_t=5.00)
        command(bag, 5.05, RED_CUP)


def model_args(tiny_models, vocabulary, config):
    return ["--config", str(config), "--clipseg", tiny_models["clipseg"], "--clip", tiny_models["clip"],
            "--vocabulary", vocabulary, "--device", "cpu"]


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tiny models gain nothing from intra-op threads, and on a busy CI runner OpenMP spin-waiting
    makes each inference ~50x slower; the previous setting is restored after this module."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def pipeline(tiny_models, open_vocabulary_file):
    return make_pipeline(tiny_models, open_vocabulary_file)


def make_pipeline(tiny_models, vocabulary):
    from clip_vla.core.config import ClipVlaConfig
    from clip_vla.pipeline import VLAPipeline

    cfg = ClipVlaConfig.from_yaml(Path(__file__).resolve().parents[2] / "config" / "clip_vla.yaml").replace(**{
        "models.clipseg": tiny_models["clipseg"], "models.clip": tiny_models["clip"], "models.device": "cpu",
        "perception.mask_threshold": 0.0, "perception.min_confidence": 0.0,
        "geometry.intrinsics": [500.0, 500.0, 319.5, 239.5], "vocabulary_file": vocabulary})
    return VLAPipeline(cfg)


@pytest.fixture(scope="module")
def synthetic_bags(tmp_path_factory):
    root = tmp_path_factory.mktemp("bags")
    out = {}
    for storage in bags.STORAGES:
        write_synthetic_bag(root / storage, storage)
        out[storage] = root / storage
    return out


@pytest.fixture(scope="module")
def replays(synthetic_bags, pipeline):
    return {storage: replay_bag(path, pipeline) for storage, path in synthetic_bags.items()}


@pytest.fixture()
def params_file(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("clip_vla:\n  ros__parameters:\n    perception: {mask_threshold: 0.0, min_confidence: 0.0}\n"
                    "    geometry: {intrinsics: [500.0, 500.0, 319.5, 239.5]}\n")
    return path


def without_timings(records):
    return [{k: v for k, v in r.items() if k != "timings_ms"} for r in records]


# --------------------------------------------------------------------------- conversions
def test_messages_round_trip_through_a_bag(tmp_path):
    rgb = rgb_image(7, 33, 21)  # odd sizes: rows are not 4-byte aligned
    depth_mm = np.arange(33 * 21, dtype=np.uint16).reshape(21, 33)
    depth_m = depth_mm.astype(np.float32) / 1000.0
    with bags.BagWriter(tmp_path / "b", "sqlite3") as bag:
        for i, (enc, arr, pad) in enumerate([("rgb8", rgb, 0), ("bgr8", rgb[:, :, ::-1], 5),
                                             ("rgba8", np.dstack([rgb, np.zeros((21, 33), np.uint8)]), 3),
                                             ("bgra8", np.dstack([rgb[:, :, ::-1], np.zeros((21, 33), np.uint8)]), 0),
                                             ("mono8", rgb[:, :, 1], 7)]):
            bag.write("/color", bags.IMAGE, bags.image_msg(arr, enc, ns(i), FRAME, row_padding=pad), ns(i))
        bag.write("/color", bags.COMPRESSED_IMAGE, bags.compressed_image_msg(rgb, ns(5), FRAME, "png"), ns(5))
        bag.write("/depth", bags.IMAGE, bags.image_msg(depth_mm, "16UC1", ns(0), FRAME, row_padding=2), ns(0))
        bag.write("/depth", bags.IMAGE, bags.image_msg(depth_m, "32FC1", ns(1), FRAME), ns(1))
        bag.write("/info", bags.CAMERA_INFO, bags.camera_info_msg(K, 33, 21, ns(0), FRAME), ns(0))
    got = list(bags.read_messages(tmp_path / "b"))
    colors = [bags.color_to_rgb(m, t) for topic, _, t, m in got if topic == "/color"]
    assert [m.step for topic, _, t, m in got if topic == "/color" and t == bags.IMAGE][:3] == [99, 104, 135]
    grey = np.repeat(rgb[:, :, 1:2], 3, axis=2)
    for actual, expected in zip(colors, [rgb, rgb, rgb, rgb, grey, rgb]):
        np.testing.assert_array_equal(actual, expected)
    depths = [bags.depth_to_array(m) for topic, _, _, m in got if topic == "/depth"]
    np.testing.assert_array_equal(depths[0], depth_mm)
    assert depths[0].dtype == np.uint16 and depths[1].dtype == np.float32
    np.testing.assert_array_equal(depths[1], depth_m)
    info = [m for topic, _, _, m in got if topic == "/info"][0]
    assert bags.camera_info_to_intrinsics(info) == K
    # The scan reads header stamps from the CDR bytes without decoding pixels.
    index = bags.scan_bag(tmp_path / "b", ["/color", "/depth", "/info"])
    assert [m.stamp_ns for m in index.messages["/color"]] == [ns(i) for i in range(6)]
    assert index.messages["/info"][0].size == (33, 21) and index.storage == "sqlite3"


def test_bad_image_is_refused_not_crashed(tmp_path):
    msg = bags.image_msg(rgb_image(1, 8, 4), "rgb8", ns(0), FRAME)
    msg.step = 10  # < width * 3
    with pytest.raises(bags.ConversionError, match="step"):
        bags.color_to_rgb(msg)
    with pytest.raises(bags.BagError, match="exists already"):
        bags.BagWriter(tmp_path, "mcap")


@pytest.mark.ros
def test_bytes_are_interchangeable_with_rclpy(tmp_path, pipeline):
    """What `ros2 bag record` stores is rclpy's CDR: a bag of rclpy-serialised messages replays, and
    the messages written here deserialise in rclpy to the same pixels."""
    serialization = pytest.importorskip("rclpy.serialization")
    from sensor_msgs.msg import CameraInfo, Image
    from std_msgs.msg import String

    from clip_vla.ros import conversions

    rgb = rgb_image(5)
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    padded = np.zeros((H, W * 3 + 8), np.uint8)
    padded[:, : W * 3] = bgr.reshape(H, -1)
    image = Image(height=H, width=W, encoding="bgr8", is_bigendian=0, step=W * 3 + 8, data=padded.tobytes())
    image.header.stamp.sec, image.header.stamp.nanosec, image.header.frame_id = 1_700_000_000, 100_000_000, FRAME
    depth = Image(height=H, width=W, encoding="16UC1", is_bigendian=0, step=W * 2,
                  data=np.full((H, W), 800, np.uint16).tobytes())
    depth.header = image.header
    info = CameraInfo(height=H, width=W, k=[500.0, 0.0, 319.5, 0.0, 500.0, 239.5, 0.0, 0.0, 1.0])
    info.header = image.header
    path = tmp_path / "robot"
    with bags.BagWriter(path, "sqlite3") as bag:
        bag.write_raw(bags.COLOR_TOPIC, bags.IMAGE, serialization.serialize_message(image), ns(0.10))
        bag.write_raw(bags.DEPTH_TOPIC, bags.IMAGE, serialization.serialize_message(depth), ns(0.11))
        bag.write_raw(bags.CAMERA_INFO_TOPIC, bags.CAMERA_INFO, serialization.serialize_message(info), ns(0.11))
        bag.write_raw(bags.COMMAND_TOPIC, bags.STRING, serialization.serialize_message(String(data=RED_CUP)),
                      ns(0.15))
    record, = replay_bag(path, pipeline).records
    assert record["status"] == "accepted" and record["frame_stamp_ns"] == ns(0.10)
    assert record["xyz_base"] == pytest.approx([0.5, 0.0, 0.0], abs=1e-3) and record["depth_source"] == "depth"
    # ... and the other way round: rosbags bytes -> rclpy message -> the node's conversion.
    raw = bags.typestore().serialize_cdr(bags.image_msg(bgr, "bgr8", ns(0.1), FRAME, row_padding=8), bags.IMAGE)
    decoded = serialization.deserialize_message(bytes(raw), Image)  # (bytes differ only in alignment padding)
    assert decoded == image
    np.testing.assert_array_equal(conversions.image_to_rgb(decoded), rgb)


# --------------------------------------------------------------------------- replay
@pytest.mark.parametrize("storage", bags.STORAGES)
def test_replay_answers_every_command_once(replays, storage):
    report = replays[storage]
    records = report.records
    assert [r["index"] for r in records] == list(range(len(EXPECTED)))
    assert [r["status"] for r in records] == [s for s, _ in EXPECTED]
    assert [r["frame_stamp"] for r in records] == [None if t is None else bags.ns_to_seconds(ns(t))
                                                   for s, t in EXPECTED]
    for r in records:
        if r["status"] == "accepted":
            assert r["cmd"] == "pick" and r["xyz_base"] == pytest.approx([0.5, 0.0, 0.0], abs=1e-3)
            assert len(r["tokens"]) == 5 and r["extrinsics"] == "config"
            assert r["timings_ms"]["pipeline"] > 0 and r["timings_ms"]["latency"] >= r["timings_ms"]["pipeline"]
        else:
            assert r["message"]
    rgb8, bgr8, rgba8 = (records[i] for i in (2, 3, 5))
    assert rgb8["depth_stamp"] == pytest.approx((T0 + 0.11e9) * 1e-9) and rgb8["depth_source"] == "depth"
    assert rgb8["intrinsics_source"] == "synced" and bgr8["object"] == "apple"
    assert rgba8["depth_stamp"] is None and rgba8["depth_source"] == "table_plane"
    assert rgba8["intrinsics_source"] == "latest"
    assert "320x240" in records[6]["message"]
    assert records[4]["frame_age"] == pytest.approx(2.8)
    summary = report.summary
    assert summary["commands"] == 7 and summary["statuses"]["accepted"] == 3 and summary["storage"] == storage
    assert summary["latency_ms"]["n"] == 3 and summary["latency_ms"]["p95"] >= summary["latency_ms"]["p50"] > 0


def test_replay_is_deterministic(replays, synthetic_bags, tiny_models, open_vocabulary_file):
    again = replay_bag(synthetic_bags["mcap"], make_pipeline(tiny_models, open_vocabulary_file))  # fresh models
    assert without_timings(again.records) == without_timings(replays["mcap"].records)
    assert without_timings(replays["sqlite3"].records) == without_timings(replays["mcap"].records)


def test_pairing_options(synthetic_bags):
    """Pairing is decided from the scan alone (no pixels, no models)."""
    index = bags.scan_bag(synthetic_bags["mcap"], ReplayOptions().image_topics, [bags.COMMAND_TOPIC])
    default = pair_commands(index, ReplayOptions())
    assert [p.status for p in default] == ["no_frame", "no_frame", None, None, "stale_frame", None, None]
    assert default[5].depth is None and default[5].info_source == "latest"
    loose = pair_commands(index, ReplayOptions(max_frame_age=5.0, sync_tolerance=0.3))
    assert loose[4].status is None and loose[4].color.stamp_ns == ns(0.20)  # 2.8 s old is fine now
    assert loose[5].depth.stamp_ns == ns(4.20) and loose[5].info_source == "latest"  # 0.2 s is within 0.3 s
    strict = pair_commands(index, ReplayOptions(sync_tolerance=0.005))
    assert strict[2].depth is None and strict[3].depth.stamp_ns == ns(0.20)  # 10 ms off, 0 ms off


def test_registered_depth_of_another_size_is_resized(tmp_path, pipeline):
    path = tmp_path / "registered"
    with bags.BagWriter(path, "mcap") as bag:
        write_frame(bag, 0.10, "rgb8", 1, depth=np.full((240, 320), 800, np.uint16), info_t=0.10)
        command(bag, 0.15, RED_CUP)
    record, = replay_bag(path, pipeline, ReplayOptions(depth_registered=True)).records
    assert record["status"] == "accepted" and record["depth_source"] == "depth"
    assert record["xyz_base"] == pytest.approx([0.5, 0.0, 0.0], abs=1e-3)


def test_extrinsics_come_from_tf_in_the_bag(tmp_path, pipeline):
    # base_link -> camera_link (0.4, 0.1, 0.8) -> optical frame (the default rotation): goal at (0.4, 0.1, 0).
    from clip_vla.core.geometry import RigidTransform

    optical = RigidTransform.from_xyz_rpy([0, 0, 0], [math.pi, 0.0, -math.pi / 2]).matrix()
    link = RigidTransform.from_xyz_rpy([0.4, 0.1, 0.8], [0, 0, 0]).matrix()
    path = tmp_path / "tf"
    with bags.BagWriter(path, "mcap") as bag:
        bag.write(bags.TF_STATIC_TOPIC, bags.TF_MESSAGE, bags.tf_message([
            bags.transform_msg("base_link", "camera_link", link, ns(0)),
            bags.transform_msg("camera_link", FRAME, optical, ns(0))]), ns(0))
        write_frame(bag, 0.10, "rgb8", 1, depth=np.full((H, W), 0.8, np.float32), info_t=0.10)
        command(bag, 0.15, RED_CUP)
        bag.write(bags.COLOR_TOPIC, bags.IMAGE, bags.image_msg(rgb_image(2), "rgb8", ns(0.2), "elsewhere"), ns(0.2))
        command(bag, 0.25, RED_CUP)
    report = replay_bag(path, pipeline)
    first, second = report.records
    assert first["status"] == "accepted" and first["extrinsics"] == "tf"
    assert first["xyz_base"] == pytest.approx([0.4, 0.1, 0.0], abs=1e-3)
    assert second["status"] == "bad_input" and "elsewhere" in second["message"]
    static = replay_bag(path, pipeline, ReplayOptions(use_tf=False)).records
    assert static[0]["extrinsics"] == "config" and static[0]["xyz_base"] == pytest.approx([0.5, 0.0, 0.0], abs=1e-3)
    assert static[1]["status"] == "accepted"


def test_compare_tolerances():
    base = {"index": 0, "command": "c", "status": "accepted", "cmd": "pick", "xyz_base": [0.5, 0.0, 0.0],
            "theta": 3.13, "tokens": [1, 128, 128, 36, 255]}
    near = dict(base, xyz_base=[0.505, 0.005, 0.0], theta=-3.13, tokens=[1, 129, 127, 37, 0])
    assert compare([near], [base]) == []  # theta and its token wrap around
    far = dict(base, xyz_base=[0.52, 0.0, 0.0], theta=2.9, tokens=[1, 131, 128, 36, 255], cmd="push")
    problems = compare([far], [base], Tolerances())
    assert len(problems) == 4 and any("xyz_base" in p for p in problems) and any("cmd push" in p for p in problems)
    assert compare([dict(base, tokens=[2, 128, 128, 36, 255])], [base])  # the cmd token is exact
    assert compare([base], [{"index": 0, "status": "accepted"}]) == []  # only given fields are checked
    assert "missing" in compare([], [base])[0] and "not in the expectation" in compare([base], [])[0]
    assert "status no_object" in compare([dict(base, status="no_object")], [base])[0]


# --------------------------------------------------------------------------- CLI
def test_cli_report_expect_and_goal_bag(synthetic_bags, replays, tiny_models, open_vocabulary_file, params_file,
                                        tmp_path, capsys):
    bag = str(synthetic_bags["sqlite3"])
    args = model_args(tiny_models, open_vocabulary_file, params_file)
    expected, report_path, goals = tmp_path / "expected.json", tmp_path / "report.json", tmp_path / "goals"
    expected.write_text(json.dumps(replays["mcap"].to_dict()))  # a report of the other storage's bag

    # The report is an expectation; the CLI agrees with the API (and sqlite3 with mcap) -> exit 0.
    assert replay_main([bag, "--out", str(report_path), "--write-bag", str(goals), "--expect", str(expected),
                        *args]) == 0
    out = capsys.readouterr().out
    assert "stale_frame" in out and "7 commands" in out and "latency p50" in out and "no regression" in out
    report = json.loads(report_path.read_text())
    assert len(report["records"]) == 7 and report["summary"]["statuses"]["no_frame"] == 1
    assert without_timings(report["records"]) == without_timings(replays["sqlite3"].records)

    # A doctored expectation is a regression: each one printed, exit 1.
    doctored = load_expectation(report_path)
    doctored[2]["xyz_base"] = [0.55, 0.0, 0.0]
    doctored[4]["status"] = "accepted"
    bad = tmp_path / "doctored.json"
    bad.write_text(json.dumps(doctored))
    assert replay_main([bag, "--expect", str(bad), "--quiet", *args]) == 1
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("REGRESSION")]
    assert len(lines) == 2 and "#2" in lines[0] and "xyz_base" in lines[0] and "#4" in lines[1]

    # The goal bag: the node's output topics, at the commands' bag times, stamped like the source images.
    from rosbags.highlevel import AnyReader

    with AnyReader([goals]) as reader:
        topics = {c.topic: c.msgtype for c in reader.connections}
        assert topics == {"/clip_vla/goal": bags.STRING, "/clip_vla/goal_pose": bags.POSE_STAMPED,
                          "/clip_vla/status": bags.STRING, "/clip_vla/plan": bags.STRING}
        msgs = [(c.topic, t, reader.deserialize(raw, c.msgtype)) for c, t, raw in reader.messages()]
    statuses = [json.loads(m.data) for topic, _, m in msgs if topic == "/clip_vla/status"]
    assert [s["status"] for s in statuses] == [s for s, _ in EXPECTED]
    assert [s["command_id"] for s in statuses] == list(range(1, 8))
    poses = [(t, m) for topic, t, m in msgs if topic == "/clip_vla/goal_pose"]
    goal_jsons = [json.loads(m.data) for topic, _, m in msgs if topic == "/clip_vla/goal"]
    accepted = [r for r in report["records"] if r["status"] == "accepted"]
    assert len(poses) == len(goal_jsons) == len(accepted) == 3
    plans = [json.loads(m.data) for topic, _, m in msgs if topic == "/clip_vla/plan"]  # one per accepted command
    assert [p["command_id"] for p in plans] == [g["command_id"] for g in goal_jsons]
    assert all(p["steps"][0]["goal"] == g and p["steps"][0]["waypoints"] for p, g in zip(plans, goal_jsons))
    assert all(r["plan"][0]["status"] == "accepted" and r["plan"][0]["waypoints"] for r in accepted)
    for (t, pose), goal, rec in zip(poses, goal_jsons, accepted):
        assert t == rec["bag_time_ns"] and rec["bag_time"] == pytest.approx(t * 1e-9, abs=1e-6)
        assert bags.stamp_to_ns(pose.header.stamp) == rec["frame_stamp_ns"]
        assert pose.header.frame_id == "base_link" == goal["frame_id"]
        assert [pose.pose.position.x, pose.pose.position.y, pose.pose.position.z] == pytest.approx(
            [0.5, 0.0, 0.0], abs=1e-3)
        assert pose.pose.orientation.w == pytest.approx(math.cos(rec["theta"] / 2), abs=1e-3)
        assert goal["tokens"] == rec["tokens"] and goal["camera_frame"] == FRAME


def test_cli_errors_exit_2(tmp_path, capsys):
    assert replay_main([str(tmp_path / "missing")]) == 2
    assert "not found" in capsys.readouterr().err
    path = tmp_path / "no_commands"
    with bags.BagWriter(path, "mcap") as bag:
        write_frame(bag, 0.1, "rgb8", 1)
    assert replay_main([str(path)]) == 2
    assert "no command topic '/command'" in capsys.readouterr().err


# --------------------------------------------------------------------------- record (simulator)
@pytest.mark.sim
def test_record_then_replay(tmp_path, pipeline):
    try:
        from clip_vla.sim._mujoco import mujoco

        model = mujoco.MjModel.from_xml_string("<mujoco><worldbody><geom size='.1'/></worldbody></mujoco>")
        renderer = mujoco.Renderer(model, 16, 16)
        renderer.close()
    except Exception as exc:  # noqa: BLE001 - ImportError (no mujoco) or a GL/EGL context failure
        pytest.skip(f"MuJoCo offscreen rendering is unavailable here: {type(exc).__name__}: {exc}")
    from clip_vla.tools.record import main as record_main

    out = tmp_path / "episode"
    assert record_main([str(out), "--episodes", "1", "--storage", "sqlite3", "--seed", "3", "--width", "160",
                        "--height", "120", "--frames", "2", "--distractors", "2", "--quiet"]) == 0
    truth = json.loads((out / "ground_truth.json").read_text())
    topics = bags.bag_topics(out)
    assert topics[bags.COLOR_TOPIC] == (bags.IMAGE, 2) and topics[bags.COMMAND_TOPIC] == (bags.STRING, 1)
    assert topics[bags.TF_STATIC_TOPIC] == (bags.TF_MESSAGE, 1) and topics[bags.CAMERA_INFO_TOPIC][1] == 2
    assert len(truth["commands"]) == 1 and truth["commands"][0]["target_xyz"] is not None
    report = replay_bag(out, pipeline, ground_truth=truth)
    assert [r["command"] for r in report.records] == [c["command"] for c in truth["commands"]]
    for record, gt in zip(report.records, truth["commands"]):
        assert record["status"] not in ("no_frame", "stale_frame", "bad_input")
        assert record["frame_stamp"] == gt["frame_stamp"] and record["bag_time"] == gt["bag_time"]
        assert record.get("extrinsics") == "tf" and record.get("intrinsics_source") == "synced"
        assert record["truth"]["skill"] == gt["skill"]
    assert truth["intrinsics"][2] == pytest.approx(79.5)


# --------------------------------------------------------------------------- hardening (issue 11, bags)
def png_with_sbit(array: np.ndarray, bits: int) -> bytes:
    """A 16-bit PNG of ``array`` (BGR) with an sBIT chunk saying ``bits`` significant bits per channel."""
    import struct
    import zlib

    import cv2

    ok, buf = cv2.imencode(".png", array)
    assert ok
    raw = buf.tobytes()
    body = b"sBIT" + bytes([bits] * 3)
    chunk = struct.pack(">I", 3) + body + struct.pack(">I", zlib.crc32(body))
    return raw[:33] + chunk + raw[33:]  # after the signature (8) and IHDR (25)


def compressed(data: bytes, fmt: str):
    return bags._types()[bags.COMPRESSED_IMAGE](header=bags.header(ns(0), FRAME), format=fmt,
                                                data=np.frombuffer(data, np.uint8).copy())


def test_16bit_colour_png_is_scaled_by_its_significant_bits():
    """Item 6: 12-bit data in a 16-bit colour PNG became near-black (max 15 of 255)."""
    import cv2

    rgb12 = np.random.default_rng(0).integers(0, 4096, (H // 8, W // 8, 3)).astype(np.uint16)
    ok, buf = cv2.imencode(".png", rgb12[:, :, ::-1])  # OpenCV writes BGR and no sBIT
    rgb = bags.compressed_to_rgb(compressed(buf.tobytes(), "rgb16; png compressed bgr16"))
    np.testing.assert_array_equal(rgb, (rgb12 >> 4).astype(np.uint8))
    # An sBIT chunk is authoritative: 12 significant bits even when the values stay below 1024.
    dim = (rgb12 // 4)[:, :, ::-1]
    rgb = bags.compressed_to_rgb(compressed(png_with_sbit(dim, 12), "bgr16; png compressed"))
    np.testing.assert_array_equal(rgb, (dim[:, :, ::-1] >> 4).astype(np.uint8))
    # 16-bit grey is depth or mono16, whatever the format says.
    ok, grey = cv2.imencode(".png", rgb12[:, :, 0])
    with pytest.raises(bags.ConversionError, match="16-bit single-channel"):
        bags.compressed_to_rgb(compressed(grey.tobytes(), "png"))
    with pytest.raises(bags.ConversionError, match="16UC1"):  # item 4, the declared encoding
        bags.compressed_to_rgb(compressed(grey.tobytes(), "16UC1; png compressed "))
    # 8-bit images decode as before.
    rgb8 = rgb_image(3, 40, 30)
    png8 = bags.compressed_image_msg(rgb8, ns(0), FRAME, "png")
    np.testing.assert_array_equal(bags.compressed_to_rgb(png8), rgb8)


def camera_only_bag(path, storage="mcap"):
    with bags.BagWriter(path, storage) as bag:
        write_frame(bag, 0.5, "rgb8", 1, depth=np.full((H, W), 800, np.uint16), info_t=0.5)
        write_frame(bag, 1.0, "rgb8", 2, depth=np.full((H, W), 800, np.uint16), info_t=1.0)
    return path


def test_camera_only_bag_replays_commands_of_your_choice(tmp_path, tiny_models, open_vocabulary_file, params_file,
                                                         capsys):
    """Item 3: a bag without a command topic could not be replayed (exit 2, "no command topic")."""
    bag = camera_only_bag(tmp_path / "camera")
    commands = tmp_path / "commands.txt"
    commands.write_text("# seconds from the bag's start, then the text\n\n0.7   push the block # not a comment\n"
                        "frame pick up the red cup\n0.0 pick up the red cup\n")
    report = tmp_path / "report.json"
    args = model_args(tiny_models, open_vocabulary_file, params_file)
    assert replay_main([str(bag), "--command", RED_CUP, "--command-at", "0.6", "--commands-file", str(commands),
                        "--out", str(report), "--quiet", *args]) == 0
    records = json.loads(report.read_text())["records"]
    assert [(r["command"], r["bag_time_ns"], r["status"]) for r in records] == [
        (RED_CUP, ns(0.5), "accepted"),  # "frame": right after the first colour frame, paired with it
        (RED_CUP, ns(0.5), "accepted"),  # 0.0 s from the bag's start: the same time
        (RED_CUP, ns(1.1), "accepted"),  # --command-at 0.6
        ("push the block # not a comment", ns(1.2), "accepted")]
    assert records[1]["frame_stamp_ns"] == ns(0.5) and records[2]["frame_stamp_ns"] == ns(1.0)
    # Each --command-at goes with its --command; bad inputs are one line, exit 2.
    late = tmp_path / "late.txt"
    late.write_text("soon pick up the red cup\n")
    for extra, message in [(["--command-at", "1"], "--command-at needs a --command"),
                           (["--command", "a", "--command", "b", "--command", "c", "--command-at", "1",
                             "--command-at", "2"], "2 --command-at for 3 --command"),
                           (["--command", "a", "--command-at", "-1"], "is not a time"),
                           (["--commands-file", str(tmp_path / "none.txt")], "commands file not found"),
                           (["--commands-file", str(params_file)], "params.yaml:1: expected 'SECONDS TEXT'"),
                           (["--commands-file", str(late)], "late.txt:1: 'soon' is not a time in seconds")]:
        assert replay_main([str(bag), *extra, *args]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and "\n" not in err, err
    bag = tmp_path / "commands_only"
    with bags.BagWriter(bag, "mcap") as out:
        command(out, 0.1, RED_CUP)
    assert replay_main([str(bag), "--command", RED_CUP, *args]) == 2
    assert "no colour frame on /camera/color/image_raw to send" in capsys.readouterr().err


def test_command_topic_is_checked_up_front(tmp_path, tiny_models, open_vocabulary_file, params_file, capsys):
    """Item 5: a command topic of the wrong type or without messages gave "0 commands", exit 0."""
    from rosbags.rosbag2 import Writer

    bag = tmp_path / "no_messages"
    with Writer(bag, version=bags.DEFAULT_VERSION) as writer:  # a connection, never written to
        writer.add_connection(bags.COMMAND_TOPIC, bags.STRING, typestore=bags.typestore())
        color = writer.add_connection(bags.COLOR_TOPIC, bags.IMAGE, typestore=bags.typestore())
        writer.write(color, ns(0), bags.typestore().serialize_cdr(
            bags.image_msg(rgb_image(1), "rgb8", ns(0), FRAME), bags.IMAGE))
    args = model_args(tiny_models, open_vocabulary_file, params_file)
    assert replay_main([str(bag), *args]) == 2
    assert "command topic /command has no messages" in capsys.readouterr().err
    assert replay_main([str(bag), "--command-topic", bags.COLOR_TOPIC, *args]) == 2
    assert f"has type {bags.IMAGE}, expected {bags.STRING}" in capsys.readouterr().err
    from clip_vla.tools.replay_commands import CommandSourceError

    with pytest.raises(CommandSourceError, match="has no messages"):
        replay_bag(bag, None)


def test_damaged_mcap_is_one_clear_error(tmp_path, tiny_models, open_vocabulary_file, params_file, capsys):
    """Item 7: 20 kB of random bytes in the middle of an MCAP raised OverflowError (a traceback)."""
    import random

    bag = tmp_path / "bag"
    with bags.BagWriter(bag, "mcap") as out:
        for i in range(60):
            small = np.random.default_rng(i).integers(0, 256, (64, 64, 3), dtype=np.uint8)
            out.write(bags.COLOR_TOPIC, bags.IMAGE, bags.image_msg(small, "rgb8", ns(i * 0.1), FRAME), ns(i * 0.1))
            command(out, i * 0.1 + 0.001, RED_CUP)
    (mcap,) = bag.glob("*.mcap")
    data, mid = mcap.read_bytes(), len(mcap.read_bytes()) // 2
    args = model_args(tiny_models, open_vocabulary_file, params_file)
    outcomes = []
    for seed in range(4):
        random.seed(seed)
        noise = bytes(random.getrandbits(8) for _ in range(20000))
        for how, damaged in [("overwritten", data[:mid] + noise + data[mid + 20000:]),
                             ("inserted", data[:mid] + noise + data[mid:])]:
            copy = tmp_path / f"{how}{seed}"
            copy.mkdir()
            (copy / "metadata.yaml").write_bytes((bag / "metadata.yaml").read_bytes())
            (copy / mcap.name).write_bytes(damaged)
            code = replay_main([str(copy), "--quiet", *args])
            err = capsys.readouterr().err.strip()
            if code == 2:  # one line, naming the damage
                assert "damaged or truncated storage file" in err and "\n" not in err, err
                outcomes.append(err.split("storage file, ")[1].split(":")[0])
            else:  # what could be read was replayed, and what was skipped is said
                assert code == 0 and "of the 60 messages metadata.yaml states" in err, err
                outcomes.append("partial")
    assert "OverflowError" in outcomes, outcomes  # the case


def test_shortfall_against_metadata_is_said(tmp_path):
    """Item 1's rule: never fewer messages than metadata.yaml states without saying why."""
    bag = camera_only_bag(tmp_path / "bag", "sqlite3")
    meta = bag / "metadata.yaml"
    meta.write_text(meta.read_text().replace("message_count: 2", "message_count: 3", 1))
    index = bags.scan_bag(bag, [bags.COLOR_TOPIC, bags.DEPTH_TOPIC, bags.CAMERA_INFO_TOPIC])
    (note,) = index.notes
    assert "read 2 of the 3 messages metadata.yaml states (its storage files hold only 2)" in note


def test_expect_compares_plans_and_their_chunks_within_the_tolerances():
    from clip_vla.tools.replay import Tolerances, compare

    step = {"index": 0, "skill": "pick", "status": "accepted", "cmd": "pick", "xyz_base": [0.5, 0.0, 0.0],
            "theta": 0.0, "waypoints": [{"x": 0.5, "y": 0.0, "z": 0.12, "gripper": 0.0, "label": "above"},
                                        {"x": 0.5, "y": 0.0, "z": 0.01, "gripper": 1.0, "label": "close"}]}
    record = {"index": 0, "command": "put the cup in the bowl", "status": "accepted", "plan": [step]}
    assert compare([record], [record], Tolerances()) == []
    moved = json.loads(json.dumps(record))
    moved["plan"][0]["waypoints"][1]["z"] = 0.05
    moved["plan"][0]["waypoints"][0]["gripper"] = 1.0
    problems = compare([moved], [record], Tolerances())
    assert len(problems) == 2 and "waypoint 0 (above)" in problems[0] and "waypoint 1 (close)" in problems[1]
    shorter = dict(record, plan=[])
    assert "plan has 0 grounded steps, expected 1" in compare([shorter], [record], Tolerances())[0]
