"""vla_node as a managed node: transitions driven over lifecycle services, failures reported, SIGTERM."""
from __future__ import annotations

import os
import signal

import pytest

pytest.importorskip("rclpy")

from lifecycle_msgs.msg import Transition  # noqa: E402

from clip_vla.testing.harness import Client, NodeProcess, tabletop_scene, tiny_model_overrides, unique_domain_id  # noqa: E402,E501


def _start(overrides, tag, offset):
    domain = unique_domain_id(offset)
    namespace = f"/test_{tag}_{os.getpid()}"
    proc = NodeProcess(overrides, namespace=namespace, domain_id=domain).start()
    return proc, Client(namespace, domain_id=domain)


def test_transitions_without_autostart(tiny_models, open_vocabulary_file):
    proc, c = _start(tiny_model_overrides(tiny_models, open_vocabulary_file, autostart=False), "lc", 3)
    try:
        c.wait_for(lambda: any(d.get("state") == "unconfigured" for d in c.diagnostics), timeout=60)
        c.wait_connected(camera=False)
        assert c.get_state() == "unconfigured"
        assert c.ask("pick up the red cup")["status"] == "inactive"

        assert c.change_state(Transition.TRANSITION_CONFIGURE)
        assert c.get_state() == "inactive"
        assert c.ask("pick up the red cup")["status"] == "inactive"

        assert c.change_state(Transition.TRANSITION_ACTIVATE)
        c.wait_connected()
        rgb, depth, k = tabletop_scene(64, 48)
        c.publish_frame(rgb, depth, k)
        assert c.ask("pick up the red cup")["status"] == "accepted"

        assert c.change_state(Transition.TRANSITION_DEACTIVATE)
        assert c.ask("pick up the red cup")["status"] == "inactive"
        assert c.change_state(Transition.TRANSITION_ACTIVATE)  # no reload: models stayed in memory
        c.wait_connected()
        c.publish_frame(rgb, depth, k)
        assert c.ask("pick up the red cup")["status"] == "accepted"
        assert proc.output().count("models loaded") == 1

        assert c.change_state(Transition.TRANSITION_DEACTIVATE)
        assert c.change_state(Transition.TRANSITION_CLEANUP)
        assert c.get_state() == "unconfigured"
    finally:
        c.close()
        rc = proc.stop(signal.SIGTERM, timeout=5.0)
    out = proc.output()
    assert proc.stop_seconds is not None and proc.stop_seconds < 5.0, out[-2000:]
    assert rc == 0 and "Traceback" not in out, out[-2000:]


def test_model_load_failure_is_reported(open_vocabulary_file, tmp_path):
    overrides = tiny_model_overrides({"clipseg": str(tmp_path / "missing"), "clip": str(tmp_path / "missing")},
                                     open_vocabulary_file)
    proc, c = _start(overrides, "fail", 4)
    try:
        diag = c.wait_for(lambda: next((d for d in c.diagnostics if d["_level"] == 2), None), timeout=60)
        assert "model load failed" in diag["_message"]
        c.wait_connected(camera=False)
        status = c.ask("pick up the red cup")
        assert status["status"] == "model_error"
        assert "missing" in status["message"]
    finally:
        c.close()
        rc = proc.stop(signal.SIGINT, timeout=5.0)
    assert rc == 0 and "Traceback" not in proc.output(), proc.output()[-2000:]
