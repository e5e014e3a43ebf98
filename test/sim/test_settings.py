"""The simulated world's settings and the NAME=VALUE parser the CLIs share."""
import pytest

from clip_vla.core.config import ClipVlaConfig
from clip_vla.sim.settings import (SIM_LOOK_ALIKES, SIM_RIVAL_LOGIT_MARGIN, SIM_RIVAL_MIN_AREA_FRACTION, parse_settings,
                                   sim_perception_settings)


def test_values_are_yaml_and_names_are_stripped():
    assert parse_settings(["perception.mask_threshold=0.3", " verify.look_alikes =false", "suggest.fixtures=[bowl]"]) \
        == {"perception.mask_threshold": 0.3, "verify.look_alikes": False, "suggest.fixtures": ["bowl"]}
    assert parse_settings([]) == {}


@pytest.mark.parametrize("bad", ["perception.mask_threshold", "=0.3"])
def test_an_item_without_a_name_or_a_value_is_a_clear_error(bad):
    with pytest.raises(ValueError, match="NAME=VALUE"):
        parse_settings([bad])


def test_the_simulated_worlds_settings_are_valid_settings():
    cfg = ClipVlaConfig.from_yaml().replace(**sim_perception_settings())
    assert cfg.perception.look_alike_competitors == SIM_LOOK_ALIKES and cfg.verify.look_alikes is True
    assert tuple(cfg.suggest.fixtures) == ("bowl", "tray")
    assert cfg.verify.rival_min_area_fraction == SIM_RIVAL_MIN_AREA_FRACTION
    assert cfg.verify.rival_logit_margin == SIM_RIVAL_LOGIT_MARGIN
