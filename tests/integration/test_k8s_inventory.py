"""The k8s_services inventory plugin through `ansible-inventory`, against the API stand-in."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

REPO = pathlib.Path(__file__).resolve().parents[2]
BIN = pathlib.Path(sys.executable).parent
if str(REPO) not in sys.path:  # the stand-in lives in tests/, importable from the repository root
    sys.path.insert(0, str(REPO))

from ansible_collections.portico.gateway.plugins.module_utils.model.problems import from_data, render  # noqa: E402
from lab.k8s_stub.apiserver import FakeApiServer  # noqa: E402  pylint: disable=wrong-import-position

LAB_FIXTURES = REPO / "lab" / "k8s_stub" / "fixtures" / "lab"
LAB_SERVICES = ["default/dns", "default/echo", "default/echo-dual", "default/echo-local", "team-a/restricted"]
# The lab's LoadBalancer resources (crds/samples, loaded with the CRD by the lab fixtures).
LAB_LOADBALANCERS = ["default/appliance", "team-a/legacy-app"]
TEMPLATE = "{{ lookup('pipe','id') }}"


def lb_service(name: str, namespace: str = "default", annotations: dict[str, str] | None = None,
               protocol: str = "TCP", port: int = 8080) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": namespace, "annotations": annotations or {}},
        "spec": {"type": "LoadBalancer", "loadBalancerClass": "portico.io/gateway", "selector": {"app": "echo"},
                 "ports": [{"name": "p", "protocol": protocol, "port": port, "targetPort": 8080}]},
    }


def plain(value: Any) -> Any:
    """ansible-inventory marks untrusted strings as {"__ansible_unsafe": ...}; unwrap for comparisons."""
    if isinstance(value, dict):
        if set(value) == {"__ansible_unsafe"}:
            return value["__ansible_unsafe"]
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


@pytest.fixture
def apiserver() -> Iterator[FakeApiServer]:
    server = FakeApiServer(fixtures=LAB_FIXTURES).start()
    try:
        yield server
    finally:
        server.stop()


class Inventory:
    """A static inventory with one gateway plus a k8s_services source, run through Ansible."""

    def __init__(self, tmp: pathlib.Path, kubeconfig: pathlib.Path):
        self.tmp = tmp
        self.kubeconfig = kubeconfig
        self.hosts = tmp / "hosts.yml"
        self.hosts.write_text(yaml.safe_dump({"all": {"children": {"gateways": {"hosts": {"gw1": {
            "ansible_connection": "local", "ansible_python_interpreter": sys.executable}}}}}}))

    def config(self, **options: Any) -> pathlib.Path:
        path = self.tmp / "lab.k8s_services.yml"
        options.setdefault("kubeconfig", str(self.kubeconfig))
        path.write_text(yaml.safe_dump({"plugin": "portico.gateway.k8s_services", **options}))
        return path

    def run(self, tool: str, *args: str, config: pathlib.Path | None = None,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        sources = ["-i", str(self.hosts), "-i", str(config or self.config())]
        environment = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), **(env or {})}
        return subprocess.run([str(BIN / tool), *sources, *args], capture_output=True, text=True,
                              cwd=REPO, env=environment, check=False)

    def list(self, *args: str, **kwargs: Any) -> dict[str, Any]:
        proc = self.run("ansible-inventory", "--list", *args, **kwargs)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)


@pytest.fixture
def inventory(tmp_path: pathlib.Path, apiserver: FakeApiServer) -> Inventory:
    return Inventory(tmp_path, apiserver.write_kubeconfig(tmp_path / "kubeconfig"))


def text(problems: list[dict[str, str]]) -> list[str]:
    """Problems of an entry (plain data) as users read them."""
    return render(from_data(problems))


def document(value: Any) -> dict[str, Any]:
    """portico_k8s_services: one JSON document (a string, marked untrusted as a whole)."""
    return json.loads(plain(value))


def entries_of(listing: dict[str, Any], host: str = "gw1", kind: str = "Service") -> list[dict[str, Any]]:
    """The entries of one kind (LoadBalancer Services by default)."""
    entries = document(listing["_meta"]["hostvars"][host]["portico_k8s_services"])["services"]
    return [entry for entry in entries if entry.get("kind", "Service") == kind]


def services_of(listing: dict[str, Any], host: str = "gw1") -> list[dict[str, Any]]:
    return entries_of(listing, host)


def keys(entries: list[dict[str, Any]], kind: str = "Service") -> list[str]:
    return [f"{s['namespace']}/{s['name']}" for s in entries if s.get("kind", "Service") == kind]


def all_hosts(listing: dict[str, Any]) -> set[str]:
    return {h for name, group in listing.items() if name != "_meta" for h in group.get("hosts", [])}


def test_lab_services_become_entries_on_the_gateways(inventory: Inventory):
    listing = inventory.list()
    assert all_hosts(listing) == {"gw1"}  # the plugin adds no hosts
    services = services_of(listing)
    assert keys(services) == LAB_SERVICES
    by_key = {f"{s['namespace']}/{s['name']}": s for s in services}
    local = by_key["default/echo-local"]["loadbalancers"]
    assert local[0]["health_check"] == {"type": "http", "port": 32000, "path": "/healthz"}
    dual = by_key["default/echo-dual"]
    assert dual["ip_families"] == [4, 6] and [lb["name"] for lb in dual["loadbalancers"]] == [
        "lab/default/echo-dual", "lab/default/echo-dual/ipv6"]
    assert all(not s["problems"] and s["uid"] and s["resource_version"] and s["creation_timestamp"] for s in services)
    # Every nodeport LB of the cluster refers to one backend set: the Ready nodes.
    sets = document(listing["_meta"]["hostvars"]["gw1"]["portico_k8s_services"])["backend_sets"]
    assert {lb["backends"]["set"] for lb in by_key["default/echo"]["loadbalancers"] + local} <= set(sets)
    nodes = plain(listing["_meta"]["hostvars"]["gw1"]["portico_k8s_nodes"])
    assert [n["name"] for n in nodes] == ["node1", "node2", "node3"]


def test_annotation_values_stay_data(inventory: Inventory, apiserver: FakeApiServer):
    apiserver.apply(lb_service("template", annotations={"portico.io/sharing-key": TEMPLATE}))
    listing = inventory.list()
    published = listing["_meta"]["hostvars"]["gw1"]["portico_k8s_services"]
    assert set(published) == {"__ansible_unsafe"}  # the whole document is marked untrusted
    raw = next(s for s in services_of(listing) if s["name"] == "template")
    assert raw["sharing_key"] == TEMPLATE  # verbatim
    # A play reading the variable sees the text, never the lookup's output.
    proc = inventory.run("ansible", "gateways", "-m", "ansible.builtin.debug", "-a",
                         "msg={{ (portico_k8s_services | from_json).services | selectattr('name', 'equalto', 'template') "
                         "| map(attribute='sharing_key') | first }}", env={"ANSIBLE_CALLBACK_RESULT_FORMAT": "json"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert TEMPLATE in proc.stdout and "uid=" not in proc.stdout


def test_changes_in_the_cluster_show_on_the_next_run(inventory: Inventory, apiserver: FakeApiServer):
    apiserver.apply(lb_service("added", "team-b"))
    apiserver.apply(lb_service("sig", protocol="SCTP"))
    apiserver.apply(lb_service("typo", annotations={"portico.io/pol": "public"}))
    # These Services have no pods; this test is about translation, not endpoint readiness.
    config = inventory.config(serve_without_endpoints=True)
    by_key = {f"{s['namespace']}/{s['name']}": s for s in services_of(inventory.list(config=config))}
    assert by_key["team-b/added"]["problems"] == []
    assert by_key["default/sig"]["problems"] == [
        {"subject": "lab/default/sig", "field": "spec.ports[0].protocol", "message": "SCTP is not supported (supported: TCP, UDP)"}]
    assert text(by_key["default/typo"]["problems"]) == [
        "lab/default/typo: metadata.annotations['portico.io/pol']: unknown annotation (did you mean 'portico.io/pool'?)"]
    assert all(not by_key[k]["problems"] for k in LAB_SERVICES)


def test_status_ips_are_read_back(inventory: Inventory, apiserver: FakeApiServer):
    echo = apiserver.get("Service", "default", "echo")
    echo["status"] = {"loadBalancer": {"ingress": [{"ip": "198.51.100.20", "ipMode": "VIP"}]}}
    apiserver.apply(echo)
    by_key = {f"{s['namespace']}/{s['name']}": s for s in services_of(inventory.list())}
    assert by_key["default/echo"]["status_ips"] == ["198.51.100.20"]


def test_namespace_filters(inventory: Inventory):
    assert keys(services_of(inventory.list(config=inventory.config(namespaces=["team-a"])))) == ["team-a/restricted"]
    excluded = keys(services_of(inventory.list(config=inventory.config(exclude_namespaces=["team-a"]))))
    assert excluded == [k for k in LAB_SERVICES if not k.startswith("team-a/")]


def test_class_options_and_env_bindings(inventory: Inventory, apiserver: FakeApiServer):
    apiserver.apply({**lb_service("classless"), "spec": {**lb_service("classless")["spec"], "loadBalancerClass": None}})
    config = inventory.tmp / "env.k8s_services.yml"
    config.write_text("plugin: portico.gateway.k8s_services\n")
    env = {"PORTICO_K8S_KUBECONFIG": str(inventory.kubeconfig), "PORTICO_K8S_SERVE_DEFAULT_CLASS": "true"}
    assert "default/classless" in keys(services_of(inventory.list(config=config, env=env)))
    assert "default/classless" not in keys(services_of(inventory.list(config=config, env={**env, "PORTICO_K8S_SERVE_DEFAULT_CLASS": "false"})))
    other = inventory.list(config=config, env={**env, "PORTICO_K8S_LOAD_BALANCER_CLASS": "example.com/other",
                                               "PORTICO_K8S_SERVE_DEFAULT_CLASS": "false"})
    assert services_of(other) == []


def test_gateway_group_is_created_empty_when_missing(inventory: Inventory):
    listing = inventory.list("--export", config=inventory.config(gateway_group="portico_edge"))
    assert all_hosts(listing) == {"gw1"}
    assert "hosts" not in listing["portico_edge"]
    assert keys(document(listing["portico_edge"]["vars"]["portico_k8s_services"])["services"]) == LAB_SERVICES
    assert "portico_k8s_services" not in listing["_meta"]["hostvars"]["gw1"]


def test_constructed_features_apply_to_gateway_hosts(inventory: Inventory):
    config = inventory.config(
        compose={"portico_k8s_service_count": "(portico_k8s_services | from_json).services | length"},
        groups={"serving_k8s": "(portico_k8s_services | from_json).services | length > 0"},
        keyed_groups=[{"key": "(portico_k8s_services | from_json).services | map(attribute='cluster') | unique | list",
                       "prefix": "cluster"}],
    )
    listing = inventory.list(config=config)
    assert all_hosts(listing) == {"gw1"}
    assert listing["_meta"]["hostvars"]["gw1"]["portico_k8s_service_count"] == len(LAB_SERVICES) + len(LAB_LOADBALANCERS)
    assert listing["serving_k8s"]["hosts"] == ["gw1"]
    assert listing["cluster_lab"]["hosts"] == ["gw1"]


def test_several_clusters_in_one_source(inventory: Inventory, tmp_path: pathlib.Path):
    with FakeApiServer(fixtures=[str(LAB_FIXTURES / "00-namespaces.yaml"), str(LAB_FIXTURES / "10-nodes.yaml")]) as west:
        west.apply(lb_service("only-west"))
        west_config = west.write_kubeconfig(tmp_path / "west.kubeconfig", context="west-admin", cluster_name="west")
        config = inventory.config(clusters=[{"name": "east", "kubeconfig": str(inventory.kubeconfig)},
                                            {"name": "west", "kubeconfig": str(west_config), "context": "west-admin"}],
                                  serve_without_endpoints=True)  # only-west has no pods
        services = services_of(inventory.list(config=config))
    assert [(s["cluster"], s["name"]) for s in services] == [("east", n.split("/")[1]) for n in LAB_SERVICES] + [("west", "only-west")]
    assert services[-1]["loadbalancers"][0]["name"] == "west/default/only-west"


def test_cache_serves_when_the_api_is_gone(inventory: Inventory, apiserver: FakeApiServer):
    config = inventory.config(cache=True, cache_plugin="ansible.builtin.jsonfile",
                              cache_connection=str(inventory.tmp / "cache"), cache_timeout=3600)
    first = services_of(inventory.list(config=config))
    apiserver.stop()
    assert services_of(inventory.list(config=config)) == first


def test_an_unreachable_cluster_publishes_one_line_instead_of_an_empty_list(inventory: Inventory, apiserver: FakeApiServer):
    """Nothing is published that would withdraw the cluster's VIPs; the source says which cluster and
    what failed, in one line, and prints nothing itself (plays that need no cluster stay quiet)."""
    url = apiserver.url
    apiserver.stop()
    proc = inventory.run("ansible-inventory", "--list")
    assert proc.returncode == 0 and "WARNING" not in proc.stderr and "Failed to parse" not in proc.stderr, proc.stderr
    hostvars = json.loads(proc.stdout)["_meta"]["hostvars"]["gw1"]
    assert "portico_k8s_services" not in hostvars
    error = plain(hostvars["portico_k8s_error"])
    assert error == (f"Kubernetes cluster lab (kubeconfig {inventory.kubeconfig}): cannot reach the Kubernetes API at {url}: "
                     "Connection refused")


def test_a_focused_run_translates_only_what_changed(inventory: Inventory, apiserver: FakeApiServer):
    """With a state directory, a run the watcher focuses (PORTICO_CHANGED, PORTICO_FULL=0) reuses
    the entries of Services that did not change; Services are listed fresh every time."""
    config = inventory.config(state_dir=str(inventory.tmp / "state"))
    full = inventory.run("ansible-inventory", "--list", config=config, env={"PORTICO_FULL": "1"})
    assert full.returncode == 0 and "translated" not in full.stderr  # nothing reused: a full read
    # echo-local scales to zero; the watcher names it. dns does too, unnamed.
    local_slice = next(s for s in apiserver.list("EndpointSlice", "default")
                       if s["metadata"]["labels"]["kubernetes.io/service-name"] == "echo-local")
    local_slice["endpoints"] = None
    apiserver.apply(local_slice)
    dns_slice = next(s for s in apiserver.list("EndpointSlice", "default")
                     if s["metadata"]["labels"]["kubernetes.io/service-name"] == "dns")
    dns_slice["endpoints"] = None
    apiserver.apply(dns_slice)
    echo = apiserver.get("Service", "default", "echo")
    echo["status"] = {"loadBalancer": {"ingress": [{"ip": "198.51.100.20", "ipMode": "VIP"}]}}
    apiserver.apply(echo)
    focused = inventory.run("ansible-inventory", "--list", config=config,
                            env={"PORTICO_FULL": "0", "PORTICO_CHANGED": json.dumps(["lab/default/echo-local"])})
    assert focused.returncode == 0, focused.stderr
    assert "1 translated, 4 reused" in focused.stderr
    by_key = {f"{s['namespace']}/{s['name']}": s for s in services_of(json.loads(focused.stdout))}
    assert by_key["default/echo-local"]["loadbalancers"][0]["backends"] == []  # translated again: no pods
    assert by_key["default/echo"]["status_ips"] == ["198.51.100.20"]  # listed fresh, though reused
    assert by_key["default/dns"]["warnings"] == []  # not named, slices not read again: the next full run sees it
    # A Service that changed in what translation reads is translated even when not named.
    dual = apiserver.get("Service", "default", "echo-dual")
    dual["spec"]["ports"][0]["port"] = 8080
    apiserver.apply(dual)
    again = inventory.run("ansible-inventory", "--list", config=config,
                          env={"PORTICO_FULL": "0", "PORTICO_CHANGED": json.dumps(["lab/default/echo-local"])})
    by_key = {f"{s['namespace']}/{s['name']}": s for s in services_of(json.loads(again.stdout))}
    assert by_key["default/echo-dual"]["loadbalancers"][0]["ports"][0]["port"] == 8080
    # A Node key makes it a full run again.
    node = inventory.run("ansible-inventory", "--list", config=config,
                         env={"PORTICO_FULL": "0", "PORTICO_CHANGED": json.dumps(["lab//node1"])})
    assert "reused" not in node.stderr
    by_key = {f"{s['namespace']}/{s['name']}": s for s in services_of(json.loads(node.stdout))}
    assert by_key["default/dns"]["warnings"]  # its slice has no endpoints now


def test_loadbalancer_resources_become_entries_next_to_services(inventory: Inventory, apiserver: FakeApiServer):
    """The lab's two LoadBalancer resources: one entry each, their own kind and keys, LB names that
    can never be a Service's, field sources in the resource's terms; a resource of another class is
    skipped and counted."""
    other = apiserver.get("LoadBalancer", "team-a", "legacy-app")
    other["metadata"] = {"name": "elsewhere", "namespace": "team-a"}
    other["spec"]["loadBalancerClass"] = "example.com/other"
    apiserver.apply(other)
    proc = inventory.run("ansible-inventory", "--list")
    assert proc.returncode == 0, proc.stderr
    assert "2 LoadBalancer resources to serve; skipped 1 of another loadBalancerClass" in proc.stderr
    resources = {f"{e['namespace']}/{e['name']}": e for e in entries_of(json.loads(proc.stdout), kind="LoadBalancer")}
    assert sorted(resources) == LAB_LOADBALANCERS
    app = resources["team-a/legacy-app"]
    assert not app["problems"] and app["ip_families"] == [4] and app["status_details"]["state"] == "active"
    (lb,) = app["loadbalancers"]
    assert lb["name"] == "lab/team-a/LoadBalancer/legacy-app" and lb["source"] == "loadbalancer-resource"
    assert lb["health_check"] == {"type": "http", "port": 8082, "path": "/healthz", "expected_status": [200],
                                  "interval_ms": 200, "timeout_ms": 150, "rise": 2, "fall": 2}
    assert app["field_sources"] == {"name": "metadata.name", "ports[0].port": "spec.listeners[0].port"}
    appliance = resources["default/appliance"]
    assert appliance["ip_families"] == [4, 6] and [a["ip"] for a in appliance["addresses"]] == ["198.51.100.50", None]
    assert [[b["address"] for b in lb["backends"]] for lb in appliance["loadbalancers"]] == [
        ["192.0.2.12", "192.0.2.13"], ["2001:db8:192::12", "2001:db8:192::13"]]
