"""bin/portico-watch follows the Gateway API: a route or Gateway change, and a change of a Service
a route sends to, trigger a full run; Portico's own status writes do not. Against the API stand-in
(``python -m lab.k8s_stub``) serving the lab fixtures and the lab's Gateway API objects, with the
recording command of test_watcher in place of ansible-playbook."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from kubernetes import client
from test_watcher import LAB, REPO, Watcher, wait_for

from ansible_collections.portico.gateway.plugins.module_utils.k8s.client import K8sAuth, api_client
from ansible_collections.portico.gateway.plugins.module_utils.k8s.snapshot import focus_of

LAB_GATEWAY_API = REPO / "lab/k8s_stub/fixtures/lab-gateway-api"
GROUP = "gateway.networking.k8s.io"


@pytest.fixture
def stub(tmp_path: pathlib.Path) -> Iterator[pathlib.Path]:
    kubeconfig = tmp_path / "kubeconfig"
    proc = subprocess.Popen([sys.executable, "-m", "lab.k8s_stub", "--port", "0", "--fixtures", str(LAB), "--fixtures",
                             str(LAB_GATEWAY_API), "--kubeconfig", str(kubeconfig)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert "listening" in line, line
        yield kubeconfig
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def custom(stub: pathlib.Path) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(api_client(K8sAuth(kubeconfig=str(stub))))


@pytest.fixture
def watcher(tmp_path: pathlib.Path, stub: pathlib.Path) -> Iterator[Watcher]:
    started = Watcher(tmp_path, stub)
    yield started
    if started.proc is not None and started.proc.poll() is None:
        assert started.stop() == 0, started.log.read_text()


def full_downstream(run: dict) -> bool:
    """The inventory source reads everything for these keys (and the write-back writes every
    object: playbooks/vars/k8s_status.yml treats a ``//`` key alike)."""
    return focus_of(json.dumps(run["changed"]), bool(run["full"])) is None and all("//" in key for key in run["changed"])


def started(watcher: Watcher) -> Watcher:
    """Started, and watching the four Gateway API kinds Portico reads besides the core ones."""
    watcher.start()
    wait_for(lambda: all(f"{kind}s: watching from resourceVersion" in watcher.log.read_text()
                         for kind in ("GatewayClass", "Gateway", "TCPRoute", "UDPRoute", "ReferenceGrant")),
             10, f"the Gateway API watches:\n{watcher.log.read_text()}")
    return watcher


def test_a_route_weight_change_triggers_a_full_run(watcher: Watcher, custom: client.CustomObjectsApi):
    started(watcher)
    before = time.time()
    patch = {"spec": {"rules": [{"backendRefs": [{"name": "echo", "port": 80, "weight": 50},
                                                 {"name": "echo-local", "port": 80, "weight": 50}]}]}}
    custom.patch_namespaced_custom_object(GROUP, "v1", "default", "tcproutes", "echo-canary", patch)
    run = wait_for(lambda: watcher.runs_after(before), 5, "a run")[0]
    print(f"\nwatcher latency, TCPRoute patched -> command started: {(run['t'] - before) * 1000:.0f} ms")
    assert full_downstream(run) and run["changed"] == ["lab//TCPRoute/default/echo-canary"]
    assert run["payload"]["reasons"] == {"lab//TCPRoute/default/echo-canary": ["TCPRoute spec changed"]}


def test_a_status_write_does_not_trigger_and_a_gateway_deletion_does(watcher: Watcher, custom: client.CustomObjectsApi):
    started(watcher)
    before = time.time()
    status = {"status": {"parents": [{"parentRef": {"name": "edge", "sectionName": "udp-dns"}, "controllerName": "portico.io/gateway-controller",
                                      "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted", "message": "ok",
                                                      "lastTransitionTime": "2026-01-01T00:00:00Z"}]}]}}
    custom.patch_namespaced_custom_object_status(GROUP, "v1", "default", "udproutes", "dns", status)
    time.sleep(1.2)
    assert watcher.runs_after(before) == []
    custom.delete_namespaced_custom_object(GROUP, "v1", "default", "gateways", "edge")
    run = wait_for(lambda: watcher.runs_after(before), 5, "a run")[0]
    assert full_downstream(run) and run["payload"]["reasons"] == {"lab//Gateway/default/edge": ["Gateway deleted"]}


def test_the_endpoints_of_a_routes_backend_trigger_a_full_run(watcher: Watcher, custom: client.CustomObjectsApi, stub: pathlib.Path):
    core = client.CoreV1Api(api_client(K8sAuth(kubeconfig=str(stub))))
    discovery = client.DiscoveryV1Api(api_client(K8sAuth(kubeconfig=str(stub))))
    # A ClusterIP Service: Portico does not serve it on its own, only as a route's backend.
    core.create_namespaced_service("default", {"metadata": {"name": "db"}, "spec": {"ports": [{"port": 5432}]}})
    discovery.create_namespaced_endpoint_slice("default", {
        "metadata": {"name": "db-abcde", "labels": {"kubernetes.io/service-name": "db"}}, "addressType": "IPv4",
        "endpoints": [{"addresses": ["198.19.1.70"], "conditions": {"ready": True}}], "ports": [{"port": 5432}]})
    started(watcher)
    before = time.time()
    custom.create_namespaced_custom_object(GROUP, "v1", "default", "tcproutes", {
        "apiVersion": f"{GROUP}/v1", "kind": "TCPRoute", "metadata": {"name": "db"},
        "spec": {"parentRefs": [{"name": "edge", "sectionName": "tcp-echo"}], "rules": [{"backendRefs": [{"name": "db", "port": 5432}]}]}})
    wait_for(lambda: watcher.runs_after(before), 5, "the route's run")
    time.sleep(0.8)
    after_route = time.time()
    slice_ = json.loads(discovery.read_namespaced_endpoint_slice("db-abcde", "default", _preload_content=False).data)
    endpoints = [*slice_["endpoints"], {"addresses": ["198.19.2.70"], "conditions": {"ready": True}}]
    discovery.patch_namespaced_endpoint_slice("db-abcde", "default", {"endpoints": endpoints})
    run = wait_for(lambda: watcher.runs_after(after_route), 5, "a run for the backend's endpoints")[0]
    assert full_downstream(run)
    assert run["payload"]["reasons"] == {"lab//Service/default/db": ["EndpointSlice db-abcde of a route's backend changed"]}


def test_a_namespace_label_change_triggers_a_full_run(watcher: Watcher, stub: pathlib.Path):
    """A listener may allow the namespaces a selector picks: a label can attach or detach routes."""
    core = client.CoreV1Api(api_client(K8sAuth(kubeconfig=str(stub))))
    started(watcher)
    before = time.time()
    core.patch_namespace("team-b", {"metadata": {"labels": {"edge-access": "yes"}}})
    run = wait_for(lambda: watcher.runs_after(before), 5, "a run")[0]
    assert full_downstream(run) and run["changed"] == ["lab//Namespace/team-b"]
