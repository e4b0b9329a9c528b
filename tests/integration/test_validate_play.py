"""playbooks/validate.yml checks every rendered configuration with its own checker on the controller.

The gateways point at 127.0.0.1 port 9 over ssh, where nothing listens: a play that got as far as
touching a host would report it UNREACHABLE instead of the validation message. Each broken case
passes the LB model and ha_validate and is caught only by a checker (nft -c, keepalived -t,
vtysh -C); the knob case shows that without the checks the same inventory goes through.
"""

from __future__ import annotations

import copy
import os
import pathlib
import shutil
import subprocess
import sys
from typing import Any, Callable

import pytest
import yaml

REPO = pathlib.Path(__file__).resolve().parents[2]
BIN = pathlib.Path(sys.executable).parent

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not all(shutil.which(tool) for tool in ("nft", "vtysh", "unshare"))
    or not all(os.path.exists(tool) for tool in ("/usr/sbin/keepalived", "/usr/sbin/conntrackd")),
    reason="needs root and nft, vtysh, keepalived, conntrackd on the controller (.ci/install-deps)")

POOLS = {"public": {"addresses": ["198.51.100.0/25", "2001:db8:100::/64"]}}
LBS = [
    {"name": "web", "vip": "198.51.100.10", "ports": [{"protocol": "tcp", "port": 80, "backend_port": 8080}],
     "backends": [{"address": "192.0.2.11"}, {"address": "192.0.2.12"}]},
    {"name": "web-v6", "vip": "2001:db8:100::10", "ports": [{"protocol": "udp", "port": 53}],
     "backends": [{"address": "2001:db8:192::11"}]},
]


def _gateway(index: int) -> dict[str, Any]:
    """A lab-bgp-like gateway: BGP with MD5 and BFD, a VRRP-held backend address, conntrackd."""
    return {
        "portico_ha_mode": "bgp", "frr_asn": 64513, "frr_router_id": f"198.18.0.1{index}",
        "frr_peers": [{"address": "198.18.0.1", "asn": 64512, "description": "router-v4", "password": "s3cret-md5",
                       "update_source": f"198.18.0.1{index}", "interface": "uplink"},
                      {"address": "2001:db8:198::1", "asn": 64512, "address_families": ["ipv6"]}],
        "keepalived_priority": 110 - 10 * index,
        "keepalived_instances": [{"name": "BACKEND", "interface": "backend", "vrid": 52,
                                  "addresses": ["192.0.2.1/24", "2001:db8:192::1/64"],
                                  "track_interfaces": ["uplink"]}],
        "conntrackd_interface": "backend", "conntrackd_local_address": f"192.0.2.{index + 1}",
        "conntrackd_peers": [f"192.0.2.{3 - index + 1}"],
        "nftables_snat_source4": f"192.0.2.2{index}", "nftables_snat_source6": f"2001:db8:192::2{index}",
        "ansible_connection": "ssh", "ansible_host": "127.0.0.1", "ansible_port": 9,
    }


def _good() -> dict[str, Any]:
    return {"hosts": {"gw1": _gateway(1), "gw2": _gateway(2)},
            "group": {"portico_pools": POOLS, "portico_loadbalancers": LBS,
                      "nftables_egress_snat": [{"source": "192.0.2.0/24", "out_interface": "uplink"}]}}


def _write_inventory(path: pathlib.Path, inventory: dict[str, Any]) -> pathlib.Path:
    (path / "group_vars").mkdir(parents=True)
    (path / "hosts.yml").write_text(yaml.safe_dump({"all": {"children": {"gateways": {"hosts": inventory["hosts"]}}}}))
    (path / "group_vars" / "gateways.yml").write_text(yaml.safe_dump(inventory["group"]))
    return path


def _playbook(inventory: pathlib.Path, playbook: str, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1",
           "ANSIBLE_SSH_ARGS": "-o BatchMode=yes -o ConnectTimeout=2"}
    return subprocess.run([str(BIN / "ansible-playbook"), "-i", str(inventory), str(REPO / playbook), *extra],
                          capture_output=True, text=True, cwd=REPO, env=env, check=False, timeout=300)


def _frr_timers_out_of_range(inventory: dict[str, Any]) -> None:
    # Role preflight and ha_validate check the relation, not the 0-65535 range: only vtysh -C sees it.
    inventory["hosts"]["gw1"]["frr_peers"][0]["timers"] = {"keepalive": 70000, "hold": 70000}


def _frr_max_prefix_out_of_range(inventory: dict[str, Any]) -> None:
    inventory["hosts"]["gw2"]["frr_peers"][1]["max_prefix"] = 99999999999


def _keepalived_bad_unicast_peer(inventory: dict[str, Any]) -> None:
    # ha_validate checks instance addresses, not unicast peers.
    inventory["hosts"]["gw1"]["keepalived_instances"][0]["unicast_peers"] = ["192.0.2.300"]


def _keepalived_track_interface_too_long(inventory: dict[str, Any]) -> None:
    # No gateway can have it (names are at most 15 characters), so no stand-in is created either.
    inventory["hosts"]["gw2"]["keepalived_instances"][0]["track_interfaces"] = ["uplink-interface-0"]


def _nft_egress_snat_wrong_family(inventory: dict[str, Any]) -> None:
    # nftables_egress_snat is not part of the LB model: nft -c is the first to see it.
    inventory["group"]["nftables_egress_snat"] = [{"source": "192.0.2.0/24", "to_address": "2001:db8:192::5"}]


def _nft_snat_source_wrong_family(inventory: dict[str, Any]) -> None:
    inventory["hosts"]["gw1"]["nftables_snat_source4"] = "2001:db8:192::99"


def _conntrackd_bad_peer(inventory: dict[str, Any]) -> None:
    inventory["hosts"]["gw2"]["conntrackd_peers"] = ["192.0.2.300"]


CHECKER_CASES: list[tuple[str, Callable[[dict[str, Any]], None], str, list[str]]] = [
    ("frr timers", _frr_timers_out_of_range, "gw1: frr: the rendered frr.conf does not pass `vtysh -C -f frr.conf`",
     ["timers 70000 70000"]),
    ("frr max-prefix", _frr_max_prefix_out_of_range, "gw2: frr: the rendered frr.conf does not pass",
     ["maximum-prefix 99999999999"]),
    ("keepalived unicast peer", _keepalived_bad_unicast_peer,
     "gw1: keepalived: the rendered keepalived.conf does not pass `/usr/sbin/keepalived --config-test",
     ["malformed unicast peer address[192.0.2.300]"]),
    ("keepalived track interface", _keepalived_track_interface_too_long,
     "gw2: keepalived: the rendered keepalived.conf does not pass", ["uplink-interface-0"]),
    ("nft egress snat", _nft_egress_snat_wrong_family, "gw1: nftables: the rendered portico.nft does not pass `nft -c -f portico.nft`",
     ["snat ip to 2001:db8:192::5"]),
    ("nft snat source", _nft_snat_source_wrong_family, "gw1: nftables: the rendered portico.nft does not pass",
     ["2001:db8:192::99"]),
    ("conntrackd peer", _conntrackd_bad_peer, "gw2: conntrackd: the rendered conntrackd.conf does not pass",
     ["192.0.2.300 is not a valid IPv4"]),
]


def _assert_refused(proc: subprocess.CompletedProcess[str], message: str, details: list[str]) -> None:
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output
    assert message in output, output
    for detail in details:
        assert detail in output, output
    assert "UNREACHABLE" not in output, f"a gateway was contacted\n{output}"
    assert "Converge gateways" not in output, output


@pytest.mark.parametrize("label,breakage,message,details", CHECKER_CASES, ids=[c[0] for c in CHECKER_CASES])
def test_a_checker_refuses_the_rendered_config(tmp_path: pathlib.Path, label: str,
                                               breakage: Callable[[dict[str, Any]], None],
                                               message: str, details: list[str]) -> None:
    inventory = _good()
    breakage(inventory)
    proc = _playbook(_write_inventory(tmp_path / "inventory", inventory), "playbooks/validate.yml")
    _assert_refused(proc, message, details)


@pytest.mark.parametrize("breakage", [_frr_timers_out_of_range, _keepalived_bad_unicast_peer, _nft_egress_snat_wrong_family],
                         ids=["frr", "keepalived", "nftables"])
def test_site_check_mode_refuses_it_too(tmp_path: pathlib.Path, breakage: Callable[[dict[str, Any]], None]) -> None:
    """--check skips the roles' validate:, so without the validation play these would pass the plan."""
    inventory = _good()
    breakage(inventory)
    proc = _playbook(_write_inventory(tmp_path / "inventory", inventory), "playbooks/site.yml", "--check")
    name = {"_frr_timers_out_of_range": "gw1: frr:", "_keepalived_bad_unicast_peer": "gw1: keepalived:",
            "_nft_egress_snat_wrong_family": "gw1: nftables:"}[breakage.__name__]
    _assert_refused(proc, name, [])


def test_the_checks_are_what_refuses_it(tmp_path: pathlib.Path) -> None:
    """With portico_validate_configs: false the FRR case passes validation: the check is what catches it."""
    inventory = _good()
    _frr_timers_out_of_range(inventory)
    proc = _playbook(_write_inventory(tmp_path / "inventory", inventory), "playbooks/validate.yml", "--check",
                     "-e", "portico_validate_configs=false")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_password_stays_out_of_the_message(tmp_path: pathlib.Path) -> None:
    inventory = _good()
    inventory["hosts"]["gw1"]["frr_peers"][0]["timers"] = {"keepalive": 70000, "hold": 70000}
    # A password that is also a value the checker quotes: the secret is blanked wherever it shows.
    inventory["hosts"]["gw1"]["frr_peers"][0]["password"] = "70000"
    proc = _playbook(_write_inventory(tmp_path / "inventory", inventory), "playbooks/validate.yml")
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output
    assert "timers ******** ********" in output, output
    assert "70000" not in output, output


@pytest.mark.parametrize("mode", ["bgp", "vrrp", "single"])
def test_a_good_inventory_passes_in_check_mode(tmp_path: pathlib.Path, mode: str) -> None:
    """Control case: every checker ran for what the mode deploys, and passed."""
    inventory = _good()
    for host in inventory["hosts"].values():
        host["portico_ha_mode"] = mode
        host["keepalived_instances"][0]["vips"] = True
    proc = _playbook(_write_inventory(tmp_path / "inventory", inventory), "playbooks/validate.yml", "--check", "-v")
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    expected = {"nft -c -f portico.nft": True, "conntrackd-check-config": mode != "single",
                "/usr/sbin/keepalived --config-test --use-file=keepalived.conf": mode != "single",
                "vtysh -C -f frr.conf": mode == "bgp"}
    for checker, runs in expected.items():
        assert (output.count(f"checker: {checker}") == 2) == runs, f"{checker}\n{output}"
    assert "UNREACHABLE" not in output, output


def test_a_good_inventory_gets_past_validation_in_site_check(tmp_path: pathlib.Path) -> None:
    """site.yml --check goes on to the (unreachable) gateways once validation passes."""
    proc = _playbook(_write_inventory(tmp_path / "inventory", _good()), "playbooks/site.yml", "--check")
    output = proc.stdout + proc.stderr
    assert "does not pass" not in output, output
    assert "UNREACHABLE" in output, output


def _overlapping_pools(inventory: dict[str, Any]) -> None:
    inventory["group"]["portico_pools"] = {**POOLS, "other": {"addresses": ["198.51.100.64/26"]}}


def _vip_outside_pools(inventory: dict[str, Any]) -> None:
    inventory["group"]["portico_loadbalancers"] = copy.deepcopy(LBS)
    inventory["group"]["portico_loadbalancers"][0]["vip"] = "203.0.113.80"


@pytest.mark.parametrize("breakage,message", [
    (_overlapping_pools, "portico_pools: pool public: addresses: 198.51.100.0-198.51.100.127 overlaps pool other"),
    (_vip_outside_pools, "web: vip: 203.0.113.80 is not in any pool (public)"),
], ids=["overlapping pools", "VIP outside every pool"])
def test_the_lb_model_refuses_it_before_any_checker(tmp_path: pathlib.Path, breakage: Callable[[dict[str, Any]], None],
                                                    message: str) -> None:
    inventory = _good()
    breakage(inventory)
    proc = _playbook(_write_inventory(tmp_path / "inventory", inventory), "playbooks/validate.yml", "--check")
    _assert_refused(proc, message, [])
    assert "Check the nftables script" not in proc.stdout, proc.stdout
