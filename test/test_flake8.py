"""flake8 over the package, its tests, the launch files and setup.py, the ROS 2 way.

As ``ros2 pkg create`` generates it (``ament_flake8``'s ``main_with_errors``, marked
``flake8`` and ``linter``), with the project's settings instead of ament's defaults:
``--config setup.cfg`` makes flake8 read the ``[flake8]`` section there (max line length
120, the build folders and ``.venv`` excluded), the same file a plain ``flake8`` from the
repository root reads. Only pycodestyle (E, W) and pyflakes (F) are the project's checks:
the plugins ament's default configuration is written for (flake8-blind-except, -builtins,
-class-newline, -comprehensions, -deprecated, -docstrings, -import-order, -quotes) are not
installed by requirements-dev.txt, and where a ROS 2 machine has them setup.cfg ignores their
codes (B901, B902, A, CNL, C4, D, I, Q), so the result does not depend on the machine.

The paths are absolute and the check runs from the repository root (ament_flake8 also walks
the working directory for folders to skip), whatever directory pytest was started from.
"""
from __future__ import annotations

from pathlib import Path

import pytest
from ament_flake8.main import main_with_errors

REPO = Path(__file__).resolve().parent.parent
CHECKED = ("clip_vla", "test", "launch", "setup.py", "examples")


@pytest.mark.flake8
@pytest.mark.linter
def test_flake8(monkeypatch):
    monkeypatch.chdir(REPO)
    paths = [str(REPO / name) for name in CHECKED if (REPO / name).exists()]
    rc, errors = main_with_errors(argv=["--config", str(REPO / "setup.cfg"), *paths])
    assert rc == 0, "Found %d code style errors / warnings:\n" % len(errors) + "\n".join(errors)
