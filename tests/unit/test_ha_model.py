"""HA settings checked across gateways: what no single host's role can see."""

from __future__ import annotations

import copy

import pytest

from ansible_collections.portico.gateway.plugins.module_utils.model.ha import check_gateways
from ansible_collections.portico.gateway.plugins.module_utils.model.problems import render


def problems_of(gateways: dict[str, dict]) -> list[str]:
    return render(check_gateways(gateways).problems)

PEER = {"address": "198.18.0.1", "asn": 64512}


def vrrp_pair() -> dict[str, dict]:
    def host(priority: int) -> dict:
        return {
            "portico_ha_mode": "vrrp",
            "keepalived_instances": [
                {"name": "VIPS", "interface": "uplink", "vrid": 51, "priority": priority, "vips": True,
                 "addresses": ["198.18.0.10/24"]},
                {"name": "BACKEND", "interface": "backend", "vrid": 52, "priority": priority,
                 "addresses": ["192.0.2.1/24", "2001:db8:192::1/64"]},
            ],
        }
    return {"gw1": host(150), "gw2": host(100)}


def bgp_set() -> dict[str, dict]:
    return {
        f"gw{n}": {"portico_ha_mode": "bgp", "frr_asn": 64513, "frr_router_id": f"198.18.0.1{n}",
                   "frr_peers": [dict(PEER)], "nftables_snat_source4": f"192.0.2.2{n}"}
        for n in (1, 2, 3)
    }


def test_a_consistent_pair_and_bgp_set_pass():
    assert problems_of(vrrp_pair()) == []
    assert problems_of(bgp_set()) == []
    assert problems_of({"gw1": {}}) == []  # single mode needs nothing


def test_duplicate_vrid_between_two_groups_is_named():
    gateways = vrrp_pair()
    gateways["gw3"] = {"portico_ha_mode": "vrrp", "keepalived_instances": [
        {"name": "OTHER", "interface": "uplink", "vrid": 51, "priority": 100, "vips": True, "addresses": []}]}
    problems = problems_of(gateways)
    assert any("duplicate VRID 51 on uplink" in p and "OTHER on gw3" in p and "VIPS on gw1, gw2" in p for p in problems), problems


def test_duplicate_vrid_within_one_host():
    gateways = vrrp_pair()
    gateways["gw1"]["keepalived_instances"][1]["interface"] = "uplink"
    gateways["gw1"]["keepalived_instances"][1]["vrid"] = 51
    problems = problems_of(gateways)
    assert any(p.startswith("gw1: keepalived_instances: duplicate VRID 51 on uplink") for p in problems), problems


def test_router_id_clash():
    gateways = bgp_set()
    gateways["gw3"]["frr_router_id"] = "198.18.0.11"
    assert problems_of(gateways) == ["BGP router-id clash: gw1, gw3 all use 198.18.0.11"]


def test_peer_asn_missing_names_host_index_and_peer():
    gateways = bgp_set()
    del gateways["gw2"]["frr_peers"][0]["asn"]
    assert problems_of(gateways) == ["gw2: frr_peers[0] (198.18.0.1): asn is required (the peer's AS number)"]


@pytest.mark.parametrize("field,value,expected", [
    ("frr_asn", "sixty", "gw1: frr_asn: expected an AS number"),
    ("frr_router_id", "2001:db8::1", "gw1: frr_router_id: expected an IPv4 address"),
    ("frr_peers", [], "gw1: frr_peers: BGP mode needs at least one peer"),
    ("portico_ha_mode", "anycast", "gw1: portico_ha_mode: expected one of single, vrrp, bgp"),
])
def test_broken_values_name_the_field(field, value, expected):
    gateways = bgp_set()
    gateways["gw1"][field] = value
    problems = problems_of(gateways)
    assert any(p.startswith(expected) for p in problems), problems


def test_members_of_a_group_must_agree_on_addresses_and_have_one_master():
    gateways = vrrp_pair()
    gateways["gw2"]["keepalived_instances"][1]["addresses"] = ["192.0.2.1/24"]
    gateways["gw2"]["keepalived_instances"][0]["priority"] = 150
    problems = problems_of(gateways)
    assert any("VRRP instance BACKEND: gw1 and gw2 list different addresses" in p for p in problems), problems
    assert any("VRRP instance VIPS: gw1, gw2 share the highest priority 150" in p for p in problems), problems


def test_bad_vrid_and_address_name_the_field():
    gateways = copy.deepcopy(vrrp_pair())
    gateways["gw1"]["keepalived_instances"][0]["vrid"] = 300
    gateways["gw1"]["keepalived_instances"][1]["addresses"] = ["192.0.2.300/24"]
    problems = problems_of(gateways)
    assert "gw1: keepalived_instances[0] (VIPS).vrid: expected an integer 1-255, got 300" in problems
    assert "gw1: keepalived_instances[1] (BACKEND).addresses[0]: '192.0.2.300/24' is not an address with prefix length" in problems


def test_vrrp_mode_needs_an_instance_carrying_the_vips():
    gateways = vrrp_pair()
    for host in gateways.values():
        host["keepalived_instances"][0]["vips"] = False
    problems = problems_of(gateways)
    assert "gw1: keepalived_instances: VRRP mode needs an instance with vips: true to carry the VIPs" in problems


def test_snat_return_address_clash():
    gateways = bgp_set()
    gateways["gw2"]["nftables_snat_source4"] = "192.0.2.21"
    assert problems_of(gateways) == [
        "SNAT return address (nftables_snat_source4/6) clash: gw1, gw2 all use 192.0.2.21"]
