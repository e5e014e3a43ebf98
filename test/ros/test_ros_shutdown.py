"""vla_node at SIGTERM/SIGINT: every command it received gets exactly one status before it exits.

Each case starts a node of its own (stopping it is the test). To keep commands waiting when
the signal arrives, each command is made to wait the whole sync window: the node has a live
depth stream whose latest message is older than the frame, so it waits ``sync_tolerance``
(0.2 s) for the frame's depth before running. Six commands then need about 1.2 s.
"""
from __future__ import annotations

import os
import signal
import time

import pytest

pytest.importorskip("rclpy")

from builtin_interfaces.msg import Time  # noqa: E402

from clip_vla.testing.harness import start_ready, tabletop_scene, tiny_model_overrides, unique_domain_id  # noqa: E402

SYNC_WAIT_S = 0.2


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
@pytest.mark.parametrize("commands, delay_s", [(6, 0.3), (5, 0.08)], ids=["6_then_300ms", "5_then_80ms"])
def test_commands_waiting_at_shutdown_are_answered_stopped(tiny_models, open_vocabulary_file, sig, commands,
                                                           delay_s):
    offset = 20 + 2 * int(sig) + commands
    overrides = tiny_model_overrides(tiny_models, open_vocabulary_file, sync_tolerance=SYNC_WAIT_S)
    try:
        proc, c = start_ready(overrides, f"/test_shutdown_{os.getpid()}_{offset}", unique_domain_id(offset))
    except RuntimeError as exc:
        pytest.fail(str(exc))
    try:
        rgb, depth, k = tabletop_scene(64, 48)
        now = c.now()
        old = Time(sec=now.sec - 1, nanosec=now.nanosec)  # depth is live, but none for the frame yet
        c.pub_depth.publish(c.make_image(depth, "32FC1", old))
        c.publish_frame(rgb, None, k, stamp=now, wait_acked=2.0)
        for _ in range(commands):
            c.send("pick up the red cup")
        time.sleep(delay_s)
        rc = proc.stop(sig, timeout=10.0)
        out = proc.output()
        assert rc == 0 and "Traceback" not in out, out[-3000:]
        try:
            c.wait_for(lambda: len(c.statuses) >= commands, timeout=5.0)
        except TimeoutError:
            pass
        ids = sorted(s["command_id"] for s in c.statuses)
        assert ids == list(range(1, commands + 1)), (c.statuses, out[-3000:])
        stopped = [s for s in c.statuses if s["status"] == "stopped"]
        assert stopped, c.statuses  # some were still waiting: the test would not test anything otherwise
        assert all(s["message"] == "node shutting down" for s in stopped), stopped
    finally:
        c.close()
        proc.stop()


@pytest.mark.parametrize("state", ["shuttingdown", "finalized"])
def test_a_command_arriving_during_shutdown_is_answered_stopped_at_once(state):
    from clip_vla.ros.vla_node.commands import quick_refusal

    answer = quick_refusal("pick up the red cup", state, None, 100)
    assert answer.reason.value == "stopped" and answer.message == "node shutting down"
