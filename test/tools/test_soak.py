"""`clip-vla soak` machinery, briefly (the real load run is a script, not a timed test)."""
from __future__ import annotations

import os

import pytest

pytest.importorskip("rclpy")

from clip_vla.testing.harness import tiny_model_overrides, unique_domain_id  # noqa: E402
from clip_vla.tools.soak import format_report, run_soak  # noqa: E402


def test_short_soak_answers_every_command_once(tiny_models, open_vocabulary_file):
    report = run_soak(minutes=0.08, fps=15, command_period=0.5, width=320, height=240,
                      namespace=f"/test_soak_{os.getpid()}", domain_id=unique_domain_id(5),
                      overrides=tiny_model_overrides(tiny_models, open_vocabulary_file),
                      warmup_s=1.0, log=lambda line: None)
    text = format_report(report)
    assert report["commands_sent"] >= 5, text
    assert report["every_command_answered_once"], text
    assert report["statuses"] == {"accepted": report["commands_sent"]}, text
    assert report["frames_received_by_node"] > 0 and report["latency_ms"]["p50"] > 0, text
    assert report["node_exit_code"] == 0 and not report["node_traceback"], text
