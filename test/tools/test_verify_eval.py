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


# --------------------------------------------------------------------------- the skill veto
def _veto_rows(valid_gaps, invalid_gaps):
    rows = [{"valid": True, "gap": g, "named": "pick", "clip_top": "pick" if g == 0 else "open"} for g in valid_gaps]
    return rows + [{"valid": False, "gap": g, "named": "open", "clip_top": "open" if g == 0 else "pick"}
                   for g in invalid_gaps]


def test_veto_fire_rates_count_gaps_beyond_the_margin_and_skip_unscored_commands():
    from clip_vla.tools.verify_eval import veto_fire_rates

    rates_at = veto_fire_rates(_veto_rows([0.0, 3.0, None], [5.0, 1.0]), 2.0)
    assert rates_at["valid"] == {"commands": 2, "fired": 1, "rate": 0.5}
    assert rates_at["invalid"] == {"commands": 2, "fired": 1, "rate": 0.5}


def test_the_chosen_margin_vetoes_most_invalid_commands_within_the_valid_bound():
    from clip_vla.tools.verify_eval import choose_veto_margin

    rows = _veto_rows([0.0] * 99 + [3.0], [5.0, 9.0, 0.0])  # 1% of valid commands at gap 3
    assert choose_veto_margin(rows, grid=(1.0, 2.0, 4.0, 8.0))["margin"] == 4.0  # 1% valid, 2/3 invalid
    assert choose_veto_margin(rows, grid=(1.0, 2.0, 4.0, 8.0), max_valid_rate=0.0)["margin"] == 4.0
    with pytest.raises(ValueError):
        choose_veto_margin(_veto_rows([9.0], []), grid=(1.0, 2.0))


def test_clip_top_is_named_tells_an_echo_of_the_verb():
    from clip_vla.tools.verify_eval import clip_top_is_named

    rows = _veto_rows([0.0, 0.0], [0.0, 7.0])
    assert clip_top_is_named(rows, True) == 1.0 and clip_top_is_named(rows, False) == 0.5


# --------------------------------------------------------------------------- the simulated world's settings
def test_verify_eval_runs_the_simulated_worlds_settings_with_params_on_top():
    from clip_vla.sim.settings import SIM_LOOK_ALIKES
    from clip_vla.tools.verify_eval import sim_config

    cfg = sim_config({"verify.rival_logit_margin": 2.5})
    assert cfg.perception.look_alike_competitors == SIM_LOOK_ALIKES and cfg.verify.look_alikes is True
    assert cfg.verify.rival_logit_margin == 2.5 and cfg.models.device == "cpu"


def test_a_saved_step_is_verified_again_under_a_param_without_the_simulator(tmp_path):
    """Oracle perception on a real MuJoCo episode, saved; re-verified with an unreachable push distance."""
    pytest.importorskip("mujoco")
    from clip_vla.tools.verify_eval import evaluate, reverify

    first = evaluate([50_000], ["push"], perception="oracle", save_dir=str(tmp_path))
    step0, = first["steps"]
    assert step0["truth"] is True and step0["verdict"] == "success", step0
    again = reverify([str(tmp_path)], params={"verify.min_push_m": 5.0})
    redone, = again["steps"]
    assert redone["verdict"] == "failure" and redone["reason"] == "not_moved_enough"


def test_an_injected_look_alike_goal_is_a_failed_step_the_oracle_verifier_catches():
    """--inject look-alike: the pick and the push go to the first distractor; the named object stays."""
    pytest.importorskip("mujoco")
    from clip_vla.tools.verify_eval import evaluate

    report = evaluate([50_000], ["pick", "push"], perception="oracle", inject="look-alike")
    for step in report["steps"]:
        assert step["measures"]["injected"] and step["truth"] is False, step
        assert step["verdict"] == "failure", step
    assert report["summary"]["all"]["caught"] == 1.0


def test_only_a_known_injection_is_accepted():
    from clip_vla.tools.verify_eval import Evaluation

    with pytest.raises(ValueError, match="inject"):
        Evaluation(perception="oracle", inject="wrong-skill")


def test_a_step_is_executed_along_its_action_chunk_as_sim_node_does():
    """The gripper follows the goal's chunk (decoded at the bin centres), not the scripted skill."""
    pytest.importorskip("mujoco")
    from clip_vla.tools.verify_eval import Evaluation

    ev = Evaluation(perception="oracle")
    chunks = []
    execute = ev.world.execute

    def recording(skill, xyz=None, theta=0.0, chunk=None):
        chunks.append((skill, chunk))
        return execute(skill, xyz, theta, chunk=chunk)

    ev.world.execute = recording
    try:
        executed = ev.execute(50_000, "push")
    finally:
        ev.close()
    (skill, chunk), = chunks
    assert skill == "push" and chunk and all(hasattr(w, "gripper") for w in chunk)
    assert executed.outcome.truth is True
