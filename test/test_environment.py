"""The test environment keeps DDS discovery on this machine: in pytest, in the node processes
the harness starts, and in CI.

Without ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST, Fast DDS joins multicast on the external
interface, where concurrent CI runs and a developer's robot see each other's test graphs.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

from clip_vla.testing import harness

REPO = Path(__file__).resolve().parent.parent
VARIABLE = "ROS_AUTOMATIC_DISCOVERY_RANGE"


def test_conftest_defaults_discovery_to_localhost():
    """Run test/conftest.py in a clean interpreter without the variable: it must set it."""
    env = {k: v for k, v in os.environ.items() if k != VARIABLE}
    code = (f"import os, runpy; runpy.run_path({str(REPO / 'test' / 'conftest.py')!r}); "
            f"print(os.environ.get({VARIABLE!r}))")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "LOCALHOST"


def test_harness_node_processes_inherit_the_discovery_range(monkeypatch):
    """NodeProcess starts vla_node with this process's environment (read back from a stand-in executable)."""
    monkeypatch.setenv(VARIABLE, "LOCALHOST")
    report = f"import os; print('range=' + str(os.environ.get({VARIABLE!r})))"
    monkeypatch.setattr(harness, "node_executable", lambda: [sys.executable, "-c", report])
    proc = harness.NodeProcess().start()
    try:
        deadline = time.monotonic() + 30
        while proc.alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "range=LOCALHOST" in proc.output()
    finally:
        proc.close()


def test_ci_exports_the_discovery_range():
    script = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    assert re.search(rf"^export [^#\n]*\b{VARIABLE}=LOCALHOST\b", script, re.M), ".ci/run must export it"
