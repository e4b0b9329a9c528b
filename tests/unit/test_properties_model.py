"""Properties of the LB model and the pools on hostile inventory input (Hypothesis).

Whatever an inventory holds, the model answers with LBs or with problems that name the object
and its field, never with an exception; a valid LB is accepted the same whatever broken
definitions stand around it; and what it accepts is safe to write into nftables, keepalived and
FRR (names and addresses in their plain spelling). Profiles and strategies: portico_strategies.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st
from portico_strategies import (
    POOLS,
    POOLS_RAW,
    any_json,
    examples,
    hostile_lb,
    hostile_text,
    ip_text,
    pool_ipv4,
    pool_ipv6,
    valid_lb,
)

from ansible_collections.portico.gateway.plugins.module_utils.model.documents import expanded_loadbalancers
from ansible_collections.portico.gateway.plugins.module_utils.model.ipam import PoolError, parse_pools
from ansible_collections.portico.gateway.plugins.module_utils.model.loadbalancer import (
    LoadBalancer,
    encode_model,
    parse_loadbalancers,
)

# The model's documented name rule, read as a whole-string match.
NAME_RULE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,252}")


def plain_address(text: str) -> bool:
    """An address in the one spelling nft, FRR and keepalived accept (no zone, no padding)."""
    try:
        return str(ipaddress.ip_address(text)) == text and "%" not in text
    except ValueError:
        return False


def assert_safe(lb: LoadBalancer) -> None:
    assert NAME_RULE.fullmatch(lb.name), lb.name
    assert plain_address(lb.vip), lb.vip
    for backend in lb.backends:
        assert plain_address(backend.address), backend.address
    if lb.snat_address is not None:
        assert plain_address(lb.snat_address), lb.snat_address
    for cidr in lb.source_ranges:
        assert "%" not in cidr and str(ipaddress.ip_network(cidr)) == cidr, cidr
    for port in lb.ports:
        assert isinstance(port.name, str) and "\n" not in port.name and '"' not in port.name, port.name


def subjects_of(result: Any) -> set[str]:
    return {problem.subject for problem in result.problems}


# --- any input: LBs or problems naming the object ------------------------------------


@examples(200)
@given(st.lists(hostile_lb(), max_size=6))
@example([{"name": "web\n", "vip": "198.51.100.5", "ports": [{"port": 80}]}])
@example([{"name": "v6", "vip": "2001:db8:100::5%eth0", "ports": [{"port": 80}]}])
@example([{"name": "v6", "vip": "2001:db8:100::5", "ports": [{"port": 80}], "backends": ["2001:db8:200::1%eth0"]}])
@example([{"name": "v6", "vip": "2001:db8:100::5", "ports": [{"port": 80}], "source_ranges": ["2001:db8::%eth0/32"]}])
@example([{"name": "p", "vip": "198.51.100.5", "ports": [{"port": 80, "name": 'x"; flush ruleset; "'}]}])
@example([{"name": {"a": 1}, "vip": "198.51.100.5"}, {"name": ["x"], "vip": "198.51.100.6"}])
# A typo in the vip and source ranges of both families: collapse_addresses raised on the mix.
@example([{"name": "web", "vip": "198.51.100.5", "ports": [{"port": 80}]},
          {"name": "typo", "vip": "198.51.100.x", "ports": [{"port": 80}], "source_ranges": ["203.0.113.0/24", "2001:db8::/32"]}])
def test_any_definitions_give_lbs_or_problems_naming_them(raws):
    result = parse_loadbalancers(raws, POOLS)
    assert len(result.loadbalancers) + len(result.refused) == len(raws)
    for problem in result.problems:
        assert problem.subject and problem.message, problem
        assert "Traceback" not in problem.message
    for name in result.refused:
        assert isinstance(name, str) and name in subjects_of(result), (name, result.problems)
    for lb in result.loadbalancers:
        assert_safe(lb)


@examples(100)
@given(any_json)
def test_any_value_as_the_list_of_definitions(raw):
    """Not a list: a document (JSON text or decoded), nothing (None, ""), or a problem saying so."""
    result = parse_loadbalancers(raw, POOLS)
    for problem in result.problems:
        assert problem.subject and problem.message, problem
    if isinstance(raw, list):
        assert len(result.loadbalancers) + len(result.refused) == len(raw)


# --- valid LBs survive next to invalid ones ------------------------------------------


@st.composite
def valid_set(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Valid LBs with distinct names and VIPs (so they cannot clash with each other)."""
    vips = draw(st.lists(st.one_of(pool_ipv4, pool_ipv6), min_size=1, max_size=4, unique=True))
    names = draw(st.lists(st.text(alphabet="abcdefgh0123", min_size=1, max_size=6).map("good-".__add__), min_size=len(vips),
                          max_size=len(vips), unique=True))
    return [draw(valid_lb(name=name, vip=vip)) for name, vip in zip(names, vips)]


@examples(150)
@given(valid_set(), st.lists(hostile_lb(), max_size=5), st.randoms(use_true_random=False))
def test_valid_lbs_survive_next_to_invalid_ones(good, bad, rng):
    alone = parse_loadbalancers(good, POOLS)
    assert not alone.problems and len(alone.loadbalancers) == len(good)
    # A broken definition sharing a valid one's name or VIP must not take it over either.
    names = [g["name"] for g in good]
    bad = [b for b in bad if not (isinstance(b, dict) and b.get("name") in names and parse_loadbalancers([b], POOLS).loadbalancers)]
    mixed = good + bad
    rng.shuffle(mixed)
    together = parse_loadbalancers(mixed, POOLS)
    accepted = {lb.name: lb for lb in together.loadbalancers}
    for lb in alone.loadbalancers:
        if lb.name in accepted:
            assert accepted[lb.name] == lb
        else:
            # Only another *valid* definition may win one of its listeners (first one wins).
            listeners = {(lb.vip, port.protocol, port.port) for port in lb.ports}
            winners = [other for other in together.loadbalancers
                       if listeners & {(other.vip, port.protocol, port.port) for port in other.ports}]
            assert winners, together.problems
            assert any(p.subject == lb.name and winners[0].name in p.message for p in together.problems)


# --- accepted LBs are stable data ------------------------------------------------------


@examples(100)
@given(st.lists(st.one_of(valid_lb(), hostile_lb()), max_size=6))
def test_accepted_lbs_round_trip_through_their_document(raws):
    first = parse_loadbalancers(raws, POOLS)
    again = parse_loadbalancers(encode_model(first.loadbalancers), POOLS)
    assert again.problems == [] and again.loadbalancers == first.loadbalancers
    assert parse_loadbalancers(expanded_loadbalancers(encode_model(first.loadbalancers)), POOLS).loadbalancers == first.loadbalancers


@examples(60)
@given(valid_set(), st.randoms(use_true_random=False))
def test_distinct_lbs_do_not_depend_on_order(good, rng):
    shuffled = list(good)
    rng.shuffle(shuffled)
    first = parse_loadbalancers(good, POOLS).loadbalancers
    second = parse_loadbalancers(shuffled, POOLS).loadbalancers
    assert sorted(first, key=lambda lb: lb.name) == sorted(second, key=lambda lb: lb.name)


# --- pools -----------------------------------------------------------------------------


pool_body = st.one_of(
    any_json,
    st.fixed_dictionaries(
        {"addresses": st.lists(st.one_of(ip_text, st.sampled_from(["198.51.100.0/28", "198.51.100.16-198.51.100.9",
                                                                   "2001:db8:1::/120", "198.51.100.1-2001:db8::1",
                                                                   "198.51.100.0/23", "198.51.100.1/24"])), max_size=3)},
        optional={"namespaces": st.one_of(st.lists(hostile_text, max_size=2), any_json),
                  "auto_assign": any_json, "avoid_buggy_ips": any_json, "adresses": any_json},
    ),
)


@examples(200)
@given(st.one_of(any_json, st.dictionaries(hostile_text, pool_body, max_size=4)))
@example({"public": {"addresses": ["2001:db8:100::%eth0/124"]}})
@example({"public": {"addresses": ["2001:db8:100::1%eth0-2001:db8:100::9"]}})
def test_pools_parse_or_name_the_pool(raw):
    try:
        pools, refused = parse_pools(raw), None
    except PoolError as err:
        pools, refused = {}, err.problem
    if refused is not None:
        assert refused.subject.startswith("pool") and refused.message, refused
    for pool in pools.values():
        for block in pool.ranges:
            assert plain_address(str(block.first)) and plain_address(str(block.last)), block


def test_the_test_pools_parse():
    assert sorted(parse_pools(POOLS_RAW)) == ["manual", "public", "team-a"]
