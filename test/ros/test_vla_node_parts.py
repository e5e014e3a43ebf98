"""The node's parts alone, without a running node: settings, the command queue, the camera inputs."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

pytest.importorskip("rclpy")

from builtin_interfaces.msg import Time  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402

from clip_vla.core.framesync import Refusal  # noqa: E402
from clip_vla.core.types import Reason  # noqa: E402
from clip_vla.ros import params  # noqa: E402
from clip_vla.ros.conversions import numpy_to_image  # noqa: E402
from clip_vla.ros.vla_node.commands import CommandQueue, quick_refusal  # noqa: E402
from clip_vla.ros.vla_node.diagnostics import Stats  # noqa: E402
from clip_vla.ros.vla_node.inputs import CameraInputs, Stamped  # noqa: E402
from clip_vla.ros.vla_node.settings import NodeSettings  # noqa: E402


def settings(**changes) -> NodeSettings:
    values = {name: spec.default for name, spec in params.parameter_specs().items()}
    return NodeSettings.from_values({**values, **changes})


def stamp(seconds: float) -> Time:
    return Time(sec=int(seconds), nanosec=int(round((seconds % 1) * 1e9)))


def colour(t: float, size=(8, 6)) -> Image:
    return numpy_to_image(np.zeros((size[1], size[0], 3), np.uint8), "rgb8", stamp(t), "cam")


def depth(t: float, size=(8, 6)) -> Image:
    return numpy_to_image(np.full((size[1], size[0]), 0.8, np.float32), "32FC1", stamp(t), "cam")


def info(t: float, size=(8, 6)) -> CameraInfo:
    msg = CameraInfo(width=size[0], height=size[1], k=[5.0, 0.0, 3.5, 0.0, 5.0, 2.5, 0.0, 0.0, 1.0])
    msg.header.stamp = stamp(t)
    return msg


def test_settings_are_typed_and_immutable():
    s = settings(max_frame_age=2, command_queue_size=3.0, target_frame="")
    assert s.max_frame_age == 2.0 and isinstance(s.max_frame_age, float) and s.command_queue_size == 3
    assert s.goal_frame == "base_link" and not s.continuous
    assert s.updated({"mode": "continuous", "target_frame": "world"}).goal_frame == "world"
    with pytest.raises(AttributeError):
        s.mode = "continuous"  # type: ignore[misc]
    assert s.config().base_frame == "base_link"


def test_quick_refusals():
    assert quick_refusal("pick", "inactive", None, 10).reason == Reason.INACTIVE
    assert quick_refusal("pick", "unconfigured", "OSError: missing", 10).reason == Reason.MODEL_ERROR
    assert quick_refusal("   ", "active", None, 10).reason == Reason.EMPTY_COMMAND
    assert quick_refusal("pick" * 5, "active", None, 10).reason == Reason.BAD_COMMAND
    assert quick_refusal("pick", "active", None, 10) is None


def test_the_queue_numbers_bounds_and_hands_over_on_flush():
    stats = Stats()
    queue = CommandQueue(threading.Condition(threading.RLock()), stats)
    commands = [queue.receive(f"pick {i}") for i in range(3)]
    assert [c.command_id for c in commands] == [1, 2, 3]
    assert queue.offer(commands[0], limit=2) and queue.offer(commands[1], limit=2)
    assert not queue.offer(commands[2], limit=2) and stats.queue_full == 1
    assert queue.pop() is None  # not before the executor's next turn
    queue.flush()
    assert queue.pop() == commands[0] and queue.waiting() == 1
    assert queue.drain() == [commands[1]] and queue.waiting() == 0 and queue.job is None
    assert stats.commands_received == 3


def test_inputs_refuse_until_a_valid_fresh_frame():
    stats = Stats()
    inputs = CameraInputs(threading.Condition(threading.RLock()), stats)
    s = settings()
    with pytest.raises(Refusal) as err:
        inputs.select(s, "/image")
    assert err.value.reason == Reason.NO_FRAME
    bad = colour(1.0)
    bad.step = 3
    assert "invalid colour image" in inputs.on_image(bad, s.max_image_pixels, job_running=False)
    with pytest.raises(Refusal) as err:
        inputs.select(s, "/image")
    assert err.value.reason == Reason.BAD_INPUT and stats.frames_bad == 1
    assert inputs.on_image(colour(2.0), s.max_image_pixels, job_running=False) is None
    assert inputs.select(s, "/image").stamp == 2.0
    with pytest.raises(Refusal) as err:
        inputs.select(settings(max_frame_age=0.0), "/image")
    assert err.value.reason == Reason.STALE_FRAME


def test_depth_and_camera_info_pair_by_stamp_and_size():
    inputs = CameraInputs(threading.Condition(threading.RLock()), Stats())
    s = settings(sync_tolerance=0.05)
    inputs.on_depth(depth(0.9), s.max_image_pixels)
    inputs.on_depth(depth(1.01), s.max_image_pixels)
    inputs.on_camera_info(info(1.0, size=(16, 12)))  # another resolution with the same stamp
    inputs.on_camera_info(info(0.5))
    inputs.on_image(colour(1.0), s.max_image_pixels, job_running=False)
    slot = inputs.select(s, "/image")
    start = time.monotonic()
    d, k = inputs.match(slot, s, lambda: False)
    assert d.stamp == pytest.approx(1.01) and k.stamp == 0.5 and k.size == (8, 6)  # the latest of this size
    assert time.monotonic() - start < s.sync_tolerance + 0.5
    frame = inputs.frame(slot, d, k, s)
    assert frame.depth.shape == (6, 8) and frame.intrinsics.fx == 5.0 and frame.frame_id == "cam"
    with pytest.raises(Refusal) as err:
        inputs.frame(slot, d, Stamped(stamp=1.0, received=0.0, value=k.value, size=(16, 12)), s)
    assert "16x12" in err.value.message


def test_the_worker_rebuilds_its_verifier_when_the_verify_section_changes():
    """A parameter update replaces the pipeline's configuration in place (models stay loaded): the
    verifier must follow it, or ``verify.*`` set at run time would only take effect after a reload."""
    from types import SimpleNamespace

    from clip_vla.core.config import ClipVlaConfig
    from clip_vla.pipeline import VLAPipeline
    from clip_vla.ros.vla_node.worker import InferenceWorker
    from clip_vla.sim.oracle import GroundTruthPerception, ObservationLog

    pipeline = VLAPipeline(ClipVlaConfig(), oracle=GroundTruthPerception(ObservationLog()))
    worker = SimpleNamespace(_verifier=None)
    first = InferenceWorker._verifier_of(worker, pipeline)
    assert InferenceWorker._verifier_of(worker, pipeline) is first  # built once
    pipeline.update_config(pipeline.config.replace(**{"verify.min_lift_m": 0.07}))
    again = InferenceWorker._verifier_of(worker, pipeline)
    assert again is not first and again.config.min_lift_m == 0.07
