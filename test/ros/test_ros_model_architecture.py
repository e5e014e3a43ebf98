"""A model directory of the wrong architecture keeps the node unconfigured, with an ERROR diagnostic.

Before, ``models.clipseg:=<a CLIP directory>`` configured and activated, then answered every
command ``model_error`` ("IndexError: list index out of range").
"""
from __future__ import annotations

import os
import signal

import pytest

pytest.importorskip("rclpy")

from clip_vla.testing.harness import Client, NodeProcess, tiny_model_overrides, unique_domain_id  # noqa: E402


def test_clip_directory_as_clipseg_fails_configure(tiny_models, open_vocabulary_file):
    swapped = {"clipseg": tiny_models["clip"], "clip": tiny_models["clip"]}
    domain = unique_domain_id(41)
    namespace = f"/test_arch_{os.getpid()}"
    proc = NodeProcess(tiny_model_overrides(swapped, open_vocabulary_file), namespace=namespace,
                       domain_id=domain).start()
    c = Client(namespace, domain_id=domain)
    try:
        diag = c.wait_for(lambda: next((d for d in c.diagnostics if d["_level"] == 2), None), timeout=60)
        assert "model load failed" in diag["_message"]
        assert "is a 'clip' checkpoint" in diag["_message"] and "expected model_type 'clipseg'" in diag["_message"]
        assert c.get_state() == "unconfigured"
        c.wait_connected(camera=False)
        status = c.ask("pick up the red cup")
        assert status["status"] == "model_error" and "models.clipseg" in status["message"], status
    finally:
        c.close()
        rc = proc.stop(signal.SIGINT, timeout=5.0)
    assert rc == 0 and "Traceback" not in proc.output(), proc.output()[-2000:]
