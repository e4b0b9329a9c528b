"""On-demand reconcile: the debouncer (explicit clock), the relevance filter, list+watch recovery
and the configuration of bin/portico-watch and the EDA source, without an API server."""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import pathlib
import runpy
import subprocess
import sys
import textwrap
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
import urllib3
import yaml
from kubernetes.client.exceptions import ApiException

from ansible_collections.portico.gateway.plugins.module_utils.k8s.client import K8sAuth
from ansible_collections.portico.gateway.plugins.module_utils.k8s.sources import (
    ClusterConfig,
    SourceError,
    parse_source,
    resolve_options,
)
from ansible_collections.portico.gateway.plugins.module_utils.k8s.translate import TranslateOptions
from ansible_collections.portico.gateway.plugins.module_utils.k8s.watch import (
    Batch,
    Change,
    ClusterState,
    ClusterWatcher,
    Debouncer,
    DebounceSettings,
    Outcome,
    Reconciler,
    WatchTimings,
    _Resource,
    batch_payload,
    eda_event,
)

REPO = pathlib.Path(__file__).resolve().parents[2]
EDA_PLUGIN = REPO / "collections/ansible_collections/portico/gateway/extensions/eda/plugins/event_source/k8s_services.py"
LAB = REPO / "lab/k8s_stub/fixtures/lab"
OPTIONS = TranslateOptions(cluster="lab")
SETTINGS = DebounceSettings(quiet=0.3, max_wait=2.0, resync=300.0, backoff_initial=1.0, backoff_max=60.0)


LAB_DOCS = [d for f in sorted(LAB.glob("*.yaml")) for d in yaml.safe_load_all(f.read_text()) if d]


def lab_objects(kind: str) -> list[dict[str, Any]]:
    return [copy.deepcopy(d) for d in LAB_DOCS if d["kind"] == kind]


def lab(kind: str, name: str) -> dict[str, Any]:
    return copy.deepcopy(next(o for o in lab_objects(kind) if o["metadata"]["name"] == name))


def change(key: str, reason: str = "Service spec changed") -> Change:
    return Change(key, reason)


# --- debouncer -------------------------------------------------------------------------------


def test_first_change_runs_after_the_quiet_window():
    deb = Debouncer(SETTINGS, now=0.0)
    assert deb.take(0.0) is None and deb.due_at(0.0) == 300.0  # only the resync is ahead
    deb.add([change("lab/default/a")], now=10.0)
    assert deb.due_at(10.0) == pytest.approx(10.3)
    assert deb.take(10.29) is None
    batch = deb.take(10.3)
    assert batch is not None and batch.changed == ("lab/default/a",) and not batch.full
    assert batch.reasons == {"lab/default/a": ("Service spec changed",)} and batch.first_change_at == 10.0


def test_every_change_restarts_the_quiet_window_until_the_max_wait():
    deb = Debouncer(SETTINGS, now=0.0)
    now = 10.0
    for index in range(25):  # a storm: one change every 0.1 s
        deb.add([change(f"lab/default/s{index}")], now)
        if deb.take(now) is not None:
            break
        now = round(now + 0.1, 3)
    assert now == pytest.approx(12.0)  # capped at max_wait after the first change, not at the storm's end
    assert deb.running is not None and len(deb.running.changed) == 21


def test_one_run_at_a_time_and_changes_during_a_run_make_the_next():
    deb = Debouncer(SETTINGS, now=0.0)
    deb.add([change("lab/default/a")], 1.0)
    first = deb.take(1.3)
    deb.add([change("lab/default/b"), change("lab/default/a", "EndpointSlice a-1 changed")], 1.5)
    assert deb.take(5.0) is None and deb.due_at(5.0) is None  # still running
    assert deb.finish(first, ok=True, now=5.0) is None
    second = deb.take(5.0)  # quiet and max wait long over: at once
    assert second.changed == ("lab/default/a", "lab/default/b") and second.number == 2
    assert second.reasons["lab/default/a"] == ("EndpointSlice a-1 changed",)


def test_failed_runs_back_off_exponentially_up_to_the_cap_and_keep_their_keys():
    deb = Debouncer(SETTINGS, now=0.0)
    deb.add([change("lab/default/a")], 0.0)
    batch, now, delays = deb.take(0.3), 0.3, []
    for _ in range(8):
        delay = deb.finish(batch, ok=False, now=now)
        delays.append(delay)
        assert deb.take(now + delay - 0.01) is None
        now += delay
        batch = deb.take(now)
        assert batch.changed == ("lab/default/a",) and batch.reasons["lab/default/a"] == ("Service spec changed",)
    assert delays == [1, 2, 4, 8, 16, 32, 60, 60] and batch.attempt == 9
    deb.add([change("lab/default/b")], now)
    deb.finish(batch, ok=True, now=now + 1)
    after = deb.take(now + 1.3)
    assert after.attempt == 1 and after.changed == ("lab/default/b",)  # success resets the back-off


def test_changes_arriving_during_the_back_off_join_the_retry():
    deb = Debouncer(SETTINGS, now=0.0)
    deb.add([change("lab/default/a")], 0.0)
    failed = deb.take(0.3)
    deb.finish(failed, ok=False, now=0.5)  # retry at 1.5
    deb.add([change("lab/default/b")], 0.6)
    assert deb.take(1.0) is None  # quiet and over max wait would allow it, the back-off does not
    retry = deb.take(1.5)
    assert retry.changed == ("lab/default/a", "lab/default/b") and retry.first_change_at == 0.0


def test_full_resync_on_the_timer_even_without_changes():
    deb = Debouncer(SETTINGS, now=0.0)
    assert deb.take(299.9) is None
    batch = deb.take(300.0)
    assert batch.full and batch.changed == () and "resync every 300s" in batch.summary()
    deb.add([change("lab/default/a")], 310.0)
    deb.finish(batch, ok=True, now=320.0)  # the next resync counts from the start of this one
    assert deb.take(320.0).changed == ("lab/default/a",)
    deb.finish(deb.running, ok=True, now=321.0)
    assert deb.due_at(321.0) == 600.0 and deb.take(599.0) is None and deb.take(600.0).full


def test_a_failed_resync_backs_off_instead_of_rerunning_at_once():
    deb = Debouncer(SETTINGS, now=0.0)
    batch, now = deb.take(300.0), 300.0
    for expected in (1, 2, 4, 8):
        delay = deb.finish(batch, ok=False, now=now)
        assert delay == expected
        assert deb.due_at(now) == now + delay and deb.take(now + delay - 0.01) is None
        now += delay
        batch = deb.take(now)
        assert batch.full
    deb.finish(batch, ok=True, now=now + 1)
    assert deb.due_at(now + 1) == now + 300.0


def test_a_full_request_runs_at_once_and_carries_pending_keys():
    deb = Debouncer(DebounceSettings(resync=0), now=0.0)
    assert deb.due_at(0.0) is None  # resync 0: no timer
    deb.add([change("lab/default/a")], 1.0)
    deb.request_full("start", 1.0)
    batch = deb.take(1.0)
    assert batch.full and batch.full_reason == "start" and batch.changed == ("lab/default/a",)
    deb.finish(batch, ok=False, now=1.0)
    assert deb.take(2.0).full  # a failed full run is retried as a full run


def test_reconciler_logs_a_failed_runner_as_a_failed_run(caplog: pytest.LogCaptureFixture):
    def broken(_batch: Batch) -> Outcome:
        raise OSError("boom")

    reconciler = Reconciler([], broken, SETTINGS, initial_full=False, clock=lambda: 7.0)
    with caplog.at_level("INFO", logger="portico.watch"):
        outcome = reconciler.run_full_once("test")
    assert not outcome.ok and "boom" in outcome.detail
    assert reconciler.debouncer.failures == 1
    assert "trigger 1 attempt 1: 0 key(s) full" in caplog.text and "FAILED, retry in 1s" in caplog.text


# --- relevance -------------------------------------------------------------------------------


@pytest.fixture
def state() -> ClusterState:
    primed = ClusterState(OPTIONS)
    for kind in ("Service", "EndpointSlice", "Node"):
        assert primed.relist(kind, lab_objects(kind), prime=True) == []
    return primed


def test_status_only_write_is_dropped(state: ClusterState):
    echo = lab("Service", "echo")
    echo["status"] = {"loadBalancer": {"ingress": [{"ip": "198.51.100.99"}]}}
    echo["metadata"]["resourceVersion"] = "999"
    assert state.event("Service", "MODIFIED", echo) == []


def test_spec_and_annotation_changes_are_kept(state: ClusterState):
    echo = lab("Service", "echo")
    echo["spec"]["ports"][0]["port"] = 8080
    assert state.event("Service", "MODIFIED", echo) == [Change("lab/default/echo", "Service spec changed")]
    echo["metadata"].setdefault("annotations", {})["portico.io/pool"] = "team-b"
    assert state.event("Service", "MODIFIED", echo) == [Change("lab/default/echo", "Service annotations changed")]
    assert state.event("Service", "MODIFIED", echo) == []  # the same again: a no-op


def test_loadbalancer_to_clusterip_is_kept_and_then_ignored(state: ClusterState):
    echo = lab("Service", "echo")
    echo["spec"]["type"] = "ClusterIP"
    assert state.event("Service", "MODIFIED", echo) == [Change("lab/default/echo", "Service no longer served")]
    echo["metadata"]["labels"] = {"now": "irrelevant"}
    assert state.event("Service", "MODIFIED", echo) == []


def test_other_load_balancer_class_is_like_not_served(state: ClusterState):
    echo = lab("Service", "echo")
    echo["spec"]["loadBalancerClass"] = "metallb.io/l2"
    assert state.event("Service", "MODIFIED", echo) == [Change("lab/default/echo", "Service no longer served")]
    echo["spec"]["loadBalancerClass"] = "portico.io/gateway"
    assert state.event("Service", "MODIFIED", echo) == [Change("lab/default/echo", "Service now served")]


def test_porticos_own_claim_is_dropped(state: ClusterState):
    echo = lab("Service", "echo")
    echo["metadata"]["finalizers"] = ["service.kubernetes.io/load-balancer-cleanup"]
    echo["metadata"].setdefault("annotations", {})["portico.io/served-by"] = "portico.io/gateway"
    assert state.event("Service", "MODIFIED", echo) == []


def test_a_deletion_held_by_the_finalizer_and_leaving_the_scope_are_kept(state: ClusterState):
    echo = lab("Service", "echo")
    echo["metadata"]["finalizers"] = ["service.kubernetes.io/load-balancer-cleanup"]
    echo["metadata"]["annotations"] = {"portico.io/served-by": "portico.io/gateway"}
    state.event("Service", "MODIFIED", echo)
    echo["metadata"]["deletionTimestamp"] = "2025-04-20T08:30:00Z"
    assert state.event("Service", "MODIFIED", echo) == [Change("lab/default/echo", "Service scope changed")]
    dns = lab("Service", "dns")
    dns["metadata"]["annotations"] = {"portico.io/served-by": "portico.io/gateway"}
    state.event("Service", "MODIFIED", dns)
    dns["spec"]["type"] = "ClusterIP"
    assert state.event("Service", "MODIFIED", dns) == [Change("lab/default/dns", "Service spec, scope changed")]
    dns["metadata"]["annotations"] = {}  # released: out of scope and unmarked
    assert state.event("Service", "MODIFIED", dns) == [Change("lab/default/dns", "Service no longer served")]


def test_deleted_service_is_kept(state: ClusterState):
    assert state.event("Service", "DELETED", lab("Service", "dns")) == [Change("lab/default/dns", "Service deleted")]


def test_non_loadbalancer_service_is_ignored(state: ClusterState):
    plain = {"metadata": {"name": "api", "namespace": "default"}, "spec": {"type": "ClusterIP", "ports": [{"port": 80}]}}
    assert state.event("Service", "ADDED", plain) == []
    plain["spec"]["ports"][0]["port"] = 81
    assert state.event("Service", "MODIFIED", plain) == []
    assert state.event("Service", "DELETED", plain) == []


def test_excluded_namespace_is_ignored():
    state = ClusterState(TranslateOptions(cluster="lab", exclude_namespaces=("team-a",)))
    assert state.event("Service", "ADDED", lab("Service", "restricted")) == []
    assert state.event("Service", "ADDED", lab("Service", "echo")) == [Change("lab/default/echo", "Service added")]


def test_endpointslice_of_a_served_service_names_the_service(state: ClusterState):
    slice_ = lab("EndpointSlice", "echo-8kq2w")
    slice_["endpoints"][0]["conditions"]["ready"] = False
    assert state.event("EndpointSlice", "MODIFIED", slice_) == [Change("lab/default/echo", "EndpointSlice echo-8kq2w changed")]
    slice_["metadata"]["annotations"]["endpoints.kubernetes.io/last-change-trigger-time"] = "2025-02-01T00:00:00Z"
    assert state.event("EndpointSlice", "MODIFIED", slice_) == []  # controller bookkeeping only


def test_endpointslice_of_an_unrelated_service_is_ignored(state: ClusterState):
    unrelated = lab("EndpointSlice", "echo-8kq2w")
    unrelated["metadata"].update(name="api-x1", labels={"kubernetes.io/service-name": "api"})
    assert state.event("EndpointSlice", "ADDED", unrelated) == []
    unrelated["endpoints"] = None
    assert state.event("EndpointSlice", "MODIFIED", unrelated) == []


def test_node_heartbeat_is_dropped_readiness_and_pod_cidrs_are_kept(state: ClusterState):
    node = lab("Node", "node2")
    for condition in node["status"]["conditions"]:
        condition["lastHeartbeatTime"] = "2025-03-01T00:00:00Z"
    node["status"]["allocatable"]["pods"] = "100"
    assert state.event("Node", "MODIFIED", node) == []
    next(c for c in node["status"]["conditions"] if c["type"] == "Ready")["status"] = "False"
    assert state.event("Node", "MODIFIED", node) == [Change("lab//node2", "Node ready changed")]
    node["spec"]["podCIDRs"] = ["198.19.22.0/24"]
    assert state.event("Node", "MODIFIED", node) == [Change("lab//node2", "Node pod_cidrs changed")]


def test_relist_reports_what_changed_while_not_watching(state: ClusterState):
    services = lab_objects("Service")
    gone = services.pop(0)
    services[0]["spec"]["sessionAffinity"] = "ClientIP"
    changed = services[0]["metadata"]["name"]
    services.append({**lab("Service", "echo"), "metadata": {"name": "new", "namespace": "default"}})
    assert state.relist("Service", services) == sorted([
        Change(f"lab/default/{gone['metadata']['name']}", "Service gone (relist)"),
        Change(f"lab/default/{changed}", "Service spec changed (relist)"),
        Change("lab/default/new", "Service added (relist)"),
    ], key=lambda c: c.key)


def test_names_that_are_not_kubernetes_names_never_become_keys(state: ClusterState):
    bad = lab("Service", "echo")
    bad["metadata"]["name"] = "{{ lookup('pipe', 'id') }}"
    assert state.event("Service", "ADDED", bad) == []


# --- list + watch recovery ---------------------------------------------------------------------


class ScriptedWatcher(ClusterWatcher):
    """A ClusterWatcher whose list and watch calls follow a script instead of an API server."""

    def __init__(self, lists: list[tuple[list[dict[str, Any]], str]], streams: list[Any]):
        self.submitted: list[Change] = []
        super().__init__(ClusterConfig("lab", K8sAuth(), OPTIONS), self.submitted.extend,
                         WatchTimings(backoff_initial=0.01, backoff_max=0.02))
        self.lists, self.streams, self.watched_from = lists, streams, []

    def list(self, resource: _Resource) -> tuple[list[Mapping[str, Any]], str]:
        return self.lists.pop(0)

    def stream(self, resource: _Resource, rv: str, timeout: float) -> Iterator[Mapping[str, Any]]:
        self.watched_from.append(rv)
        step = self.streams.pop(0)
        if not self.streams:
            self._stopping.set()
        for item in step:
            if isinstance(item, Exception):
                raise item
            yield item


def test_gone_relists_and_reports_the_gap_and_errors_reconnect_from_the_last_version():
    echo, dns = lab("Service", "echo"), lab("Service", "dns")
    echo_v2, echo_v3 = copy.deepcopy(echo), copy.deepcopy(echo)
    echo_v2["spec"]["ports"][0]["port"] = 81
    echo_v2["metadata"]["resourceVersion"] = "13"
    echo_v3["spec"]["ports"][0]["port"] = 82
    watcher = ScriptedWatcher(
        lists=[([echo, dns], "10"), ([echo_v3], "20")],
        streams=[
            [{"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "12"}}}],
            # A reset mid-stream resumes after the last event seen (13), without a relist.
            [{"type": "MODIFIED", "object": echo_v2}, urllib3.exceptions.ProtocolError("connection reset")],
            [ApiException(status=410, reason="Expired")],  # relist: dns went, echo changed again meanwhile
            [],
        ])
    watcher.loop(_Resource("Service", lambda **_: None))
    assert watcher.watched_from == ["10", "12", "13", "20"]
    assert watcher.submitted == [Change("lab/default/echo", "Service spec changed"),
                                 Change("lab/default/dns", "Service gone (relist)"),
                                 Change("lab/default/echo", "Service spec changed (relist)")]


# --- configuration ---------------------------------------------------------------------------


def clusters_from_source(source: Mapping[str, Any]) -> list[ClusterConfig]:
    return parse_source(resolve_options(source, {}))


def test_clusters_from_an_inventory_source():
    source = yaml.safe_load((REPO / "inventories/lab/k8s_services.yml").read_text())
    (cluster,) = clusters_from_source(source)
    assert cluster.name == "lab" and cluster.auth.kubeconfig == "/run/portico-lab/kubeconfig"
    assert cluster.options.load_balancer_class == "portico.io/gateway"
    two = clusters_from_source({"context": "ctx", "kubeconfig": "/k", "exclude_namespaces": ["kube-system"],
                                "clusters": [{"name": "a"}, {"name": "b", "context": "other"}]})
    assert [(c.name, c.auth.kubeconfig, c.auth.context) for c in two] == [("a", "/k", "ctx"), ("b", "/k", "other")]
    assert two[1].options.exclude_namespaces == ("kube-system",)
    assert clusters_from_source({"context": "prod"})[0].name == "prod"  # the inventory plugin's default
    with pytest.raises(SourceError, match=r"clusters\[1\]\.name: 'a' is listed twice"):
        clusters_from_source({"clusters": [{"name": "a"}, {"name": "a"}]})


def test_payload_and_eda_event_carry_keys_reasons_and_full():
    deb = Debouncer(SETTINGS, 0.0)
    deb.add([Change("lab/default/a", "Service added"), Change("lab//node1", "Node ready changed")], 0.0)
    batch = deb.take(0.3)
    payload = batch_payload(batch)
    assert payload["changed"] == ["lab//node1", "lab/default/a"] and payload["full"] is False
    assert payload["reasons"]["lab/default/a"] == ["Service added"] and json.loads(json.dumps(payload)) == payload
    assert eda_event(batch) == {"portico": {"changed": ["lab//node1", "lab/default/a"], "full": False,
                                            "reason": "lab//node1: Node ready changed; lab/default/a: Service added",
                                            "reasons": payload["reasons"], "trigger": 1}}


@pytest.fixture(scope="module")
def cli() -> dict[str, Any]:
    return runpy.run_path(str(REPO / "bin/portico-watch"), run_name="portico_watch")


def test_cli_finds_the_inventory_source_and_command_line_cluster_wins(cli: dict[str, Any]):
    args = cli["parse_args"](["-i", str(REPO / "inventories/lab")])
    assert cli["find_source"](args) == REPO / "inventories/lab/k8s_services.yml"
    assert [c.name for c in cli["clusters"](args)] == ["lab"]
    args = cli["parse_args"](["-i", str(REPO / "inventories/lab"), "--kubeconfig", "/tmp/kc", "--cluster-name", "x"])
    (cluster,) = cli["clusters"](args)
    assert (cluster.name, cluster.auth.kubeconfig) == ("x", "/tmp/kc")
    assert cluster.options.load_balancer_class == "portico.io/gateway"  # still the source's filters


def test_cli_passes_keys_in_the_environment_and_moves_huge_lists_to_the_file(cli: dict[str, Any], tmp_path: pathlib.Path):
    runner = cli["CommandRunner"](["true"], tmp_path, 10)
    deb = Debouncer(SETTINGS, 0.0)
    deb.add([Change("lab/default/a", "Service added")], 0.0)
    env = runner.environment(deb.take(0.3), tmp_path / "f.json")
    assert json.loads(env["PORTICO_CHANGED"]) == ["lab/default/a"] and env["PORTICO_FULL"] == "0"
    if "PORTICO_K8S_STATE_DIR" not in os.environ:
        assert env["PORTICO_K8S_STATE_DIR"] == str(tmp_path)  # the inventory's snapshot lives with the watcher
    deb.finish(deb.running, True, 1.0)
    deb.add([Change(f"lab/default/service-{i:05d}", "Service added") for i in range(5000)], 1.0)
    env = runner.environment(deb.take(1.3), tmp_path / "f.json")
    assert env["PORTICO_CHANGED"] == "[]" and env["PORTICO_FULL"] == "1"


def test_cli_requires_an_inventory_or_a_command(cli: dict[str, Any]):
    with pytest.raises(SystemExit):
        cli["parse_args"]([])
    assert isinstance(cli["parse_args"](["--command", "true", "--kubeconfig", "k"]), argparse.Namespace)


# --- one reading of the inventory source for the plugin and the watchers ----------------------

# Every option the watchers read, none at its default, in the shapes Ansible accepts (a list as a
# comma-separated string, a bool as "yes"); two options come from the environment only.
PARITY_SOURCE = {
    "plugin": "portico.gateway.k8s_services",
    "kubeconfig": "~/kube/portico.yaml",
    "context": "admin",
    "clusters": [{"name": "east"}, {"name": "west", "host": "https://198.51.100.7:6443", "api_key": "token",
                                    "validate_certs": False}],
    "namespaces": "team-a, team-b",
    "load_balancer_class": "example.com/edge",
    "serve_default_class": "yes",
    "serve_without_endpoints": True,
    "backend_mode": "direct",
    "gateway_group": "edge",  # the inventory's own option: not a watcher's business
}
PARITY_ENV = {"PORTICO_K8S_EXCLUDE_NAMESPACES": "kube-system,kube-public", "PORTICO_K8S_CA_CERT": "/etc/portico/ca.pem"}
PLUGIN_CLUSTERS = textwrap.dedent("""
    import dataclasses, json, sys
    from ansible.parsing.dataloader import DataLoader
    from ansible.plugins.loader import init_plugin_loader, inventory_loader
    init_plugin_loader()
    plugin = inventory_loader.get("portico.gateway.k8s_services")
    plugin.loader = DataLoader()
    plugin._read_config_data(sys.argv[1])
    print(json.dumps([dataclasses.asdict(cluster) for cluster in plugin._clusters()]))
""")


def as_data(clusters: list[ClusterConfig]) -> list[dict[str, Any]]:
    return json.loads(json.dumps([dataclasses.asdict(cluster) for cluster in clusters]))


@pytest.fixture
def parity_source(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> pathlib.Path:
    for name, value in PARITY_ENV.items():
        monkeypatch.setenv(name, value)
    path = tmp_path / "edge.k8s_services.yml"
    path.write_text(yaml.safe_dump(PARITY_SOURCE))
    return path


def test_the_watchers_read_a_source_exactly_as_the_inventory_plugin(parity_source: pathlib.Path, cli: dict[str, Any]):
    """bin/portico-watch and the EDA source must follow the clusters, classes, namespaces and
    translation options the inventory (which they run) uses."""
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg")}
    proc = subprocess.run([sys.executable, "-c", PLUGIN_CLUSTERS, str(parity_source)], capture_output=True, text=True,
                          env=env, cwd=REPO, check=False, timeout=120)
    assert proc.returncode == 0, proc.stderr
    plugin = json.loads(proc.stdout)
    assert [c["name"] for c in plugin] == ["east", "west"]
    assert plugin[0]["options"]["exclude_namespaces"] == ["kube-system", "kube-public"]  # the environment counts
    assert plugin[1]["auth"]["validate_certs"] is False and plugin[0]["auth"]["ca_cert"] == "/etc/portico/ca.pem"
    watcher = cli["clusters"](cli["parse_args"](["--command", "true", "--k8s-source", str(parity_source)]))
    eda = runpy.run_path(str(EDA_PLUGIN), run_name="portico_eda")["clusters_of"]({"inventory_source": str(parity_source)})
    assert as_data(watcher) == plugin
    assert as_data(eda) == plugin


def test_every_source_option_is_read_as_the_plugin_documents_it():
    """SOURCE_OPTIONS mirrors the plugin's documentation (types, defaults, environment variables)."""
    from ansible_collections.portico.gateway.plugins.inventory import k8s_services
    from ansible_collections.portico.gateway.plugins.module_utils.k8s.sources import SOURCE_OPTIONS

    documented = yaml.safe_load(k8s_services.DOCUMENTATION)["options"]
    auth = yaml.safe_load(runpy.run_path(str(REPO / "collections/ansible_collections/portico/gateway/plugins/doc_fragments/"
                                             "k8s_auth.py"))["ModuleDocFragment"].DOCUMENTATION)["options"]
    for name, option in SOURCE_OPTIONS.items():
        doc = {**auth.get(name, {}), **documented[name]}
        assert doc["type"] == option.kind, name
        assert doc.get("default") == option.default, name
        assert [env["name"] for env in doc.get("env", [])] == ([option.env] if option.env else []), name
        assert tuple(doc.get("choices", ())) == option.choices, name
