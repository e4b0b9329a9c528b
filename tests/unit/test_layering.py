"""module_utils is one package per pipeline stage, and a stage imports only the stages below it.

model <- k8s, model <- dataplane <- health <- status: Kubernetes translation and the dataplane both
build on the LB model and never on each other; the health checker drives the dataplane; status
reads everything. A file that imports upwards (or sideways) fails here with the offending line.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

MODULE_UTILS = (pathlib.Path(__file__).resolve().parents[2]
                / "collections/ansible_collections/portico/gateway/plugins/module_utils")
PREFIX = "ansible_collections.portico.gateway.plugins.module_utils"

# Stage -> the stages it may import from (its own stage is always allowed).
ALLOWED = {
    "model": set(),
    "k8s": {"model"},
    "dataplane": {"model"},
    "health": {"model", "dataplane"},
    "status": {"model", "dataplane", "health"},
}


def stage_files() -> list[pathlib.Path]:
    return sorted(p for p in MODULE_UTILS.rglob("*.py") if "__pycache__" not in p.parts)


def imported_stages(path: pathlib.Path) -> list[tuple[int, str]]:
    """(line, stage) for every import of a module_utils stage in this file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.level:
                raise AssertionError(f"{path}:{node.lineno}: relative import; Ansible's module_utils finder needs absolute ones")
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        for name in names:
            if name.startswith(PREFIX + "."):
                stage = name[len(PREFIX) + 1:].split(".")[0]
                found.append((node.lineno, stage))
    return found


def test_every_file_belongs_to_a_stage():
    loose = [p.name for p in MODULE_UTILS.glob("*.py") if p.name != "__init__.py"]
    assert not loose, f"module_utils files outside a stage package: {loose}"
    stages = {p.name for p in MODULE_UTILS.iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert stages == set(ALLOWED), f"stage packages {sorted(stages)} differ from the layering table {sorted(ALLOWED)}"


@pytest.mark.parametrize("path", stage_files(), ids=lambda p: str(p.relative_to(MODULE_UTILS)))
def test_imports_only_downwards(path):
    rel = path.relative_to(MODULE_UTILS)
    if len(rel.parts) == 1:
        return
    own = rel.parts[0]
    wrong = [f"line {line}: {own} imports {stage}" for line, stage in imported_stages(path)
             if stage != own and stage not in ALLOWED.get(own, set())]
    assert not wrong, f"{rel} imports upwards or sideways: {wrong}"
