"""Properties of address allocation on hostile Service entries (Hypothesis).

Allocation never raises; every address it hands out is one the Service may have (its pool, its
namespace, not a static VIP, shared only under a common sharing key with disjoint ports); the
outcome of each Service does not depend on the order the API listed them in; a second run that
sees the written-back status moves nothing; and a Service that cannot be served changes nothing
for the others. Profiles and strategies: portico_strategies.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st
from portico_strategies import (
    NAMESPACES,
    POOLS,
    any_json,
    examples,
    hostile_text,
    ip_text,
    pool_ipv4,
    pool_ipv6,
    port_number,
    timestamp,
    uid,
)

from ansible_collections.portico.gateway.plugins.module_utils.model.ipam import (
    Allocation,
    allocate,
    pool_allows_namespace,
    pool_of,
    pool_usable,
)

STATIC_VIPS = ("198.51.100.9", "2001:db8:100::9")


@st.composite
def entry(draw: st.DrawFn, name: str, broken: bool | None = None) -> dict[str, Any]:
    """A ``portico_k8s_services`` entry as translate emits it, with hostile annotation values."""
    namespace = draw(st.sampled_from(NAMESPACES))
    families = draw(st.sampled_from([[4], [4], [6], [4, 6], [6, 4]]))
    key = f"lab/{namespace}/{name}"
    ports = draw(st.lists(st.tuples(st.sampled_from(["tcp", "udp"]), port_number), min_size=1, max_size=3, unique=True))
    lbs = [{"name": key if i == 0 else f"{key}/ipv{f}", "ports": [{"protocol": p, "port": n, "backend_port": 30000} for p, n in ports],
            "backends": [], "source": "kubernetes"} for i, f in enumerate(families)]
    broken = draw(st.integers(0, 5)) == 0 if broken is None else broken
    problems = [{"subject": key, "field": "spec.ports[0].port", "message": "broken"}] if broken else []
    return {
        "cluster": "lab", "namespace": namespace, "name": name, "uid": draw(uid), "resource_version": "1",
        "creation_timestamp": draw(st.one_of(timestamp, st.just(""))),
        "ip_families": families,
        "requested_ips": draw(st.one_of(st.just([]), st.lists(st.one_of(pool_ipv4, pool_ipv6, ip_text), max_size=2))),
        "status_ips": draw(st.one_of(st.just([]), st.lists(st.one_of(pool_ipv4, pool_ipv6, ip_text), max_size=2))),
        "pool": draw(st.one_of(st.none(), st.sampled_from(["public", "team-a", "manual", "nope"]), hostile_text)),
        "sharing_key": draw(st.one_of(st.none(), st.sampled_from(["web", "dns"]))),
        "loadbalancers": [] if broken else lbs, "release": draw(st.integers(0, 9)) == 0,
        "problems": problems, "warnings": [],
    }


@st.composite
def entries(draw: st.DrawFn, max_size: int = 10) -> list[dict[str, Any]]:
    names = draw(st.lists(st.text(alphabet="abcdefgh0123", min_size=1, max_size=4).map("s".__add__), max_size=max_size, unique=True))
    return [draw(entry(name)) for name in names]


def outcome(allocations: list[Allocation]) -> dict[str, tuple]:
    return {a.key: (a.ips, a.release, sorted(map(str, a.problems)), a.loadbalancers) for a in allocations}


def assert_rules_hold(services: list[dict[str, Any]], allocations: list[Allocation]) -> None:
    holders: dict[str, list[tuple[dict[str, Any], Allocation]]] = {}
    for service, allocation in zip(services, allocations):
        assert allocation.key == f"lab/{service['namespace']}/{service['name']}"
        for problem in allocation.problems:
            assert problem.subject == allocation.key and problem.field and problem.message, problem
        if allocation.release or allocation.problems:
            assert not allocation.loadbalancers
            continue
        assert [ipaddress.ip_address(ip).version for ip in allocation.ips] == service["ip_families"]
        for ip, lb in zip(allocation.ips, allocation.loadbalancers):
            address = ipaddress.ip_address(ip)
            pool = pool_of(address, POOLS)
            assert str(address) == ip and "%" not in ip, ip
            assert pool is not None and pool.name == lb["pool"] and lb["vip"] == ip
            assert pool_usable(pool, address) and pool_allows_namespace(pool, service["namespace"])
            assert service.get("pool") in (None, "", pool.name)
            assert ip not in STATIC_VIPS
            holders.setdefault(ip, []).append((service, allocation))
    for ip, sharing in holders.items():
        if len(sharing) > 1:
            keys = {service.get("sharing_key") for service, _ in sharing}
            assert len(keys) == 1 and None not in keys, (ip, [a.key for _, a in sharing])
            ports = [(p["protocol"], p["port"]) for service, _ in sharing for p in service["loadbalancers"][0]["ports"]]
            assert len(ports) == len(set(ports)), (ip, ports)


@examples(150)
@given(entries())
@example([{"cluster": "lab", "namespace": "default", "name": "a", "ip_families": [6], "requested_ips": ["2001:db8:100::5%eth0"],
           "loadbalancers": [{"name": "lab/default/a", "ports": [{"protocol": "tcp", "port": 80}]}]},
          {"cluster": "lab", "namespace": "default", "name": "b", "ip_families": [6], "requested_ips": ["2001:db8:100::5"],
           "loadbalancers": [{"name": "lab/default/b", "ports": [{"protocol": "tcp", "port": 80}]}]}])
def test_allocation_follows_the_pool_namespace_and_sharing_rules(services):
    allocations = allocate(services, POOLS, reserved=STATIC_VIPS)
    assert len(allocations) == len(services)
    assert_rules_hold(services, allocations)


@examples(120)
@given(entries(), st.randoms(use_true_random=False))
def test_allocation_does_not_depend_on_list_order(services, rng):
    shuffled = list(services)
    rng.shuffle(shuffled)
    assert outcome(allocate(shuffled, POOLS, STATIC_VIPS)) == outcome(allocate(services, POOLS, STATIC_VIPS))


@examples(100)
@given(entries())
def test_a_second_run_with_the_written_status_moves_nothing(services):
    first = allocate(services, POOLS, STATIC_VIPS)
    written = [{**s, "status_ips": a.ips} if a.ips and not a.release else s for s, a in zip(services, first)]
    second = allocate(written, POOLS, STATIC_VIPS)
    for before, after in zip(first, second):
        if before.ips and not before.release:
            assert after.ips == before.ips, (before.key, before.ips, after.ips, after.warnings)


@examples(100)
@given(entries(max_size=6), st.lists(st.integers(0, 999).map("bad{}".format), min_size=1, max_size=4, unique=True),
       st.data())
def test_a_broken_service_changes_nothing_for_the_others(services, bad_names, data):
    """A Service refused before allocation (and holding no address yet) takes nothing."""
    broken = [{**data.draw(entry(name, broken=True)), "status_ips": []} for name in bad_names]
    alone = outcome(allocate(services, POOLS, STATIC_VIPS))
    mixed = services + broken
    data.draw(st.randoms(use_true_random=False)).shuffle(mixed)
    together = outcome(allocate(mixed, POOLS, STATIC_VIPS))
    assert {key: together[key] for key in alone} == alone


# Not "problems": that is the plugin's verdict on the Service, passed on as it is.
ENTRY_FIELDS = ("cluster", "namespace", "name", "uid", "creation_timestamp", "ip_families", "requested_ips", "status_ips",
                "pool", "sharing_key", "loadbalancers", "release")


@examples(100)
@given(st.lists(st.dictionaries(st.sampled_from(ENTRY_FIELDS), any_json, max_size=8), max_size=4))
@example([{"ip_families": 1}])
@example([{"cluster": None, "requested_ips": 1}])
@example([{"name": "a", "loadbalancers": [5], "status_ips": 5}])
def test_entries_with_wrong_types_get_problems_not_exceptions(services):
    """Entries come from the inventory plugin, but ``portico_k8s_services`` is an inventory
    variable a hand can edit: a wrong type is that entry's problem, on its field."""
    allocations = allocate(services, POOLS, STATIC_VIPS)
    assert len(allocations) == len(services)
    for allocation in allocations:
        for problem in allocation.problems:
            assert problem.subject == allocation.key and problem.message, problem
