"""`clip-vla verify-eval` bookkeeping: seeds, the confusion counts against the truth, the two rates."""
from __future__ import annotations

import pytest

from clip_vla.tools.verify_eval import StepOutcome, confusion, parse_seeds, rates, summarise


def step(truth, verdict, skill="pick", executed=True, refusal=None):
    return StepOutcome(seed=1, skill=skill, command="c", executed=executed, truth=truth, verdict=verdict,
                       reason="r", refusal=refusal)


def test_seeds_are_ranges_and_lists():
    assert parse_seeds("9100-9102,7") == [9100, 9101, 9102, 7]
    with pytest.raises(ValueError):
        parse_seeds("a-b")


def test_false_success_is_a_failed_step_called_success_and_uncertain_is_counted_apart():
    counts = confusion([step(True, "success"), step(False, "failure"), step(False, "success"),
                        step(True, "failure"), step(True, "uncertain"), step(None, None, executed=False)])
    assert counts == {"true_success": 1, "true_failure": 1, "false_success": 1, "false_failure": 1,
                      "uncertain_success": 1, "uncertain_failure": 0}


def test_an_uncertain_verdict_on_a_successful_step_is_a_flag():
    r = rates(confusion([step(True, "success"), step(True, "uncertain"), step(False, "failure")]))
    assert r["caught"] == 1.0 and r["flagged"] == pytest.approx(0.5)


def test_the_summary_has_every_skill_and_all_and_counts_refusals_that_would_have_failed():
    summary = summarise([step(False, "failure", "place", refusal="destination_on_gripper"),
                         step(True, "success", "push")])
    assert set(summary) == {"place", "push", "all"}
    assert summary["place"]["refused"] == {"total": 1, "would_have_failed": 1}
    assert summary["all"]["executed"] == 2


def test_the_command_is_registered():
    from clip_vla.tools.cli import TOOLS

    assert TOOLS["verify-eval"][0] == "clip_vla.tools.verify_eval"
