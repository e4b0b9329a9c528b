"""The Gateway API in the lab: kubectl -> sync (or the watcher) -> gateway -> traffic -> status.

The stand-in serves the Gateway API CRDs and the lab's objects (lab/k8s_stub/fixtures/
lab-gateway-api: the GatewayClass `portico`, the Gateway `edge` with a TCP and a UDP listener,
routes of default and team-a). This module adds a Gateway of its own, `proof`, whose listeners
it fills with routes to two Services of its own (one pod each, on node1 and node3, so the lab
client's probe tells them apart by the node that answers). Statuses are read with
`kubectl get -o yaml`. Each change takes one sync (the fast path the watcher runs); the apply to
traffic time is measured with bin/portico-watch itself.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from lab_helpers import REPO, client, kubectl, probe, sync, vip_in_gateway_table

sys.path.insert(0, str(REPO / "lab"))
import labtools

GROUP = "gateway.networking.k8s.io"
CONTROLLER = "portico.io/gateway-controller"
FINALIZER = "portico.io/gateway-cleanup"
NAMESPACE = "default"
GATEWAY = "proof"
# Ports of proof's listeners (none used by the lab's LBs).
SPLIT, NOT_ALLOWED, MISSING, CROSS, LATENCY, LATENCY_B = 9100, 9101, 9102, 9103, 9104, 9105
# Each Service has one pod; the node's echo answers for every address of its pod CIDR.
BACKENDS = {"gw-blue": ("node1", "198.19.1.60"), "gw-green": ("node3", "198.19.3.60")}
CONNECTIONS = 1000
HELD = 100
HOLD_S = 30  # longer than a sync of the lab
LATENCY_SAMPLES = 10


def apply(obj: dict[str, Any]) -> None:
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as handle:
        yaml.safe_dump(obj, handle)
    try:
        kubectl("apply", "-f", handle.name)
    finally:
        os.unlink(handle.name)


def delete(kind: str, name: str, namespace: str = NAMESPACE) -> None:
    kubectl("delete", kind, name, "-n", namespace, "--ignore-not-found", "--wait=false")


def get_yaml(kind: str, name: str, namespace: str = NAMESPACE) -> dict[str, Any] | None:
    """The object as `kubectl get -o yaml` shows it (namespace "": a cluster-scoped one); None when it is gone."""
    shown = kubectl("get", kind, name, *(("-n", namespace) if namespace else ()), "-o", "yaml", check=False)
    return yaml.safe_load(shown.stdout) if shown.returncode == 0 else None


def conditions(item: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in item.get("conditions") or []}


def portico_parents(kind: str, name: str, namespace: str = NAMESPACE) -> list[dict[str, tuple[str, str]]]:
    route = get_yaml(kind, name, namespace) or {}
    return [conditions(item) for item in (route.get("status") or {}).get("parents") or [] if item.get("controllerName") == CONTROLLER]


def address_of(name: str) -> str:
    gateway = get_yaml("gateway", name) or {}
    addresses = [item["value"] for item in (gateway.get("status") or {}).get("addresses") or []]
    assert len(addresses) == 1, gateway.get("status")
    return addresses[0]


def service(name: str) -> list[dict[str, Any]]:
    node, pod = BACKENDS[name]
    return [
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": NAMESPACE},
         "spec": {"selector": {"app": name}, "ports": [{"name": "web", "protocol": "TCP", "port": 80, "targetPort": 8080}]}},
        {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
         "metadata": {"name": f"{name}-abcde", "namespace": NAMESPACE, "labels": {"kubernetes.io/service-name": name}},
         "addressType": "IPv4", "endpoints": [{"addresses": [pod], "conditions": {"ready": True}, "nodeName": node}],
         "ports": [{"name": "web", "port": 8080, "protocol": "TCP"}]},
    ]


def listener(name: str, port: int, allowed: str = "Same") -> dict[str, Any]:
    return {"name": name, "protocol": "TCP", "port": port, "allowedRoutes": {"namespaces": {"from": allowed}}}


def tcp_route(name: str, section: str, refs: list[dict[str, Any]], namespace: str = NAMESPACE) -> dict[str, Any]:
    parent = {"name": GATEWAY, "namespace": NAMESPACE, "sectionName": section}
    return {"apiVersion": f"{GROUP}/v1", "kind": "TCPRoute", "metadata": {"name": name, "namespace": namespace},
            "spec": {"parentRefs": [parent], "rules": [{"backendRefs": refs}]}}


def split_route(blue: int, green: int) -> dict[str, Any]:
    return tcp_route("split", "split", [{"name": "gw-blue", "port": 80, "weight": blue}, {"name": "gw-green", "port": 80, "weight": green}])


def share(result: dict[str, Any], node: str) -> float:
    return result["backends"].get(node, 0) / max(1, result["ok"])


@pytest.fixture(scope="module")
def proof() -> Iterator[str]:
    """Proof's Gateway, Services and the 90/10 route, served by one sync; removed at the end."""
    served = kubectl("get", "gatewayclass", "portico", "-o", "yaml", check=False)
    assert served.returncode == 0, ("the API stand-in does not serve the Gateway API: restart it with lab/lab.sh so that it loads "
                                    "lab/k8s_stub/fixtures/lab-gateway-api\n" + served.stderr)
    for name in BACKENDS:
        for obj in service(name):
            apply(obj)
    apply({"apiVersion": f"{GROUP}/v1", "kind": "Gateway", "metadata": {"name": GATEWAY, "namespace": NAMESPACE},
           "spec": {"gatewayClassName": "portico",
                    "listeners": [listener("split", SPLIT), listener("not-allowed", NOT_ALLOWED), listener("missing", MISSING),
                                  listener("cross", CROSS, "All"), listener("latency", LATENCY),
                                  listener("latency-b", LATENCY_B)]}})
    apply(split_route(90, 10))
    sync()
    yield address_of(GATEWAY)
    for kind, name, namespace in (("tcproute", "split", NAMESPACE), ("tcproute", "intruder", "team-b"), ("tcproute", "ghost", NAMESPACE),
                                  ("tcproute", "borrow", "team-a"), ("tcproute", "latency", NAMESPACE),
                                  ("referencegrant", "team-a-to-blue", NAMESPACE), ("gateway", GATEWAY, NAMESPACE),
                                  ("service", "gw-blue", NAMESPACE), ("service", "gw-green", NAMESPACE),
                                  ("endpointslice", "gw-blue-abcde", NAMESPACE), ("endpointslice", "gw-green-abcde", NAMESPACE)):
        delete(kind, name, namespace)
    sync()


def test_the_labs_tcp_and_udp_routes_answer_through_the_gateway_address(proof):
    edge = get_yaml("gateway", "edge")
    assert conditions(edge["status"]) == {"Accepted": ("True", "Accepted"), "Programmed": ("True", "Programmed")}, edge["status"]
    assert {item["name"]: item["attachedRoutes"] for item in edge["status"]["listeners"]} == {"tcp-echo": 1, "tcp-team-a": 1, "udp-dns": 1}
    address = address_of("edge")
    assert vip_in_gateway_table(address)
    tcp = probe(client, "tcp", address, 9000)
    assert tcp["ok"] == 30 and set(tcp["backends"]) <= {"node1", "node2", "node3"}, tcp
    assert tcp["clients"] == ["203.0.113.10"]  # the source address is preserved, as for a Service
    udp = probe(client, "udp", address, 9053)
    assert udp["ok"] == 30, udp
    team_a = probe(client, "tcp", address, 9001)
    assert team_a["ok"] == 30, team_a
    for kind, name, namespace in (("tcproute", "echo-canary", NAMESPACE), ("udproute", "dns", NAMESPACE), ("tcproute", "restricted", "team-a")):
        assert portico_parents(kind, name, namespace) == [{"Accepted": ("True", "Accepted"), "ResolvedRefs": ("True", "ResolvedRefs")}]
    assert conditions(get_yaml("gatewayclass", "portico", "")["status"])["Accepted"] == ("True", "Accepted")


def test_a_90_10_route_splits_1000_new_connections_within_3_points(proof):
    result = probe(client, "tcp", proof, SPLIT, count=CONNECTIONS)
    assert result["ok"] == CONNECTIONS and set(result["backends"]) == {"node1", "node3"}, result
    blue = share(result, "node1")
    labtools.report("gateway_route_split", weights="90/10", connections=CONNECTIONS, blue=round(blue, 3), green=round(1 - blue, 3))
    assert abs(blue - 0.90) <= 0.03, result


def test_a_route_from_a_namespace_the_listener_does_not_allow_is_refused_and_gets_no_traffic(proof):
    apply(tcp_route("intruder", "not-allowed", [{"name": "gw-blue", "namespace": NAMESPACE, "port": 80}], namespace="team-b"))
    sync()
    assert [parent["Accepted"] for parent in portico_parents("tcproute", "intruder", "team-b")] == [("False", "NotAllowedByListeners")]
    listed = {item["name"]: item["attachedRoutes"] for item in get_yaml("gateway", GATEWAY)["status"]["listeners"]}
    assert listed["not-allowed"] == 0
    refused = probe(client, "tcp", proof, NOT_ALLOWED, count=5, timeout=0.5)
    assert refused["ok"] == 0, refused


def test_a_backend_ref_to_a_missing_service_gives_backend_not_found(proof):
    apply(tcp_route("ghost", "missing", [{"name": "no-such-service", "port": 80}]))
    sync()
    assert [parent["ResolvedRefs"] for parent in portico_parents("tcproute", "ghost")] == [("False", "BackendNotFound")]
    assert probe(client, "tcp", proof, MISSING, count=5, timeout=0.5)["ok"] == 0


def test_a_cross_namespace_backend_ref_works_only_with_a_reference_grant(proof):
    apply(tcp_route("borrow", "cross", [{"name": "gw-blue", "namespace": NAMESPACE, "port": 80}], namespace="team-a"))
    sync()
    assert [parent["ResolvedRefs"] for parent in portico_parents("tcproute", "borrow", "team-a")] == [("False", "RefNotPermitted")]
    assert probe(client, "tcp", proof, CROSS, count=5, timeout=0.5)["ok"] == 0
    apply({"apiVersion": f"{GROUP}/v1", "kind": "ReferenceGrant", "metadata": {"name": "team-a-to-blue", "namespace": NAMESPACE},
           "spec": {"from": [{"group": GROUP, "kind": "TCPRoute", "namespace": "team-a"}],
                    "to": [{"group": "", "kind": "Service", "name": "gw-blue"}]}})
    sync()
    assert [parent["ResolvedRefs"] for parent in portico_parents("tcproute", "borrow", "team-a")] == [("True", "ResolvedRefs")]
    granted = probe(client, "tcp", proof, CROSS)
    assert granted["ok"] == 30 and set(granted["backends"]) == {"node1"}, granted


def test_a_weight_change_moves_no_held_connection_and_new_ones_follow(proof):
    """90/10 -> 50/50 while 100 connections are held: Maglev moves new flows only, conntrack keeps
    the held ones on their backend (a held stream that changed backend would be reset)."""
    streams = labtools.open_streams("client", proof, HELD, HOLD_S, port=SPLIT)
    opened = time.monotonic()
    apply(split_route(50, 50))
    sync()
    assert time.monotonic() - opened < HOLD_S, "the sync outlasted the held connections: nothing was measured"
    held = labtools.finish(streams)
    changed = held["reset"] + held["failed_to_open"]
    labtools.report("gateway_weight_change_held", weights="90/10->50/50", held=held["opened"], changed_backend=changed,
                    on=held["backends"])
    assert held["opened"] == HELD and changed == 0, held
    after = probe(client, "tcp", proof, SPLIT, count=CONNECTIONS)
    blue = share(after, "node1")
    labtools.report("gateway_route_split", weights="50/50", connections=CONNECTIONS, blue=round(blue, 3), green=round(1 - blue, 3))
    assert abs(blue - 0.50) <= 0.05, after
    apply(split_route(90, 10))
    sync()


def test_time_from_kubectl_apply_of_a_route_to_traffic(proof, tmp_path: pathlib.Path):
    """bin/portico-watch runs the syncs: a route's apply -> its first answered connection on its
    listener. The first sample creates the route; each next one moves it to the other of two
    listeners (one apply, one run per sample), and the listener it left must be withdrawn by then."""
    log = tmp_path / "watch.log"
    with log.open("w") as out:
        watcher = subprocess.Popen([sys.executable, str(REPO / "bin/portico-watch"), "--inventory", "inventories/lab",
                                    "--no-initial-run", "--state-dir", str(tmp_path / "state")], cwd=REPO, stdout=out,
                                   stderr=subprocess.STDOUT, env={**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg")})
    samples = []
    try:
        labtools.wait_for(lambda: log.read_text().count("watching from resourceVersion") >= 3, 30, "the watcher to start")
        for sample in range(LATENCY_SAMPLES):
            (section, port), left = [("latency", LATENCY), ("latency-b", LATENCY_B)][sample % 2], [LATENCY_B, LATENCY][sample % 2]
            started = time.time()
            apply(tcp_route("latency", section, [{"name": "gw-green", "port": 80}]))
            try:
                labtools.wait_for(lambda p=port: probe(client, "tcp", proof, p, count=1, timeout=0.2)["ok"] == 1, 120,
                                  f"traffic on listener {section}")
            except AssertionError as timed_out:
                raise AssertionError(f"{timed_out}; the watcher's log:\n{log.read_text()[-3000:]}") from None
            samples.append(time.time() - started)
            assert probe(client, "tcp", proof, left, count=3, timeout=0.2)["ok"] == 0, f"port {left} still served after the route left it"
    finally:
        watcher.terminate()
        watcher.wait(30)
    ordered = sorted(samples)
    p50, p99 = ordered[len(ordered) // 2], ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    labtools.report("gateway_route_apply_to_traffic", samples=len(samples), p50_ms=round(p50 * 1000), p99_ms=round(p99 * 1000),
                    all_ms=[round(s * 1000) for s in samples])
    assert len(samples) == LATENCY_SAMPLES


def test_deleting_the_gateway_withdraws_its_address(proof):
    assert vip_in_gateway_table(proof)
    delete("gateway", GATEWAY)
    held = get_yaml("gateway", GATEWAY)
    assert held is not None and FINALIZER in held["metadata"]["finalizers"]  # until every gateway withdrew it
    sync()
    assert not vip_in_gateway_table(proof)
    assert get_yaml("gateway", GATEWAY) is None
    assert probe(client, "tcp", proof, SPLIT, count=5, timeout=0.5)["ok"] == 0
    assert portico_parents("tcproute", "split") == []
    assert json.loads(kubectl("get", "tcproute", "split", "-o", "json").stdout)["metadata"]["name"] == "split"
