"""The skill veto: CLIP's evidence against a spoken verb, on constructed probabilities."""
import math

import pytest

from clip_vla.core.config import SKILL_VETO_OFF, ConfigError, PerceptionConfig
from clip_vla.perception.skill_scorer import PROBABILITY_FLOOR, contradiction, log_odds_gap


def test_the_gap_is_zero_when_the_named_skill_is_clips_top():
    assert log_odds_gap({"pick": 0.7, "open": 0.3}, "pick") == 0.0


def test_the_gap_is_the_log_ratio_of_top_and_named():
    assert log_odds_gap({"pick": 0.8, "open": 0.1, "push": 0.1}, "open") == pytest.approx(math.log(8.0))


def test_a_probability_that_underflowed_to_zero_reads_as_the_floor():
    assert log_odds_gap({"pick": 1.0, "open": 0.0}, "open") == pytest.approx(-math.log(PROBABILITY_FLOOR))


def test_a_contradiction_needs_a_gap_beyond_the_margin():
    probabilities = {"pick": 0.8, "open": 0.1, "push": 0.1}  # gap ln 8 = 2.08 nats
    assert contradiction(probabilities, "open", 2.0) is not None
    assert contradiction(probabilities, "open", 2.1) is None
    assert contradiction(probabilities, "pick", 1e-6) is None


def test_a_contradiction_names_both_skills_and_their_scores():
    veto = contradiction({"pick": 0.9, "open": 0.05, "push": 0.05}, "open", 1.0)
    assert (veto.named, veto.top) == ("open", "pick")
    assert veto.top_probability == 0.9 and veto.named_probability == 0.05
    assert "'open'" in veto.message and "'pick'" in veto.message and "0.90" in veto.message


def test_the_off_margin_and_missing_scores_never_veto():
    assert contradiction({"pick": 1.0, "open": 0.0}, "open", SKILL_VETO_OFF) is None
    assert contradiction({}, "open", 1.0) is None


def test_the_margin_is_a_number_of_nats_in_the_schema():
    assert PerceptionConfig(skill_veto_margin=3).skill_veto_margin == 3.0
    with pytest.raises(ConfigError, match="perception.skill_veto_margin: expected"):
        PerceptionConfig(skill_veto_margin=-1.0)
