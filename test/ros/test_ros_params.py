"""The node's parameters: every core setting is declared, descriptors carry ranges, values round-trip."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from clip_vla.core.config import ClipVlaConfig
from clip_vla.ros import params as P

REPO = Path(__file__).resolve().parents[2]


def _node_key(data):
    return next(k for k in data if str(k).rstrip("/").split("/")[-1] == "clip_vla")


def _yaml_flat():
    data = yaml.safe_load((REPO / "config" / "clip_vla.yaml").read_text())
    data = data[_node_key(data)]["ros__parameters"]

    def flatten(tree, prefix=""):
        for key, value in tree.items():
            if isinstance(value, dict):
                yield from flatten(value, f"{prefix}{key}.")
            else:
                yield f"{prefix}{key}", value

    return dict(flatten(data))


def test_every_core_setting_is_a_parameter():
    flat = ClipVlaConfig.from_yaml(REPO / "config" / "clip_vla.yaml").to_flat()
    specs = P.parameter_specs()
    assert set(flat) <= set(specs)
    assert set(P.core_names()) == set(flat)


def test_params_file_names_are_declared_with_matching_types():
    specs = P.parameter_specs()
    for name, value in _yaml_flat().items():
        assert name in specs, f"{name} is in config/clip_vla.yaml but not declared"
        default = specs[name].default
        if isinstance(default, bool):
            assert isinstance(value, bool), name
        elif isinstance(default, float):
            assert isinstance(value, float), f"{name}: write {value} as a float in the YAML"
        elif isinstance(default, list):
            kind = float if isinstance(default[0], float) else str
            assert isinstance(value, list) and value and all(isinstance(v, kind) for v in value), name


def test_node_parameters_of_the_design_exist():
    names = set(P.declared_parameter_names())
    for name in ("mode", "max_frame_age", "max_rate", "sync_tolerance", "depth_registered", "image_reliability",
                 "command_queue_size", "target_frame", "max_image_pixels", "autostart", "diagnostics_period"):
        assert name in names


def test_defaults_have_no_none_or_empty_arrays():
    for spec in P.parameter_specs().values():
        assert spec.default is not None, spec.name
        if isinstance(spec.default, list):
            assert spec.default, spec.name
    assert P.parameter_specs()["geometry.intrinsics"].default == [0.0]


def test_config_from_parameter_values(open_vocabulary_file):
    values = {name: spec.default for name, spec in P.parameter_specs().items()}
    values["vocabulary_file"] = open_vocabulary_file
    values["geometry.intrinsics"] = (500.0, 500.0, 319.5, 239.5)
    cfg = P.config_from_values(values)
    assert cfg.geometry.intrinsics == [500.0, 500.0, 319.5, 239.5]
    assert cfg.models.cache_dir == "" and cfg.vocabulary is not None


def test_choices_are_validated():
    assert P.validate_node_value("mode", "continuous") is None
    assert "expected one of" in P.validate_node_value("mode", "sometimes")
    assert P.validate_node_value("perception.mask_threshold", 0.3) is None


def test_descriptors():
    pytest.importorskip("rcl_interfaces.msg")
    specs = P.parameter_specs()
    d = P.descriptor(specs["perception.mask_threshold"])
    assert d.floating_point_range[0].from_value == 0.0 and d.floating_point_range[0].to_value == 1.0
    assert P.descriptor(specs["models.clipseg"]).read_only
    assert P.descriptor(specs["workspace.bins"]).integer_range[0].from_value == 2
    assert not P.descriptor(specs["perception.prompt_template"]).read_only


def test_declared_on_a_real_node():
    rclpy = pytest.importorskip("rclpy")
    from rclpy.parameter import Parameter

    context = rclpy.Context()
    rclpy.init(context=context, args=["--ros-args", "-p", "perception.mask_threshold:=0.25",
                                       "-p", "geometry.intrinsics:=[1.0,2.0,3.0,4.0]"])
    try:
        node = rclpy.create_node("clip_vla_params_test", context=context)
        values = P.declare_parameters(node)
        assert values["perception.mask_threshold"] == 0.25
        assert list(values["geometry.intrinsics"]) == [1.0, 2.0, 3.0, 4.0]
        result = node.set_parameters([Parameter("perception.mask_threshold", value=1.5)])[0]
        assert not result.successful  # outside the descriptor's range
        result = node.set_parameters([Parameter("models.device", value="cuda")])[0]
        assert not result.successful  # read-only: models change through a re-configure
        node.destroy_node()
    finally:
        context.try_shutdown()


def test_markdown_table_lists_everything():
    table = P.markdown_table()
    for name in P.declared_parameter_names():
        assert f"`{name}`" in table


def test_params_file_reaches_namespaced_nodes():
    """rcl matches a bare node key only in the root namespace; launch files set a namespace."""
    data = yaml.safe_load((REPO / "config" / "clip_vla.yaml").read_text())
    assert _node_key(data) in ("/**/clip_vla", "/**")
