"""The training tool's pipeline check runs the pipeline as the simulated world does.

A real MuJoCo render (EGL) and the real pipeline on a tiny random CLIPSeg; the figure itself
means nothing for a random model, what it is measured under does.
"""
import pytest

pytest.importorskip("mujoco")

from clip_vla.sim.settings import sim_perception_settings  # noqa: E402
from clip_vla.train.pipeline_eval import pipeline_hit_rate  # noqa: E402


def test_the_check_uses_the_simulated_worlds_settings_and_counts_every_episode(tiny_models):
    result = pipeline_hit_rate(tiny_models["clipseg"], seeds=[50_000], skills=("pick", "push"))
    assert result["settings"]["perception.look_alike_competitors"] == \
        sim_perception_settings()["perception.look_alike_competitors"] > 0
    assert result["episodes"] == 2 and set(result["per_skill"]) == {"pick", "push"}
    assert result["seeds"] == "50000-50000"
    stats = result["per_skill"]["pick"]
    assert stats["episodes"] == 1 and 0 <= stats["hits"] <= stats["goals"] <= 1


def test_an_override_replaces_a_simulated_worlds_setting(tiny_models):
    result = pipeline_hit_rate(tiny_models["clipseg"], seeds=[50_000], skills=("pick",),
                               overrides={"perception.look_alike_competitors": 0})
    assert result["settings"]["perception.look_alike_competitors"] == 0
    assert result["settings"]["verify.look_alikes"] is True
