"""The LB model: defaults, validation messages naming LB and field, isolation of bad LBs."""

from __future__ import annotations

import copy

import pytest

from ansible_collections.portico.gateway.plugins.module_utils.model.ipam import PoolError, parse_pools
from ansible_collections.portico.gateway.plugins.module_utils.model.loadbalancer import (
    LBValidationError,
    parse_loadbalancer,
    parse_loadbalancers,
)
from ansible_collections.portico.gateway.plugins.module_utils.model.problems import render

POOLS = parse_pools({"public": {"addresses": ["198.51.100.0/24", "2001:db8:100::/64"]},
                     "range": {"addresses": ["203.0.113.100-203.0.113.120"]}})
GOOD = {
    "name": "web",
    "vip": "198.51.100.10",
    "ports": [{"protocol": "tcp", "port": 80, "backend_port": 8080}, {"protocol": "udp", "port": 53}],
    "backends": ["192.0.2.11", {"address": "192.0.2.12", "weight": 3}],
}


def variant(**changes):
    raw = copy.deepcopy(GOOD)
    raw.update(changes)
    return raw


def problems_of(raw) -> list[str]:
    with pytest.raises(LBValidationError) as err:
        parse_loadbalancer(raw, POOLS)
    return render(err.value.problems)


def test_defaults_are_filled_in():
    lb = parse_loadbalancer(GOOD, POOLS)
    assert lb.pool == "public"
    assert lb.family == 4
    assert lb.source_ranges == ("0.0.0.0/0",)
    assert lb.preserve_source_ip is True
    assert lb.session_affinity == "none"
    assert lb.health_check.type == "tcp" and lb.health_check.fall == 3 and lb.health_check.interval_ms == 200
    assert [p.backend_port for p in lb.ports] == [8080, 53]
    assert [p.name for p in lb.ports] == ["tcp-80", "udp-53"]
    assert [(b.address, b.weight) for b in lb.backends] == [("192.0.2.11", 1), ("192.0.2.12", 3)]


def test_ipv6_lb_defaults_to_ipv6_any_source():
    lb = parse_loadbalancer(variant(vip="2001:db8:100::10", backends=["2001:db8:192::11"]), POOLS)
    assert lb.family == 6 and lb.source_ranges == ("::/0",)


def test_to_dict_round_trips():
    lb = parse_loadbalancer(variant(health_check={"type": "http", "path": "/healthz"}), POOLS)
    assert parse_loadbalancer(lb.to_dict(), POOLS) == lb


def test_vip_in_range_pool_is_accepted():
    assert parse_loadbalancer(variant(vip="203.0.113.110"), POOLS).pool == "range"


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"vip": "192.0.2.99"}, "web: vip: 192.0.2.99 is not in any pool"),
        ({"vip": "2001:db8:100::5", "pool": "range"}, "web: vip: 2001:db8:100::5 is outside pool 'range'"),
        ({"pool": "nope"}, "web: pool: unknown pool 'nope'"),
        ({"vip": "198.51.100.300"}, "web: vip: '198.51.100.300' is not an IP address"),
        ({"ports": [{"protocol": "tcp", "port": 0}]}, "web: ports[0].port: 0 is out of range 1-65535"),
        ({"ports": [{"protocol": "tcp", "port": 70000}]}, "web: ports[0].port: 70000 is out of range 1-65535"),
        ({"ports": [{"protocol": "sctp", "port": 80}]}, "web: ports[0].protocol: unknown protocol 'sctp'"),
        ({"ports": [{"port": "80"}]}, "web: ports[0].port: expected an integer"),
        ({"ports": [{"port": 80}, {"port": 80, "protocol": "TCP"}]}, "web: ports[1].port: tcp/80 is already declared by ports[0]"),
        ({"ports": []}, "web: ports: expected a non-empty list"),
        ({"backends": ["node1"]}, "web: backends[0].address: 'node1' is not an IP address"),
        ({"backends": ["2001:db8:192::11"]}, "web: backends[0].address: 2001:db8:192::11 is IPv6 but the vip is IPv4"),
        ({"backends": ["192.0.2.11", "192.0.2.11"]}, "web: backends[1].address: 192.0.2.11 is listed twice"),
        ({"backends": [{"address": "192.0.2.11", "weight": -1}]}, "web: backends[0].weight: -1 is out of range 0-1000"),
        ({"backnds": []}, "web: backnds: unknown field (did you mean 'backends'?)"),
        ({"source_ranges": ["10.0.0.0/33"]}, "web: source_ranges[0]: '10.0.0.0/33' is not a CIDR"),
        ({"source_ranges": ["2001:db8::/32"]}, "web: source_ranges[0]: 2001:db8::/32 is IPv6 but the vip is IPv4"),
        ({"session_affinity": "ClientIP"}, "web: session_affinity: unknown value 'ClientIP'"),
        ({"preserve_source_ip": "no"}, "web: preserve_source_ip: expected true or false"),
        ({"health_check": {"type": "icmp"}}, "web: health_check.type: unknown type 'icmp'"),
        ({"health_check": {"interval_ms": 100, "timeout_ms": 200}}, "web: health_check.timeout_ms: 200 ms is longer than interval_ms 100"),
        ({"health_check": {"intreval_ms": 100}}, "web: health_check.intreval_ms: unknown field (did you mean 'interval_ms'?)"),
    ],
)
def test_bad_definitions_name_lb_and_field(changes, expected):
    problems = problems_of(variant(**changes))
    assert any(p.startswith(expected) for p in problems), problems


def test_every_problem_of_one_lb_is_reported_at_once():
    problems = problems_of(variant(vip="192.0.2.99", ports=[{"port": 0}], backends=["x"]))
    assert len(problems) == 3


def test_bad_name_is_refused():
    assert problems_of(variant(name="web server"))[0].startswith("web server: name:")


def test_one_bad_lb_does_not_block_the_others():
    result = parse_loadbalancers([GOOD, variant(name="bad", vip="192.0.2.1"), variant(name="other", vip="198.51.100.11")], POOLS)
    assert [lb.name for lb in result.loadbalancers] == ["web", "other"]
    assert result.refused == ["bad"]


def test_listener_clash_refuses_the_later_lb():
    clash = variant(name="web2", ports=[{"protocol": "tcp", "port": 80}])
    result = parse_loadbalancers([GOOD, clash], POOLS)
    assert [lb.name for lb in result.loadbalancers] == ["web"]
    assert render(result.problems) == ["web2: ports[0].port: 198.51.100.10 tcp/80 is already used by web"]


def test_sharing_a_vip_on_disjoint_ports_is_allowed():
    other = variant(name="web2", ports=[{"protocol": "tcp", "port": 443}])
    assert len(parse_loadbalancers([GOOD, other], POOLS).loadbalancers) == 2


def test_duplicate_name_is_refused():
    result = parse_loadbalancers([GOOD, variant(vip="198.51.100.11")], POOLS)
    assert render(result.problems) == ["web: name: defined twice"]


@pytest.mark.parametrize(
    ("pools", "expected"),
    [
        ({"a": {"addresses": ["198.51.100.0/24"]}, "b": {"addresses": ["198.51.100.128/25"]}}, "pool b: addresses: 198.51.100.128-198.51.100.255 overlaps pool a"),
        ({"a": {"addresses": ["198.51.100.1/24"]}}, "pool a: addresses[0]: '198.51.100.1/24' is not a CIDR or range"),
        ({"a": {"addresses": ["198.51.100.9-198.51.100.1"]}}, "pool a: addresses[0]: '198.51.100.9-198.51.100.1' ends before it starts"),
        ({"a": {"adresses": ["198.51.100.0/24"]}}, "pool a: adresses: unknown field"),
        ({"a": {"addresses": []}}, "pool a: addresses: expected a non-empty list"),
    ],
)
def test_bad_pools_name_pool_and_field(pools, expected):
    with pytest.raises(PoolError) as err:
        parse_pools(pools)
    assert str(err.value).startswith(expected)


def test_existing_lbs_own_their_names_and_listeners():
    static = parse_loadbalancer(GOOD, POOLS)
    result = parse_loadbalancers([variant(name="svc"), variant(vip="198.51.100.11")], POOLS, existing=[static])
    assert result.loadbalancers == []
    assert render(result.problems) == [
        "web: name: defined twice",
        "svc: ports[0].port: 198.51.100.10 tcp/80 is already used by web",
        "svc: ports[1].port: 198.51.100.10 udp/53 is already used by web",
    ]


def test_a_refused_lb_claims_no_listener():
    a = variant(name="a", ports=[{"port": 80}])
    b = variant(name="b", ports=[{"port": 80}, {"port": 443}])
    c = variant(name="c", ports=[{"port": 443}])
    result = parse_loadbalancers([a, b, c], POOLS)
    assert [lb.name for lb in result.loadbalancers] == ["a", "c"]
    assert result.refused == ["b"]


def test_a_shared_vip_has_one_snat_address():
    first = variant(name="a", ports=[{"port": 80}], preserve_source_ip=False, snat_address="192.0.2.1")
    second = variant(name="b", ports=[{"port": 443}], preserve_source_ip=False, snat_address="192.0.2.2")
    result = parse_loadbalancers([first, second], POOLS)
    assert render(result.problems) == ["b: snat_address: 198.51.100.10 already SNATs to 192.0.2.1 for a"]
