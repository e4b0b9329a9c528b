"""kubectl 1.32 against the API stand-in, as a user drives custom resources: apply a CRD and
objects (client-side and server-side), tables from printer columns, explain, status patches,
deletion with finalizers, and the server's refusals as kubectl prints them."""

from __future__ import annotations

import json
import pathlib
import sys
from collections.abc import Iterator

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # for lab.k8s_stub, whatever directory pytest was started from
    sys.path.insert(0, str(REPO))

from lab.k8s_stub import FakeApiServer  # noqa: E402
from lab.k8s_stub.testing import KUBECTL, WIDGETS_CRD, kubectl  # noqa: E402

LAB = REPO / "lab/k8s_stub/fixtures/lab"
pytestmark = pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed")
WIDGET = """apiVersion: example.com/v1
kind: Widget
metadata:
  name: {name}
  namespace: team-a
spec:
  replicas: {replicas}
  address: 198.51.100.7
  listeners:
  - {{name: http, port: {port}}}
"""


@pytest.fixture
def kubeconfig(tmp_path: pathlib.Path) -> Iterator[pathlib.Path]:
    """A kubeconfig for a stand-in of the lab's cluster; only kubectl talks to it."""
    with FakeApiServer(fixtures=LAB) as api:
        yield api.write_kubeconfig(tmp_path / "kubeconfig")


@pytest.fixture
def widgets(kubeconfig: pathlib.Path) -> pathlib.Path:
    """The example CRD applied with kubectl and established."""
    assert kubectl(kubeconfig, "apply", "-f", str(WIDGETS_CRD)).stdout.strip() == (
        "customresourcedefinition.apiextensions.k8s.io/widgets.example.com created")
    kubectl(kubeconfig, "wait", "--for", "condition=established", "crd/widgets.example.com", "--timeout=10s")
    return kubeconfig


def apply(kubeconfig: pathlib.Path, *flags: str, name: str = "w1", replicas: int = 1, port: int = 80, check: bool = True) -> str:
    manifest = WIDGET.format(name=name, replicas=replicas, port=port)
    proc = kubectl(kubeconfig, "apply", *flags, "-f", "-", stdin=manifest, check=check)
    return proc.stdout + proc.stderr


def test_apply_a_crd_then_widgets_and_read_them_as_tables(widgets):
    assert "configured" in kubectl(widgets, "apply", "-f", str(WIDGETS_CRD)).stdout or "unchanged" in kubectl(
        widgets, "apply", "-f", str(WIDGETS_CRD)).stdout
    crds = kubectl(widgets, "get", "crd").stdout.splitlines()
    assert crds[0].split() == ["NAME", "CREATED", "AT"] and any(row.startswith("widgets.example.com ") for row in crds[1:])
    assert apply(widgets).strip() == "widget.example.com/w1 created"
    assert apply(widgets, replicas=3).strip() == "widget.example.com/w1 configured"
    version = kubectl(widgets, "get", "wd", "w1", "-n", "team-a", "-o", "jsonpath={.metadata.resourceVersion}").stdout
    # The listener's defaulted protocol makes kubectl's merge patch resend the list (as with a real
    # server): the write changes nothing, so the object keeps its resourceVersion.
    apply(widgets, replicas=3)
    assert kubectl(widgets, "get", "wd", "w1", "-n", "team-a", "-o", "jsonpath={.metadata.resourceVersion}").stdout == version
    header, row = kubectl(widgets, "get", "wd", "-n", "team-a").stdout.splitlines()
    assert header.split() == ["NAME", "MODE", "REPLICAS", "READY", "AGE"] and row.split()[:3] == ["w1", "Active", "3"]
    wide = kubectl(widgets, "get", "widgets", "-A", "-o", "wide").stdout.splitlines()
    assert wide[0].split() == ["NAMESPACE", "NAME", "MODE", "REPLICAS", "READY", "ADDRESS", "AGE"] and "198.51.100.7" in wide[1]
    document = json.loads(kubectl(widgets, "get", "widget", "w1", "-n", "team-a", "-o", "json").stdout)
    assert document["metadata"]["generation"] == 2 and document["spec"]["listeners"] == [{"name": "http", "port": 80, "protocol": "TCP"}]
    assert "kubectl.kubernetes.io/last-applied-configuration" in document["metadata"]["annotations"]
    assert "managedFields" not in kubectl(widgets, "get", "wd", "w1", "-n", "team-a", "-o", "yaml").stdout
    beta = kubectl(widgets, "get", "widgets.v1beta1.example.com", "w1", "-n", "team-a", "-o", "jsonpath={.apiVersion}")
    assert beta.stdout == "example.com/v1beta1" and "example.com/v1beta1 Widget is deprecated" in beta.stderr


def test_kubectl_shows_the_servers_refusals(widgets):
    refused = apply(widgets, port=70000, check=False)
    assert 'The Widget "w1" is invalid: spec.listeners[0].port: Invalid value: 70000: spec.listeners[0].port in body should be ' \
           "less than or equal to 65535" in refused
    typo = WIDGET.format(name="w2", replicas=1, port=80).replace("replicas:", "replicaz:")
    strict = kubectl(widgets, "apply", "-f", "-", stdin=typo, check=False)
    assert strict.returncode == 1 and 'strict decoding error: unknown field "spec.replicaz"' in strict.stderr
    warned = kubectl(widgets, "apply", "--validate=warn", "-f", "-", stdin=typo)
    assert 'Warning: unknown field "spec.replicaz"' in warned.stderr and "widget.example.com/w2 created" in warned.stdout
    assert "replicaz" not in kubectl(widgets, "get", "wd", "w2", "-n", "team-a", "-o", "jsonpath={.spec}").stdout


def test_explain_reads_the_published_schema(widgets):
    mode = kubectl(widgets, "explain", "widget.spec.mode").stdout
    assert "FIELD: mode <string>" in mode and "Active or Standby." in mode and "Active" in mode.split("ENUM:")[1]
    assert "listeners\t<[]Object> -required-" in kubectl(widgets, "explain", "widgets.spec").stdout


def test_status_patch_strategic_refusal_and_deletion_with_finalizers(widgets):
    apply(widgets)
    status = '{"status":{"conditions":[{"type":"Ready","status":"True"}]}}'
    kubectl(widgets, "patch", "wd", "w1", "-n", "team-a", "--type", "merge", "--subresource", "status", "-p", status)
    assert kubectl(widgets, "get", "wd", "w1", "-n", "team-a", "--no-headers").stdout.split()[3] == "True"
    strategic = kubectl(widgets, "patch", "wd", "w1", "-n", "team-a", "--type", "strategic", "-p", '{"spec":{"replicas":2}}', check=False)
    assert strategic.returncode == 1 and "the body of the request was in an unknown format" in strategic.stderr
    kubectl(widgets, "patch", "wd", "w1", "-n", "team-a", "--type", "merge", "-p", '{"metadata":{"finalizers":["example.com/hold"]}}')
    kubectl(widgets, "delete", "wd", "w1", "-n", "team-a", "--wait=false")
    held = json.loads(kubectl(widgets, "get", "wd", "w1", "-n", "team-a", "-o", "json").stdout)
    assert held["metadata"]["deletionTimestamp"] and held["metadata"]["finalizers"] == ["example.com/hold"]
    kubectl(widgets, "patch", "wd", "w1", "-n", "team-a", "--type", "json", "-p", '[{"op":"remove","path":"/metadata/finalizers"}]')
    gone = kubectl(widgets, "get", "wd", "w1", "-n", "team-a", check=False)
    assert gone.returncode == 1 and 'widgets.example.com "w1" not found' in gone.stderr


def test_server_side_apply_and_its_conflicts(widgets):
    assert apply(widgets, "--server-side").strip() == "widget.example.com/w1 serverside-applied"
    clash = apply(widgets, "--server-side", "--field-manager", "other", replicas=4, check=False)
    assert 'Apply failed with 1 conflict: conflict with "kubectl" using example.com/v1: .spec.replicas' in clash
    apply(widgets, "--server-side", "--field-manager", "other", "--force-conflicts", replicas=4)
    shown = json.loads(kubectl(widgets, "get", "wd", "w1", "-n", "team-a", "-o", "json", "--show-managed-fields").stdout)
    assert shown["spec"]["replicas"] == 4
    assert {(m["manager"], m["operation"]) for m in shown["metadata"]["managedFields"]} == {("kubectl", "Apply"), ("other", "Apply")}


def test_deleting_the_crd_takes_its_widgets(widgets):
    apply(widgets)
    kubectl(widgets, "delete", "crd", "widgets.example.com")
    assert "widgets.example.com" not in kubectl(widgets, "get", "crd", "-o", "name").stdout
    assert kubectl(widgets, "get", "--raw", "/apis/example.com/v1/namespaces/team-a/widgets", check=False).returncode == 1


def test_server_side_apply_of_a_service_merges_ports_by_port_and_protocol(kubeconfig):
    service = "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: team-b}\nspec:\n  type: LoadBalancer\n  ports: [%s]\n"
    node_ports = set()
    for wanted in ([("http", 80)], [("http", 80), ("https", 443)], [("http", 8080)]):  # add a port, then drop one
        ports = ", ".join(f"{{name: {name}, port: {port}}}" for name, port in wanted)
        kubectl(kubeconfig, "apply", "--server-side", "-f", "-", stdin=service % ports)
        shown = json.loads(kubectl(kubeconfig, "get", "svc", "web", "-n", "team-b", "-o", "json").stdout)
        assert [(p["name"], p["port"], p["protocol"]) for p in shown["spec"]["ports"]] == [(n, p, "TCP") for n, p in wanted]
        node_ports.add(shown["spec"]["ports"][0]["nodePort"])
    assert len(node_ports) == 1  # the http port keeps the node port the API server allocated
