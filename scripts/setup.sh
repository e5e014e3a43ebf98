#!/usr/bin/env bash
# Set up clip_vla in ./.venv on a fresh Debian/Ubuntu machine, from nothing.
#   bash scripts/setup.sh         runtime, simulation and ROS 2 rclpy/messages from PyPI wheels (`clip-vla demo`)
#   bash scripts/setup.sh --dev   the same plus pytest (tests, CI)
set -euo pipefail
cd "$(dirname "$0")/.."
DEV=0
[ "${1:-}" = "--dev" ] && DEV=1

# System packages: venv support, and Mesa EGL so MuJoCo renders offscreen on the CPU.
PKGS="python3-venv python3-pip libegl1 libegl-mesa0 libgl1-mesa-dri libgl1"
# --dev: a headless browser for the operator console's test (Selenium drives it; nothing is downloaded)
[ "$DEV" = 1 ] && PKGS="$PKGS chromium chromium-driver"
if command -v apt-get >/dev/null 2>&1; then
  missing=""
  for p in $PKGS; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
  if [ -n "$missing" ]; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
  fi
fi

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
PIP=".venv/bin/python -m pip"
$PIP install -q --upgrade pip >/dev/null 2>&1 || true
# torch first and pinned (constraints.txt): unpinned, pip would pull a multi-GB CUDA build.
$PIP install -q -c constraints.txt torch
if [ "$DEV" = 1 ]; then
  $PIP install -q -c constraints.txt -r requirements-dev.txt
else
  # the demo runs a real ROS 2 graph: rclpy and messages from PyPI wheels (no ROS installation needed)
  $PIP install -q -c constraints.txt -r requirements.txt -r requirements-ros.txt
fi
$PIP install -q --no-deps -e .
echo "clip_vla is set up in $(pwd)/.venv"
