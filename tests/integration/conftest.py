"""Fixtures for integration tests that run real Ansible against a private network namespace
or against the Kubernetes API stand-in (lab/k8s_stub)."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import uuid
from dataclasses import dataclass
from typing import Any, Iterator

import pytest
import yaml

REPO = pathlib.Path(__file__).resolve().parents[2]
BIN = pathlib.Path(sys.executable).parent
if str(REPO) not in sys.path:  # for lab.k8s_stub, whatever directory pytest was started from
    sys.path.insert(0, str(REPO))

from lab.k8s_stub import FakeApiServer  # noqa: E402 - needs the path above

LAB_FIXTURES = REPO / "lab/k8s_stub/fixtures/lab"


def play(tasks: list[dict[str, Any]], tmp: pathlib.Path, *extra: str, prefix: tuple[str, ...] = ()) -> dict[str, Any]:
    """Run tasks on localhost with ansible-playbook (the repo's ansible.cfg, the json callback),
    the command prefixed by e.g. `ip netns exec NAME`; return the json callback's result."""
    playbook = tmp / f"play-{uuid.uuid4().hex[:6]}.yml"
    playbook.write_text(yaml.safe_dump([{"hosts": "localhost", "gather_facts": False, "tasks": tasks}]))
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json",
           "ANSIBLE_LOCALHOST_WARNING": "false", "ANSIBLE_INVENTORY_UNPARSED_WARNING": "false"}
    proc = subprocess.run(
        [*prefix, str(BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local",
         "-e", f"ansible_python_interpreter={sys.executable}", str(playbook), *extra],
        capture_output=True, text=True, cwd=REPO, env=env, check=False,
    )
    try:
        output = json.loads(proc.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"ansible-playbook printed no JSON (rc={proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return output


@dataclass
class Netns:
    name: str

    def run(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(["ip", "netns", "exec", self.name, *cmd], capture_output=True, text=True, check=check)

    def play(self, tasks: list[dict[str, Any]], tmp: pathlib.Path, *extra: str) -> dict[str, Any]:
        """Run tasks with ansible-playbook inside this namespace; return the json callback's result."""
        return play(tasks, tmp, *extra, prefix=("ip", "netns", "exec", self.name))


def task_results(output: dict[str, Any]) -> list[dict[str, Any]]:
    return [task["hosts"]["localhost"] for play in output["plays"] for task in play["tasks"]]


@pytest.fixture
def netns() -> Iterator[Netns]:
    name = f"portico-it-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    ns = Netns(name)
    ns.run("ip", "link", "set", "lo", "up")
    try:
        yield ns
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False)


@dataclass
class K8sLab:
    """The API stand-in loaded with the lab fixtures, and a kubeconfig pointing at it."""

    api: FakeApiServer
    kubeconfig: pathlib.Path


@pytest.fixture
def k8s_lab(tmp_path: pathlib.Path) -> Iterator[K8sLab]:
    with FakeApiServer(fixtures=LAB_FIXTURES) as api:
        yield K8sLab(api, api.write_kubeconfig(tmp_path / "kubeconfig"))
