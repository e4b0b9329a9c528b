"""Gateway API L4 objects (GatewayClass, Gateway, TCPRoute, UDPRoute, ReferenceGrant, with the
Services and EndpointSlices they refer to) -> LB definitions, status documents and problems.

The objects are written as the API server returns them (defaults applied, uid, creationTimestamp,
generation); the LB definitions are checked with the real model parser."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from ansible_collections.portico.gateway.plugins.module_utils.k8s.gateway_api import (
    CONTROLLER_NAME,
    GatewayApiObjects,
    GatewayApiOptions,
    GatewayApiResult,
    finish,
    selector_matches,
    serve_gateway_api,
    served_route_version,
    translate_gateway_api,
    weighted_backends,
)
from ansible_collections.portico.gateway.plugins.module_utils.model.ipam import allocate, parse_pools
from ansible_collections.portico.gateway.plugins.module_utils.model.loadbalancer import parse_loadbalancers
from ansible_collections.portico.gateway.plugins.module_utils.model.problems import render

GROUP = "gateway.networking.k8s.io"
OPTIONS = GatewayApiOptions(cluster="lab")
POOLS = parse_pools({"gateways": {"addresses": ["203.0.113.0/28"]}, "v6": {"addresses": ["2001:db8:5::/120"]}})
NOW = "2026-12-05T12:00:00Z"
EARLIER = "2026-12-01T08:00:00Z"
_UIDS = iter(range(1, 10_000))


def meta(name: str, namespace: str | None = "apps", created: str = "2026-11-01T10:00:00Z", generation: int | None = 1,
         **extra: Any) -> dict[str, Any]:
    found: dict[str, Any] = {"name": name, "uid": f"00000000-0000-4000-8000-{next(_UIDS):012d}", "resourceVersion": "100",
                             "creationTimestamp": created, **extra}
    if namespace is not None:
        found["namespace"] = namespace
    if generation is not None:
        found["generation"] = generation
    return found


def gateway_class(name: str = "portico", controller: str = CONTROLLER_NAME) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/v1", "kind": "GatewayClass", "metadata": meta(name, None),
            "spec": {"controllerName": controller},
            "status": {"conditions": [{"type": "Accepted", "status": "Unknown", "reason": "Pending", "message": "Waiting for controller",
                                       "lastTransitionTime": "1970-01-01T00:00:00Z"}]}}


def listener(name: str, port: int, protocol: str, allowed: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"name": name, "port": port, "protocol": protocol, "allowedRoutes": {"namespaces": allowed or {"from": "Same"}}}


def gateway(name: str = "edge", listeners: list[dict[str, Any]] | None = None, class_name: str = "portico",
            addresses: list[str] | None = None, namespace: str = "apps", created: str = "2026-11-01T10:00:00Z") -> dict[str, Any]:
    spec: dict[str, Any] = {"gatewayClassName": class_name,
                            "listeners": listeners or [listener("db", 5432, "TCP"), listener("dns", 53, "UDP")]}
    if addresses is not None:
        spec["addresses"] = [{"type": "IPAddress", "value": value} for value in addresses]
    return {"apiVersion": f"{GROUP}/v1", "kind": "Gateway", "metadata": meta(name, namespace, created), "spec": spec,
            "status": {"conditions": [
                {"type": "Accepted", "status": "Unknown", "reason": "Pending", "message": "Waiting for controller",
                 "lastTransitionTime": "1970-01-01T00:00:00Z"},
                {"type": "Programmed", "status": "Unknown", "reason": "Pending", "message": "Waiting for controller",
                 "lastTransitionTime": "1970-01-01T00:00:00Z"}]}}


def backend_ref(service: str, port: int, weight: int = 1, namespace: str | None = None) -> dict[str, Any]:
    ref = {"group": "", "kind": "Service", "name": service, "port": port, "weight": weight}
    if namespace:
        ref["namespace"] = namespace
    return ref


def route(kind: str, name: str, refs: list[dict[str, Any]], parent: dict[str, Any] | None = None, namespace: str = "apps",
          version: str = "v1", created: str = "2026-11-02T10:00:00Z") -> dict[str, Any]:
    parent_ref = {"group": GROUP, "kind": "Gateway", "name": "edge", **(parent or {})}
    return {"apiVersion": f"{GROUP}/{version}", "kind": kind, "metadata": meta(name, namespace, created),
            "spec": {"parentRefs": [parent_ref], "rules": [{"backendRefs": refs}]}}


def service(name: str, ports: list[tuple[str, int, str, int]], namespace: str = "apps") -> dict[str, Any]:
    """ports: (name, port, protocol, targetPort)."""
    return {"apiVersion": "v1", "kind": "Service", "metadata": meta(name, namespace, generation=None),
            "spec": {"type": "ClusterIP", "clusterIP": "198.18.130.10", "ipFamilies": ["IPv4"],
                     "ports": [{"name": n, "port": p, "protocol": proto, "targetPort": t} for n, p, proto, t in ports]},
            "status": {"loadBalancer": {}}}


def endpoint_slice(service_name: str, ports: list[tuple[str, int, str]], pods: list[tuple[str, str]], namespace: str = "apps",
                   ready: bool = True) -> dict[str, Any]:
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
            "metadata": meta(f"{service_name}-abcde", namespace, labels={"kubernetes.io/service-name": service_name}),
            "ports": [{"name": n, "port": p, "protocol": proto} for n, p, proto in ports],
            "endpoints": [{"addresses": [address], "conditions": {"ready": ready, "serving": ready, "terminating": False},
                           "targetRef": {"kind": "Pod", "namespace": namespace, "name": pod}} for pod, address in pods]}


def namespace(name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace",
            "metadata": meta(name, None, generation=None, labels={"kubernetes.io/metadata.name": name, **(labels or {})})}


def reference_grant(namespace_name: str, from_namespace: str, kind: str = "TCPRoute", service_name: str | None = None) -> dict[str, Any]:
    to: dict[str, Any] = {"group": "", "kind": "Service"}
    if service_name:
        to["name"] = service_name
    return {"apiVersion": f"{GROUP}/v1", "kind": "ReferenceGrant", "metadata": meta("routes-from-" + from_namespace, namespace_name),
            "spec": {"from": [{"group": GROUP, "kind": kind, "namespace": from_namespace}], "to": [to]}}


POSTGRES = service("postgres", [("pg", 5432, "TCP", 5432)])
POSTGRES_SLICE = endpoint_slice("postgres", [("pg", 5432, "TCP")], [("postgres-0", "198.51.100.10")])
DNS = service("dns", [("dns", 53, "UDP", 5353)])
DNS_SLICE = endpoint_slice("dns", [("dns", 5353, "UDP")], [("dns-0", "198.51.100.20"), ("dns-1", "198.51.100.21")])
BASE = GatewayApiObjects(
    gateway_classes=[gateway_class()], gateways=[gateway()],
    tcp_routes=[route("TCPRoute", "db", [backend_ref("postgres", 5432)], {"sectionName": "db"})],
    udp_routes=[route("UDPRoute", "dns", [backend_ref("dns", 53)], {"sectionName": "dns"}, version="v1alpha2")],
    services=[POSTGRES, DNS], endpoint_slices=[POSTGRES_SLICE, DNS_SLICE],
    namespaces=[namespace("apps"), namespace("tenants", {"team": "blue"}), namespace("other")],
)


def with_objects(**changes: Any) -> GatewayApiObjects:
    fields = {name: list(getattr(BASE, name)) for name in BASE.__dataclass_fields__}
    for name, value in changes.items():
        fields[name] = value
    return GatewayApiObjects(**copy.deepcopy(fields))


def served(objects: GatewayApiObjects = BASE, options: GatewayApiOptions = OPTIONS) -> GatewayApiResult:
    return serve_gateway_api(objects, options, POOLS, now=NOW)


def status_of(result: GatewayApiResult, kind: str, name: str, namespace: str = "apps") -> dict[str, Any]:
    matches = [s for s in result.statuses if (s.kind, s.name, s.namespace) == (kind, name, "" if kind == "GatewayClass" else namespace)]
    assert len(matches) == 1, f"{kind} {namespace}/{name}: {len(matches)} status documents"
    return matches[0].status


def conditions(items: list[dict[str, Any]]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in items}


def parent_conditions(result: GatewayApiResult, kind: str, name: str, namespace: str = "apps") -> dict[str, tuple[str, str]]:
    parents = status_of(result, kind, name, namespace)["parents"]
    assert len(parents) == 1
    assert parents[0]["controllerName"] == CONTROLLER_NAME
    return conditions(parents[0]["conditions"])


def lbs_by_name(result: GatewayApiResult) -> dict[str, dict[str, Any]]:
    return {lb["name"]: lb for lb in result.loadbalancers}


def model_parses(result: GatewayApiResult) -> list[Any]:
    parsed = parse_loadbalancers(copy.deepcopy(result.loadbalancers), POOLS)
    assert render(parsed.problems) == [] and parsed.refused == []
    return parsed.loadbalancers


# --- the happy path ----------------------------------------------------------------------


def test_a_tcp_and_a_udp_route_through_one_gateway_become_two_lbs_on_its_address():
    result = served()
    lbs = lbs_by_name(result)
    assert sorted(lbs) == ["lab/apps/Gateway/edge/db", "lab/apps/Gateway/edge/dns"]
    tcp, udp = lbs["lab/apps/Gateway/edge/db"], lbs["lab/apps/Gateway/edge/dns"]
    assert tcp["vip"] == udp["vip"] and tcp["pool"] == "gateways"
    assert tcp["ports"] == [{"protocol": "tcp", "port": 5432, "backend_port": 5432, "name": "db"}]
    assert tcp["backends"] == [{"address": "198.51.100.10", "port": 5432, "name": "postgres-0", "weight": 1}]
    assert udp["ports"] == [{"protocol": "udp", "port": 53, "backend_port": 5353, "name": "dns"}]
    assert [(b["address"], b["port"], b["weight"]) for b in udp["backends"]] == [("198.51.100.20", 5353, 1), ("198.51.100.21", 5353, 1)]
    assert udp["health_check"] == {"type": "none"} and tcp["health_check"] == {"type": "tcp"}
    parsed = model_parses(result)
    assert {lb.name: (lb.family, lb.source, [p.protocol for p in lb.ports]) for lb in parsed} == {
        "lab/apps/Gateway/edge/db": (4, "gateway-api", ["tcp"]), "lab/apps/Gateway/edge/dns": (4, "gateway-api", ["udp"])}
    assert result.problems == []


def test_statuses_follow_the_spec_conditions():
    result = served()
    assert conditions(status_of(result, "GatewayClass", "portico")["conditions"]) == {"Accepted": ("True", "Accepted")}
    gw = status_of(result, "Gateway", "edge")
    vip = lbs_by_name(result)["lab/apps/Gateway/edge/db"]["vip"]
    assert gw["addresses"] == [{"type": "IPAddress", "value": vip}]
    assert conditions(gw["conditions"]) == {"Accepted": ("True", "Accepted"), "Programmed": ("True", "Programmed")}
    assert all(c["observedGeneration"] == 1 and c["lastTransitionTime"] == NOW for c in gw["conditions"])
    listeners = {item["name"]: item for item in gw["listeners"]}
    assert listeners["db"]["attachedRoutes"] == 1 and listeners["db"]["supportedKinds"] == [{"group": GROUP, "kind": "TCPRoute"}]
    assert listeners["dns"]["supportedKinds"] == [{"group": GROUP, "kind": "UDPRoute"}]
    assert conditions(listeners["db"]["conditions"]) == {
        "Accepted": ("True", "Accepted"), "Programmed": ("True", "Programmed"), "ResolvedRefs": ("True", "ResolvedRefs"),
        "Conflicted": ("False", "NoConflicts")}
    assert parent_conditions(result, "TCPRoute", "db") == {"Accepted": ("True", "Accepted"), "ResolvedRefs": ("True", "ResolvedRefs")}
    assert parent_conditions(result, "UDPRoute", "dns") == {"Accepted": ("True", "Accepted"), "ResolvedRefs": ("True", "ResolvedRefs")}
    udp_status = next(s for s in result.statuses if s.kind == "UDPRoute")
    assert udp_status.api_version == f"{GROUP}/v1alpha2"  # written back at the version it was read
    assert status_of(result, "TCPRoute", "db")["parents"][0]["parentRef"] == {"group": GROUP, "kind": "Gateway", "name": "edge",
                                                                               "sectionName": "db"}


def test_a_condition_keeps_its_transition_time_while_its_status_holds():
    first = served()
    objects = with_objects()
    objects.gateways[0]["status"] = status_of(first, "Gateway", "edge")
    objects.gateways[0]["metadata"]["generation"] = 2
    later = serve_gateway_api(objects, OPTIONS, POOLS, now="2026-12-06T00:00:00Z")
    gw = status_of(later, "Gateway", "edge")
    assert {c["type"]: (c["lastTransitionTime"], c["observedGeneration"]) for c in gw["conditions"]} == {
        "Accepted": (NOW, 2), "Programmed": (NOW, 2)}
    assert gw["addresses"] == status_of(first, "Gateway", "edge")["addresses"]  # the address it holds is kept


def test_a_route_without_section_name_or_port_attaches_to_every_listener_of_its_kind():
    objects = with_objects(
        gateways=[gateway(listeners=[listener("a", 7000, "TCP"), listener("b", 7001, "TCP"), listener("u", 7000, "UDP")])],
        tcp_routes=[route("TCPRoute", "db", [backend_ref("postgres", 5432)])], udp_routes=[])
    result = served(objects)
    assert sorted(lbs_by_name(result)) == ["lab/apps/Gateway/edge/a", "lab/apps/Gateway/edge/b"]
    attached = {item["name"]: item["attachedRoutes"] for item in status_of(result, "Gateway", "edge")["listeners"]}
    assert attached == {"a": 1, "b": 1, "u": 0}
    model_parses(result)


def test_a_parent_ref_by_port_picks_the_listener_on_that_port():
    objects = with_objects(tcp_routes=[route("TCPRoute", "db", [backend_ref("postgres", 5432)], {"port": 5432})], udp_routes=[])
    result = served(objects)
    assert sorted(lbs_by_name(result)) == ["lab/apps/Gateway/edge/db"]
    wrong = with_objects(tcp_routes=[route("TCPRoute", "db", [backend_ref("postgres", 5432)], {"port": 5433})], udp_routes=[])
    assert parent_conditions(served(wrong), "TCPRoute", "db")["Accepted"] == ("False", "NoMatchingParent")
    both = with_objects(tcp_routes=[route("TCPRoute", "db", [backend_ref("postgres", 5432)], {"sectionName": "db", "port": 5432})])
    assert parent_conditions(served(both), "TCPRoute", "db")["Accepted"] == ("True", "Accepted")
    mismatch = with_objects(tcp_routes=[route("TCPRoute", "db", [backend_ref("postgres", 5432)], {"sectionName": "db", "port": 53})])
    assert parent_conditions(served(mismatch), "TCPRoute", "db")["Accepted"] == ("False", "NoMatchingParent")


# --- weights -------------------------------------------------------------------------------


def test_backend_ref_weights_90_10_become_maglev_weights_9_to_1():
    canary = service("postgres-canary", [("pg", 5432, "TCP", 6432)])
    canary_slice = endpoint_slice("postgres-canary", [("pg", 6432, "TCP")], [("canary-0", "198.51.100.30")])
    objects = with_objects(
        tcp_routes=[route("TCPRoute", "db", [backend_ref("postgres", 5432, 90), backend_ref("postgres-canary", 5432, 10)],
                          {"sectionName": "db"})],
        services=[POSTGRES, DNS, canary], endpoint_slices=[POSTGRES_SLICE, DNS_SLICE, canary_slice])
    result = served(objects)
    backends = lbs_by_name(result)["lab/apps/Gateway/edge/db"]["backends"]
    assert [(b["address"], b["port"], b["weight"]) for b in backends] == [("198.51.100.10", 5432, 9), ("198.51.100.30", 6432, 1)]
    parsed = {lb.name: lb for lb in model_parses(result)}["lab/apps/Gateway/edge/db"]
    assert [(b.address, b.target_port(parsed.ports[0]), b.weight) for b in parsed.backends] == [
        ("198.51.100.10", 5432, 9), ("198.51.100.30", 6432, 1)]


def test_a_backend_ref_weight_is_shared_by_its_endpoints():
    # 90 over three pods and 10 over one: 30:30:30:10, i.e. 3:3:3:1.
    groups = [(90, [{"address": f"198.51.100.{i}", "port": 80} for i in (1, 2, 3)]), (10, [{"address": "198.51.100.9", "port": 80}])]
    assert [b["weight"] for b in weighted_backends(groups)] == [3, 3, 3, 1]
    # weight 0 keeps the backends in the LB but sends them nothing; large weights are capped.
    assert [b["weight"] for b in weighted_backends([(0, [{"address": "198.51.100.1"}]), (5, [{"address": "198.51.100.2"}])])] == [0, 1]
    big = weighted_backends([(1_000_000, [{"address": "198.51.100.1"}]), (1, [{"address": "198.51.100.2"}])])
    assert [b["weight"] for b in big] == [1000, 1]


# --- refusals --------------------------------------------------------------------------------


def test_a_route_from_a_namespace_the_listener_does_not_allow_is_not_accepted_and_gets_no_lb():
    objects = with_objects(tcp_routes=[route("TCPRoute", "db", [backend_ref("postgres", 5432, namespace="apps")],
                                             {"sectionName": "db", "namespace": "apps"}, namespace="other")],
                           reference_grants=[reference_grant("apps", "other")])
    result = served(objects)
    assert parent_conditions(result, "TCPRoute", "db", "other")["Accepted"] == ("False", "NotAllowedByListeners")
    assert "lab/apps/Gateway/edge/db" not in lbs_by_name(result)
    listeners = {item["name"]: item["attachedRoutes"] for item in status_of(result, "Gateway", "edge")["listeners"]}
    assert listeners["db"] == 0
    assert any(p.subject == "lab/other/TCPRoute/db" and p.field == "spec.parentRefs[0]" for p in result.problems)


def test_a_listener_allowing_a_namespace_selector_takes_routes_from_matching_namespaces():
    selector = {"from": "Selector", "selector": {"matchLabels": {"team": "blue"}}}
    objects = with_objects(
        gateways=[gateway(listeners=[listener("db", 5432, "TCP", selector)])],
        tcp_routes=[route("TCPRoute", "db", [backend_ref("postgres", 5432, namespace="apps")], {"namespace": "apps"}, namespace="tenants"),
                    route("TCPRoute", "db", [backend_ref("postgres", 5432, namespace="apps")], {"namespace": "apps"}, namespace="other")],
        udp_routes=[], reference_grants=[reference_grant("apps", "tenants"), reference_grant("apps", "other")])
    result = served(objects)
    assert parent_conditions(result, "TCPRoute", "db", "tenants")["Accepted"] == ("True", "Accepted")
    assert parent_conditions(result, "TCPRoute", "db", "other")["Accepted"] == ("False", "NotAllowedByListeners")
    assert lbs_by_name(result)["lab/apps/Gateway/edge/db"]["backends"][0]["address"] == "198.51.100.10"


def test_a_tcp_route_aimed_at_a_udp_listener_is_not_allowed():
    objects = with_objects(tcp_routes=[route("TCPRoute", "db", [backend_ref("postgres", 5432)], {"sectionName": "dns"})])
    result = served(objects)
    assert parent_conditions(result, "TCPRoute", "db")["Accepted"] == ("False", "NotAllowedByListeners")
    assert sorted(lbs_by_name(result)) == ["lab/apps/Gateway/edge/dns"]


def test_a_backend_ref_to_a_missing_service_is_backend_not_found_and_its_lb_has_no_backends():
    objects = with_objects(tcp_routes=[route("TCPRoute", "db", [backend_ref("nope", 5432)], {"sectionName": "db"})])
    result = served(objects)
    assert parent_conditions(result, "TCPRoute", "db") == {"Accepted": ("True", "Accepted"), "ResolvedRefs": ("False", "BackendNotFound")}
    # The listener keeps its address and refuses connections, as the spec asks of a route whose backend is missing.
    assert lbs_by_name(result)["lab/apps/Gateway/edge/db"]["backends"] == []
    problem = next(p for p in result.problems if p.subject == "lab/apps/TCPRoute/db")
    assert problem.render() == "lab/apps/TCPRoute/db: spec.rules[0].backendRefs[0]: Service apps/nope not found"
    model_parses(result)


def test_a_backend_ref_to_a_port_the_service_lacks_or_of_another_protocol_does_not_resolve():
    objects = with_objects(tcp_routes=[route("TCPRoute", "db", [backend_ref("postgres", 9999)], {"sectionName": "db"})],
                           udp_routes=[route("UDPRoute", "dns", [backend_ref("postgres", 5432)], {"sectionName": "dns"})])
    result = served(objects)
    assert parent_conditions(result, "TCPRoute", "db")["ResolvedRefs"] == ("False", "BackendNotFound")
    assert parent_conditions(result, "UDPRoute", "dns")["ResolvedRefs"] == ("False", "UnsupportedProtocol")


def test_a_cross_namespace_backend_ref_needs_a_reference_grant():
    shared = service("postgres", [("pg", 5432, "TCP", 5432)], namespace="data")
    shared_slice = endpoint_slice("postgres", [("pg", 5432, "TCP")], [("postgres-0", "198.51.100.40")], namespace="data")
    refused = with_objects(tcp_routes=[route("TCPRoute", "db", [backend_ref("postgres", 5432, namespace="data")], {"sectionName": "db"})],
                           services=[POSTGRES, DNS, shared], endpoint_slices=[POSTGRES_SLICE, DNS_SLICE, shared_slice])
    result = served(refused)
    assert parent_conditions(result, "TCPRoute", "db")["ResolvedRefs"] == ("False", "RefNotPermitted")
    assert lbs_by_name(result)["lab/apps/Gateway/edge/db"]["backends"] == []
    # A grant for another kind, or another Service, does not do.
    for grant in (reference_grant("data", "apps", kind="UDPRoute"), reference_grant("data", "apps", service_name="mysql")):
        result = served(with_objects(**{**refused.__dict__, "reference_grants": [grant]}))
        assert parent_conditions(result, "TCPRoute", "db")["ResolvedRefs"] == ("False", "RefNotPermitted")
    granted = with_objects(**{**refused.__dict__, "reference_grants": [reference_grant("data", "apps", service_name="postgres")]})
    result = served(granted)
    assert parent_conditions(result, "TCPRoute", "db")["ResolvedRefs"] == ("True", "ResolvedRefs")
    assert [b["address"] for b in lbs_by_name(result)["lab/apps/Gateway/edge/db"]["backends"]] == ["198.51.100.40"]


def test_an_http_listener_is_unsupported_on_that_listener_only():
    objects = with_objects(gateways=[gateway(listeners=[listener("db", 5432, "TCP"), listener("web", 80, "HTTP"),
                                                        listener("dns", 53, "UDP")])])
    result = served(objects)
    gw = status_of(result, "Gateway", "edge")
    assert conditions(gw["conditions"]) == {"Accepted": ("True", "ListenersNotValid"), "Programmed": ("True", "Programmed")}
    listeners = {item["name"]: conditions(item["conditions"]) for item in gw["listeners"]}
    assert listeners["web"]["Accepted"] == ("False", "UnsupportedProtocol")
    assert listeners["db"]["Accepted"] == listeners["dns"]["Accepted"] == ("True", "Accepted")
    assert {item["name"]: item["supportedKinds"] for item in gw["listeners"]}["web"] == []
    assert sorted(lbs_by_name(result)) == ["lab/apps/Gateway/edge/db", "lab/apps/Gateway/edge/dns"]
    assert [w.field for w in result.warnings if w.subject == "lab/apps/Gateway/edge"] == ["spec.listeners[1].protocol"]


def test_a_gateway_with_only_unsupported_listeners_is_not_accepted():
    result = served(with_objects(gateways=[gateway(listeners=[listener("web", 80, "HTTP")])]))
    gw = status_of(result, "Gateway", "edge")
    assert conditions(gw["conditions"]) == {"Accepted": ("False", "ListenersNotValid"), "Programmed": ("False", "Invalid")}
    assert gw["addresses"] == [] and result.loadbalancers == []


def test_a_tcp_listener_sharing_its_port_with_an_https_listener_is_conflicted_and_not_served():
    objects = with_objects(gateways=[gateway(listeners=[listener("db", 443, "TCP"), listener("web", 443, "HTTPS"),
                                                        listener("dns", 53, "UDP")])],
                           tcp_routes=[route("TCPRoute", "db", [backend_ref("postgres", 5432)], {"sectionName": "db"})])
    result = served(objects)
    listeners = {item["name"]: conditions(item["conditions"]) for item in status_of(result, "Gateway", "edge")["listeners"]}
    assert listeners["db"]["Conflicted"] == listeners["web"]["Conflicted"] == ("True", "ProtocolConflict")
    assert listeners["dns"]["Conflicted"] == ("False", "NoConflicts")
    assert sorted(lbs_by_name(result)) == ["lab/apps/Gateway/edge/dns"]


def test_a_gateway_of_another_class_is_left_alone():
    other_class = gateway_class("someone-else", controller="example.net/gateway-controller")
    objects = with_objects(gateway_classes=[gateway_class(), other_class],
                           gateways=[gateway(), gateway("foreign", class_name="someone-else")],
                           tcp_routes=[route("TCPRoute", "db", [backend_ref("postgres", 5432)], {"sectionName": "db"}),
                                       route("TCPRoute", "theirs", [backend_ref("postgres", 5432)], {"name": "foreign"})])
    result = served(objects)
    touched = {(s.kind, s.name) for s in result.statuses}
    assert ("Gateway", "foreign") not in touched and ("GatewayClass", "someone-else") not in touched
    assert ("TCPRoute", "theirs") not in touched
    assert not any("foreign" in lb["name"] for lb in result.loadbalancers)
    assert not any("foreign" in p.subject or "theirs" in p.subject for p in result.problems + result.warnings)


def test_a_gateway_class_with_parameters_is_not_accepted_and_its_gateways_are_not_served():
    with_parameters = gateway_class()
    with_parameters["spec"]["parametersRef"] = {"group": "example.net", "kind": "Config", "name": "x"}
    result = served(with_objects(gateway_classes=[with_parameters]))
    assert conditions(status_of(result, "GatewayClass", "portico")["conditions"]) == {"Accepted": ("False", "InvalidParameters")}
    assert result.loadbalancers == [] and {s.kind for s in result.statuses} == {"GatewayClass"}


# --- addresses and contests -----------------------------------------------------------------


def test_a_requested_address_is_used_and_an_unsupported_address_type_is_refused():
    result = served(with_objects(gateways=[gateway(addresses=["203.0.113.9"])]))
    assert {lb["vip"] for lb in result.loadbalancers} == {"203.0.113.9"}
    hostname = gateway()
    hostname["spec"]["addresses"] = [{"type": "Hostname", "value": "edge.example.net"}]
    result = served(with_objects(gateways=[hostname]))
    assert conditions(status_of(result, "Gateway", "edge")["conditions"])["Accepted"] == ("False", "UnsupportedAddress")
    assert result.loadbalancers == []


def test_two_gateways_asking_for_one_address_the_older_gets_it():
    older = gateway("first", addresses=["203.0.113.9"], created=EARLIER)
    newer = gateway("second", addresses=["203.0.113.9"], created=NOW)
    routes = [route("TCPRoute", name, [backend_ref("postgres", 5432)], {"name": name, "sectionName": "db"}) for name in ("first", "second")]
    for gateways in ([older, newer], [newer, older]):  # list order does not matter
        result = served(with_objects(gateways=gateways, tcp_routes=routes, udp_routes=[]))
        assert sorted(lbs_by_name(result)) == ["lab/apps/Gateway/first/db"]
        assert conditions(status_of(result, "Gateway", "second")["conditions"])["Programmed"] == ("False", "AddressNotAssigned")
        assert status_of(result, "Gateway", "second")["addresses"] == []
        assert any(p.subject == "lab/apps/Gateway/second" and p.field == "spec.addresses[0].value" for p in result.problems)


def test_two_routes_on_one_listener_are_both_accepted_and_the_older_gets_the_traffic():
    mysql = service("mysql", [("my", 5432, "TCP", 3306)])
    mysql_slice = endpoint_slice("mysql", [("my", 3306, "TCP")], [("mysql-0", "198.51.100.50")])
    older = route("TCPRoute", "primary", [backend_ref("postgres", 5432)], {"sectionName": "db"}, created=EARLIER)
    newer = route("TCPRoute", "replica", [backend_ref("mysql", 5432)], {"sectionName": "db"}, created=NOW)
    for routes in ([older, newer], [newer, older]):
        result = served(with_objects(tcp_routes=routes, services=[POSTGRES, DNS, mysql],
                                     endpoint_slices=[POSTGRES_SLICE, DNS_SLICE, mysql_slice]))
        assert parent_conditions(result, "TCPRoute", "primary")["Accepted"] == ("True", "Accepted")
        assert parent_conditions(result, "TCPRoute", "replica")["Accepted"] == ("True", "Accepted")
        assert [b["address"] for b in lbs_by_name(result)["lab/apps/Gateway/edge/db"]["backends"]] == ["198.51.100.10"]
        assert {item["name"]: item["attachedRoutes"] for item in status_of(result, "Gateway", "edge")["listeners"]}["db"] == 2
        assert [w.subject for w in result.warnings if "older route" in w.message] == ["lab/apps/TCPRoute/replica"]


def test_a_dual_stack_gateway_gets_one_lb_per_family():
    dual = gateway(addresses=["203.0.113.5", "2001:db8:5::5"])
    result = served(with_objects(gateways=[dual], udp_routes=[]))
    assert sorted(lbs_by_name(result)) == ["lab/apps/Gateway/edge/db", "lab/apps/Gateway/edge/db/ipv6"]
    assert lbs_by_name(result)["lab/apps/Gateway/edge/db/ipv6"]["backends"] == []  # the pods are IPv4 only
    assert [a["value"] for a in status_of(result, "Gateway", "edge")["addresses"]] == ["203.0.113.5", "2001:db8:5::5"]
    model_parses(result)


# --- the steps apart, nodeport mode, versions --------------------------------------------------


def test_gateways_share_allocation_and_its_age_order_with_other_entries():
    asking = gateway(addresses=["203.0.113.1"], created=NOW)
    translation = translate_gateway_api(with_objects(gateways=[asking]), OPTIONS)
    assert [entry["kind"] for entry in translation.entries] == ["Gateway"]
    older_service = {"cluster": "lab", "namespace": "apps", "name": "svc", "uid": "u", "creation_timestamp": EARLIER,
                     "ip_families": [4], "requested_ips": ["203.0.113.1"], "loadbalancers": [{"name": "lab/apps/svc", "ports": []}]}
    allocations = allocate([older_service, *translation.entries], POOLS)
    assert allocations[0].ips == ["203.0.113.1"]
    result = finish(translation, allocations[1:], NOW)
    assert result.loadbalancers == []
    assert conditions(status_of(result, "Gateway", "edge")["conditions"])["Programmed"] == ("False", "AddressNotAssigned")
    # Without the request, the Gateway gets another address of the pool next to the Service.
    translation = translate_gateway_api(BASE, OPTIONS)
    allocations = allocate([older_service, *translation.entries], POOLS)
    vips = {lb["vip"] for lb in finish(translation, allocations[1:], NOW).loadbalancers}
    assert len(vips) == 1 and vips != {"203.0.113.1"}


def test_nodeport_mode_sends_to_the_nodes_on_the_service_node_port():
    node_service = service("postgres", [("pg", 5432, "TCP", 5432)])
    node_service["spec"]["type"] = "NodePort"
    node_service["spec"]["ports"][0]["nodePort"] = 31432
    nodes = [{"apiVersion": "v1", "kind": "Node", "metadata": meta(f"node-{i}", None, generation=None),
              "status": {"conditions": [{"type": "Ready", "status": "True"}],
                         "addresses": [{"type": "InternalIP", "address": f"192.0.2.{10 + i}"}]}} for i in (1, 2)]
    objects = with_objects(services=[node_service, DNS], nodes=nodes)
    result = served(objects, GatewayApiOptions(cluster="lab", backend_mode="nodeport"))
    lbs = lbs_by_name(result)
    assert [(b["address"], b["port"], b["weight"]) for b in lbs["lab/apps/Gateway/edge/db"]["backends"]] == [
        ("192.0.2.11", 31432, 1), ("192.0.2.12", 31432, 1)]
    assert lbs["lab/apps/Gateway/edge/dns"]["backends"] == []  # a ClusterIP Service has no node port
    assert any(w.subject == "lab/apps/UDPRoute/dns" and "nodePort" in w.message for w in result.warnings)
    model_parses(result)


@pytest.mark.parametrize("served_versions, expected", [
    (["v1", "v1alpha2"], "v1"), (["v1"], "v1"), (["v1alpha2"], "v1alpha2"), ([], None)])
def test_routes_are_read_at_v1_where_served_else_v1alpha2(served_versions, expected):
    assert served_route_version(served_versions) == expected


def test_label_selectors_match_as_the_api_defines():
    labels = {"team": "blue", "env": "prod"}
    assert selector_matches({"matchLabels": {"team": "blue"}}, labels)
    assert not selector_matches({"matchLabels": {"team": "red"}}, labels)
    assert selector_matches({"matchExpressions": [{"key": "env", "operator": "In", "values": ["prod", "qa"]},
                                                  {"key": "tier", "operator": "DoesNotExist"}]}, labels)
    assert not selector_matches({"matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["prod"]}]}, labels)
    assert selector_matches({}, labels)
