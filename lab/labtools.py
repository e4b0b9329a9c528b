"""Helpers shared by the lab's HA scenarios (molecule/ha, molecule/bgp): run the lab probe in a
container, wait for conditions, stop and start gateways. Testinfra hosts use the podman backend."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

REPO = pathlib.Path(__file__).resolve().parents[1]
PREFIX = "portico-lab-"


def podman(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(["podman", *args], capture_output=True, text=True, check=check, timeout=timeout)


def sh(container: str, command: str, check: bool = True) -> str:
    return podman("exec", f"{PREFIX}{container}", "sh", "-c", command, check=check).stdout


def install_probe(*containers: str) -> None:
    for container in containers:
        podman("cp", str(REPO / "lab/files/portico-lab-probe"), f"{PREFIX}{container}:/usr/local/bin/portico-lab-probe")


def probe(container: str, *args: str) -> subprocess.Popen:
    """Start the lab probe in a container (JSON on stdout); collect it with finish()."""
    return subprocess.Popen(["podman", "exec", f"{PREFIX}{container}", "portico-lab-probe", *args, "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen, timeout: float = 120) -> dict[str, Any]:
    out, err = proc.communicate(timeout=timeout)
    assert out, err
    return json.loads(out)


def request(container: str, target: str, port: int = 80, count: int = 30) -> dict[str, Any]:
    return finish(probe(container, "--target", target, "--port", str(port), "--count", str(count), "--timeout", "1"))


def open_streams(container: str, target: str, count: int, seconds: float, port: int = 80) -> subprocess.Popen:
    """Hold `count` long-lived TCP streams through `target`; returns once all are open.

    Opening allows one SYN retransmission (3 s): what is tested is that open streams survive.
    """
    ready = f"/tmp/streams-{os.getpid()}-{time.monotonic_ns()}"
    proc = probe(container, "--target", target, "--port", str(port), "--streams", str(count),
                 "--stream", str(seconds), "--ready-file", ready, "--timeout", "3")
    wait_for(lambda: podman("exec", f"{PREFIX}{container}", "test", "-s", ready, check=False).returncode == 0,
             20, f"{count} streams open")
    return proc


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, every: float = 0.05) -> Any:
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for: {what}")


def kill_gateway(name: str) -> float:
    """podman kill (no clean shutdown: no BGP notification, no VRRP priority-0 advert); returns when it was issued."""
    issued = time.time()
    podman("kill", f"{PREFIX}{name}")
    return issued


def running(name: str) -> bool:
    return podman("container", "inspect", "-f", "{{.State.Running}}", f"{PREFIX}{name}",
                  check=False).stdout.strip() == "true"


def start_gateway(name: str) -> None:
    """Start a killed gateway again and wait for its boot (addresses, nft restore, daemons)."""
    podman("start", f"{PREFIX}{name}")
    wait_for(lambda: podman("exec", f"{PREFIX}{name}", "systemctl", "is-system-running", check=False).stdout.strip()
             in ("running", "degraded"), 90, f"{name} booted", every=0.5)


def playbook(inventories: list[str], playbook_path: str, *extra: str) -> subprocess.CompletedProcess:
    command = [str(pathlib.Path(sys.executable).parent / "ansible-playbook")]
    for inventory in inventories:
        command += ["-i", inventory]
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1",
           "ANSIBLE_VAULT_PASSWORD_FILE": str(REPO / "lab/vault-password")}
    return subprocess.run([*command, playbook_path, *extra], cwd=REPO, capture_output=True, text=True, check=False,
                          env=env, timeout=900)


def lab_up(*extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(REPO / "lab/lab.sh"), "up", *extra], cwd=REPO, capture_output=True,
                          text=True, check=False, timeout=900)


def report(name: str, **values: Any) -> None:
    """Print a measurement (pytest -s / molecule verify -v shows it) and keep it under .molecule-results."""
    line = json.dumps({"measurement": name, **values})
    print(line)
    results = REPO / ".molecule-results"
    results.mkdir(exist_ok=True)
    with open(results / "measurements.jsonl", "a", encoding="utf-8") as handle:
        handle.write(line + "\n")
