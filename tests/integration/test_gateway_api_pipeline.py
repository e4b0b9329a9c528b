"""The Gateway API through Portico's pipeline: the k8s_services inventory, lb_validate (allocation
with the Services, the LB model), the claim and status plays (a stand-in converge), against the API
stand-in serving the lab fixtures and the Gateway API CRDs. Statuses are read back through the
HTTP API as kubectl reads them (``kubectl get -o yaml``)."""

from __future__ import annotations

import copy
import pathlib
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from conftest import LAB_FIXTURES, REPO
from test_k8s_status_play import Site

from ansible_collections.portico.gateway.plugins.module_utils.model.documents import (
    LB_MODEL_FORMAT,
    decode,
    resolve_backends,
)
from lab.k8s_stub import FakeApiServer

GATEWAY_API = REPO / "lab/k8s_stub/fixtures/gateway-api"
LAB_GATEWAY_API = REPO / "lab/k8s_stub/fixtures/lab-gateway-api"
GROUP = "gateway.networking.k8s.io"
CONTROLLER = "portico.io/gateway-controller"
FINALIZER = "portico.io/gateway-cleanup"
# Pod IPs of the lab's EndpointSlices: echo on every node (.10), echo-local on node1 and node2 (.11).
ECHO = {"198.19.1.10", "198.19.2.10", "198.19.3.10"}
ECHO_LOCAL = {"198.19.1.11", "198.19.2.11"}
LATER = "2099-01-01T00:00:00Z"


class GatewaySite(Site):
    """The status plays' site, whose stand-in converge also keeps the LB model it was given."""

    def __init__(self, tmp: pathlib.Path, api: FakeApiServer):
        super().__init__(tmp, api)
        self.model_file = tmp / "lb_model.json"
        flow = yaml.safe_load(self.flow.read_text())
        flow[2]["tasks"].append({"ansible.builtin.copy": {"content": "{{ portico_lb_model }}", "dest": str(self.model_file), "mode": "0600"},
                                 "delegate_to": "localhost", "run_once": True})
        self.flow.write_text(yaml.safe_dump(flow))
        self.kubeconfig = tmp / "kubeconfig"

    def model(self) -> dict[str, dict[str, Any]]:
        """The LBs of the last converge by name, backend set references resolved."""
        document = decode(self.model_file.read_text(), LB_MODEL_FORMAT, "portico_lb_model")
        lbs = {}
        for lb in document["loadbalancers"]:
            lbs[lb["name"]] = {**lb, "backends": resolve_backends(lb.get("backends"), document["backend_sets"])}
        return lbs

    def get_yaml(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any]:
        """The object as ``kubectl get -o yaml`` shows it (through the stand-in's HTTP API)."""
        args = ["kubectl", "--kubeconfig", str(self.kubeconfig), "get", kind, name, "-o", "yaml"]
        if namespace:
            args += ["-n", namespace]
        return yaml.safe_load(subprocess.run(args, capture_output=True, text=True, check=True).stdout)

    def apply(self, obj: dict[str, Any]) -> None:
        self.api.apply(copy.deepcopy(obj))


@pytest.fixture
def site(tmp_path: pathlib.Path) -> Iterator[GatewaySite]:
    with FakeApiServer(fixtures=[LAB_FIXTURES, LAB_GATEWAY_API]) as api:
        yield GatewaySite(tmp_path, api)


def conditions(obj: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in obj.get("conditions") or []}


def parents(route: dict[str, Any]) -> list[dict[str, Any]]:
    return [item for item in (route.get("status") or {}).get("parents") or [] if item["controllerName"] == CONTROLLER]


def route(kind: str, namespace: str, name: str, section: str, refs: list[dict[str, Any]], gateway_namespace: str = "",
          gateway: str = "edge", created: str = LATER) -> dict[str, Any]:
    """A route created after the lab's (the oldest route attached to a listener holds it)."""
    parent = {"name": gateway, "sectionName": section, **({"namespace": gateway_namespace} if gateway_namespace else {})}
    return {"apiVersion": f"{GROUP}/v1", "kind": kind, "metadata": {"name": name, "namespace": namespace, "creationTimestamp": created},
            "spec": {"parentRefs": [parent], "rules": [{"backendRefs": refs}]}}


def gateway_lbs(model: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {name: lb for name, lb in model.items() if lb.get("source") == "gateway-api"}


def test_routes_become_lbs_on_the_gateways_address_with_weights_and_statuses(site: GatewaySite):
    output = site.sync()
    assert "1 Gateways to serve, 3 routes attached" in output, output[-3000:]
    edge = site.get_yaml("gateway", "edge", "default")
    assert FINALIZER in edge["metadata"]["finalizers"]
    (address,) = [item["value"] for item in edge["status"]["addresses"]]
    assert address.startswith("198.51.100.")
    assert conditions(edge["status"]) == {"Accepted": ("True", "Accepted"), "Programmed": ("True", "Programmed")}
    listeners = {item["name"]: item for item in edge["status"]["listeners"]}
    assert {name: item["attachedRoutes"] for name, item in listeners.items()} == {"tcp-echo": 1, "tcp-team-a": 1, "udp-dns": 1}
    assert all(c["observedGeneration"] == edge["metadata"]["generation"] for item in listeners.values() for c in item["conditions"])
    assert conditions(site.get_yaml("gatewayclass", "portico")["status"])["Accepted"] == ("True", "Accepted")

    lbs = gateway_lbs(site.model())
    canary = lbs["lab/default/Gateway/edge/tcp-echo"]
    assert canary["vip"] == address and [(p["protocol"], p["port"]) for p in canary["ports"]] == [("tcp", 9000)]
    weights = {b["address"]: b["weight"] for b in canary["backends"]}
    # 90 over three pods and 10 over two: 30 and 5 each, as whole Maglev weights 6 and 1.
    assert weights == {**dict.fromkeys(ECHO, 6), **dict.fromkeys(ECHO_LOCAL, 1)}
    assert sum(w for a, w in weights.items() if a in ECHO) * 10 == sum(weights.values()) * 9
    dns = lbs["lab/default/Gateway/edge/udp-dns"]
    assert dns["vip"] == address and [(p["protocol"], p["port"]) for p in dns["ports"]] == [("udp", 9053)]
    assert {b["address"] for b in dns["backends"]} == ECHO and {b["port"] for b in dns["backends"]} == {5353}
    team_a = lbs["lab/default/Gateway/edge/tcp-team-a"]
    assert {b["address"] for b in team_a["backends"]} == {"198.19.1.12", "198.19.2.12", "198.19.3.12"}

    for kind, namespace, name in (("tcproute", "default", "echo-canary"), ("udproute", "default", "dns"), ("tcproute", "team-a", "restricted")):
        obj = site.get_yaml(kind, name, namespace)
        (parent,) = parents(obj)
        assert conditions(parent) == {"Accepted": ("True", "Accepted"), "ResolvedRefs": ("True", "ResolvedRefs")}, (name, parent)
        assert {c["observedGeneration"] for c in parent["conditions"]} == {obj["metadata"]["generation"]}


def test_a_second_sync_writes_nothing_and_keeps_transition_times(site: GatewaySite):
    site.sync()
    before = {(kind, ns, name): site.api.get(kind, ns, name) for kind, ns, name in
              (("Gateway", "default", "edge"), ("TCPRoute", "default", "echo-canary"), ("GatewayClass", None, "portico"))}
    site.sync()
    for (kind, ns, name), old in before.items():
        new = site.api.get(kind, ns, name)
        assert new["metadata"]["resourceVersion"] == old["metadata"]["resourceVersion"], (kind, name)
        assert new["status"] == old["status"]


def test_refused_routes_get_the_standard_reasons_and_no_lb(site: GatewaySite):
    # team-b is not allowed on tcp-echo; a missing Service; another namespace's Service without a grant.
    site.apply(route("TCPRoute", "team-b", "intruder", "tcp-echo", [{"name": "echo", "port": 80}], gateway_namespace="default"))
    site.apply(route("TCPRoute", "team-a", "ghost", "tcp-team-a", [{"name": "nope", "port": 80}], gateway_namespace="default"))
    site.apply(route("TCPRoute", "team-a", "borrow", "tcp-team-a", [{"name": "echo", "namespace": "default", "port": 80}],
                     gateway_namespace="default"))
    site.sync()
    intruder = parents(site.get_yaml("tcproute", "intruder", "team-b"))
    assert [conditions(p)["Accepted"] for p in intruder] == [("False", "NotAllowedByListeners")]
    ghost = parents(site.get_yaml("tcproute", "ghost", "team-a"))
    assert [conditions(p)["ResolvedRefs"] for p in ghost] == [("False", "BackendNotFound")]
    borrow = parents(site.get_yaml("tcproute", "borrow", "team-a"))
    assert [conditions(p)["ResolvedRefs"] for p in borrow] == [("False", "RefNotPermitted")]
    # The older route (restricted) holds tcp-team-a: the refused ones changed nothing there.
    team_a = gateway_lbs(site.model())["lab/default/Gateway/edge/tcp-team-a"]
    assert {b["address"] for b in team_a["backends"]} == {"198.19.1.12", "198.19.2.12", "198.19.3.12"}
    canary = gateway_lbs(site.model())["lab/default/Gateway/edge/tcp-echo"]
    assert {b["address"] for b in canary["backends"]} == ECHO | ECHO_LOCAL


def test_a_reference_grant_lets_a_route_use_another_namespaces_service(site: GatewaySite):
    site.api.delete("TCPRoute", "team-a", "restricted")
    site.apply(route("TCPRoute", "team-a", "borrow", "tcp-team-a", [{"name": "echo-local", "namespace": "default", "port": 80}],
                     gateway_namespace="default"))
    site.sync()
    assert [conditions(p)["ResolvedRefs"] for p in parents(site.get_yaml("tcproute", "borrow", "team-a"))] == [("False", "RefNotPermitted")]
    # The route holds the listener, which refuses connections: no backend it may use.
    assert gateway_lbs(site.model())["lab/default/Gateway/edge/tcp-team-a"]["backends"] == []
    site.apply({"apiVersion": f"{GROUP}/v1", "kind": "ReferenceGrant", "metadata": {"name": "team-a-routes", "namespace": "default"},
                "spec": {"from": [{"group": GROUP, "kind": "TCPRoute", "namespace": "team-a"}],
                         "to": [{"group": "", "kind": "Service", "name": "echo-local"}]}})
    site.sync()
    borrow = parents(site.get_yaml("tcproute", "borrow", "team-a"))
    assert [conditions(p)["ResolvedRefs"] for p in borrow] == [("True", "ResolvedRefs")]
    team_a = gateway_lbs(site.model())["lab/default/Gateway/edge/tcp-team-a"]
    assert {b["address"] for b in team_a["backends"]} == ECHO_LOCAL


def test_deleting_the_gateway_withdraws_its_lbs_then_releases_it(site: GatewaySite):
    site.sync()
    assert gateway_lbs(site.model())
    site.api.delete("Gateway", "default", "edge")
    held = site.api.get("Gateway", "default", "edge")
    assert held is not None and held["metadata"].get("deletionTimestamp")  # held by Portico's finalizer
    site.sync()
    assert gateway_lbs(site.model()) == {}
    assert site.api.get("Gateway", "default", "edge") is None  # released after the converge reached every gateway
    # Its routes no longer show a parent of Portico's.
    assert parents(site.get_yaml("tcproute", "echo-canary", "default")) == []


def test_gateways_of_other_classes_get_no_write(site: GatewaySite):
    site.apply({"apiVersion": f"{GROUP}/v1", "kind": "GatewayClass", "metadata": {"name": "other"},
                "spec": {"controllerName": "example.com/other-controller"}})
    site.apply({"apiVersion": f"{GROUP}/v1", "kind": "Gateway", "metadata": {"name": "theirs", "namespace": "default"},
                "spec": {"gatewayClassName": "other", "listeners": [{"name": "tcp", "protocol": "TCP", "port": 9100}]}})
    site.apply(route("TCPRoute", "default", "theirs-route", "tcp", [{"name": "echo", "port": 80}], gateway="theirs"))
    before = {(kind, name): site.api.get(kind, ns, name)["metadata"]["resourceVersion"]
              for kind, ns, name in (("GatewayClass", None, "other"), ("Gateway", "default", "theirs"), ("TCPRoute", "default", "theirs-route"))}
    site.sync()
    for (kind, name), version in before.items():
        ns = None if kind == "GatewayClass" else "default"
        obj = site.api.get(kind, ns, name)
        assert obj["metadata"]["resourceVersion"] == version, (kind, name)
        assert FINALIZER not in (obj["metadata"].get("finalizers") or [])
    assert all(not lb["name"].startswith("lab/default/Gateway/theirs") for lb in site.model().values())


def test_gateways_and_services_contest_addresses_by_creation_order(site: GatewaySite):
    """A Gateway asking for an address a Service holds does not get it; the older one wins."""
    site.sync()
    echo = site.service("echo")
    taken = echo["status"]["loadBalancer"]["ingress"][0]["ip"]
    site.apply({"apiVersion": f"{GROUP}/v1", "kind": "Gateway", "metadata": {"name": "late", "namespace": "default"},
                "spec": {"gatewayClassName": "portico", "addresses": [{"type": "IPAddress", "value": taken}],
                         "listeners": [{"name": "tcp", "protocol": "TCP", "port": 80}]}})
    site.sync()
    late = site.get_yaml("gateway", "late", "default")
    assert conditions(late["status"])["Programmed"] == ("False", "AddressNotAssigned")
    assert not late["status"].get("addresses")
    assert site.service("echo")["status"]["loadBalancer"]["ingress"][0]["ip"] == taken


def test_a_cluster_without_the_gateway_api_is_served_as_before(tmp_path: pathlib.Path):
    with FakeApiServer(fixtures=LAB_FIXTURES) as api:
        plain = Site(tmp_path, api)
        output = plain.sync()
        assert "no gatewayclasses.gateway.networking.k8s.io in the API" in output, output[-3000:]
        assert plain.service("echo")["status"]["loadBalancer"]["ingress"]


def test_v1alpha2_only_routes_are_read_and_written_at_v1alpha2(tmp_path: pathlib.Path):
    """A cluster whose Gateway API release serves the routes at v1alpha2 only."""
    crds = []
    for path in sorted(GATEWAY_API.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc["spec"]["names"]["kind"] in ("TCPRoute", "UDPRoute"):
                doc["spec"]["versions"] = [{**v, "storage": True} for v in doc["spec"]["versions"] if v["name"] == "v1alpha2"]
            if doc:
                crds.append(doc)
    manifest = tmp_path / "crds.yaml"
    manifest.write_text(yaml.safe_dump_all(crds))
    lab_objects = [doc for doc in yaml.safe_load_all((LAB_GATEWAY_API / "50-lab-gateway.yaml").read_text()) if doc]
    for doc in lab_objects:
        if doc["kind"] in ("TCPRoute", "UDPRoute"):
            doc["apiVersion"] = f"{GROUP}/v1alpha2"
    objects = tmp_path / "objects.yaml"
    objects.write_text(yaml.safe_dump_all(lab_objects))
    with FakeApiServer(fixtures=[LAB_FIXTURES, manifest, objects]) as api:
        alpha = GatewaySite(tmp_path, api)
        alpha.sync()
        canary = alpha.get_yaml("tcproutes.v1alpha2.gateway.networking.k8s.io", "echo-canary", "default")
        assert canary["apiVersion"] == f"{GROUP}/v1alpha2"
        assert [conditions(p)["Accepted"] for p in parents(canary)] == [("True", "Accepted")]
        assert "lab/default/Gateway/edge/tcp-echo" in gateway_lbs(alpha.model())
