"""Configuration: the node's parameter file is the core's configuration."""
import pytest
import yaml

from clip_vla.core.config import ClipVlaConfig, ConfigError, Vocabulary, default_vocabulary_path, parse_floats
from conftest import REPO


def test_package_parameter_file_loads():
    cfg = ClipVlaConfig.from_yaml(REPO / "config" / "clip_vla.yaml")
    assert cfg.models.clipseg == "CIDAS/clipseg-rd64-refined"
    assert cfg.models.clip == "openai/clip-vit-base-patch32"
    assert cfg.workspace.bins == 256 and cfg.base_frame == "base_link"
    names = cfg.vocabulary.skill_names
    for skill in ("pick", "place", "push", "pull", "open", "close", "point_at", "none"):
        assert skill in names
    assert cfg.vocabulary.skill("place").needs_destination
    assert cfg.vocabulary.distractors


def test_every_parameter_in_the_file_is_known(tmp_path):
    """A typo in the YAML must not be silently ignored: every key maps to a config field."""
    data = yaml.safe_load((REPO / "config" / "clip_vla.yaml").read_text())["/**/clip_vla"]["ros__parameters"]
    flat = ClipVlaConfig.from_yaml(REPO / "config" / "clip_vla.yaml").to_flat()
    for section, values in data.items():
        if isinstance(values, dict):
            for key in values:
                assert f"{section}.{key}" in flat, f"{section}.{key} is not a config field"
        else:
            assert section in flat


def test_flat_round_trip_and_overrides():
    cfg = ClipVlaConfig()
    again = ClipVlaConfig.from_flat(cfg.to_flat())
    assert again.to_flat() == cfg.to_flat()
    changed = cfg.replace(**{"perception.mask_threshold": 0.7, "workspace.bins": 128})
    assert changed.perception.mask_threshold == 0.7 and changed.workspace.bins == 128
    with pytest.raises(ConfigError, match="unknown setting"):
        cfg.replace(**{"perception.nope": 1})


@pytest.mark.parametrize("key, value, match", [
    ("perception.mask_threshold", 1.5, "mask_threshold"),
    ("perception.skill_temperature", 0.0, "skill_temperature"),
    ("workspace.x", [1.0, 0.0], "workspace.x"),
    ("workspace.bins", 1, "bins"),
    ("perception.prompt_template", "a photo", "prompt_template"),
    ("perception.instance_score", "largest", "instance_score"),
])
def test_invalid_values_are_clear_errors(key, value, match):
    with pytest.raises(ConfigError, match=match):
        ClipVlaConfig().replace(**{key: value})


def test_namespaced_and_wildcard_parameter_files(tmp_path):
    for key in ("/robot/clip_vla", "/**"):
        path = tmp_path / "p.yaml"
        path.write_text(yaml.safe_dump({key: {"ros__parameters": {"perception": {"mask_threshold": 0.3}}}}))
        assert ClipVlaConfig.from_yaml(path).perception.mask_threshold == 0.3
    path.write_text(yaml.safe_dump({"other_node": {"ros__parameters": {}}}))
    with pytest.raises(ConfigError, match="no 'ros__parameters' block"):
        ClipVlaConfig.from_yaml(path)


def test_vocabulary_validation(tmp_path):
    data = yaml.safe_load(default_vocabulary_path().read_text())
    data["skills"][1]["token"] = data["skills"][0]["token"]
    with pytest.raises(ConfigError, match="duplicate skill tokens"):
        Vocabulary.from_dict(data)
    vocab = Vocabulary.from_yaml(default_vocabulary_path())
    assert vocab.skill("pick").prompts("red cup")[0] == "a robot arm picking up the red cup"
    assert vocab.skill_by_token(2).name == "place"


def test_parse_floats():
    assert parse_floats("500,500,319.5,239.5", 4, "x") == [500, 500, 319.5, 239.5]
    with pytest.raises(ConfigError, match="expected 4 numbers"):
        parse_floats("1,2,3", 4, "--intrinsics")
