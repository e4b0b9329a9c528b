"""Real traffic through gw1's VIPs, from the lab client container (testinfra, podman backend)."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import time

import pytest
import testinfra
import yaml

REPO = pathlib.Path(__file__).resolve().parents[3]
LAB_VARS = yaml.safe_load((REPO / "inventories/lab/group_vars/gateways.yml").read_text())
NODES = {"node1", "node2", "node3"}
CLIENT_IP = "203.0.113.10"

client = testinfra.get_host("podman://portico-lab-client")
router = testinfra.get_host("podman://portico-lab-router")
gw1 = testinfra.get_host("podman://portico-lab-gw1")


def probe(host, proto: str, target: str, port: int, count: int = 60, timeout: float = 1.0) -> dict:
    result = host.run(f"portico-lab-probe --proto {proto} --target {target} --port {port} --count {count} --timeout {timeout} --json")
    assert result.stdout, result.stderr
    return json.loads(result.stdout)


def drop_packets(vip_counter: str) -> int:
    listing = gw1.check_output(f"nft list counter inet portico {vip_counter}")
    return int(listing.split("packets")[1].split()[0])


def playbook(*extra: str) -> subprocess.CompletedProcess:
    ansible_playbook = pathlib.Path(sys.executable).parent / "ansible-playbook"
    return subprocess.run(
        [str(ansible_playbook), "-i", "inventories/lab", "playbooks/site.yml", *extra],
        cwd=REPO, capture_output=True, text=True, check=False,
        env={**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"},
    )


def extra_vars(tmp_path: pathlib.Path, loadbalancers: list) -> str:
    path = tmp_path / "lbs.json"
    path.write_text(json.dumps({"portico_loadbalancers": loadbalancers}))
    return f"@{path}"


@pytest.fixture(scope="module", autouse=True)
def probe_on_router():
    """The router sits in the one source range the 'restricted' LB allows."""
    subprocess.run(["podman", "cp", str(REPO / "lab/files/portico-lab-probe"), "portico-lab-router:/usr/local/bin/portico-lab-probe"], check=True)


@pytest.mark.parametrize(("proto", "vip", "port"), [
    ("tcp", "198.51.100.10", 80), ("udp", "198.51.100.10", 53),
    ("tcp", "2001:db8:100::10", 80), ("udp", "2001:db8:100::10", 53),
])
def test_vip_spreads_over_every_backend(proto, vip, port):
    result = probe(client, proto, vip, port, count=90)
    assert result["failed"] == 0, result
    assert set(result["backends"]) == NODES, result
    # 30 expected each; a hash that sent everything to one node would fail this.
    assert min(result["backends"].values()) >= 15, result


def test_backend_sees_the_client_address():
    assert probe(client, "tcp", "198.51.100.10", 80, count=10)["clients"] == [CLIENT_IP]
    assert probe(client, "udp", "2001:db8:100::10", 53, count=10)["clients"] == ["2001:db8:203::10"]


def test_snat_lb_hides_the_client_address():
    result = probe(client, "tcp", "198.51.100.12", 80, count=10)
    assert result["ok"] == 10 and result["clients"] == ["192.0.2.2"], result


def test_undeclared_port_is_dropped_and_counted():
    # The nodes do listen on 8081: only the gateway's VIP filter stands in the way.
    direct = gw1.run("timeout 3 bash -c 'exec 3<>/dev/tcp/192.0.2.11/8081; head -1 <&3'")
    assert '"backend": "node1"' in direct.stdout, direct.stderr
    before = drop_packets("drop_c633640a")
    result = probe(client, "tcp", "198.51.100.10", 8081, count=3, timeout=0.5)
    assert result["ok"] == 0, result
    assert drop_packets("drop_c633640a") > before


def test_disallowed_source_is_dropped_allowed_source_passes():
    assert probe(client, "tcp", "198.51.100.11", 80, count=3, timeout=0.5)["ok"] == 0
    allowed = probe(router, "tcp", "198.51.100.11", 80, count=10)
    assert allowed["ok"] == 10 and allowed["clients"] == ["198.18.0.1"], allowed


def test_bad_inventory_fails_before_any_host_is_touched(tmp_path):
    digest_before = gw1.check_output("nft list table inet portico | grep -m1 comment")
    ports = lambda port, proto="tcp": [{"protocol": proto, "port": port, "backend_port": 8080}]  # noqa: E731
    node = [{"address": "192.0.2.11"}]
    bad = LAB_VARS["portico_loadbalancers"] + [
        {"name": "outside", "vip": "192.0.2.200", "ports": ports(80), "backends": node},
        {"name": "dup", "vip": "198.51.100.10", "ports": ports(80), "backends": node},
        {"name": "zero", "vip": "198.51.100.30", "ports": ports(0), "backends": node},
        {"name": "huge", "vip": "198.51.100.31", "ports": ports(70000), "backends": node},
        {"name": "proto", "vip": "198.51.100.32", "ports": ports(80, "sctp"), "backends": node},
        {"name": "notip", "vip": "198.51.100.33", "ports": ports(80), "backends": [{"address": "node1"}]},
    ]
    run = playbook("-e", extra_vars(tmp_path, bad))
    output = run.stdout + run.stderr
    assert run.returncode != 0
    for message in (
        "outside: vip: 192.0.2.200 is not in any pool",
        "dup: ports[0].port: 198.51.100.10 tcp/80 is already used by web",
        "zero: ports[0].port: 0 is out of range 1-65535",
        "huge: ports[0].port: 70000 is out of range 1-65535",
        "proto: ports[0].protocol: unknown protocol 'sctp'",
        "notip: backends[0].address: 'node1' is not an IP address",
    ):
        assert message in output
    assert "TASK [gateway_base" not in output and "TASK [nftables" not in output
    assert gw1.check_output("nft list table inet portico | grep -m1 comment") == digest_before


def test_adding_a_lb_does_not_reset_a_running_stream(tmp_path):
    stream = subprocess.Popen(
        ["podman", "exec", "portico-lab-client", "portico-lab-probe", "--proto", "tcp", "--target", "198.51.100.10",
         "--port", "80", "--stream", "20", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        time.sleep(2)
        added = LAB_VARS["portico_loadbalancers"] + [
            {"name": "added", "vip": "198.51.100.20", "ports": [{"protocol": "tcp", "port": 80, "backend_port": 8080}],
             "backends": [{"address": "192.0.2.12"}, {"address": "192.0.2.13"}]},
        ]
        run = playbook("-e", extra_vars(tmp_path, added))
        assert run.returncode == 0, run.stdout[-3000:]
        assert "changed=" in run.stdout and probe(client, "tcp", "198.51.100.20", 80, count=10)["ok"] == 10
        out, err = stream.communicate(timeout=60)
    finally:
        stream.kill()
        restore = playbook()  # back to the lab's own inventory for whatever runs next
    result = json.loads(out)
    assert stream.returncode == 0 and result["reset"] is False, (result, err)
    assert result["lines"] >= 150, result  # 20 s at one line per 100 ms
    assert restore.returncode == 0
