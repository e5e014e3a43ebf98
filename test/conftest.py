"""Shared fixtures: tiny CLIPSeg/CLIP models generated on the fly and loaded for real.

No weights can be downloaded on CI, so the tests build randomly initialised models with
hidden size 32 (< 1 MB), save them with ``save_pretrained`` and load them back through the
same ``from_pretrained`` path a robot uses, with ``HF_HUB_OFFLINE=1``.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("MUJOCO_GL", "egl")
# DDS participants (the node tests, the harness's node processes, which inherit this
# environment) discover peers on this machine only: otherwise Fast DDS joins multicast on
# the external interface, where CI machines see each other's test graphs. (The harness's
# large-data mode keeps the default range: LARGE_DATA transports lose 640x480 frames under it.)
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict:
    """``{"clipseg": dir, "clip": dir}`` of tiny random models, built once per test session."""
    from clip_vla.testing.model_factory import build_model_pair

    return build_model_pair(tmp_path_factory.mktemp("models"), size="tiny", seed=0)


@pytest.fixture(scope="session")
def open_vocabulary_file(tmp_path_factory) -> str:
    """The package vocabulary without distractor prompts.

    With random tiny models and no distractors, a mask threshold of 0 makes the whole image
    the target: a deterministic object at the image centre, so geometry and tokens can be
    asserted exactly through the real model path.
    """
    import yaml

    data = yaml.safe_load((REPO / "config" / "vocabulary.yaml").read_text())
    data["distractors"] = []
    path = tmp_path_factory.mktemp("vocab") / "vocabulary.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


@pytest.fixture()
def tiny_config(tiny_models, open_vocabulary_file):
    """A ClipVlaConfig on the tiny models where every pixel is the target (see above)."""
    from clip_vla.core.config import ClipVlaConfig

    cfg = ClipVlaConfig.from_yaml(REPO / "config" / "clip_vla.yaml")
    return cfg.replace(**{
        "models.clipseg": tiny_models["clipseg"],
        "models.clip": tiny_models["clip"],
        "models.device": "cpu",
        "perception.mask_threshold": 0.0,
        "perception.min_confidence": 0.0,
        "geometry.intrinsics": [500.0, 500.0, 319.5, 239.5],
        "vocabulary_file": open_vocabulary_file,
    })
