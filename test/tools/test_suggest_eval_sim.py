"""``clip-vla suggest --eval-sim``: scored on rendered scenes under the simulated world's settings.

Real MuJoCo render (EGL) and the shipped compact models. The settings matter: CLIP votes over
the pipeline's catalogue, which must be the simulated world's (its colours x shapes), not the
package's default names.
"""
from __future__ import annotations

import json

import pytest

pytest.importorskip("mujoco")


def test_eval_sim_runs_under_the_simulated_worlds_settings_and_records_them(capsys):
    from clip_vla.sim.objects import DEFAULT_COLOURS, DEFAULT_SHAPES
    from clip_vla.sim.settings import SIM_IDENTITY_WEIGHT
    from clip_vla.tools.suggest import main
    from clip_vla.train.shipped import SIM_CLIP, SIM_CLIPSEG

    assert main(["--eval-sim", "1", "--seed", "9000", "--device", "cpu"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["seeds"] == "9000-9000" and report["objects_on_table"] == 4
    assert report["settings"]["identity_weight"] == SIM_IDENTITY_WEIGHT > 0
    assert report["settings"]["catalogue"] == len(DEFAULT_COLOURS) * len(DEFAULT_SHAPES)  # not the 10 default names
    assert report["models"] == {"clipseg": str(SIM_CLIPSEG), "clip": str(SIM_CLIP)}
    assert 0.0 <= report["recall"] <= 1.0 and report["fixtures_found"] == 1.0
