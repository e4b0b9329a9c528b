"""Bad inventory fails site.yml on the controller before any gateway is contacted.

The gateways point at containers that do not exist: a playbook that got as far as touching a
host would report them UNREACHABLE instead of the validation message.
"""

from __future__ import annotations

import copy
import os
import pathlib
import subprocess
import sys

import pytest
import yaml

REPO = pathlib.Path(__file__).resolve().parents[2]
BIN = pathlib.Path(sys.executable).parent

POOLS = {"public": {"addresses": ["198.51.100.0/24", "2001:db8:100::/64"]}}
LBS = [{"name": "web", "vip": "198.51.100.10", "ports": [{"protocol": "tcp", "port": 80}],
        "backends": [{"address": "192.0.2.11"}, {"address": "192.0.2.12"}]}]


def _instances(priority: int) -> list[dict]:
    return [{"name": "VIPS", "interface": "uplink", "vrid": 51, "priority": priority, "vips": True, "addresses": []},
            {"name": "BACKEND", "interface": "backend", "vrid": 52, "priority": priority, "addresses": ["192.0.2.1/24"]}]


def _bgp(router_id: str) -> dict:
    return {"portico_ha_mode": "bgp", "frr_asn": 64513, "frr_router_id": router_id,
            "frr_peers": [{"address": "198.18.0.1", "asn": 64512}]}


GOOD = {
    "vrrp": {"gw1": {"portico_ha_mode": "vrrp", "keepalived_instances": _instances(150), "conntrackd_local_address": "192.0.2.2"},
             "gw2": {"portico_ha_mode": "vrrp", "keepalived_instances": _instances(100), "conntrackd_local_address": "192.0.2.3"}},
    "bgp": {"gw1": {**_bgp("198.18.0.11"), "conntrackd_local_address": "192.0.2.2"},
            "gw2": {**_bgp("198.18.0.12"), "conntrackd_local_address": "192.0.2.3"}},
}


def _duplicate_vrid(hosts: dict) -> None:
    hosts["gw2"]["keepalived_instances"][1]["name"] = "OTHER"
    hosts["gw2"]["keepalived_instances"][1]["vrid"] = 51
    hosts["gw2"]["keepalived_instances"][1]["interface"] = "uplink"


def _router_id_clash(hosts: dict) -> None:
    hosts["gw2"]["frr_router_id"] = "198.18.0.11"


def _peer_asn_missing(hosts: dict) -> None:
    del hosts["gw1"]["frr_peers"][0]["asn"]


CASES = [
    ("duplicate VRID", "vrrp", _duplicate_vrid, None, "duplicate VRID 51 on uplink"),
    ("router-id clash", "bgp", _router_id_clash, None, "BGP router-id clash: gw1, gw2 all use 198.18.0.11"),
    ("peer ASN missing", "bgp", _peer_asn_missing, None, "gw1: frr_peers[0] (198.18.0.1): asn is required"),
    ("VIP not in any pool", "bgp", None, "203.0.113.80", "web: vip: 203.0.113.80 is not in any pool (public)"),
]


def _write_inventory(path: pathlib.Path, hosts: dict, vip: str | None) -> pathlib.Path:
    loadbalancers = copy.deepcopy(LBS)
    if vip:
        loadbalancers[0]["vip"] = vip
    inventory = {"all": {"vars": {"ansible_connection": "containers.podman.podman"},
                         "children": {"gateways": {"hosts": {
                             name: {**variables, "ansible_host": f"portico-absent-{name}"}
                             for name, variables in hosts.items()}}}}}
    (path / "group_vars").mkdir(parents=True)
    (path / "hosts.yml").write_text(yaml.safe_dump(inventory))
    (path / "group_vars" / "gateways.yml").write_text(
        yaml.safe_dump({"portico_pools": POOLS, "portico_loadbalancers": loadbalancers}))
    return path


def _site(inventory: pathlib.Path, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"}
    return subprocess.run([str(BIN / "ansible-playbook"), "-i", str(inventory), str(REPO / "playbooks/site.yml"), *extra],
                          capture_output=True, text=True, cwd=REPO, env=env, check=False, timeout=300)


@pytest.mark.parametrize("label,mode,breakage,vip,message", CASES, ids=[c[0] for c in CASES])
def test_bad_inventory_fails_before_any_host_is_touched(tmp_path, label, mode, breakage, vip, message):
    hosts = copy.deepcopy(GOOD[mode])
    if breakage:
        breakage(hosts)
    proc = _site(_write_inventory(tmp_path / "inventory", hosts, vip))
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output
    assert message in output, output
    assert "UNREACHABLE" not in output, f"{label}: a gateway was contacted\n{output}"
    assert "Converge gateways" not in output, output


def test_the_good_inventory_gets_past_validation(tmp_path):
    """The control case: the same inventory without the breakage passes validation and only then
    tries to reach the (absent) gateways."""
    proc = _site(_write_inventory(tmp_path / "inventory", copy.deepcopy(GOOD["bgp"]), None))
    output = proc.stdout + proc.stderr
    assert "invalid" not in output, output
    assert "UNREACHABLE" in output or "Converge gateways" in output, output
