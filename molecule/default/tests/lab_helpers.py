"""What the default scenario's verifiers share: the lab client, the Kubernetes stand-in's kubeconfig,
the fast-path sync, the client's probe, gw1's VIP table and the nodes' echo backends.

Not a test module (molecule passes only test_*.py files to pytest): the test modules import it.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import sys

import testinfra

REPO = pathlib.Path(__file__).resolve().parents[3]
KUBECONFIG = "/run/portico-lab/kubeconfig"
client = testinfra.get_host("podman://portico-lab-client")


def sync(*args: str) -> str:
    ansible_playbook = pathlib.Path(sys.executable).parent / "ansible-playbook"
    run = subprocess.run([str(ansible_playbook), "-i", "inventories/lab", "playbooks/sync.yml", *args], cwd=REPO,
                         capture_output=True, text=True, check=False,
                         env={**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"})
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    return run.stdout


def probe(host, proto: str, target: str, port: int, count: int = 30, timeout: float = 1.0) -> dict:
    return json.loads(host.run(f"portico-lab-probe --proto {proto} --target {target} --port {port} "
                               f"--count {count} --timeout {timeout} --json").stdout)


def kubectl(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["kubectl", "--kubeconfig", KUBECONFIG, *args], capture_output=True, text=True, check=check)


def vip_in_gateway_table(ip: str) -> bool:
    listed = testinfra.get_host("podman://portico-lab-gw1").run(f"nft list set inet portico {'vips4' if ':' not in ip else 'vips6'}")
    return ip in listed.stdout.replace(",", " ").split()


def listener_slots(chain: str) -> dict[int, str]:
    """Slot -> backend address of the Maglev map that gw1's listener chain (svc_<lb>_<hash>_<proto><port>,
    given without the hash: svc_web_tcp80) hashes into; {} when the chain or its map is missing.
    The map may be shared with other listeners and hold addresses, or address . port pairs."""
    lb, listener = chain.rsplit("_", 1)
    gw1 = testinfra.get_host("podman://portico-lab-gw1")
    table = json.loads(gw1.check_output("nft -j list table inet portico"))["nftables"]
    rules = [item["rule"] for item in table if "rule" in item
             and re.fullmatch(rf"{re.escape(lb)}_[0-9a-f]+_{re.escape(listener)}", item["rule"]["chain"])]
    name = next((match.group(1) for rule in rules if (match := re.search(r'"@((?:backends|slots)_[a-z0-9_]+)"', json.dumps(rule)))), None)
    maps = [item["map"] for item in table if "map" in item and item["map"]["name"] == name]
    if not maps:
        return {}
    return {slot: value["concat"][0] if isinstance(value, dict) else value for slot, value in maps[0].get("elem", [])}


def stop_echo(node: str) -> float:
    """Stop the node's echo service; return the time it was gone (containers share the host clock)."""
    return float(testinfra.get_host(f"podman://portico-lab-{node}").check_output("systemctl stop portico-lab-echo && date +%s.%N"))


def start_echo(node: str) -> None:
    testinfra.get_host(f"podman://portico-lab-{node}").check_output("systemctl start portico-lab-echo")
