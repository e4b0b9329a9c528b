"""Static and Kubernetes LBs merged into one model: static wins, a bad Service is isolated."""

from __future__ import annotations

from ansible_collections.portico.gateway.plugins.module_utils.model.ipam import parse_pools
from ansible_collections.portico.gateway.plugins.module_utils.model.problems import render
from ansible_collections.portico.gateway.plugins.module_utils.model.sources import merge

POOLS = parse_pools({"public": {"addresses": ["198.51.100.0/24", "2001:db8:100::/64"]}})
STATIC = [{"name": "static-web", "vip": "198.51.100.10", "ports": [{"port": 80}], "backends": ["192.0.2.11"]}]


def service(name: str, *, families=(4,), requested=(), ports=((80, "tcp"),), backends=("192.0.2.11",), extra=None) -> dict:
    lbs = []
    for family in families:
        suffix = "" if family == families[0] else "/ipv6"
        addrs = list(backends) if family == 4 else ["2001:db8:192::11"]
        lb = {"name": f"lab/default/{name}{suffix}", "source": "kubernetes",
              "ports": [{"protocol": proto, "port": port, "backend_port": 30000 + port} for port, proto in ports],
              "backends": [{"address": a} for a in addrs]}
        lb.update(extra or {})
        lbs.append(lb)
    return {"cluster": "lab", "namespace": "default", "name": name, "uid": f"uid-{name}", "ip_families": list(families),
            "requested_ips": list(requested), "status_ips": [], "pool": None, "sharing_key": None,
            "loadbalancers": lbs, "problems": [], "warnings": []}


def by_name(model):
    return {s.name: s for s in model.services}


def test_services_get_addresses_and_join_the_model():
    model = merge(STATIC, [service("a"), service("b", families=(4, 6))], POOLS)
    statuses = by_name(model)
    assert statuses["a"].served and len(statuses["a"].ips) == 1
    assert len(statuses["b"].ips) == 2 and ":" in statuses["b"].ips[1]
    assert {lb.name for lb in model.loadbalancers} == {"static-web", "lab/default/a", "lab/default/b", "lab/default/b/ipv6"}


def test_a_service_never_gets_a_static_vip():
    model = merge(STATIC, [service("a", requested=["198.51.100.10"])], POOLS)
    status = by_name(model)["a"]
    assert not status.served and status.problems
    assert [lb.name for lb in model.loadbalancers] == ["static-web"]


def test_bad_service_is_isolated_and_names_itself():
    bad = service("bad", extra={"session_affinity": "sometimes"})
    model = merge(STATIC, [service("good"), bad], POOLS)
    statuses = by_name(model)
    assert statuses["good"].served
    assert not statuses["bad"].served and statuses["bad"].ips == []
    assert render(statuses["bad"].problems)[0].startswith("lab/default/bad: session_affinity:")
    assert "lab/default/bad" not in {lb.name for lb in model.loadbalancers}


def test_a_service_refused_by_the_model_gets_the_model_problem():
    # A static LB that took the name the Service's LB would get: the static one stays.
    static = [{**STATIC[0], "name": "lab/default/a"}]
    model = merge(static, [service("a"), service("b")], POOLS)
    statuses = by_name(model)
    assert render(statuses["a"].problems) == ["lab/default/a: name: defined twice"] and statuses["a"].ips == []
    assert statuses["b"].served and render(statuses["b"].problems) == []
    assert [lb.name for lb in model.loadbalancers] == ["lab/default/a", "lab/default/b"]
    assert model.loadbalancers[0].source == "static"


def test_dual_stack_service_is_served_whole_or_not_at_all():
    half_bad = service("dual", families=(4, 6))
    half_bad["loadbalancers"][1]["ports"][0]["port"] = 0
    model = merge([], [half_bad], POOLS)
    status = by_name(model)["dual"]
    assert status.ips == [] and not status.served
    assert model.loadbalancers == []


def test_static_problems_are_reported_separately():
    model = merge([{**STATIC[0], "vip": "192.0.2.1"}], [service("a")], POOLS)
    assert render(model.static_problems) == ["static-web: vip: 192.0.2.1 is not in any pool (public)"]
    assert by_name(model)["a"].served


def test_allocation_is_stable_across_runs_and_order():
    services = [service(n) for n in ("a", "b", "c")]
    first = {s.name: s.ips for s in merge(STATIC, services, POOLS).services}
    again = {s.name: s.ips for s in merge(STATIC, list(reversed(services)), POOLS).services}
    assert first == again
