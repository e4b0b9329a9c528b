"""The Kubernetes API unreachable during a sync (what the watcher runs), then back.

A run that cannot read the cluster must not take its Services' VIPs for gone: it stops with one
line naming the cluster and why, before any gateway is touched, so nothing is withdrawn and
nothing rewritten. Once the API answers again, the next run serves what changed meanwhile and
writes its status. The API is made unreachable the way a network fault does it: the controller's
connections to it are reset (a host firewall rule on the stand-in's loopback port).
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import time

import testinfra
from lab_helpers import REPO, client, probe, sync
from test_k8s import api, create, ingress, remove  # noqa: F401  (api: the fixture)

sys.path.insert(0, str(REPO / "lab"))
import labtools

gw1 = testinfra.get_host("podman://portico-lab-gw1")
API_PORT = int(os.environ.get("PORTICO_LAB_K8S_PORT", "6443"))
BLOCK_TABLE = "portico_lab_api_block"
BLOCK = f"""table inet {BLOCK_TABLE} {{
    chain output {{
        type filter hook output priority 0; policy accept;
        ip daddr 127.0.0.1 tcp dport {API_PORT} reject with tcp reset
    }}
}}
"""


def sync_run() -> subprocess.CompletedProcess:
    ansible_playbook = pathlib.Path(sys.executable).parent / "ansible-playbook"
    return subprocess.run([str(ansible_playbook), "-i", "inventories/lab", "playbooks/sync.yml"], cwd=REPO, capture_output=True,
                          text=True, check=False, timeout=300,
                          env={**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"})


def gateway_state() -> tuple[str, str, str]:
    """The applied model's digest, the table's and the VIPs gw1 holds: what a run would rewrite or withdraw."""
    record = gw1.check_output("cat /var/lib/portico/nftables/portico.dataplane.json")
    table = gw1.check_output("nft list table inet portico | grep -m1 comment")
    return record, table, gw1.check_output("ip -o address show | awk '{print $4}' | sort")


def test_an_unreachable_api_withdraws_nothing_and_the_next_run_catches_up(api):  # noqa: F811
    core = api[0]
    echo_ip = ingress(core, "default", "echo")[0]
    before = gateway_state()
    create(api, "default", "during-outage", 30091)
    subprocess.run(["nft", "-f", "-"], input=BLOCK, text=True, check=True)
    try:
        started = time.time()
        failed = sync_run()
        took = time.time() - started
    finally:
        subprocess.run(["nft", "delete", "table", "inet", BLOCK_TABLE], check=True)
    try:
        output = failed.stdout + failed.stderr
        assert failed.returncode != 0, output[-3000:]
        assert "cannot reach the Kubernetes API" in output and "nothing was changed" in output, output[-3000:]
        assert gateway_state() == before, "a run that could not read the cluster changed the gateway"
        assert probe(client, "tcp", echo_ip, 80)["ok"] == 30
        assert ingress(core, "default", "during-outage") == []
        sync()
        address = ingress(core, "default", "during-outage")
        assert len(address) == 1 and probe(client, "tcp", address[0], 80)["ok"] == 30, address
        labtools.report("api_unreachable", failed_run_s=round(took, 1), gateway_unchanged=True, served_after_return=True)
    finally:
        remove(api, "default", "during-outage")
        sync()
