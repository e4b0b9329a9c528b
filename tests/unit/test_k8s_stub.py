"""The Kubernetes API stand-in, seen through the official client and kubectl as code under test sees it."""

from __future__ import annotations

import json
import pathlib
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client, watch

REPO = pathlib.Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # for lab.k8s_stub, whatever directory pytest was started from
    sys.path.insert(0, str(REPO))

from ansible_collections.portico.gateway.plugins.module_utils.k8s.client import K8sAuth, api_client  # noqa: E402
from lab.k8s_stub import FakeApiServer  # noqa: E402
from lab.k8s_stub.testing import kubectl as run_kubectl  # noqa: E402
from lab.k8s_stub.testing import request  # noqa: E402

LAB = REPO / "lab/k8s_stub/fixtures/lab"
MERGE = "application/merge-patch+json"
VIP_STATUS = {"status": {"loadBalancer": {"ingress": [{"ip": "198.51.100.10", "ipMode": "VIP"}]}}}


@pytest.fixture
def server() -> Iterator[FakeApiServer]:
    with FakeApiServer(fixtures=LAB) as api:
        yield api


@pytest.fixture
def kubeconfig(server: FakeApiServer, tmp_path: pathlib.Path) -> pathlib.Path:
    return server.write_kubeconfig(tmp_path / "kubeconfig")


@pytest.fixture
def core(kubeconfig: pathlib.Path) -> client.CoreV1Api:
    return client.CoreV1Api(api_client(K8sAuth(kubeconfig=str(kubeconfig))))


@pytest.fixture
def discovery(kubeconfig: pathlib.Path) -> client.DiscoveryV1Api:
    return client.DiscoveryV1Api(api_client(K8sAuth(kubeconfig=str(kubeconfig))))


def names(items: list[Any]) -> list[str]:
    return [f"{item.metadata.namespace}/{item.metadata.name}" if item.metadata.namespace else item.metadata.name for item in items]


def kubectl(kubeconfig: pathlib.Path, *args: str) -> str:
    return run_kubectl(kubeconfig, *args).stdout


# --- reads and shapes ------------------------------------------------------------------------

def test_services_list_cluster_wide_and_per_namespace(core):
    every = core.list_service_for_all_namespaces()
    assert names(every.items) == ["default/dns", "default/echo", "default/echo-dual", "default/echo-local", "team-a/restricted"]
    assert int(every.metadata.resource_version) > 0
    assert names(core.list_namespaced_service("team-a").items) == ["team-a/restricted"]


def test_services_get_the_api_servers_defaults(core):
    echo = core.read_namespaced_service("echo", "default")
    assert (echo.spec.type, echo.spec.load_balancer_class, echo.spec.external_traffic_policy) == ("LoadBalancer", "portico.io/gateway", "Cluster")
    assert (echo.spec.session_affinity, echo.spec.ip_families, echo.spec.ip_family_policy) == ("None", ["IPv4"], "SingleStack")
    assert echo.spec.cluster_ip == echo.spec.cluster_ips[0] and echo.spec.allocate_load_balancer_node_ports is True
    assert [(p.port, p.target_port, p.node_port, p.protocol) for p in echo.spec.ports] == [(80, 8080, 30080, "TCP")]
    assert echo.status.load_balancer.ingress is None
    assert echo.metadata.uid and echo.metadata.creation_timestamp
    assert echo.metadata.generation is None  # Services carry no generation on the real API either
    local = core.read_namespaced_service("echo-local", "default")
    assert (local.spec.external_traffic_policy, local.spec.health_check_node_port) == ("Local", 32000)
    dual = core.read_namespaced_service("echo-dual", "default")
    assert dual.spec.ip_families == ["IPv4", "IPv6"] and ":" in dual.spec.cluster_ips[1]
    dns = core.read_namespaced_service("dns", "default")
    assert [(p.protocol, p.node_port) for p in dns.spec.ports] == [("TCP", 30053), ("UDP", 30053)]
    assert core.read_namespaced_service("restricted", "team-a").spec.load_balancer_source_ranges == ["198.18.0.0/24"]


def test_node_ports_are_allocated_and_conflicts_refused(core):
    body = {"metadata": {"name": "web"}, "spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Local",
                                                  "ports": [{"name": "http", "port": 80}, {"name": "https", "port": 443}]}}
    web = core.create_namespaced_service("team-b", body)
    assert all(30000 <= p.node_port <= 32767 for p in web.spec.ports) and web.spec.health_check_node_port
    assert [p.target_port for p in web.spec.ports] == [80, 443]
    taken = {"metadata": {"name": "clash"}, "spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": 30080}]}}
    with pytest.raises(client.ApiException) as err:
        core.create_namespaced_service("team-b", taken)
    assert err.value.status == 422 and "provided port is already allocated" in json.loads(err.value.body)["message"]
    no_ports = {"metadata": {"name": "direct"}, "spec": {"type": "LoadBalancer", "allocateLoadBalancerNodePorts": False, "ports": [{"port": 80}]}}
    assert core.create_namespaced_service("team-b", no_ports).spec.ports[0].node_port is None


def test_endpointslices_by_service_label(discovery):
    slices = discovery.list_namespaced_endpoint_slice("default", label_selector="kubernetes.io/service-name=echo").items
    assert names(slices) == ["default/echo-8kq2w"]
    ready = [(e.addresses[0], e.node_name, e.conditions.ready, e.conditions.serving, e.conditions.terminating) for e in slices[0].endpoints]
    assert ready == [("198.19.1.10", "node1", True, True, False), ("198.19.2.10", "node2", True, True, False),
                     ("198.19.3.10", "node3", True, True, False)]
    assert [(p.name, p.port, p.protocol) for p in slices[0].ports] == [("http", 8080, "TCP")]
    dual = discovery.list_namespaced_endpoint_slice("default", label_selector="kubernetes.io/service-name=echo-dual").items
    assert sorted(s.address_type for s in dual) == ["IPv4", "IPv6"]


def test_an_endpointslice_without_pods_has_endpoints_null(server, discovery, kubeconfig):
    server.apply({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4", "endpoints": [],
                  "metadata": {"name": "idle-abcde", "namespace": "default", "labels": {"kubernetes.io/service-name": "idle"}},
                  "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]})
    raw = json.loads(kubectl(kubeconfig, "get", "--raw", "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices/idle-abcde"))
    assert "endpoints" in raw and raw["endpoints"] is None
    assert discovery.read_namespaced_endpoint_slice("idle-abcde", "default").endpoints is None


def test_nodes_carry_addresses_pod_cidrs_and_readiness(core):
    nodes = core.list_node().items
    assert names(nodes) == ["node1", "node2", "node3"]
    node1 = nodes[0]
    assert [(a.type, a.address) for a in node1.status.addresses] == [("InternalIP", "192.0.2.11"), ("InternalIP", "2001:db8:192::11"),
                                                                     ("Hostname", "node1")]
    assert node1.spec.pod_cidrs == ["198.19.1.0/24", "2001:db8:244:1::/64"]
    assert {c.type: c.status for c in node1.status.conditions}["Ready"] == "True"
    assert node1.status.node_info.kubelet_version == "v1.32.0"


def test_label_and_field_selectors(server, core):
    server.apply({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node4", "labels": {
        "node.kubernetes.io/exclude-from-external-load-balancers": "true", "kubernetes.io/os": "linux"}}})
    assert names(core.list_node(label_selector="!node.kubernetes.io/exclude-from-external-load-balancers").items) == ["node1", "node2", "node3"]
    assert names(core.list_node(label_selector="node.kubernetes.io/exclude-from-external-load-balancers").items) == ["node4"]
    assert names(core.list_namespaced_service("default", label_selector="app!=echo").items) == ["default/echo-local"]
    assert names(core.list_namespaced_service("default", label_selector="app=echo,app!=nope").items) == [
        "default/dns", "default/echo", "default/echo-dual"]
    assert names(core.list_namespaced_service("default", label_selector="app in (echo-local, other)").items) == ["default/echo-local"]
    assert names(core.list_service_for_all_namespaces(field_selector="metadata.name=restricted").items) == ["team-a/restricted"]
    assert names(core.list_service_for_all_namespaces(field_selector="metadata.namespace!=default").items) == ["team-a/restricted"]
    with pytest.raises(client.ApiException) as err:
        core.list_service_for_all_namespaces(field_selector="spec.nope=1")
    assert err.value.status == 400 and "field label not supported" in err.value.body


def test_list_items_have_no_kind_like_the_real_api(kubeconfig):
    raw = json.loads(kubectl(kubeconfig, "get", "--raw", "/api/v1/services"))
    assert raw["kind"] == "ServiceList" and raw["metadata"]["resourceVersion"]
    assert all("kind" not in item and "apiVersion" not in item for item in raw["items"])


def test_not_found_is_a_status_object(core):
    with pytest.raises(client.ApiException) as err:
        core.read_namespaced_service("ghost", "default")
    assert err.value.status == 404
    assert json.loads(err.value.body) == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                                          "message": 'services "ghost" not found', "reason": "NotFound", "code": 404,
                                          "details": {"name": "ghost", "kind": "services"}}


# --- writes ----------------------------------------------------------------------------------

def test_status_patch_changes_only_the_status(core):
    before = core.read_namespaced_service("echo", "default")
    patch = {**VIP_STATUS, "spec": {"type": "ClusterIP"}, "metadata": {"labels": {"sneaky": "yes"}}}
    after = core.patch_namespaced_service_status("echo", "default", patch, _content_type=MERGE)
    assert [(i.ip, i.ip_mode) for i in after.status.load_balancer.ingress] == [("198.51.100.10", "VIP")]
    assert after.spec == before.spec and after.metadata.labels == before.metadata.labels
    assert int(after.metadata.resource_version) > int(before.metadata.resource_version)


def test_main_resource_patch_ignores_the_status(core):
    core.patch_namespaced_service_status("echo", "default", VIP_STATUS, _content_type=MERGE)
    patched = core.patch_namespaced_service("echo", "default", {"spec": {"sessionAffinity": "ClientIP"}, "status": {"loadBalancer": None}},
                                            _content_type=MERGE)
    assert patched.spec.session_affinity == "ClientIP"
    assert patched.status.load_balancer.ingress[0].ip == "198.51.100.10"


def test_strategic_merge_patch_merges_service_ports_by_port(core):
    patch = {"spec": {"ports": [{"name": "http-alt", "port": 8081, "targetPort": 8081}]}}
    patched = core.patch_namespaced_service("echo", "default", patch)  # dict bodies go as strategic merge patches
    assert [(p.name, p.port) for p in patched.spec.ports] == [("http", 80), ("http-alt", 8081)]
    assert patched.spec.ports[0].node_port == 30080 and patched.spec.ports[1].node_port


def test_put_keeps_allocations_and_ignores_status(core):
    echo = core.read_namespaced_service("echo", "default")
    body = {"metadata": {"name": "echo", "labels": {"app": "echo"}}, "status": VIP_STATUS["status"],
            "spec": {"type": "LoadBalancer", "selector": {"app": "echo"}, "ports": [{"name": "http", "port": 80, "targetPort": 8081}]}}
    replaced = core.replace_namespaced_service("echo", "default", body)
    assert replaced.spec.cluster_ip == echo.spec.cluster_ip and replaced.spec.ports[0].node_port == 30080
    assert replaced.spec.ports[0].target_port == 8081 and replaced.status.load_balancer.ingress is None


def test_json_patch(core):
    ops = [{"op": "test", "path": "/spec/ports/0/port", "value": 80}, {"op": "add", "path": "/metadata/labels/tier", "value": "web"}]
    assert core.patch_namespaced_service("echo", "default", ops).metadata.labels == {"app": "echo", "tier": "web"}


def test_stale_resource_version_and_duplicates_conflict(core):
    echo = core.read_namespaced_service("echo", "default")
    core.patch_namespaced_service("echo", "default", {"metadata": {"labels": {"touched": "yes"}}}, _content_type=MERGE)
    stale = {"metadata": {"resourceVersion": echo.metadata.resource_version}, **VIP_STATUS}
    with pytest.raises(client.ApiException) as err:
        core.patch_namespaced_service_status("echo", "default", stale, _content_type=MERGE)
    assert err.value.status == 409 and json.loads(err.value.body)["reason"] == "Conflict"
    with pytest.raises(client.ApiException) as err:
        core.create_namespaced_service("default", {"metadata": {"name": "echo"}, "spec": {"ports": [{"port": 80}]}})
    assert err.value.status == 409 and json.loads(err.value.body)["reason"] == "AlreadyExists"


def test_a_no_op_write_keeps_the_resource_version(core):
    before = core.read_namespaced_service("echo", "default").metadata.resource_version
    after = core.patch_namespaced_service("echo", "default", {"metadata": {"labels": {"app": "echo"}}}, _content_type=MERGE)
    assert after.metadata.resource_version == before


def test_events_create_and_list(core):
    echo = core.read_namespaced_service("echo", "default")
    event = {"metadata": {"name": "echo.1"}, "type": "Warning", "reason": "PoolExhausted", "message": "no free address",
             "involvedObject": {"kind": "Service", "namespace": "default", "name": "echo", "uid": echo.metadata.uid},
             "source": {"component": "portico"}, "count": 1}
    core.create_namespaced_event("default", event)
    found = core.list_namespaced_event("default", field_selector=f"involvedObject.uid={echo.metadata.uid},reason=PoolExhausted").items
    assert [(e.metadata.name, e.message, e.count) for e in found] == [("echo.1", "no free address", 1)]
    assert core.list_event_for_all_namespaces(field_selector="reason=Other").items == []
    with pytest.raises(client.ApiException) as err:  # an event must live in its object's namespace
        core.create_namespaced_event("team-a", {**event, "metadata": {"name": "echo.2"}})
    assert err.value.status == 422


def test_endpointslice_generation_follows_content_not_metadata(discovery):
    before = discovery.read_namespaced_endpoint_slice("echo-8kq2w", "default")
    assert before.metadata.generation == 1
    labelled = discovery.patch_namespaced_endpoint_slice("echo-8kq2w", "default", {"metadata": {"labels": {"x": "y"}}})
    assert labelled.metadata.generation == 1
    moved = discovery.patch_namespaced_endpoint_slice("echo-8kq2w", "default", {"ports": [{"name": "http", "port": 8081}]},
                                                      _content_type=MERGE)
    assert moved.metadata.generation == 2 and moved.ports[0].port == 8081


def test_names_are_validated_like_the_api(core):
    with pytest.raises(client.ApiException) as err:
        core.create_namespaced_service("default", {"metadata": {"name": "Web_1"}, "spec": {"ports": [{"port": 80}]}})
    cause = json.loads(err.value.body)["details"]["causes"][0]
    assert err.value.status == 422 and cause["field"] == "metadata.name" and "DNS-1035 label" in cause["message"]


def test_a_service_with_a_finalizer_stays_and_keeps_its_node_port(core):
    body = {"metadata": {"name": "held", "finalizers": ["portico.io/vip"]}, "spec": {"type": "NodePort", "ports": [{"port": 80}]}}
    port = core.create_namespaced_service("team-b", body).spec.ports[0].node_port
    marked = core.delete_namespaced_service("held", "team-b")
    assert marked.metadata.deletion_timestamp and marked.metadata.deletion_grace_period_seconds == 0
    assert core.read_namespaced_service("held", "team-b").metadata.finalizers == ["portico.io/vip"]
    clash = {"metadata": {"name": "clash"}, "spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": port}]}}
    with pytest.raises(client.ApiException) as err:
        core.create_namespaced_service("team-b", clash)
    assert err.value.status == 422 and "provided port is already allocated" in err.value.body
    core.patch_namespaced_service("held", "team-b", {"metadata": {"finalizers": None}}, _content_type=MERGE)
    with pytest.raises(client.ApiException) as err:
        core.read_namespaced_service("held", "team-b")
    assert err.value.status == 404
    assert core.create_namespaced_service("team-b", clash).spec.ports[0].node_port == port  # released with the Service


def test_a_terminating_namespace_waits_for_its_objects(server, core):
    core.create_namespaced_service("team-b", {"metadata": {"name": "held", "finalizers": ["portico.io/vip"]},
                                              "spec": {"ports": [{"port": 80}]}})
    core.create_namespaced_service("team-b", {"metadata": {"name": "free"}, "spec": {"ports": [{"port": 80}]}})
    core.delete_namespace("team-b")
    terminating = core.read_namespace("team-b")
    assert terminating.status.phase == "Terminating" and terminating.metadata.deletion_timestamp
    assert names(core.list_namespaced_service("team-b").items) == ["team-b/held"]
    with pytest.raises(client.ApiException) as err:
        core.create_namespaced_service("team-b", {"metadata": {"name": "late"}, "spec": {"ports": [{"port": 80}]}})
    assert err.value.status == 403 and "because it is being terminated" in err.value.body
    core.patch_namespaced_service("held", "team-b", {"metadata": {"finalizers": []}}, _content_type=MERGE)
    assert server.get("Namespace", None, "team-b") is None


def test_paged_lists_are_consistent_and_expire_with_the_history(tmp_path):
    with FakeApiServer(fixtures=LAB, history=20) as small:
        core = client.CoreV1Api(api_client(K8sAuth(kubeconfig=str(small.write_kubeconfig(tmp_path / "kc")))))
        for index in range(6):
            core.create_namespaced_service("team-b", {"metadata": {"name": f"s{index}"}, "spec": {"ports": [{"port": 80}]}})
        first = core.list_namespaced_service("team-b", limit=4)
        assert names(first.items) == [f"team-b/s{i}" for i in range(4)] and first.metadata.remaining_item_count == 2
        core.delete_namespaced_service("s5", "team-b")
        core.create_namespaced_service("team-b", {"metadata": {"name": "s4a"}, "spec": {"ports": [{"port": 80}]}})
        rest = core.list_namespaced_service("team-b", limit=4, _continue=first.metadata._continue)
        assert names(rest.items) == ["team-b/s4", "team-b/s5"] and rest.metadata._continue is None
        assert rest.metadata.resource_version == first.metadata.resource_version
        for index in range(25):  # past the history of 20 events
            core.patch_namespaced_service("s0", "team-b", {"metadata": {"labels": {"n": str(index)}}})
        with pytest.raises(client.ApiException) as err:
            core.list_namespaced_service("team-b", limit=4, _continue=first.metadata._continue)
        assert err.value.status == 410 and json.loads(err.value.body)["reason"] == "Expired"


def test_unknown_metadata_fields_are_dropped_with_a_warning(server):
    reply = request(f"{server.url}/api/v1/namespaces/default/services", "POST",
                    {"metadata": {"name": "odd", "labelz": {"a": "b"}}, "spec": {"ports": [{"port": 80}]}})
    assert reply.status == 201 and "labelz" not in reply.body["metadata"]
    assert reply.warnings == ['299 - "unknown field \\"metadata.labelz\\""']


def test_managed_fields_record_who_set_what(core):
    core.patch_namespaced_service_status("echo", "default", VIP_STATUS, _content_type=MERGE, field_manager="portico")
    managers = {(m.manager, m.operation, m.subresource) for m in core.read_namespaced_service("echo", "default").metadata.managed_fields}
    assert ("portico", "Update", "status") in managers


# --- watch -----------------------------------------------------------------------------------

def test_watch_streams_added_then_modified(core):
    stream, seen = watch.Watch(), []
    for event in stream.stream(core.list_namespaced_service, "default", field_selector="metadata.name=echo", timeout_seconds=5):
        seen.append((event["type"], event["object"].metadata.name))
        if event["type"] == "ADDED":  # the update lands while the watch is open
            threading.Thread(target=core.patch_namespaced_service_status, args=("echo", "default", VIP_STATUS),
                             kwargs={"_content_type": MERGE}).start()
        else:
            assert event["object"].status.load_balancer.ingress[0].ip == "198.51.100.10"
            stream.stop()
    assert seen == [("ADDED", "echo"), ("MODIFIED", "echo")]


def test_watch_from_a_resource_version_and_selector_transitions(server, discovery):
    start = discovery.list_namespaced_endpoint_slice("default").metadata.resource_version
    server.delete("EndpointSlice", "default", "echo-local-x7d4n")
    slice_ = server.get("EndpointSlice", "default", "echo-8kq2w")
    slice_["metadata"]["labels"]["kubernetes.io/service-name"] = "renamed"
    server.apply(slice_)
    events = [(e["type"], e["object"].metadata.name) for e in watch.Watch().stream(
        discovery.list_namespaced_endpoint_slice, "default", resource_version=start, timeout_seconds=1,
        label_selector="kubernetes.io/service-name in (echo, echo-local)")]
    assert events == [("DELETED", "echo-local-x7d4n"), ("DELETED", "echo-8kq2w")]


def test_watch_from_a_compacted_resource_version_is_gone(tmp_path):
    with FakeApiServer(fixtures=LAB, history=5) as small:
        api = client.CoreV1Api(api_client(K8sAuth(kubeconfig=str(small.write_kubeconfig(tmp_path / "kc")))))
        with pytest.raises(client.ApiException) as err:
            list(watch.Watch().stream(api.list_node, resource_version="1", timeout_seconds=1))
        assert err.value.status == 410


# --- kubectl ---------------------------------------------------------------------------------

def test_kubectl_lists_services_and_shows_the_external_ip(core, kubeconfig):
    table = kubectl(kubeconfig, "get", "svc", "-A")
    for namespace, name in (("default", "echo"), ("default", "echo-local"), ("default", "dns"), ("default", "echo-dual"), ("team-a", "restricted")):
        assert any(line.split()[:2] == [namespace, name] for line in table.splitlines())
    assert "53:30053/TCP,53:30053/UDP" in table and "<pending>" in table
    core.patch_namespaced_service_status("echo", "default", VIP_STATUS, _content_type=MERGE)
    wide = kubectl(kubeconfig, "get", "svc", "-o", "wide")
    header, *rows = wide.splitlines()
    assert header.split() == ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE", "SELECTOR"]
    echo = next(row.split() for row in rows if row.startswith("echo "))
    assert echo[3] == "198.51.100.10" and echo[-1] == "app=echo"


def test_kubectl_events_nodes_and_apply(core, kubeconfig, tmp_path):
    core.create_namespaced_event("default", {"metadata": {"name": "echo.1"}, "type": "Normal", "reason": "IPAllocated", "message": "hello",
                                             "involvedObject": {"kind": "Service", "namespace": "default", "name": "echo"}})
    assert "IPAllocated" in kubectl(kubeconfig, "get", "events") and "service/echo" in kubectl(kubeconfig, "get", "events")
    assert "192.0.2.13" in kubectl(kubeconfig, "get", "nodes", "-o", "wide")
    manifest = tmp_path / "slice.json"
    body = {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4", "endpoints": [],
            "metadata": {"name": "web-abcde", "namespace": "team-b", "labels": {"kubernetes.io/service-name": "web"}}}
    manifest.write_text(json.dumps(body))
    kubectl(kubeconfig, "apply", "-f", str(manifest))
    body["endpoints"] = [{"addresses": ["198.19.1.20"], "conditions": {"ready": True}}]
    manifest.write_text(json.dumps(body))
    assert "configured" in kubectl(kubeconfig, "apply", "-f", str(manifest))
    assert "198.19.1.20" in kubectl(kubeconfig, "get", "endpointslices", "-n", "team-b")
    kubectl(kubeconfig, "delete", "-f", str(manifest))
    assert kubectl(kubeconfig, "get", "endpointslices", "-n", "team-b") == ""
