"""IPAM allocation: stable, deterministic, isolated failures, sharing and namespace rules."""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Sequence
from typing import Any

from ansible_collections.portico.gateway.plugins.module_utils.model.ipam import (
    Allocation,
    allocate,
    hash_probe,
    parse_pools,
    pool_capacity,
    probe_seed,
)
from ansible_collections.portico.gateway.plugins.module_utils.model.problems import Problem, render

POOLS = parse_pools({
    "public": {"addresses": ["198.51.100.0/24", "2001:db8:100::/64"]},
    "team-a": {"addresses": ["203.0.113.16/28"], "namespaces": ["team-a"]},
})


def svc(name: str, namespace: str = "default", *, families: Sequence[int] = (4,), status: Sequence[str] = (),
        requested: Sequence[str] = (), pool: str | None = None, key: str | None = None,
        ports: Sequence[tuple[str, int]] = (("tcp", 80),), problems: Sequence[Problem] = ()) -> dict[str, Any]:
    """A portico_k8s_services entry as the inventory plugin emits it."""
    base = f"lab/{namespace}/{name}"
    lbs = [{"name": base if i == 0 else f"{base}/ipv{f}", "ports": [{"protocol": p, "port": n, "backend_port": 30000 + n}
                                                                    for p, n in ports],
            "backends": [], "source": "kubernetes"} for i, f in enumerate(families)]
    return {"cluster": "lab", "namespace": namespace, "name": name, "uid": f"uid-{name}", "resource_version": "1",
            "ip_families": list(families), "requested_ips": list(requested), "status_ips": list(status),
            "pool": pool, "sharing_key": key, "loadbalancers": [] if problems else lbs,
            "problems": [p.to_dict() for p in problems], "warnings": []}


def ips(allocations: Sequence[Allocation]) -> dict[str, list[str]]:
    return {a.key: a.ips for a in allocations}


def written_back(services: Sequence[dict[str, Any]], allocations: Sequence[Allocation]) -> list[dict[str, Any]]:
    """What the next run sees once the write-back module stored the addresses in status."""
    by_key = {a.key: a.ips for a in allocations}
    return [{**s, "status_ips": by_key[f"lab/{s['namespace']}/{s['name']}"]} for s in services]


SERVICES = [svc(f"app{i}") for i in range(20)] + [svc("dual", families=(6, 4)), svc("v6", families=(6,))]


# --- determinism and stability ------------------------------------------------------


def test_hash_probe_golden_values():
    """Pinned: any change here moves new Services' addresses between controller versions."""
    result = ips(allocate([svc("echo"), svc("dual", families=(4, 6))], POOLS))
    assert result == {"lab/default/echo": ["198.51.100.176"],
                      "lab/default/dual": ["198.51.100.171", "2001:db8:100:0:8e84:70e1:37d8:8141"]}


def test_same_inputs_same_ips_and_list_order_does_not_matter():
    first = ips(allocate(SERVICES, POOLS))
    shuffled = list(SERVICES)
    random.Random(7).shuffle(shuffled)
    assert ips(allocate(shuffled, POOLS)) == first
    assert ips(allocate(list(reversed(SERVICES)), POOLS)) == first
    assert all(first.values())


def test_allocation_returns_input_order_with_lbs_filled_in():
    result = allocate([svc("b"), svc("a", families=(4, 6))], POOLS)
    assert [a.name for a in result] == ["b", "a"]
    dual = result[1]
    assert [lb["vip"] for lb in dual.loadbalancers] == dual.ips
    assert [lb["pool"] for lb in dual.loadbalancers] == ["public", "public"]
    assert [ipaddress.ip_address(ip).version for ip in dual.ips] == [4, 6]
    assert dual.loadbalancers[0]["name"] == "lab/default/a" and dual.loadbalancers[1]["name"] == "lab/default/a/ipv6"


def test_rerun_after_write_back_keeps_every_ip():
    first = allocate(SERVICES, POOLS)
    second = allocate(written_back(SERVICES, first), POOLS)
    assert ips(second) == ips(first)
    assert all(not a.warnings for a in second)


def test_adding_a_pool_moves_nothing():
    before = allocate(SERVICES, POOLS)
    # "aaa" sorts first, so new Services would now come from it: existing ones stay.
    bigger = parse_pools({"aaa": {"addresses": ["192.0.2.0/24"]},
                          "public": {"addresses": ["198.51.100.0/24", "2001:db8:100::/64"]},
                          "team-a": {"addresses": ["203.0.113.16/28"], "namespaces": ["team-a"]}})
    services = written_back(SERVICES, before) + [svc("newcomer")]
    after = ips(allocate(services, bigger))
    assert {k: v for k, v in after.items() if k != "lab/default/newcomer"} == ips(before)
    assert ipaddress.ip_address(after["lab/default/newcomer"][0]) in ipaddress.ip_network("192.0.2.0/24")


def test_adding_unrelated_services_moves_nothing():
    before = allocate(SERVICES, POOLS)
    services = written_back(SERVICES, before) + [svc(f"zz{i}") for i in range(30)] + [svc("aaa", families=(6, 4))]
    after = ips(allocate(services, POOLS))
    assert {k: after[k] for k in ips(before)} == ips(before)
    assert len({ip for v in after.values() for ip in v}) == sum(len(v) for v in after.values())  # no duplicates


def test_restart_without_write_back_is_still_deterministic():
    """Two controllers that never saw each other's status pick the same addresses."""
    assert ips(allocate(SERVICES, POOLS)) == ips(allocate(list(SERVICES), parse_pools({
        "team-a": {"addresses": ["203.0.113.16/28"], "namespaces": ["team-a"]},
        "public": {"addresses": ["2001:db8:100::/64", "198.51.100.0/24"]},  # listed differently
    })))


def test_probe_skips_taken_addresses_forward():
    pool = POOLS["public"]
    seed = probe_seed("lab/default/x", 4, "public")
    first = hash_probe(pool, 4, seed, lambda _ip: True)
    second = hash_probe(pool, 4, seed, lambda ip: ip != first)
    assert second == first + 1 or (first == ipaddress.ip_address("198.51.100.255") and second == ipaddress.ip_address("198.51.100.0"))


# --- status, requests, failures -----------------------------------------------------


def test_status_ip_is_kept_even_off_the_hash():
    assert ips(allocate([svc("echo", status=["198.51.100.7"])], POOLS)) == {"lab/default/echo": ["198.51.100.7"]}


def test_requested_ip_is_used_and_beats_a_stale_status():
    result = allocate([svc("echo", status=["198.51.100.7"], requested=["198.51.100.9"])], POOLS)[0]
    assert result.ips == ["198.51.100.9"]
    assert render(result.warnings) == ["lab/default/echo: status.loadBalancer.ingress: 198.51.100.7 differs from the requested "
                               "198.51.100.9: choosing another address"]


def test_requested_ip_taken_fails_only_that_service():
    services = [svc("echo", status=["198.51.100.99"]), svc("x", "team-a", requested=["198.51.100.99"]), svc("other")]
    result = {a.key: a for a in allocate(services, POOLS)}
    assert result["lab/team-a/x"].ips == [] and result["lab/team-a/x"].loadbalancers == []
    assert render(result["lab/team-a/x"].problems) == [
        "lab/team-a/x: metadata.annotations['portico.io/loadBalancerIPs']: 198.51.100.99 is taken by lab/default/echo "
        "(no common sharing key)"]
    assert result["lab/default/echo"].ips == ["198.51.100.99"] and result["lab/default/other"].ips


def test_problem_names_the_annotation_the_request_came_from():
    entry = svc("x", requested=["192.0.2.1"])
    entry["requested_ips_field"] = "metadata.annotations['metallb.universe.tf/loadBalancerIPs']"
    (result,) = allocate([entry], POOLS)
    assert render(result.problems) == ["lab/default/x: metadata.annotations['metallb.universe.tf/loadBalancerIPs']: "
                               "192.0.2.1 is not in any pool (public, team-a)"]


def test_requested_ip_outside_the_namespace_pools():
    (result,) = allocate([svc("x", "team-b", requested=["203.0.113.20"])], POOLS)
    assert render(result.problems) == ["lab/team-b/x: metadata.annotations['portico.io/loadBalancerIPs']: "
                               "203.0.113.20 is in pool 'team-a', which namespace 'team-b' may not use"]


def test_namespace_pools_are_used_only_by_their_namespaces():
    result = ips(allocate([svc("a", "team-a"), svc("b", "team-b")], parse_pools({
        "a-only": {"addresses": ["203.0.113.16/28"], "namespaces": ["team-a"]},
        "b-public": {"addresses": ["198.51.100.0/24"]},
    })))
    assert ipaddress.ip_address(result["lab/team-a/a"][0]) in ipaddress.ip_network("203.0.113.16/28")
    assert ipaddress.ip_address(result["lab/team-b/b"][0]) in ipaddress.ip_network("198.51.100.0/24")


def test_status_ip_in_a_pool_the_namespace_may_not_use_moves():
    (result,) = allocate([svc("x", "team-b", status=["203.0.113.20"])], POOLS)
    assert ipaddress.ip_address(result.ips[0]) in ipaddress.ip_network("198.51.100.0/24")
    assert "which namespace 'team-b' may not use" in render(result.warnings)[0]


def test_exhausted_pool_fails_only_the_services_that_do_not_fit():
    tiny = parse_pools({"tiny": {"addresses": ["198.51.100.10-198.51.100.11"]}})
    result = {a.key: a for a in allocate([svc("a"), svc("b"), svc("c")], tiny)}
    assert sorted(k for k, a in result.items() if a.ips) == ["lab/default/a", "lab/default/b"]
    assert render(result["lab/default/c"].problems) == ["lab/default/c: pools: no free IPv4 address left in pool 'tiny'"]


def test_existing_holders_win_over_new_services_when_the_pool_is_full():
    tiny = parse_pools({"tiny": {"addresses": ["198.51.100.10-198.51.100.11"]}})
    result = ips(allocate([svc("a"), svc("z1", status=["198.51.100.10"]), svc("z2", status=["198.51.100.11"])], tiny))
    assert result == {"lab/default/a": [], "lab/default/z1": ["198.51.100.10"], "lab/default/z2": ["198.51.100.11"]}


def test_unknown_pool_and_pool_without_the_family():
    entry = svc("x", pool="nope")
    entry["pool_field"] = "metadata.annotations['metallb.universe.tf/address-pool']"
    v4only = parse_pools({"v4": {"addresses": ["198.51.100.0/24"]}})
    unknown, nofamily = allocate([entry, svc("y", families=(4, 6), pool="v4")], v4only)
    assert render(unknown.problems) == ["lab/default/x: metadata.annotations['metallb.universe.tf/address-pool']: unknown pool 'nope' (pools: v4)"]
    assert render(nofamily.problems) == ["lab/default/y: metadata.annotations['portico.io/pool']: pool 'v4' has no IPv6 addresses"]
    assert nofamily.ips == []  # a dual-stack Service is served on both families or not at all


def test_manual_pools_serve_only_explicit_requests():
    pools = parse_pools({"auto": {"addresses": ["198.51.100.0/28"]},
                         "manual": {"addresses": ["198.51.100.128/28"], "auto_assign": False}})
    result = ips(allocate([svc("plain"), svc("by-pool", pool="manual"), svc("by-ip", requested=["198.51.100.130"])], pools))
    assert ipaddress.ip_address(result["lab/default/plain"][0]) in ipaddress.ip_network("198.51.100.0/28")
    assert ipaddress.ip_address(result["lab/default/by-pool"][0]) in ipaddress.ip_network("198.51.100.128/28")
    assert result["lab/default/by-ip"] == ["198.51.100.130"]


def test_static_lb_vips_are_never_handed_out():
    tiny = parse_pools({"tiny": {"addresses": ["198.51.100.10-198.51.100.11"]}})
    result = {a.key: a for a in allocate([svc("a", status=["198.51.100.10"]), svc("b"), svc("c")], tiny,
                                         reserved=["198.51.100.10"])}
    assert result["lab/default/a"].ips == ["198.51.100.11"]  # its status address became a static VIP
    assert "is the vip of a static load balancer" in render(result["lab/default/a"].warnings)[0]
    assert result["lab/default/b"].problems and result["lab/default/c"].problems
    (req,) = allocate([svc("r", requested=["198.51.100.10"])], tiny, reserved=["198.51.100.10"])
    assert render(req.problems) == ["lab/default/r: metadata.annotations['portico.io/loadBalancerIPs']: "
                            "198.51.100.10 is the vip of a static load balancer"]


def test_broken_service_keeps_its_address_out_of_reach():
    tiny = parse_pools({"tiny": {"addresses": ["198.51.100.10-198.51.100.11"]}})
    broken = svc("broken", status=["198.51.100.10"], problems=[Problem("lab/default/broken", "spec.ports[0].protocol", "SCTP ...")])
    result = {a.key: a for a in allocate([broken, svc("a"), svc("b")], tiny)}
    assert result["lab/default/broken"].ips == []
    assert render(result["lab/default/broken"].problems) == ["lab/default/broken: spec.ports[0].protocol: SCTP ..."]
    assert sorted(ip for a in result.values() for ip in a.ips) == ["198.51.100.11"]


def test_two_services_claiming_one_status_ip_first_key_keeps_it():
    result = {a.key: a for a in allocate([svc("b", status=["198.51.100.7"]), svc("a", status=["198.51.100.7"])], POOLS)}
    assert result["lab/default/a"].ips == ["198.51.100.7"]
    assert result["lab/default/b"].ips and result["lab/default/b"].ips != ["198.51.100.7"]
    assert "is taken by lab/default/a" in render(result["lab/default/b"].warnings)[0]


def test_duplicate_entries_are_refused():
    first, second = allocate([svc("a"), svc("a")], POOLS)
    assert first.ips and render(second.problems) == ["lab/default/a: metadata.name: listed twice"]


# --- sharing --------------------------------------------------------------------------


def test_same_key_disjoint_ports_share_by_request():
    result = ips(allocate([svc("http", requested=["198.51.100.40"], key="web"),
                           svc("https", requested=["198.51.100.40"], key="web", ports=[("tcp", 443)])], POOLS))
    assert result == {"lab/default/http": ["198.51.100.40"], "lab/default/https": ["198.51.100.40"]}


def test_same_key_services_land_together_without_requests():
    result = ips(allocate([svc("tcp", key="dns", ports=[("tcp", 53)]), svc("udp", key="dns", ports=[("udp", 53)])], POOLS))
    assert result["lab/default/tcp"] == result["lab/default/udp"]


def test_sharing_across_namespaces_with_the_same_key():
    result = ips(allocate([svc("a", "team-a", requested=["198.51.100.40"], key="k"),
                           svc("b", "team-b", requested=["198.51.100.40"], key="k", ports=[("udp", 80)])], POOLS))
    assert result["lab/team-a/a"] == result["lab/team-b/b"] == ["198.51.100.40"]


def test_same_key_overlapping_ports_do_not_share():
    result = {a.key: a for a in allocate([svc("a", requested=["198.51.100.40"], key="web"),
                                          svc("b", requested=["198.51.100.40"], key="web")], POOLS)}
    assert result["lab/default/a"].ips == ["198.51.100.40"]
    assert render(result["lab/default/b"].problems) == [
        "lab/default/b: metadata.annotations['portico.io/loadBalancerIPs']: 198.51.100.40 is taken by lab/default/a "
        "(sharing key matches but both use tcp/80)"]
    # Without a request, an overlapping partner simply gets its own address.
    auto = ips(allocate([svc("a", key="web"), svc("b", key="web")], POOLS))
    assert auto["lab/default/a"] != auto["lab/default/b"]


def test_different_or_missing_keys_do_not_share():
    for key_a, key_b in (("web", "other"), ("web", None), (None, None)):
        result = {a.key: a for a in allocate([svc("a", requested=["198.51.100.40"], key=key_a),
                                              svc("b", requested=["198.51.100.40"], key=key_b, ports=[("tcp", 443)])], POOLS)}
        assert result["lab/default/b"].ips == [] and "is taken by lab/default/a" in render(result["lab/default/b"].problems)[0]


def test_shared_status_ips_are_kept_on_rerun():
    services = [svc("http", key="web"), svc("https", key="web", ports=[("tcp", 443)])]
    first = allocate(services, POOLS)
    assert ips(allocate(written_back(services, first), POOLS)) == ips(first)


# --- avoid_buggy_ips and IPv6 -----------------------------------------------------------


def test_avoid_buggy_ips():
    pools = parse_pools({"edge": {"addresses": ["198.51.100.254-198.51.101.1"], "avoid_buggy_ips": True}})
    assert pool_capacity(pools["edge"], 4) == 2
    result = ips(allocate([svc(f"s{i}") for i in range(3)], pools))
    got = sorted(ip for v in result.values() for ip in v)
    assert got == ["198.51.100.254", "198.51.101.1"]
    (req,) = allocate([svc("r", requested=["198.51.100.255"])], pools)
    assert render(req.problems) == ["lab/default/r: metadata.annotations['portico.io/loadBalancerIPs']: "
                            "198.51.100.255 is a .0/.255 address that pool 'edge' avoids (avoid_buggy_ips)"]


def test_buggy_ips_are_fine_when_not_avoided():
    pools = parse_pools({"edge": {"addresses": ["198.51.100.255-198.51.101.0"]}})
    assert sorted(ip for v in ips(allocate([svc("a"), svc("b")], pools)).values() for ip in v) == [
        "198.51.100.255", "198.51.101.0"]


def test_ipv6_only_and_dual_stack():
    pools = parse_pools({"v6": {"addresses": ["2001:db8:100::10-2001:db8:100::12"]},
                         "v4": {"addresses": ["198.51.100.0/24"]}})
    result = {a.key: a for a in allocate([svc("six", families=(6,)), svc("dual", families=(6, 4))], pools)}
    six, dual = result["lab/default/six"], result["lab/default/dual"]
    assert ipaddress.ip_address(six.ips[0]) in ipaddress.ip_network("2001:db8:100::/120")
    assert [ipaddress.ip_address(ip).version for ip in dual.ips] == [6, 4]
    assert [lb["pool"] for lb in dual.loadbalancers] == ["v6", "v4"]
    assert six.ips[0] != dual.ips[0]


def test_ipv6_request_and_family_without_pool():
    (ok,) = allocate([svc("six", families=(6,), requested=["2001:db8:100::50"])], POOLS)
    assert ok.ips == ["2001:db8:100::50"]
    v4only = parse_pools({"v4": {"addresses": ["198.51.100.0/24"]}})
    (bad,) = allocate([svc("six", families=(6,))], v4only)
    assert render(bad.problems) == ["lab/default/six: pools: no auto-assign pool with IPv6 addresses may be used by namespace 'default'"]


def test_large_ipv6_pool_probe_is_cheap():
    pools = parse_pools({"v6": {"addresses": ["2001:db8::/32"]}})
    result = allocate([svc(f"s{i}", families=(6,)) for i in range(200)], pools)
    assert len({a.ips[0] for a in result}) == 200
