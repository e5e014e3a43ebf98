"""Configuration: the node's parameter file is the core's configuration."""
import pytest
import yaml

from clip_vla.core.config import (ClipVlaConfig, ConfigError, GeometryConfig, ModelConfig, PerceptionConfig, Vocabulary,
                                  WorkspaceConfig, check_setting, default_vocabulary_path, parse_floats, settings)
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


# --------------------------------------------------------------------------- the one validator
@pytest.mark.parametrize("build, key", [
    (lambda: WorkspaceConfig(x=[1.0, 0.0]), "workspace.x"),  # was checked only by a validate() call by hand
    (lambda: WorkspaceConfig(bins=1), "workspace.bins"),
    (lambda: GeometryConfig(depth_min=5.0, depth_max=1.0), "geometry.depth_min"),
    (lambda: GeometryConfig(depth_statistic="mode"), "geometry.depth_statistic"),
    (lambda: GeometryConfig(intrinsics=[500.0, 500.0, 320.0]), "geometry.intrinsics"),
    (lambda: GeometryConfig(camera_to_base_matrix=[1.0] * 9), "geometry.camera_to_base_matrix"),
    (lambda: GeometryConfig(depth_fallback="guess"), "geometry.depth_fallback"),
    (lambda: ModelConfig(share_backbone="no"), "models.share_backbone"),  # a string is never a boolean
    (lambda: ModelConfig(device="banana"), "models.device"),
    (lambda: ModelConfig(dtype="float8"), "models.dtype"),
    (lambda: PerceptionConfig(min_area_px=2.5), "perception.min_area_px"),
    (lambda: PerceptionConfig(mask_threshold=True), "perception.mask_threshold"),
])
def test_every_section_validates_itself_on_construction(build, key):
    with pytest.raises(ConfigError) as info:
        build()
    assert str(info.value).startswith(f"{key}: expected ") and "\n" not in str(info.value)


def test_values_are_normalised_and_the_ros_unset_spelling_is_accepted():
    g = GeometryConfig(intrinsics=(500, 500, 320, 240), camera_to_base_matrix=[0.0], depth_min=0)
    assert g.intrinsics == [500.0, 500.0, 320.0, 240.0] and isinstance(g.depth_min, float)
    assert GeometryConfig(intrinsics=[0.0]).intrinsics == [0.0]
    assert GeometryConfig().depth_fallback == "refuse"


def test_file_errors_name_the_file_and_the_key(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("clip_vla:\n  ros__parameters:\n    perception: {mask_threshold: high}\n")
    with pytest.raises(ConfigError) as info:
        ClipVlaConfig.from_yaml(path)
    assert str(info.value) == f"{path}: perception.mask_threshold: expected a number in [0.0, 1.0], got 'high'"
    assert info.value.source == str(path)


def test_every_setting_is_documented_and_is_a_flat_name():
    specs = settings()
    assert list(specs) == list(ClipVlaConfig().to_flat())
    assert all(spec.doc for spec in specs.values())
    assert check_setting("geometry.intrinsics", (1, 2, 3, 4)) == [1.0, 2.0, 3.0, 4.0]
    with pytest.raises(ConfigError, match="unknown setting"):
        check_setting("perception.nope", 1)
