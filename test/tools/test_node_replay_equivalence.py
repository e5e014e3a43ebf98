"""The running node and ``clip-vla replay`` answer the same frames and commands with the same records.

The same scene goes two ways: published over real DDS to a ``vla_node`` process, and written
to a rosbag2 bag that ``replay_bag`` runs through the pipeline in this process. Every
``~/goal`` and ``~/status`` record must match field for field, except the fields named in
``LEGITIMATELY_DIFFERENT``: both sides build them with ``clip_vla.core.records`` and pair with
``clip_vla.core.framesync``, so a difference here is drift between the node and replay.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import pytest

pytest.importorskip("rclpy")

from clip_vla.core.config import ClipVlaConfig, default_config_path  # noqa: E402
from clip_vla.ros import params  # noqa: E402
from clip_vla.testing.harness import start_ready, tabletop_scene, tiny_model_overrides, unique_domain_id  # noqa: E402
from clip_vla.tools import bags  # noqa: E402
from clip_vla.tools.replay import ReplayOptions, node_records_of, replay_bag  # noqa: E402

SIZE = (64, 48)
FRAME_ID = "camera_color_optical_frame"
MAX_FRAME_AGE = 30.0  # a loaded CI runner must not turn a fresh frame stale on one side only

# Fields that differ between the two runs for a reason, not by drift:
# - latency_ms: the wall time each side took to answer;
# - stamp of an answer given without running on a frame (no_frame, a refused command text,
#   stop, depth that does not fit): the node stamps it with its clock when it answers, replay
#   with the command's bag time. Answers computed on a frame carry the frame's stamp on both.
LEGITIMATELY_DIFFERENT = ("latency_ms",)
STAMP_WITHOUT_A_FRAME = "stamp"

# (what to publish before the command: None, or (depth: "full" | "half" | None, camera_info), command)
SCRIPT: List[Tuple[Optional[Tuple[Optional[str], bool]], str]] = [
    (None, "pick up the red cup"),  # no_frame
    (None, "   "),  # empty_command
    (None, "pick up the red cup " * 60),  # bad_command: longer than max_command_length
    (("full", True), "pick up the red cup"),  # accepted, depth
    (None, "dance wildly"),  # refused by the parser
    (("full", True), "put the red cup in the bowl"),  # accepted, a destination
    ((None, True), "push the red cup"),  # accepted on the table plane (no depth)
    (("half", True), "pick up the red cup"),  # bad_input: depth of another size, not registered
    (None, "stop"),  # stopped
]


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tiny models gain nothing from intra-op threads (see test_bags); restored after this module."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _overrides(tiny_models, vocabulary) -> Dict[str, Any]:
    return tiny_model_overrides(tiny_models, vocabulary, image_reliability="reliable", max_frame_age=MAX_FRAME_AGE)


def _ns(stamp) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def _run_node(tiny_models, vocabulary, bag_path: Path) -> Tuple[str, List[Dict[str, Any]], List[Dict[str, Any]]]:
    """Play SCRIPT to a vla_node process and write the same messages to a bag; (namespace, statuses, goals)."""
    namespace = f"/test_equivalence_{os.getpid()}"
    try:
        proc, client = start_ready(_overrides(tiny_models, vocabulary), namespace, unique_domain_id(8))
    except RuntimeError as exc:
        pytest.fail(str(exc))
    rgb, depth, k = tabletop_scene(*SIZE)
    half = np.full((SIZE[1] // 2, SIZE[0] // 2), 0.8, np.float32)
    # A 1 Hz camera: frames 1 s apart in stamp, so no depth can pair with another frame (bag times
    # stay the real send times, which decide the latest frame before each command).
    first = client.now()
    stamps = (type(first)(sec=first.sec + i, nanosec=first.nanosec) for i in range(len(SCRIPT)))
    try:
        with bags.BagWriter(bag_path, "mcap") as bag:
            for frame, text in SCRIPT:
                if frame is not None:
                    kind, info = frame
                    d = {"full": depth, "half": half, None: None}[kind]
                    stamp = client.publish_frame(rgb, d, k if info else None, stamp=next(stamps))
                    t, received = _ns(stamp), _ns(client.now())
                    if d is not None:
                        bag.write(f"{namespace}/depth", bags.IMAGE, bags.image_msg(d, "32FC1", t, FRAME_ID), received)
                    if info:
                        bag.write(f"{namespace}/camera_info", bags.CAMERA_INFO,
                                  bags.camera_info_msg(k, SIZE[0], SIZE[1], t, FRAME_ID), received)
                    bag.write(f"{namespace}/image", bags.IMAGE, bags.image_msg(rgb, "rgb8", t, FRAME_ID), received)
                sent = _ns(client.now())
                bag.write(f"{namespace}/command", bags.STRING, bags.string_msg(text), sent)
                client.ask(text, timeout=60.0)
        client.wait_for(lambda: len(client.goals) >= 3, timeout=10.0)
        return namespace, list(client.statuses), list(client.goals)
    finally:
        client.close()
        proc.stop()


def _replay(tiny_models, vocabulary, bag_path: Path, namespace: str) -> Tuple[List[Any], List[Any], List[Any]]:
    """Replay the bag through the pipeline; (results, statuses, goals) as the node would publish them."""
    from clip_vla.pipeline import VLAPipeline

    core = set(params.core_names())
    config = ClipVlaConfig.from_yaml(default_config_path()).replace(
        **{k: v for k, v in _overrides(tiny_models, vocabulary).items() if k in core})
    options = ReplayOptions(color_topic=f"{namespace}/image", depth_topic=f"{namespace}/depth",
                            camera_info_topic=f"{namespace}/camera_info", command_topic=f"{namespace}/command",
                            max_frame_age=MAX_FRAME_AGE, use_tf=False)
    report = replay_bag(bag_path, VLAPipeline(config), options)
    pairs = [node_records_of(r, config.base_frame) for r in report.results]
    return report.results, [status for _, status in pairs], [goal for goal, _ in pairs if goal is not None]


def _without(record: Dict[str, Any], keys) -> Dict[str, Any]:
    return {k: v for k, v in record.items() if k not in keys}


def test_node_and_replay_publish_the_same_goal_and_status_records(tiny_models, open_vocabulary_file, tmp_path):
    bag_path = tmp_path / "scene"
    namespace, node_statuses, node_goals = _run_node(tiny_models, open_vocabulary_file, bag_path)
    results, replay_statuses, replay_goals = _replay(tiny_models, open_vocabulary_file, bag_path, namespace)

    assert len(node_statuses) == len(replay_statuses) == len(SCRIPT)
    assert [s["status"] for s in node_statuses] == [
        "no_frame", "empty_command", "bad_command", "accepted", node_statuses[4]["status"], "accepted", "accepted",
        "bad_input", "stopped"]
    for node, replay, result in zip(node_statuses, replay_statuses, results):
        different = LEGITIMATELY_DIFFERENT + (() if result.frame_stamp_ns is not None else (STAMP_WITHOUT_A_FRAME,))
        assert _without(node, different) == _without(replay, different), node["command"]
    assert node_goals == replay_goals
    assert [g["depth_source"] for g in node_goals] == ["depth", "depth", "table_plane"]
