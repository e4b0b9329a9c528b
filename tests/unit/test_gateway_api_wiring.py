"""The Gateway API's place in the pipeline, piece by piece: its entries in the Services' allocation
(a Gateway's listeners as ``parts`` of its per-family LB, status-only entries for classes and
routes), the status writers (dated against the object as read, written only when different), and
the watcher's keys. The lab's own objects (lab/k8s_stub/fixtures) are the input."""

from __future__ import annotations

import copy
import pathlib
import sys
from typing import Any

REPO = pathlib.Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # for lab.k8s_stub, whatever directory pytest was started from
    sys.path.insert(0, str(REPO))

from ansible_collections.portico.gateway.plugins.module_utils.k8s.gateway_api import (  # noqa: E402
    GatewayApiObjects,
    gateway_api_entries,
)
from ansible_collections.portico.gateway.plugins.module_utils.k8s.gateway_api_status import GATEWAY_API_WRITERS  # noqa: E402
from ansible_collections.portico.gateway.plugins.module_utils.k8s.translate import TranslateOptions  # noqa: E402
from ansible_collections.portico.gateway.plugins.module_utils.k8s.watch import ClusterState  # noqa: E402
from ansible_collections.portico.gateway.plugins.module_utils.k8s.writeback import Desired, WriteContext  # noqa: E402
from ansible_collections.portico.gateway.plugins.module_utils.model.ipam import allocate, parse_pools  # noqa: E402
from ansible_collections.portico.gateway.plugins.module_utils.model.sources import merge  # noqa: E402
from lab.k8s_stub.apiserver import read_manifests  # noqa: E402

OPTIONS = TranslateOptions(cluster="lab")
POOLS = parse_pools({"public": {"addresses": ["198.51.100.0/25"]}})
NOW = "2026-12-05T12:00:00Z"
LATER = "2026-12-05T13:00:00Z"


def lab() -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for path in ("lab/k8s_stub/fixtures/lab", "lab/k8s_stub/fixtures/lab-gateway-api"):
        for index, obj in enumerate(read_manifests(REPO / path)):
            meta = obj["metadata"]
            meta.setdefault("uid", f"uid-{path[-3:]}-{index}")
            meta.setdefault("creationTimestamp", "2026-12-01T00:00:00Z")
            meta.setdefault("generation", 1)
            found.setdefault(obj["kind"], []).append(obj)
    return found


def objects(found: dict[str, list[dict[str, Any]]]) -> GatewayApiObjects:
    return GatewayApiObjects(gateway_classes=found["GatewayClass"], gateways=found["Gateway"], tcp_routes=found["TCPRoute"],
                             udp_routes=found["UDPRoute"], services=found["Service"], endpoint_slices=found["EndpointSlice"],
                             namespaces=found["Namespace"], nodes=found["Node"])


def entries(found: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    return gateway_api_entries(objects(found), OPTIONS).translation.entries


def by_kind(items: list[dict[str, Any]]) -> dict[str, list[str]]:
    kinds: dict[str, list[str]] = {}
    for entry in items:
        kinds.setdefault(entry["kind"], []).append(f"{entry['namespace']}/{entry['name']}")
    return kinds


def test_a_gateway_is_one_allocation_whose_listener_lbs_share_its_address():
    made = entries(lab())
    assert by_kind(made) == {"GatewayClass": ["/portico"], "Gateway": ["default/edge"], "TCPRoute": ["default/echo-canary", "team-a/restricted"],
                             "UDPRoute": ["default/dns"]}
    (allocation,) = [a for a in allocate(made, POOLS) if a.kind == "Gateway"]
    assert len(allocation.ips) == 1 and not allocation.problems
    assert sorted(lb["name"] for lb in allocation.loadbalancers) == [
        "lab/default/Gateway/edge/tcp-echo", "lab/default/Gateway/edge/tcp-team-a", "lab/default/Gateway/edge/udp-dns"]
    assert {lb["vip"] for lb in allocation.loadbalancers} == set(allocation.ips)
    others = [a for a in allocate(made, POOLS) if a.kind != "Gateway"]
    assert all(a.ips == [] and a.loadbalancers == [] and not a.problems for a in others)


def test_the_merged_model_serves_the_listeners_and_says_what_each_object_is_told():
    model = merge([], entries(lab()), POOLS)
    names = {lb.name for lb in model.loadbalancers}
    assert "lab/default/Gateway/edge/udp-dns" in names
    statuses = {status.key: status for status in model.services}
    edge = statuses["lab/default/Gateway/edge"]
    assert edge.served and sorted(edge.loadbalancers) == sorted(n for n in names if n.startswith("lab/default/Gateway/edge/"))
    canary = statuses["lab/default/TCPRoute/echo-canary"]
    assert not canary.served and not canary.problems and canary.details["parents"][0]["accepted"]["status"] == "True"


def test_gateways_of_another_class_make_no_entry_at_all():
    found = lab()
    for gateway in found["Gateway"]:
        gateway["spec"]["gatewayClassName"] = "someone-else"
    assert by_kind(entries(found)) == {"GatewayClass": ["/portico"]}


def test_a_route_that_showed_portico_as_parent_is_taken_back_when_its_gateway_goes():
    found = lab()
    canary = next(r for r in found["TCPRoute"] if r["metadata"]["name"] == "echo-canary")
    canary["status"] = {"parents": [{"parentRef": {"name": "edge", "sectionName": "tcp-echo"}, "controllerName": "portico.io/gateway-controller",
                                     "conditions": []}, {"parentRef": {"name": "mesh"}, "controllerName": "example.com/other"}]}
    found["Gateway"] = []
    (taken_back,) = [e for e in entries(found) if e["name"] == "echo-canary"]
    desired = Desired.from_item({**taken_back, "ips": [], "served": False, "details": taken_back["status_details"]})
    written = GATEWAY_API_WRITERS["TCPRoute"].wanted(desired, canary, WriteContext(now=NOW))
    assert written == {"parents": [{"parentRef": {"name": "mesh"}, "controllerName": "example.com/other"}]}


def desired_of(entry: dict[str, Any], ips: list[str] = (), served: bool = False) -> Desired:
    return Desired.from_item({**entry, "ips": list(ips), "served": served, "details": entry["status_details"]})


def test_a_gateways_status_is_written_once_and_keeps_its_transition_times():
    found = lab()
    (gateway_entry,) = [e for e in entries(found) if e["kind"] == "Gateway"]
    edge = copy.deepcopy(found["Gateway"][0])
    writer = GATEWAY_API_WRITERS["Gateway"]
    first = writer.wanted(desired_of(gateway_entry, ["198.51.100.7"], True), edge, WriteContext(now=NOW))
    assert first["addresses"] == [{"type": "IPAddress", "value": "198.51.100.7"}]
    assert {c["type"]: (c["status"], c["lastTransitionTime"], c["observedGeneration"]) for c in first["conditions"]} == {
        "Accepted": ("True", NOW, 1), "Programmed": ("True", NOW, 1)}
    edge["status"] = first
    assert writer.wanted(desired_of(gateway_entry, ["198.51.100.7"], True), edge, WriteContext(now=LATER)) is None
    # The address lost: Programmed moves (and only it), with the time of the change.
    lost = writer.wanted(desired_of(gateway_entry), edge, WriteContext(now=LATER))
    assert {c["type"]: (c["status"], c["lastTransitionTime"]) for c in lost["conditions"]} == {
        "Accepted": ("True", NOW), "Programmed": ("False", LATER)}
    assert lost["addresses"] is None
    # Changed since the inventory read it: not written for an older generation.
    newer = {**edge, "metadata": {**edge["metadata"], "generation": 2}}
    assert writer.wanted(desired_of(gateway_entry), newer, WriteContext(now=LATER)) is None


def test_the_watcher_keys_gateway_api_changes_for_a_full_run():
    found = lab()
    state = ClusterState(OPTIONS)
    for kind in ("Service", "EndpointSlice", "TCPRoute", "Gateway"):
        state.relist(kind, found.get(kind, []), prime=True)
    canary = copy.deepcopy(next(r for r in found["TCPRoute"] if r["metadata"]["name"] == "echo-canary"))
    canary["spec"]["rules"][0]["backendRefs"][0]["weight"] = 50
    assert [c.key for c in state.event("TCPRoute", "MODIFIED", canary)] == ["lab//TCPRoute/default/echo-canary"]
    status_only = copy.deepcopy(canary)
    status_only["status"] = {"parents": []}
    assert state.event("TCPRoute", "MODIFIED", status_only) == []
