"""The Gateway API CRDs written for the API stand-in (lab/k8s_stub/fixtures/gateway-api): served
through the official client at the versions the Gateway API release serves, with its defaults,
refusing with 422 what its schema and rules refuse, and taking the status documents Portico's
translation writes."""

from __future__ import annotations

import copy
import json
import pathlib
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client, config

REPO = pathlib.Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # for lab.k8s_stub, whatever directory pytest was started from
    sys.path.insert(0, str(REPO))

from ansible_collections.portico.gateway.plugins.module_utils.k8s.gateway_api import (  # noqa: E402
    CONTROLLER_NAME,
    GatewayApiObjects,
    GatewayApiOptions,
    serve_gateway_api,
)
from ansible_collections.portico.gateway.plugins.module_utils.model.ipam import parse_pools  # noqa: E402
from lab.k8s_stub import FakeApiServer  # noqa: E402
from lab.k8s_stub.testing import request  # noqa: E402

LAB = REPO / "lab/k8s_stub/fixtures/lab"
GATEWAY_API = REPO / "lab/k8s_stub/fixtures/gateway-api"
GROUP = "gateway.networking.k8s.io"
MERGE = "application/merge-patch+json"
PLURALS = {"GatewayClass": "gatewayclasses", "Gateway": "gateways", "TCPRoute": "tcproutes", "UDPRoute": "udproutes",
           "ReferenceGrant": "referencegrants"}


@pytest.fixture(scope="module")
def server() -> Iterator[FakeApiServer]:
    with FakeApiServer(fixtures=[LAB, GATEWAY_API]) as api:
        yield api


@pytest.fixture(scope="module")
def custom(server: FakeApiServer, tmp_path_factory: pytest.TempPathFactory) -> client.CustomObjectsApi:
    kubeconfig = server.write_kubeconfig(tmp_path_factory.mktemp("kube") / "kubeconfig")
    return client.CustomObjectsApi(config.new_client_from_config(str(kubeconfig)))


_NAMES = iter(range(1, 100_000))


def unique(prefix: str) -> str:
    return f"{prefix}-{next(_NAMES)}"


def gateway_class(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/v1", "kind": "GatewayClass", "metadata": {"name": name},
            "spec": {"controllerName": CONTROLLER_NAME, **spec}}


def gateway(name: str, listeners: list[dict[str, Any]] | None = None, **spec: Any) -> dict[str, Any]:
    if listeners is None:
        listeners = [{"name": "db", "port": 5432, "protocol": "TCP"}]
    return {"apiVersion": f"{GROUP}/v1", "kind": "Gateway", "metadata": {"name": name},
            "spec": {"gatewayClassName": "portico", "listeners": listeners, **spec}}


def tcp_route(name: str, version: str = "v1", kind: str = "TCPRoute", rules: list[dict[str, Any]] | None = None,
              **spec: Any) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{version}", "kind": kind, "metadata": {"name": name},
            "spec": {"parentRefs": [{"name": "edge", "sectionName": "db"}],
                     "rules": rules or [{"backendRefs": [{"name": "postgres", "port": 5432}]}], **spec}}


def reference_grant(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/v1", "kind": "ReferenceGrant", "metadata": {"name": name},
            "spec": {"from": [{"group": GROUP, "kind": "TCPRoute", "namespace": "team-a"}], "to": [{"group": "", "kind": "Service"}],
                     **spec}}


def create(custom: client.CustomObjectsApi, body: dict[str, Any], namespace: str = "default") -> dict[str, Any]:
    group, version = body["apiVersion"].split("/")
    plural = PLURALS[body["kind"]]
    if body["kind"] == "GatewayClass":
        return custom.create_cluster_custom_object(group, version, plural, body)
    return custom.create_namespaced_custom_object(group, version, namespace, plural, body)


def refusal(custom: client.CustomObjectsApi, body: dict[str, Any]) -> dict[str, Any]:
    with pytest.raises(client.ApiException) as err:
        create(custom, body)
    return {"code": err.value.status, **json.loads(err.value.body)}


# --- served as the release serves them --------------------------------------------------------


def test_the_group_serves_the_five_kinds_at_their_versions(server):
    group = request(f"{server.url}/apis/{GROUP}").body
    assert [v["version"] for v in group["versions"]] == ["v1", "v1alpha2"] and group["preferredVersion"]["version"] == "v1"
    v1 = {r["name"]: r for r in request(f"{server.url}/apis/{GROUP}/v1").body["resources"]}
    assert set(v1) == {"gatewayclasses", "gatewayclasses/status", "gateways", "gateways/status", "tcproutes", "tcproutes/status",
                       "udproutes", "udproutes/status", "referencegrants"}
    assert (v1["gatewayclasses"]["namespaced"], v1["gateways"]["namespaced"], v1["gateways"]["shortNames"]) == (False, True, ["gtw"])
    v1alpha2 = {r["name"] for r in request(f"{server.url}/apis/{GROUP}/v1alpha2").body["resources"]}
    assert v1alpha2 == {"tcproutes", "tcproutes/status", "udproutes", "udproutes/status"}


def test_objects_get_the_release_defaults(custom):
    created = create(custom, gateway_class(unique("class")))
    assert [(c["type"], c["status"], c["reason"]) for c in created["status"]["conditions"]] == [("Accepted", "Unknown", "Pending")]
    gw = create(custom, gateway(unique("gw")))
    assert gw["spec"]["listeners"][0]["allowedRoutes"] == {"namespaces": {"from": "Same"}}
    assert [(c["type"], c["reason"]) for c in gw["status"]["conditions"]] == [("Accepted", "Pending"), ("Programmed", "Pending")]
    route = create(custom, tcp_route(unique("route")))
    assert route["spec"]["parentRefs"][0] == {"group": GROUP, "kind": "Gateway", "name": "edge", "sectionName": "db"}
    assert route["spec"]["rules"][0]["backendRefs"][0] == {"group": "", "kind": "Service", "name": "postgres", "port": 5432, "weight": 1}
    assert create(custom, reference_grant(unique("grant")))["spec"]["to"] == [{"group": "", "kind": "Service"}]


def test_routes_are_served_at_v1_and_the_deprecated_v1alpha2(server, custom):
    name = unique("route")
    create(custom, tcp_route(name, version="v1alpha2", kind="UDPRoute"))
    old = request(f"{server.url}/apis/{GROUP}/v1alpha2/namespaces/default/udproutes/{name}")
    assert old.status == 200 and old.body["apiVersion"] == f"{GROUP}/v1alpha2"
    assert any("v1alpha2 version of UDPRoute has been deprecated" in w for w in old.warnings)
    new = request(f"{server.url}/apis/{GROUP}/v1/namespaces/default/udproutes/{name}")
    assert new.body["apiVersion"] == f"{GROUP}/v1" and new.warnings == []
    # v1alpha2 allowed several rules; v1 allows one.
    two_rules = [{"backendRefs": [{"name": "a", "port": 1}]}, {"backendRefs": [{"name": "b", "port": 2}]}]
    create(custom, tcp_route(unique("route"), version="v1alpha2", rules=two_rules))
    refused = refusal(custom, tcp_route(unique("route"), rules=two_rules))
    assert refused["code"] == 422 and refused["details"]["causes"][0]["field"] == "spec.rules"


# --- refusals ---------------------------------------------------------------------------------------


def many_listeners(count: int) -> list[dict[str, Any]]:
    return [{"name": f"l{i}", "port": 1000 + i, "protocol": "TCP"} for i in range(count)]


REFUSED = [
    ("port out of range", gateway("g", [{"name": "db", "port": 70000, "protocol": "TCP"}]), "spec.listeners[0].port"),
    ("no listeners", gateway("g", []), "spec.listeners"),
    ("65 listeners", gateway("g", many_listeners(65)), "spec.listeners"),
    ("protocol not a name", gateway("g", [{"name": "db", "port": 1, "protocol": "tcp over udp"}]), "spec.listeners[0].protocol"),
    ("unknown from", gateway("g", [{"name": "db", "port": 1, "protocol": "TCP", "allowedRoutes": {"namespaces": {"from": "Everyone"}}}]),
     "spec.listeners[0].allowedRoutes.namespaces.from"),
    ("hostname on TCP", gateway("g", [{"name": "db", "port": 1, "protocol": "TCP", "hostname": "db.example.net"}]), "spec.listeners"),
    ("tls on UDP", gateway("g", [{"name": "dns", "port": 53, "protocol": "UDP", "tls": {"mode": "Passthrough"}}]), "spec.listeners"),
    ("same port and protocol twice", gateway("g", [{"name": "a", "port": 1, "protocol": "TCP"}, {"name": "b", "port": 1, "protocol": "TCP"}]),
     "spec.listeners"),
    ("17 addresses", gateway("g", addresses=[{"value": f"203.0.113.{i}"} for i in range(17)]), "spec.addresses"),
    ("no class", {**gateway("g"), "spec": {"listeners": many_listeners(1)}}, "spec.gatewayClassName"),
    ("bad controller name", gateway_class("c", controllerName="portico"), "spec.controllerName"),
    ("long description", gateway_class("c", description="x" * 65), "spec.description"),
    ("weight too high", tcp_route("r", rules=[{"backendRefs": [{"name": "a", "port": 1, "weight": 1_000_001}]}]),
     "spec.rules[0].backendRefs[0].weight"),
    ("Service without port", tcp_route("r", rules=[{"backendRefs": [{"name": "a"}]}]), "spec.rules[0].backendRefs[0]"),
    ("no backendRefs", tcp_route("r", rules=[{"backendRefs": []}]), "spec.rules[0].backendRefs"),
    ("17 backendRefs", tcp_route("r", rules=[{"backendRefs": [{"name": f"s{i}", "port": 1} for i in range(17)]}]),
     "spec.rules[0].backendRefs"),
    ("33 parentRefs", tcp_route("r", parentRefs=[{"name": f"g{i}"} for i in range(33)]), "spec.parentRefs"),
    ("parent port 0", tcp_route("r", parentRefs=[{"name": "g", "port": 0}]), "spec.parentRefs[0].port"),
    ("no rules", {**tcp_route("r"), "spec": {"parentRefs": [{"name": "g"}]}}, "spec.rules"),
    ("grant from nobody", reference_grant("x", **{"from": []}), "spec.from"),
    ("grant to without kind", reference_grant("x", to=[{"group": ""}]), "spec.to[0].kind"),
]


@pytest.mark.parametrize("body, field", [(body, field) for _case, body, field in REFUSED], ids=[case for case, _body, _field in REFUSED])
def test_invalid_objects_are_refused_with_422_naming_the_field(custom, body, field):
    body = copy.deepcopy(body)
    body["metadata"]["name"] = unique(body["metadata"]["name"])
    refused = refusal(custom, body)
    assert refused["code"] == 422 and refused["reason"] == "Invalid", refused
    assert field in [cause["field"] for cause in refused["details"]["causes"]], refused


def test_a_gateway_class_controller_name_cannot_change(server, custom):
    name = unique("class")
    create(custom, gateway_class(name))
    reply = request(f"{server.url}/apis/{GROUP}/v1/gatewayclasses/{name}", "PATCH",
                    {"spec": {"controllerName": "example.net/other"}}, content_type=MERGE)
    assert reply.status == 422 and "Value is immutable" in reply.body["message"]


def test_status_is_a_subresource_with_its_own_schema(server, custom):
    name = unique("gw")
    create(custom, gateway(name))
    url = f"{server.url}/apis/{GROUP}/v1/namespaces/default/gateways/{name}"
    condition = {"type": "Accepted", "status": "Maybe", "reason": "Accepted", "message": "", "lastTransitionTime": "2026-12-05T12:00:00Z"}
    reply = request(f"{url}/status", "PATCH", {"status": {"conditions": [condition]}}, content_type=MERGE)
    assert reply.status == 422 and reply.body["details"]["causes"][0]["field"] == "status.conditions[0].status"
    listener = {"name": "db", "attachedRoutes": 1}  # conditions are required
    reply = request(f"{url}/status", "PATCH", {"status": {"listeners": [listener]}}, content_type=MERGE)
    assert reply.status == 422 and reply.body["details"]["causes"][0]["field"] == "status.listeners[0].conditions"
    request(url, "PATCH", {"status": {"addresses": [{"value": "203.0.113.1"}]}}, content_type=MERGE)
    assert "addresses" not in request(url).body["status"]  # the main resource ignores status


# --- Portico's status documents fit the schema ---------------------------------------------------


def test_the_status_portico_computes_is_accepted_by_the_api(server, custom):
    namespace = "team-a"
    create(custom, gateway_class("portico"))
    create(custom, gateway("edge", [{"name": "db", "port": 5432, "protocol": "TCP"}, {"name": "web", "port": 80, "protocol": "HTTP"}]),
           namespace)
    create(custom, tcp_route("db"), namespace)
    create(custom, tcp_route("missing", rules=[{"backendRefs": [{"name": "nope", "port": 5432}]}]), namespace)
    server.apply({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "postgres", "namespace": namespace},
                  "spec": {"type": "ClusterIP", "ports": [{"name": "pg", "port": 5432, "protocol": "TCP", "targetPort": 5432}],
                           "selector": {"app": "postgres"}}})
    server.apply({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
                  "metadata": {"name": "postgres-x1", "namespace": namespace, "labels": {"kubernetes.io/service-name": "postgres"}},
                  "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}],
                  "endpoints": [{"addresses": ["198.51.100.10"], "conditions": {"ready": True}}]})

    def items(path: str) -> list[dict[str, Any]]:
        return request(f"{server.url}{path}").body["items"]

    objects = GatewayApiObjects(
        gateway_classes=items(f"/apis/{GROUP}/v1/gatewayclasses"), gateways=items(f"/apis/{GROUP}/v1/namespaces/{namespace}/gateways"),
        tcp_routes=items(f"/apis/{GROUP}/v1/namespaces/{namespace}/tcproutes"), services=items(f"/api/v1/namespaces/{namespace}/services"),
        endpoint_slices=items(f"/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices"), namespaces=items("/api/v1/namespaces"))
    result = serve_gateway_api(objects, GatewayApiOptions(cluster="lab"), parse_pools({"p": {"addresses": ["203.0.113.0/28"]}}))
    assert [lb["name"] for lb in result.loadbalancers] == ["lab/team-a/Gateway/edge/db"]
    written = 0
    for update in result.statuses:
        plural = PLURALS[update.kind]
        path = f"/apis/{update.api_version}/{plural}/{update.name}" if update.kind == "GatewayClass" else \
            f"/apis/{update.api_version}/namespaces/{update.namespace}/{plural}/{update.name}"
        reply = request(f"{server.url}{path}/status", "PATCH", {"status": update.status}, content_type=MERGE)
        assert reply.status == 200, (update.kind, update.name, reply.body)
        written += 1
    assert written == len(result.statuses) >= 4
    edge = request(f"{server.url}/apis/{GROUP}/v1/namespaces/{namespace}/gateways/edge").body
    assert edge["status"]["addresses"] == [{"type": "IPAddress", "value": result.loadbalancers[0]["vip"]}]
    assert {item["name"]: item["attachedRoutes"] for item in edge["status"]["listeners"]} == {"db": 2, "web": 0}
    missing = request(f"{server.url}/apis/{GROUP}/v1/namespaces/{namespace}/tcproutes/missing").body
    assert {c["type"]: c["reason"] for c in missing["status"]["parents"][0]["conditions"]} == {
        "Accepted": "Accepted", "ResolvedRefs": "BackendNotFound"}
