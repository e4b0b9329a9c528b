"""Both pipeline definitions run the same .ci/pipeline stages, and those stages exist."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any, Iterator

import yaml

ROOT = Path(__file__).resolve().parents[2]
STAGE_CALL = re.compile(r"bash \.ci/pipeline (\w+)")


def _commands(node: Any) -> Iterator[str]:
    """Every shell command in a workflow or GitLab file (run: / script: / before_script:)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("run", "script", "before_script"):
                yield from ([value] if isinstance(value, str) else value)
            else:
                yield from _commands(value)
    elif isinstance(node, list):
        for item in node:
            yield from _commands(item)


def _stages(path: Path) -> set[str]:
    text = "\n".join(_commands(yaml.safe_load(path.read_text())))
    return set(STAGE_CALL.findall(text))


def _known_stages() -> set[str]:
    script = (ROOT / ".ci/pipeline").read_text()
    case = script[script.index('case "${1:-}" in'):]
    return set(re.findall(r"^  (\w+)\)", case, re.M))


def test_github_and_gitlab_run_the_same_stages() -> None:
    github = _stages(ROOT / ".github/workflows/portico.yml")
    gitlab = _stages(ROOT / ".gitlab-ci.yml")
    assert github == gitlab == {"check", "plan", "deploy"}


def test_every_stage_the_pipelines_call_exists() -> None:
    for path in (ROOT / ".github/workflows/portico.yml", ROOT / ".gitlab-ci.yml"):
        assert _stages(path) <= _known_stages(), path


def test_pipeline_script_refuses_an_unknown_stage() -> None:
    proc = subprocess.run(["bash", str(ROOT / ".ci/pipeline"), "nonsense"], capture_output=True, text=True, check=False)
    assert proc.returncode == 2 and "bash .ci/pipeline check" in proc.stderr


def test_pipeline_script_names_a_missing_inventory() -> None:
    proc = subprocess.run(["bash", str(ROOT / ".ci/pipeline"), "validate"], capture_output=True, text=True, check=False,
                          env={"PATH": "/usr/bin:/bin", "PORTICO_INVENTORY": "inventories/does-not-exist",
                               "PORTICO_ARTIFACTS": "/tmp/portico-test-artifacts"})
    assert proc.returncode == 2 and "inventories/does-not-exist" in proc.stderr
