"""Service + EndpointSlices + Nodes -> portico_k8s_services entries, on recorded API objects."""

from __future__ import annotations

import copy
import pathlib
from typing import Any

import pytest
import yaml

from ansible_collections.portico.gateway.plugins.module_utils.k8s.translate import (
    TranslateOptions,
    index_endpoint_slices,
    node_entries,
    node_targets,
    translate_cluster,
    translate_service,
)
from ansible_collections.portico.gateway.plugins.module_utils.model.ipam import allocate, parse_pools
from ansible_collections.portico.gateway.plugins.module_utils.model.loadbalancer import parse_loadbalancers
from ansible_collections.portico.gateway.plugins.module_utils.model.problems import from_data, render

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "k8s"
OPTIONS = TranslateOptions(cluster="lab")


def items(name: str) -> list[dict[str, Any]]:
    return yaml.safe_load((FIXTURES / name).read_text())["items"]


SERVICES = items("services.yaml")
SLICES = items("endpointslices.yaml")
NODES = items("nodes.yaml")


def entries(options: TranslateOptions = OPTIONS, services=None, slices=None, nodes=None) -> dict[str, dict[str, Any]]:
    result = translate_cluster(SERVICES if services is None else services, SLICES if slices is None else slices,
                               NODES if nodes is None else nodes, options)
    return {f"{e['namespace']}/{e['name']}": e for e in result}


def service(name: str, namespace: str = "default") -> dict[str, Any]:
    return copy.deepcopy(next(s for s in SERVICES if s["metadata"]["name"] == name and s["metadata"]["namespace"] == namespace))


def text(problems: list[dict[str, str]]) -> list[str]:
    """Problems of an entry (plain data) as users read them."""
    return render(from_data(problems))


def translate_one(raw: dict[str, Any], options: TranslateOptions = OPTIONS) -> dict[str, Any]:
    """One Service with the fixture's EndpointSlices of the Service it was copied from."""
    slices = index_endpoint_slices(SLICES).get((raw["metadata"]["namespace"], raw["metadata"]["name"]), [])
    return translate_service(raw, slices, node_targets(NODES), options)


ALL = entries()


# --- selection ---------------------------------------------------------------------


def test_only_our_load_balancer_class_is_served():
    assert "default/other-class" not in ALL
    assert "default/no-class" not in ALL
    assert "default/internal" not in ALL
    assert "default/no-class" in entries(TranslateOptions(cluster="lab", serve_default_class=True))
    other = entries(TranslateOptions(cluster="lab", load_balancer_class="example.com/other"))
    assert list(other) == ["default/other-class"]


def test_namespace_include_and_exclude():
    assert {e.split("/")[0] for e in entries(TranslateOptions(cluster="lab", namespaces=("team-a",)))} == {"team-a"}
    assert not any(e.startswith("team-a/") for e in entries(TranslateOptions(cluster="lab", exclude_namespaces=("team-a",))))


def test_entries_are_sorted_and_independent_of_list_order():
    forward = translate_cluster(SERVICES, SLICES, NODES, OPTIONS)
    backward = translate_cluster(list(reversed(SERVICES)), list(reversed(SLICES)), list(reversed(NODES)), OPTIONS)
    assert forward == backward
    keys = [(e["cluster"], e["namespace"], e["name"]) for e in forward]
    assert keys == sorted(keys)


# --- the entry contract ------------------------------------------------------------


def test_entry_shape_for_a_plain_cluster_policy_service():
    echo = ALL["default/echo"]
    assert echo["cluster"] == "lab" and echo["uid"] == "0b5a1f0e-0001-4c3a-9d8e-000000000001"
    assert echo["resource_version"] == "47001"
    assert echo["ip_families"] == [4]
    assert echo["status_ips"] == ["198.51.100.20"]
    assert echo["requested_ips"] == [] and echo["pool"] is None and echo["sharing_key"] is None
    assert echo["problems"] == [] and echo["warnings"] == []
    (lb,) = echo["loadbalancers"]
    assert "vip" not in lb
    assert lb["name"] == "lab/default/echo" and lb["source"] == "kubernetes"
    assert lb["ports"] == [{"name": "http", "protocol": "tcp", "port": 80, "backend_port": 30080}]
    assert lb["health_check"] == {"type": "tcp", "port": 30080}
    assert lb["session_affinity"] == "none" and lb["preserve_source_ip"] is True and lb["source_ranges"] == []


def test_nodeport_backends_are_ready_not_excluded_nodes_of_the_family():
    echo = ALL["default/echo"]["loadbalancers"][0]
    # node3 is NotReady, node4 carries the exclude-from-external-load-balancers label.
    assert [(b["address"], b["name"]) for b in echo["backends"]] == [
        ("192.0.2.11", "node1"), ("192.0.2.12", "node2"), ("192.0.2.15", "node5")]
    v6 = ALL["team-b/kubevip"]["loadbalancers"][1]
    assert [b["address"] for b in v6["backends"]] == ["2001:db8:192::11", "2001:db8:192::12"]  # node5 has no IPv6


def test_local_policy_checks_health_check_node_port():
    lb = ALL["default/local"]["loadbalancers"][0]
    assert lb["health_check"] == {"type": "http", "port": 32001, "path": "/healthz"}
    assert lb["preserve_source_ip"] is True


def test_local_policy_without_health_check_node_port_is_a_problem():
    raw = service("local")
    del raw["spec"]["healthCheckNodePort"]
    assert text(translate_one(raw)["problems"]) == ["lab/default/local: spec.healthCheckNodePort: is required with externalTrafficPolicy Local"]


def test_mixed_protocols_keep_every_port_and_check_the_tcp_node_port():
    lb = ALL["default/dns"]["loadbalancers"][0]
    assert [(p["protocol"], p["port"], p["backend_port"]) for p in lb["ports"]] == [("udp", 53, 30053), ("tcp", 53, 30054)]
    assert lb["health_check"] == {"type": "tcp", "port": 30054}


def test_udp_only_service_gets_no_tcp_probe():
    raw = service("dns")
    raw["spec"]["ports"] = raw["spec"]["ports"][:1]
    assert translate_one(raw)["loadbalancers"][0]["health_check"] == {"type": "none"}


def test_sctp_is_a_problem():
    sctp = ALL["default/sctp"]
    assert sctp["loadbalancers"] == []
    assert text(sctp["problems"]) == ["lab/default/sctp: spec.ports[0].protocol: SCTP is not supported (supported: TCP, UDP)"]


def test_dual_stack_keeps_family_order_and_names_the_second_lb():
    dual = ALL["default/dual"]
    assert dual["ip_families"] == [6, 4]
    assert [lb["name"] for lb in dual["loadbalancers"]] == ["lab/default/dual", "lab/default/dual/ipv4"]
    restricted = ALL["default/restricted"]
    assert [lb["name"] for lb in restricted["loadbalancers"]] == ["lab/default/restricted", "lab/default/restricted/ipv6"]


def test_direct_mode_uses_ready_endpoints_and_resolved_target_ports():
    v6, v4 = ALL["default/dual"]["loadbalancers"]
    assert v4["ports"][0]["backend_port"] == 8080  # named targetPort "http", resolved by the slices
    # 198.19.3.10 is not ready; 198.19.2.10 has no ready condition (nil = ready);
    # 198.19.1.10 is listed in two slices; dual-5's "http" is 9090: a per-backend port.
    assert v4["backends"] == [
        {"address": "198.19.1.10", "name": "dual-1"},
        {"address": "198.19.2.10", "name": "dual-2"},
        {"address": "198.19.5.10", "name": "dual-5", "port": 9090},
    ]
    assert [b["address"] for b in v6["backends"]] == ["2001:db8:244:1::10", "2001:db8:244:2::10"]
    assert v4["health_check"] == {"type": "tcp"}


def test_endpoints_null_means_no_backends_and_a_warning_not_a_problem():
    no_pods = ALL["default/no-pods"]
    assert no_pods["problems"] == []
    assert no_pods["loadbalancers"][0]["backends"] == []
    assert text(no_pods["warnings"]) == [
        "lab/default/no-pods: no ready endpoints: the address is kept and refuses connections until a pod is ready"]


def test_without_node_ports_direct_mode_is_used():
    entry = ALL["default/no-nodeports"]
    assert entry["backend_mode"] == "direct" and entry["problems"] == []
    assert entry["loadbalancers"][0]["backends"] == [{"address": "198.19.2.20", "name": "tls-0"}]  # tls-1 terminating
    assert entry["loadbalancers"][0]["ports"][0]["backend_port"] == 8443


def test_nodeport_mode_without_node_ports_is_a_problem():
    problems = text(ALL["default/nodeport-forced"]["problems"])
    assert "lab/default/nodeport-forced: metadata.annotations['portico.io/backend-mode']: nodeport needs node ports " \
           "but spec.allocateLoadBalancerNodePorts is false (use direct)" in problems


def test_backend_mode_default_comes_from_the_options():
    direct = entries(TranslateOptions(cluster="lab", backend_mode="direct"))
    assert direct["default/echo"]["backend_mode"] == "direct"
    assert direct["default/echo"]["loadbalancers"][0]["backends"] == [{"address": "198.19.1.5", "name": "echo-6d4cf56db6-2lqvx"}]
    assert direct["default/echo"]["loadbalancers"][0]["ports"][0]["backend_port"] == 8080


def test_source_ranges_split_by_family_and_unlisted_family_refused():
    v4, v6 = ALL["default/restricted"]["loadbalancers"]
    assert v4["source_ranges"] == ["203.0.113.0/24", "198.18.0.0/24"]
    assert v6["source_ranges"] == ["::/128"]
    assert text(ALL["default/restricted"]["warnings"]) == [
        "lab/default/restricted/ipv6: spec.loadBalancerSourceRanges: no IPv6 range listed: IPv6 clients are refused"]


def test_legacy_source_ranges_annotation():
    raw = service("echo")
    raw["metadata"]["annotations"] = {"service.beta.kubernetes.io/load-balancer-source-ranges": "203.0.113.0/24, 2001:db8::/32"}
    assert translate_one(raw)["loadbalancers"][0]["source_ranges"] == ["203.0.113.0/24"]


def test_affinity_snat_and_health_check_overrides():
    entry = ALL["default/affinity"]
    lb = entry["loadbalancers"][0]
    assert lb["session_affinity"] == "client_ip"
    assert lb["preserve_source_ip"] is False
    assert lb["health_check"] == {"type": "http", "port": 30095, "path": "/ready", "interval_ms": 1000,
                                  "timeout_ms": 400, "rise": 3, "fall": 4}
    assert entry["pool"] == "public"
    assert entry["sharing_key"] is None  # an empty key is no key


# --- annotations -------------------------------------------------------------------


def test_bad_annotations_are_problems_naming_the_annotation():
    entry = ALL["default/bad-annotations"]
    assert entry["loadbalancers"] == []
    assert sorted(text(entry["problems"])) == sorted([
        "lab/default/bad-annotations: metadata.annotations['portico.io/pol']: unknown annotation (did you mean 'portico.io/pool'?)",
        "lab/default/bad-annotations: metadata.annotations['portico.io/loadBalancerIPs']: '198.51.100.300' is not an IP address",
        "lab/default/bad-annotations: metadata.annotations['portico.io/backend-mode']: unknown value 'fast' (expected one of: nodeport, direct)",
        "lab/default/bad-annotations: metadata.annotations['portico.io/health-check-rise']: expected an integer, got 'abc'",
        "lab/default/bad-annotations: metadata.annotations['portico.io/preserve-source-ip']: expected \"true\" or \"false\", got 'maybe'",
    ])


def test_model_problems_name_the_annotation_that_caused_them():
    assert text(ALL["default/slow-check"]["problems"]) == [
        "lab/default/slow-check: metadata.annotations['portico.io/health-check-timeout-ms']: 5000 ms is longer than interval_ms 200"]


@pytest.mark.parametrize("name, change, expected", [
    ("echo", {"port": 70000}, "lab/default/echo: spec.ports[0].port: 70000 is out of range 1-65535"),
    ("echo", {"nodePort": 0}, "lab/default/echo: spec.ports[0].nodePort: 0 is out of range 1-65535"),
    ("dual", {"targetPort": 0}, "lab/default/dual: spec.ports[0].targetPort: 0 is out of range 1-65535"),
])
def test_model_problems_name_the_service_field_that_set_the_value(name, change, expected):
    raw = service(name)
    raw["spec"]["ports"][0].update(change)
    assert text(translate_one(raw)["problems"]) == [expected]  # once, though dual's two LBs both have it


def test_model_problems_on_a_default_health_check_name_its_node_port():
    raw = service("local")
    raw["spec"]["healthCheckNodePort"] = 70000
    assert text(translate_one(raw)["problems"]) == ["lab/default/local: spec.healthCheckNodePort: 70000 is out of range 1-65535"]


def test_other_annotations_are_not_ours_to_judge():
    raw = service("echo")
    raw["metadata"]["annotations"] = {"example.com/owner": "team-a", "kubectl.kubernetes.io/last-applied-configuration": "{}"}
    assert translate_one(raw)["problems"] == []


def test_metallb_annotations():
    entry = ALL["team-a/metallb"]
    assert entry["requested_ips"] == ["198.51.100.40"]
    assert entry["requested_ips_field"] == "metadata.annotations['metallb.universe.tf/loadBalancerIPs']"
    assert entry["pool"] == "team-a" and entry["pool_field"] == "metadata.annotations['metallb.universe.tf/address-pool']"
    assert entry["sharing_key"] == "web"


def test_cilium_annotations():
    entry = ALL["team-a/cilium"]
    assert entry["requested_ips"] == ["198.51.100.40"] and entry["sharing_key"] == "web"
    assert entry["requested_ips_field"] == "metadata.annotations['lbipam.cilium.io/ips']"


def test_kube_vip_annotation_dual_stack_wins_over_spec_load_balancer_ip():
    entry = ALL["team-b/kubevip"]
    assert entry["requested_ips"] == ["198.51.100.50", "2001:db8:100::50"]
    assert text(entry["warnings"]) == ["lab/team-b/kubevip: spec.loadBalancerIP: ignored: "
                                 "metadata.annotations['kube-vip.io/loadbalancerIPs'] takes precedence"]


def test_spec_load_balancer_ip_mirroring_the_annotation_is_no_warning():
    raw = service("kubevip", "team-b")
    raw["spec"]["loadBalancerIP"] = "198.51.100.50"
    assert translate_one(raw)["warnings"] == []


def test_portico_annotation_takes_precedence():
    raw = service("metallb", "team-a")
    raw["metadata"]["annotations"].update({"portico.io/loadBalancerIPs": "198.51.100.41", "portico.io/pool": "public"})
    entry = translate_one(raw)
    assert entry["requested_ips"] == ["198.51.100.41"] and entry["pool"] == "public"
    assert len(entry["warnings"]) == 2


@pytest.mark.parametrize("value, message", [
    ("198.51.100.1,198.51.100.2", "198.51.100.2: only one IPv4 address may be requested (also 198.51.100.1)"),
    ("2001:db8:100::1", "2001:db8:100::1 is IPv6 but the Service's ipFamilies are IPv4"),
    ("not-an-ip", "'not-an-ip' is not an IP address"),
])
def test_requested_ip_problems(value, message):
    raw = service("echo")
    raw["metadata"]["annotations"] = {"portico.io/loadBalancerIPs": value}
    assert text(translate_one(raw)["problems"]) == [f"lab/default/echo: metadata.annotations['portico.io/loadBalancerIPs']: {message}"]


def test_annotation_values_are_copied_verbatim():
    assert ALL["default/template"]["sharing_key"] == "{{ lookup('pipe','id') }}"


# --- robustness --------------------------------------------------------------------


def test_one_odd_service_does_not_break_the_others():
    odd = service("echo")
    odd["metadata"]["name"] = "odd"
    odd["spec"]["ports"] = [None]
    result = entries(services=[*SERVICES, odd])
    assert text(result["default/odd"]["problems"])[0].startswith("lab/default/odd: spec: cannot be translated")
    assert result["default/echo"]["problems"] == []


def test_sanitized_client_objects_without_null_fields_work():
    # ApiClient.sanitize_for_serialization drops None values: no endpoints key at all.
    slices = [{k: v for k, v in s.items() if v is not None} for s in SLICES]
    assert entries(slices=slices)["default/no-pods"]["loadbalancers"][0]["backends"] == []


def test_node_entries_for_pod_routes():
    nodes = {n["name"]: n for n in node_entries(NODES, "lab")}
    assert nodes["node1"] == {"cluster": "lab", "name": "node1", "ready": True, "excluded": False,
                              "internal_ips": ["192.0.2.11", "2001:db8:192::11"],
                              "pod_cidrs": ["198.19.1.0/24", "2001:db8:244:1::/64"]}
    assert nodes["node3"]["ready"] is False and nodes["node4"]["excluded"] is True


def test_entries_allocate_and_pass_the_model():
    """The contract end to end: entries -> allocate -> lb_model accepts every LB."""
    pools = parse_pools({"public": {"addresses": ["198.51.100.48-198.51.100.127", "2001:db8:100::/64"]},
                         "team-a": {"addresses": ["198.51.100.32-198.51.100.47"], "namespaces": ["team-a"], "auto_assign": False},
                         "legacy": {"addresses": ["198.51.100.16-198.51.100.31"]}})
    allocations = {f"{a.namespace}/{a.name}": a for a in allocate(list(ALL.values()), pools)}
    assert allocations["default/echo"].ips == ["198.51.100.20"]
    assert allocations["team-a/metallb"].ips == allocations["team-a/cilium"].ips == ["198.51.100.40"]
    assert allocations["default/bad-annotations"].ips == []
    model = parse_loadbalancers([lb for a in allocations.values() for lb in a.loadbalancers], pools)
    assert model.problems == []
    served = {a for a, alloc in allocations.items() if alloc.ips}
    assert served == {k for k, e in ALL.items() if not e["problems"]}


IDLE_SERVICE = {
    "metadata": {"name": "idle", "namespace": "default", "uid": "u1", "creationTimestamp": "2025-01-06T08:00:00Z"},
    "spec": {"type": "LoadBalancer", "loadBalancerClass": "portico.io/gateway", "ipFamilies": ["IPv4"],
             "ports": [{"protocol": "TCP", "port": 80, "targetPort": 8080, "nodePort": 30090}]},
    "status": {"loadBalancer": {}},
}
# As the API returns a slice of a Deployment scaled to zero: endpoints null.
IDLE_SLICE = {"metadata": {"name": "idle-x", "namespace": "default", "labels": {"kubernetes.io/service-name": "idle"}},
              "addressType": "IPv4", "endpoints": None, "ports": [{"name": "", "port": 8080, "protocol": "TCP"}]}
ONE_NODE = [{"metadata": {"name": "node1"}, "status": {"addresses": [{"type": "InternalIP", "address": "192.0.2.11"}],
                                                      "conditions": [{"type": "Ready", "status": "True"}]}}]


def test_service_without_ready_endpoints_is_served_without_backends():
    """Scale to zero: the Service is served (it gets or keeps its address), its LB has no
    backends, so the gateways refuse connections and announce nothing until a pod is ready."""
    idle = translate_cluster([IDLE_SERVICE], [IDLE_SLICE], ONE_NODE, TranslateOptions(cluster="lab"))[0]
    assert idle["problems"] == [] and idle["loadbalancers"][0]["backends"] == []
    assert text(idle["warnings"]) == [
        "lab/default/idle: no ready endpoints: the address is kept and refuses connections until a pod is ready"]
    # serve_without_endpoints: nodeport mode sends to the nodes anyway (kube-proxy refuses there).
    nodes = translate_cluster([IDLE_SERVICE], [IDLE_SLICE], ONE_NODE, TranslateOptions(cluster="lab", serve_without_endpoints=True))[0]
    assert [b["address"] for b in nodes["loadbalancers"][0]["backends"]] == ["192.0.2.11"]


def test_scaled_to_zero_service_keeps_its_address_and_gets_it_back():
    pools = parse_pools({"public": {"addresses": ["198.51.100.0/24"]}})
    ready_slice = {**IDLE_SLICE, "endpoints": [{"addresses": ["198.19.1.7"], "conditions": {"ready": True}}]}
    running = translate_cluster([IDLE_SERVICE], [ready_slice], ONE_NODE, OPTIONS)
    (first,) = allocate(running, pools)
    written = copy.deepcopy(IDLE_SERVICE)
    written["status"] = {"loadBalancer": {"ingress": [{"ip": first.ips[0], "ipMode": "VIP"}]}}
    (idle,) = allocate(translate_cluster([written], [IDLE_SLICE], ONE_NODE, OPTIONS), pools)
    assert idle.ips == first.ips and idle.loadbalancers[0]["backends"] == []
    (back,) = allocate(translate_cluster([written], [ready_slice], ONE_NODE, OPTIONS), pools)
    assert back.ips == first.ips and back.loadbalancers[0]["backends"]
    # A new Service without endpoints gets its address at once, and the same one when pods come.
    (new_idle,) = allocate(translate_cluster([IDLE_SERVICE], [IDLE_SLICE], ONE_NODE, OPTIONS), pools)
    assert new_idle.ips == first.ips


def test_kube_proxy_node_health_check_is_one_check_per_node_for_every_cluster_service():
    options = TranslateOptions(cluster="lab", node_health_check="kube_proxy")
    by_key = entries(options)
    kube_proxy = {"type": "http", "port": 10256, "path": "/healthz"}
    assert by_key["default/echo"]["loadbalancers"][0]["health_check"] == kube_proxy
    assert by_key["default/dns"]["loadbalancers"][0]["health_check"] == kube_proxy  # UDP too: it checks the node
    assert by_key["default/local"]["loadbalancers"][0]["health_check"]["port"] == 32001  # Local: its own port
    assert by_key["default/affinity"]["loadbalancers"][0]["health_check"]["path"] == "/ready"  # annotations still win
    assert by_key["default/no-nodeports"]["loadbalancers"][0]["health_check"] == {"type": "tcp"}  # direct: the pods
