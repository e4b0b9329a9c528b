"""Kubernetes Services -> gateway -> traffic -> status, against the lab's API stand-in.

The official client talks to the stand-in over HTTP through the same kubeconfig the
inventory plugin uses; Services and EndpointSlices are created exactly as on a cluster.
"""

from __future__ import annotations

import json
import subprocess
import time

import kubernetes
import pytest
import testinfra
from lab_helpers import KUBECONFIG, client, kubectl, probe, sync, vip_in_gateway_table

router = testinfra.get_host("podman://portico-lab-router")


@pytest.fixture(scope="module")
def api():
    api_client = kubernetes.config.new_client_from_config(config_file=KUBECONFIG)
    return kubernetes.client.CoreV1Api(api_client), kubernetes.client.DiscoveryV1Api(api_client)


def ingress(core, namespace: str, name: str) -> list[str]:
    status = core.read_namespaced_service_status(name, namespace).status.load_balancer
    return [entry.ip for entry in (status.ingress or [])]


def events(core, namespace: str, name: str) -> list[tuple[str, str, str]]:
    items = core.list_namespaced_event(namespace).items
    return [(e.type, e.reason, e.message) for e in items if e.involved_object.name == name]


def all_ingress(core) -> dict[str, list[str]]:
    """Addresses of the LoadBalancer Services that are not being deleted."""
    return {f"{s.metadata.namespace}/{s.metadata.name}": [i.ip for i in (s.status.load_balancer.ingress or [])]
            for s in core.list_service_for_all_namespaces().items
            if s.spec.type == "LoadBalancer" and s.metadata.deletion_timestamp is None}


def service(namespace: str, name: str, node_port: int, annotations: dict | None = None, protocol: str = "TCP") -> dict:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": namespace, "annotations": annotations or {}},
            "spec": {"type": "LoadBalancer", "loadBalancerClass": "portico.io/gateway", "selector": {"app": name},
                     "ports": [{"name": "web", "protocol": protocol, "port": 80, "targetPort": 8080, "nodePort": node_port}]}}


def endpoint_slice(namespace: str, name: str, ready: bool = True, pods: dict | None = None) -> dict:
    pods = pods or {"node1": "198.19.1.50"}
    endpoints = [{"addresses": [ip], "conditions": {"ready": True}, "nodeName": node} for node, ip in pods.items()] if ready else None
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": f"{name}-abcde", "namespace": namespace, "labels": {"kubernetes.io/service-name": name}},
            "addressType": "IPv4", "endpoints": endpoints, "ports": [{"name": "web", "port": 8080, "protocol": "TCP"}]}


def remove(api, namespace: str, name: str, force: bool = False) -> None:
    """Delete a test Service and its EndpointSlice (the cluster's garbage collector would). A Service
    Portico served stays, held by its cleanup finalizer, until a sync releases it; ``force`` takes the
    finalizer off at once, as an administrator would for the leftovers of an interrupted run."""
    core, discovery = api
    for call, object_name in ((core.delete_namespaced_service, name), (discovery.delete_namespaced_endpoint_slice, f"{name}-abcde")):
        try:
            call(object_name, namespace)
        except kubernetes.client.exceptions.ApiException as err:
            if err.status != 404:
                raise
    if force:
        try:
            core.patch_namespaced_service(name, namespace, {"metadata": {"finalizers": None}})
        except kubernetes.client.exceptions.ApiException as err:
            if err.status != 404:
                raise


def create(api, namespace: str, name: str, node_port: int, annotations: dict | None = None, ready: bool = True,
           pods: dict | None = None, protocol: str = "TCP") -> None:
    core, discovery = api
    remove(api, namespace, name, force=True)  # leftovers of an interrupted run
    core.create_namespaced_service(namespace, service(namespace, name, node_port, annotations, protocol))
    discovery.create_namespaced_endpoint_slice(namespace, endpoint_slice(namespace, name, ready, pods))


@pytest.fixture(scope="module")
def scratch(api):
    """Services a test creates, removed at the end of the module with one sync (which releases the
    ones Portico served), so each test costs only the syncs its case needs."""
    created: list[tuple[str, str]] = []
    yield created
    for namespace, name in created:
        remove(api, namespace, name)
    if created:
        sync()


@pytest.mark.parametrize(("namespace", "name", "proto", "port"), [
    ("default", "echo", "tcp", 80), ("default", "dns", "udp", 53), ("default", "dns", "tcp", 53),
    ("default", "echo-local", "tcp", 80), ("default", "echo-dual", "tcp", 80),
])
def test_sample_service_answers_on_the_ip_in_its_status(api, namespace, name, proto, port):
    ips = ingress(api[0], namespace, name)
    assert ips, f"{namespace}/{name} has no status.loadBalancer.ingress"
    assert len(ips) == (2 if name == "echo-dual" else 1)
    for ip in ips:
        result = probe(client, proto, ip, port)
        assert result["ok"] == 30 and len(result["backends"]) == 3, (ip, result)
    assert ("Normal", "IPAllocated", f"Portico serves this Service on {', '.join(ips)}") in events(api[0], namespace, name)


def test_service_source_ranges_are_enforced(api):
    ip = ingress(api[0], "team-a", "restricted")[0]
    assert probe(client, "tcp", ip, 80, count=3, timeout=0.5)["ok"] == 0
    assert probe(router, "tcp", ip, 80, count=5)["ok"] == 5


def test_kubectl_shows_the_external_ip(api):
    shown = subprocess.run(["kubectl", "--kubeconfig", KUBECONFIG, "get", "svc", "-n", "default", "echo"],
                           capture_output=True, text=True, check=True).stdout
    assert ingress(api[0], "default", "echo")[0] in shown


def test_new_service_is_served_after_sync_and_nothing_else_moves(api):
    before = all_ingress(api[0])
    create(api, "default", "added", 30090)
    try:
        sync()
        ip = ingress(api[0], "default", "added")
        assert len(ip) == 1 and probe(client, "tcp", ip[0], 80)["ok"] == 30
        after = all_ingress(api[0])
        assert {k: v for k, v in after.items() if k != "default/added"} == before
    finally:
        remove(api, "default", "added")


def test_bad_services_get_an_event_and_no_ip_while_the_others_keep_working(api):
    core = api[0]
    before = all_ingress(core)
    echo_ip = before["default/echo"][0]
    bad = {
        ("team-a", "foreign-pool"): ({"portico.io/loadBalancerIPs": "198.51.100.240"}, "which namespace 'team-a' may not use"),
        ("default", "taken"): ({"portico.io/loadBalancerIPs": echo_ip}, f"{echo_ip} is taken by lab/default/echo"),
        ("team-b", "fill-3"): ({"portico.io/pool": "team-b"}, "no free IPv4 address left in pool 'team-b'"),
        ("default", "typo"): ({"portico.io/backend-mode": "direkt"}, "unknown value 'direkt'"),
        ("default", "misspelt"): ({"portico.io/pol": "public"}, "did you mean 'portico.io/pool'?"),
        ("default", "ips-typo"): ({"portico.io/ips": "198.51.100.60"}, "did you mean 'portico.io/loadBalancerIPs'?"),
    }
    create(api, "team-b", "fill-1", 30091, {"portico.io/pool": "team-b"})
    create(api, "team-b", "fill-2", 30092, {"portico.io/pool": "team-b"})
    time.sleep(1.1)  # older than fill-3 (creationTimestamp has a resolution of one second): the pool is theirs
    for index, ((namespace, name), (annotations, _)) in enumerate(sorted(bad.items())):
        create(api, namespace, name, 30100 + index, annotations)
    try:
        sync()
        assert sorted(ingress(core, "team-b", "fill-1") + ingress(core, "team-b", "fill-2")) == ["198.51.100.240", "198.51.100.241"]
        for (namespace, name), (_, reason) in bad.items():
            assert ingress(core, namespace, name) == [], f"{namespace}/{name} got an address"
            warnings = [message for kind, why, message in events(core, namespace, name) if (kind, why) == ("Warning", "NotServed")]
            assert any(reason in message for message in warnings), (namespace, name, warnings)
        after = all_ingress(core)
        assert {k: after[k] for k in before} == before
        assert probe(client, "tcp", echo_ip, 80)["ok"] == 30
    finally:
        for namespace, name in [("team-b", "fill-1"), ("team-b", "fill-2"), *bad]:
            remove(api, namespace, name)
        sync()


def test_resync_is_stable_and_changes_nothing(api):
    before = all_ingress(api[0])
    output = sync()
    assert "changed=0" in output.split("PLAY RECAP")[-1]
    assert all_ingress(api[0]) == before


def test_direct_mode_service_reaches_pods_through_pod_cidr_routes(api):
    gw1 = testinfra.get_host("podman://portico-lab-gw1")
    routes = gw1.check_output("ip route show proto 200")
    assert "198.19.1.0/24 via 192.0.2.11" in routes and "198.19.3.0/24 via 192.0.2.13" in routes
    create(api, "default", "direct", 30095, {"portico.io/backend-mode": "direct"},
           pods={"node1": "198.19.1.50", "node2": "198.19.2.50"})
    try:
        sync()
        ip = ingress(api[0], "default", "direct")
        assert len(ip) == 1
        result = probe(client, "tcp", ip[0], 80)
        # Only the two nodes with pods answer: traffic went to pod IPs, not to every node's nodePort.
        assert result["ok"] == 30 and set(result["backends"]) == {"node1", "node2"}, result
        assert result["clients"] == ["203.0.113.10"]
    finally:
        remove(api, "default", "direct")


# --- Kubernetes semantics: contested addresses, deletion, scale to zero ------------------------


def test_the_older_pair_keeps_a_contested_address_and_the_newcomer_gets_an_event(api, scratch):
    """Two Services share 198.51.100.77 with a MetalLB sharing key; a newer one asks for the same
    address and port without the key. Its name sorts first: age decides, not the name."""
    core = api[0]
    contested = "198.51.100.77"
    pair = {"metallb.io/loadBalancerIPs": contested, "metallb.io/allow-shared-ip": "pair"}
    create(api, "default", "zz-pair-tcp", 30120, pair)
    create(api, "default", "zz-pair-udp", 30121, pair, protocol="UDP")
    time.sleep(1.1)  # creationTimestamp has a resolution of one second
    create(api, "default", "aa-newcomer", 30122, {"metallb.io/loadBalancerIPs": contested})
    scratch.extend([("default", "zz-pair-tcp"), ("default", "zz-pair-udp"), ("default", "aa-newcomer")])
    sync()
    assert ingress(core, "default", "zz-pair-tcp") == [contested] and ingress(core, "default", "zz-pair-udp") == [contested]
    assert ingress(core, "default", "aa-newcomer") == []
    warnings = [message for kind, why, message in events(core, "default", "aa-newcomer") if (kind, why) == ("Warning", "NotServed")]
    # The pair was created within one second: either may be the holder the message names.
    assert [w.replace("zz-pair-udp", "zz-pair-tcp") for w in warnings] == [
        "lab/default/aa-newcomer: metadata.annotations['metallb.io/loadBalancerIPs']: "
        f"{contested} is taken by lab/default/zz-pair-tcp (no common sharing key)"], warnings
    assert probe(client, "tcp", contested, 80)["ok"] == 30 and probe(client, "udp", contested, 80)["ok"] == 30


def test_a_deleted_service_is_withdrawn_before_its_finalizer_goes(api, scratch):
    core = api[0]
    create(api, "default", "doomed", 30123)
    scratch.append(("default", "doomed"))
    sync()
    (address,) = ingress(core, "default", "doomed")
    held = core.read_namespaced_service("doomed", "default")
    assert "service.kubernetes.io/load-balancer-cleanup" in held.metadata.finalizers
    assert probe(client, "tcp", address, 80, count=5)["ok"] == 5
    kubectl("delete", "svc", "-n", "default", "doomed", "--wait=false")
    assert core.read_namespaced_service("doomed", "default").metadata.deletion_timestamp is not None
    # A converge that did not reach every gateway (as if another one had failed): the VIP leaves
    # gw1's table, but the finalizer and the status stay, so the address is not handed out yet.
    sync("-e", json.dumps({"portico_converged": False}))
    assert not vip_in_gateway_table(address)
    assert probe(client, "tcp", address, 80, count=3, timeout=0.5)["ok"] == 0
    still = core.read_namespaced_service("doomed", "default")
    assert "service.kubernetes.io/load-balancer-cleanup" in still.metadata.finalizers and ingress(core, "default", "doomed") == [address]
    assert "doomed" in kubectl("get", "svc", "-n", "default").stdout
    sync()
    gone = kubectl("get", "svc", "-n", "default", "doomed", check=False)
    assert gone.returncode != 0 and "NotFound" in gone.stderr, gone.stdout + gone.stderr
    released = [message for kind, why, message in events(core, "default", "doomed") if why == "Released"]
    assert released == [f"Portico no longer serves this Service (being deleted); {address} withdrawn from every gateway"]


def test_a_service_scaled_to_zero_keeps_its_address_and_gets_it_back(api, scratch):
    core, discovery = api
    create(api, "default", "sleepy", 30124)
    scratch.append(("default", "sleepy"))
    sync()
    (address,) = ingress(core, "default", "sleepy")
    assert probe(client, "tcp", address, 80)["ok"] == 30
    # The Deployment scales to zero: the EndpointSlice controller leaves the slice without endpoints.
    discovery.delete_namespaced_endpoint_slice("sleepy-abcde", "default")
    discovery.create_namespaced_endpoint_slice("default", endpoint_slice("default", "sleepy", ready=False))
    sync()
    assert ingress(core, "default", "sleepy") == [address]
    refused = probe(client, "tcp", address, 80, count=3, timeout=0.5)
    assert refused["ok"] == 0 and set(refused["errors"]) == {"refused"}, refused  # refused at once, not timing out
    assert any("no ready endpoints: the address is kept" in message
               for kind, why, message in events(core, "default", "sleepy") if (kind, why) == ("Warning", "ServedWithWarnings"))
    discovery.delete_namespaced_endpoint_slice("sleepy-abcde", "default")
    discovery.create_namespaced_endpoint_slice("default", endpoint_slice("default", "sleepy"))
    sync()
    assert ingress(core, "default", "sleepy") == [address]
    assert probe(client, "tcp", address, 80)["ok"] == 30
