"""The package's layers, as the README states them: rclpy and ROS messages only under ros/, tools/
and testing/; core/ imports nothing above it, perception/ nothing but core/.

Read from the source with ``ast`` (no import runs), so a layering mistake fails here by name
rather than on a robot without ROS.
"""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Iterator, Tuple

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "clip_vla"
ROS_MODULES = ("rclpy", "std_msgs", "sensor_msgs", "geometry_msgs", "visualization_msgs", "diagnostic_msgs",
               "nav_msgs", "std_srvs", "rcl_interfaces", "lifecycle_msgs", "builtin_interfaces", "tf2_ros",
               "cv_bridge", "launch", "launch_ros")
ROS_ALLOWED = ("ros", "tools", "testing")
# What each layer may import of the package (besides itself).
LAYER_IMPORTS = {
    "core": set(),
    "perception": {"core"},
}


def imports(path: Path) -> Iterator[Tuple[str, int]]:
    """Every absolute module name ``path`` imports, with its line (relative imports resolved)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    typing_only = {id(n) for block in ast.walk(tree) if _is_type_checking(block) for n in ast.walk(block)}
    for node in ast.walk(tree):
        if id(node) in typing_only:  # annotations only: nothing is imported at run time
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                yield ".".join(base + ([node.module] if node.module else [])), node.lineno
            elif node.module:
                yield node.module, node.lineno


def _is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and getattr(node.test, "id", getattr(node.test, "attr", None)) == "TYPE_CHECKING"


def layer(path: Path) -> str:
    parts = path.relative_to(PACKAGE).parts
    return parts[0] if len(parts) > 1 else path.stem


SOURCES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_ros_is_imported_only_by_ros_tools_and_testing(path: Path) -> None:
    if layer(path) in ROS_ALLOWED:
        return
    found = [(name, line) for name, line in imports(path) if name.split(".")[0] in ROS_MODULES]
    assert not found, f"{path.relative_to(PACKAGE)} imports ROS outside ros/, tools/, testing/: {found}"


@pytest.mark.parametrize("path", [p for p in SOURCES if layer(p) in LAYER_IMPORTS],
                         ids=lambda p: str(p.relative_to(PACKAGE)))
def test_lower_layers_do_not_import_higher_ones(path: Path) -> None:
    own = layer(path)
    allowed = LAYER_IMPORTS[own] | {own}
    bad = [(name, line) for name, line in imports(path)
           if name.startswith("clip_vla.") and name.split(".")[1] not in allowed]
    assert not bad, f"{path.relative_to(PACKAGE)} ({own}/) imports above its layer: {bad}"
