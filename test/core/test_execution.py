"""The executor's step report: one reader for every sender, strict about what it accepts."""
from __future__ import annotations

import pytest

from clip_vla.core.execution import ExecutionReport, ReportError


def test_a_report_round_trips_through_its_json():
    report = ExecutionReport(7, 1, "done", "red cup")
    assert ExecutionReport.from_json(report.to_json()) == report
    assert report.done


def test_a_hand_report_carries_only_what_is_held():
    hand = ExecutionReport.from_json('{"holding": null}')
    assert hand.about_hand_only and hand.holding is None
    assert ExecutionReport.from_json(ExecutionReport.hand("cup").to_json()).holding == "cup"


@pytest.mark.parametrize("text", [
    "", "nope", "[]", "3", '{"command_id": 1, "step": 0}', '{"command_id": true, "step": 0, "outcome": "done"}',
    '{"command_id": 1, "step": -2, "outcome": "done"}', '{"command_id": 1, "step": 0, "outcome": "ok"}',
    '{"command_id": 1, "step": 0, "outcome": "done", "holding": 3}', '{"holding": 3}', "x" * 5000, None,
])
def test_anything_else_is_a_report_error(text):
    with pytest.raises(ReportError):
        ExecutionReport.from_json(text)
