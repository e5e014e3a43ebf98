"""The single place the sim imports MuJoCo, so the GL backend is chosen before it loads.

Offscreen rendering on a headless machine needs EGL (or OSMesa); MuJoCo reads
``MUJOCO_GL`` at import time, so it must be set before the first ``import mujoco``.
A user who exports another backend (``osmesa``, ``glfw``) keeps it.
"""
from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")

import mujoco  # noqa: E402  (must follow the environment default above)

__all__ = ["mujoco"]
