"""`clip-vla sim`: CLIP's own top skill is measured, not only the parser's choice."""
from clip_vla.tools.sim_eval import Episode, StepRecord, clip_agreement, summarise


def _step(expected: str, clip: str = None) -> StepRecord:
    return StepRecord(command=f"{expected} it", expected_skill=expected, status="accepted", cmd=expected,
                      clip_skill=clip)


def test_clip_agreement_counts_steps_whose_clip_top_skill_is_the_expected_one():
    assert clip_agreement([_step("pick", "pick"), _step("pick", "open"), _step("pick", None)]) == 0.5
    assert clip_agreement([_step("pick", None)]) is None


def test_the_summary_reports_clip_alone_beside_the_parsers_skill_accuracy():
    episodes = [Episode(seed=i, skill="push", command="push it", steps=[_step("push", top)])
                for i, top in enumerate(("push", "push", "pull", "push"))]
    summary = summarise(episodes)["push"]
    assert summary["skill_accuracy"] == 1.0 and summary["clip_skill_agreement"] == 0.75
