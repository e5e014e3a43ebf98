"""The pairing rules and refusals the node and replay share (clip_vla.core.framesync)."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from clip_vla.core import framesync
from clip_vla.core.framesync import Refusal
from clip_vla.core.types import Reason


def refusal_of(fn, *args) -> Refusal:
    with pytest.raises(Refusal) as err:
        fn(*args)
    return err.value


@pytest.mark.parametrize("text, reason, words", [
    ("", Reason.EMPTY_COMMAND, "empty"),
    (" \t\n", Reason.EMPTY_COMMAND, "empty"),
    ("x" * 11, Reason.BAD_COMMAND, "11 characters; the limit is 10"),
    ("pick \ufffd", Reason.BAD_COMMAND, "UTF-8"),
    ("pick \ud800", Reason.BAD_COMMAND, "surrogate"),
])
def test_unusable_command_text_is_refused_with_a_reason(text, reason, words):
    refusal = refusal_of(framesync.check_command_text, text, 10)
    assert refusal.reason == reason and words in refusal.message


def test_a_usable_command_text_passes():
    framesync.check_command_text("pick up the cup", 100)


def test_frame_age_refusals_come_in_the_node_order():
    assert refusal_of(framesync.check_frame_age, None, 1.0, "/cam").reason == Reason.NO_FRAME
    assert "/cam" in refusal_of(framesync.check_frame_age, None, 1.0, "/cam").message
    bad = refusal_of(framesync.check_frame_age, 0.1, 1.0, "/cam", "invalid colour image: step")
    assert bad.reason == Reason.BAD_INPUT and bad.message == "invalid colour image: step"
    stale = refusal_of(framesync.check_frame_age, 2.5, 1.0, "/cam")
    assert stale.reason == Reason.STALE_FRAME and "2.50 s ago (max_frame_age 1.00 s)" in stale.message
    framesync.check_frame_age(1.0, 1.0, "/cam")  # exactly max_frame_age is fresh


def test_latest_at_or_before():
    assert framesync.latest_at_or_before([10, 20, 30], 5) is None
    assert framesync.latest_at_or_before([10, 20, 30], 20) == 1
    assert framesync.latest_at_or_before([10, 20, 30], 99) == 2


def test_closest_within_tolerance_first_of_ties():
    items = [SimpleNamespace(stamp=s, name=n) for s, n in ((0.96, "a"), (1.04, "b"), (1.2, "c"))]
    assert framesync.closest(items, 1.0, 0.05, lambda r: r.stamp).name == "a"
    assert framesync.closest(items, 1.0, 0.039, lambda r: r.stamp) is None
    assert framesync.closest(items, 1.19, 0.05, lambda r: r.stamp).name == "c"


def test_depth_of_another_size_needs_registration():
    assert framesync.check_depth_size((64, 48), (64, 48), False) is False
    assert framesync.check_depth_size((32, 24), (64, 48), True) is True
    refusal = refusal_of(framesync.check_depth_size, (32, 24), (64, 48), False)
    assert refusal.reason == Reason.BAD_INPUT and "depth_registered" in refusal.message


def test_camera_info_must_describe_the_frame():
    framesync.check_intrinsics_size((0, 0), (64, 48))  # no size given: accepted
    framesync.check_intrinsics_size((64, 48), (64, 48))
    assert "320x240" in refusal_of(framesync.check_intrinsics_size, (320, 240), (64, 48)).message


def test_a_refused_parsed_command_still_names_skill_and_object():
    prepared = SimpleNamespace(parsed=SimpleNamespace(skill="pick", object="red cup"))
    answer = framesync.refused(Refusal(Reason.NO_FRAME, "no frame"), "pick up the red cup\x00", prepared)
    assert (answer.reason, answer.skill, answer.object_phrase) == (Reason.NO_FRAME, "pick", "red cup")
    assert answer.command == "pick up the red cup\ufffd"


def test_sync_wait_is_bounded():
    assert framesync.sync_wait(0.05) == 0.05 and framesync.sync_wait(5.0) == framesync.SYNC_WAIT_MAX


def test_the_latest_camera_info_stands_in_only_while_fresh():
    assert framesync.stale_camera_info(9.9, 10.0) is None
    assert framesync.stale_camera_info(10.0, 10.0) is None
    assert framesync.stale_camera_info(1e5, 0.0) is None  # 0: no bound
    assert framesync.stale_camera_info(12.0, 10.0) == (
        "the latest camera_info arrived 12.0 s before the frame (max_camera_info_age 10.0 s)")
