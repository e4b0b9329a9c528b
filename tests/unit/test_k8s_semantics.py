"""Kubernetes semantics real clusters rely on, on objects written the way the API returns them
(fixtures/k8s/semantics.yaml): who owns a contested address, deletion and leaving Portico's
scope, scale to zero, session affinity timeouts, messages on the Service's own fields, and the
API's own validation rules."""

from __future__ import annotations

import copy
import pathlib
import random
from typing import Any

import pytest
import yaml

from ansible_collections.portico.gateway.plugins.module_utils.k8s.annotations import suggest
from ansible_collections.portico.gateway.plugins.module_utils.k8s.translate import (
    TranslateOptions,
    scope_of,
    translate_cluster,
)
from ansible_collections.portico.gateway.plugins.module_utils.model.ipam import parse_pools
from ansible_collections.portico.gateway.plugins.module_utils.model.loadbalancer import parse_loadbalancers
from ansible_collections.portico.gateway.plugins.module_utils.model.problems import from_data, render
from ansible_collections.portico.gateway.plugins.module_utils.model.sources import merge

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "k8s"
OPTIONS = TranslateOptions(cluster="lab")
POOLS = parse_pools({"public": {"addresses": ["198.51.100.0/24"]}})
OBJECTS = yaml.safe_load((FIXTURES / "semantics.yaml").read_text(encoding="utf-8"))["items"]
SERVICES = [obj for obj in OBJECTS if obj["kind"] == "Service"]
SLICES = [obj for obj in OBJECTS if obj["kind"] == "EndpointSlice"]
NODES = yaml.safe_load((FIXTURES / "nodes.yaml").read_text(encoding="utf-8"))["items"]


def service(name: str) -> dict[str, Any]:
    return copy.deepcopy(next(s for s in SERVICES if s["metadata"]["name"] == name))


def entries(services: list[dict[str, Any]] | None = None, skipped: dict[str, int] | None = None,
            options: TranslateOptions = OPTIONS) -> dict[str, dict[str, Any]]:
    result = translate_cluster(SERVICES if services is None else services, SLICES, NODES, options, skipped)
    return {entry["name"]: entry for entry in result}


def statuses(services: list[dict[str, Any]] | None = None, static: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    model = merge(static or [], list(entries(services).values()), POOLS)
    return {status.name: status for status in model.services}


def text(problems: Any) -> list[str]:
    return render(from_data(problems)) if problems and isinstance(problems[0], dict) else render(problems)


def with_status(obj: dict[str, Any], *ips: str) -> dict[str, Any]:
    obj["status"] = {"loadBalancer": {"ingress": [{"ip": ip, "ipMode": "VIP"} for ip in ips]}}
    return obj


# --- 1. a contested address goes to the oldest claim ------------------------------------


def test_the_older_pair_keeps_a_contested_address_and_the_newcomer_is_refused_on_its_field():
    result = statuses()
    assert result["zz-dns-tcp"].ips == ["198.51.100.77"] and result["zz-dns-udp"].ips == ["198.51.100.77"]
    assert result["aa-newcomer"].ips == [] and not result["aa-newcomer"].served
    assert text(result["aa-newcomer"].problems) == [
        "lab/shop/aa-newcomer: metadata.annotations['metallb.io/loadBalancerIPs']: "
        "198.51.100.77 is taken by lab/shop/zz-dns-tcp (no common sharing key)"]


def test_contests_do_not_depend_on_list_order_or_names():
    reference = {name: status.ips for name, status in statuses().items()}
    shuffled = list(SERVICES)
    for seed in range(5):
        random.Random(seed).shuffle(shuffled)
        assert {name: status.ips for name, status in statuses(shuffled).items()} == reference


def test_a_hold_won_by_name_order_is_given_back_to_the_older_requester():
    """An older Portico sorted by name: the newcomer got the address and it was written to its
    status. Both asked for it by request, so the older request wins now."""
    services = [with_status(s, "198.51.100.77") if s["metadata"]["name"] == "aa-newcomer" else s for s in copy.deepcopy(SERVICES)]
    result = statuses(services)
    assert result["zz-dns-tcp"].ips == ["198.51.100.77"] and result["zz-dns-udp"].ips == ["198.51.100.77"]
    assert result["aa-newcomer"].ips == []
    assert "198.51.100.77 is also requested by lab/shop/zz-dns-tcp, which is older" in text(result["aa-newcomer"].warnings)[0]
    assert "is taken by lab/shop/zz-dns-tcp" in text(result["aa-newcomer"].problems)[0]


def test_an_address_a_service_holds_without_asking_for_it_is_never_taken_away():
    """MetalLB's restart rule: the incumbent keeps its address; a later request is refused."""
    newer = with_status(service("aa-newcomer"), "198.51.100.77")
    del newer["metadata"]["annotations"]
    result = statuses([newer, service("zz-dns-tcp")])
    assert result["aa-newcomer"].ips == ["198.51.100.77"]
    assert result["zz-dns-tcp"].ips == []
    assert "198.51.100.77 is taken by lab/shop/aa-newcomer" in text(result["zz-dns-tcp"].problems)[0]


def test_two_status_holds_of_one_address_go_to_the_older_service():
    older, newer = service("sticky"), service("aa-newcomer")
    del newer["metadata"]["annotations"]
    result = statuses([with_status(newer, "198.51.100.9"), with_status(older, "198.51.100.9")])
    assert result["sticky"].ips == ["198.51.100.9"]
    assert result["aa-newcomer"].ips and result["aa-newcomer"].ips != ["198.51.100.9"]


# --- 2. deletion, finalizers, leaving Portico's scope ----------------------------------


def test_a_service_being_deleted_with_the_finalizer_is_released_not_served():
    retiring = entries()["retiring"]
    assert retiring["release"] is True and retiring["release_reason"] == "being deleted"
    assert retiring["loadbalancers"] == [] and retiring["status_ips"] == ["198.51.100.80"]
    result = statuses()["retiring"]
    assert result.release and not result.served and result.ips == ["198.51.100.80"]


def test_the_address_of_a_service_being_released_is_held_until_it_is_gone():
    claimant = service("sticky")
    claimant["metadata"]["annotations"] = {"portico.io/loadBalancerIPs": "198.51.100.80"}
    held = statuses([service("retiring"), claimant])
    assert held["sticky"].ips == []
    assert text(held["sticky"].problems) == ["lab/shop/sticky: metadata.annotations['portico.io/loadBalancerIPs']: "
                                             "198.51.100.80 is taken by lab/shop/retiring (no common sharing key)"]
    # Once the finalizer is gone, the Service is gone, and so is the hold.
    assert statuses([claimant])["sticky"].ips == ["198.51.100.80"]


def test_a_deleted_service_portico_never_served_gets_nothing():
    skipped: dict[str, int] = {}
    assert "gone-soon" not in entries(skipped=skipped)
    assert skipped["deleting"] == 1


def test_a_service_that_left_porticos_scope_is_released_by_its_mark():
    went = entries()["went-internal"]
    assert went["release"] is True and went["release_reason"] == "type changed to ClusterIP"
    assert statuses()["went-internal"].ips == ["198.51.100.82"]  # held until released
    # A class change or a namespace no longer selected releases it the same way.
    reclassed = service("retiring")
    del reclassed["metadata"]["deletionTimestamp"]
    reclassed["spec"]["loadBalancerClass"] = "example.com/other"
    assert scope_of(reclassed, OPTIONS).reason == "loadBalancerClass changed to example.com/other"
    assert scope_of(service("idle"), TranslateOptions(cluster="lab", exclude_namespaces=("shop",))).action == "release"


def test_another_controllers_service_with_the_same_finalizer_is_left_alone():
    skipped: dict[str, int] = {}
    assert "cloud-owned" not in entries(skipped=skipped)
    assert skipped["no-class"] == 1
    # Another Portico installation (another class) never releases this one's Services.
    other = TranslateOptions(cluster="lab", load_balancer_class="example.com/other")
    assert scope_of(service("went-internal"), other).action == "skip"


def test_a_marked_service_being_deleted_outside_scope_without_the_finalizer_is_skipped():
    gone = service("went-internal")
    gone["metadata"]["deletionTimestamp"] = "2025-04-20T09:00:00Z"
    gone["metadata"]["finalizers"] = ["example.com/backup-first"]
    assert scope_of(gone, OPTIONS).action == "skip"


# --- 3. session affinity timeouts ------------------------------------------------------


def test_client_ip_affinity_carries_its_timeout_and_says_how_it_is_counted():
    sticky = entries()["sticky"]
    lb = sticky["loadbalancers"][0]
    assert lb["session_affinity"] == "client_ip" and lb["session_affinity_timeout_s"] == 60
    assert text(sticky["warnings"]) == [
        "lab/shop/sticky: spec.sessionAffinityConfig.clientIP.timeoutSeconds: the timeout counts from the client's last "
        "new connection, not from its last packet (as kube-proxy): a client that only keeps one long connection open "
        "moves after it"]
    model = merge([], [sticky], POOLS)
    assert model.loadbalancers[0].session_affinity_timeout_s == 60


def test_affinity_timeout_defaults_as_the_api_and_out_of_range_names_the_service_field():
    raw = service("sticky")
    del raw["spec"]["sessionAffinityConfig"]
    model = merge([], [entries([raw])["sticky"]], POOLS)
    assert model.loadbalancers[0].session_affinity_timeout_s == 10800
    raw["spec"]["sessionAffinityConfig"] = {"clientIP": {"timeoutSeconds": 86401}}
    assert text(entries([raw])["sticky"]["problems"]) == [
        "lab/shop/sticky: spec.sessionAffinityConfig.clientIP.timeoutSeconds: 86401 is out of range 1-86400"]


def test_affinity_config_without_client_ip_is_refused_as_the_api_does():
    raw = service("sticky")
    raw["spec"]["sessionAffinity"] = "None"
    assert text(entries([raw])["sticky"]["problems"]) == [
        "lab/shop/sticky: spec.sessionAffinityConfig: must not be set when sessionAffinity is None"]
    raw["spec"]["sessionAffinity"] = "Cookie"
    assert "spec.sessionAffinity: unsupported value 'Cookie'" in text(entries([raw])["sticky"]["problems"])[0]


def test_model_affinity_timeout_rules():
    base = {"name": "web", "vip": "198.51.100.10", "ports": [{"port": 80}], "backends": ["192.0.2.11"]}
    assert parse_loadbalancers([{**base, "session_affinity": "client_ip"}], POOLS).loadbalancers[0].session_affinity_timeout_s == 10800
    assert parse_loadbalancers([base], POOLS).loadbalancers[0].session_affinity_timeout_s is None
    refused = parse_loadbalancers([{**base, "session_affinity_timeout_s": 30}], POOLS)
    assert render(refused.problems) == ["web: session_affinity_timeout_s: is only allowed with session_affinity client_ip"]
    zero = parse_loadbalancers([{**base, "session_affinity": "client_ip", "session_affinity_timeout_s": 0}], POOLS)
    assert render(zero.problems) == ["web: session_affinity_timeout_s: 0 is out of range 1-86400"]


# --- 4. scale to zero -------------------------------------------------------------------


def test_a_service_scaled_to_zero_keeps_its_address_unannounced_and_refusing():
    idle = entries()["idle"]
    assert idle["problems"] == [] and idle["loadbalancers"][0]["backends"] == []
    result = statuses()["idle"]
    assert result.served and result.ips == ["198.51.100.84"]
    model = merge([], [idle], POOLS)
    assert model.loadbalancers[0].vip == "198.51.100.84" and model.loadbalancers[0].backends == ()


# --- 5. messages: the Service's own fields, suggestions by meaning ---------------------


def test_a_clash_found_in_the_whole_model_names_the_services_field():
    static = [{"name": "lab/shop/sticky", "vip": "198.51.100.10", "ports": [{"port": 80}], "backends": ["192.0.2.11"]}]
    result = statuses(static=static)
    assert text(result["sticky"].problems) == ["lab/shop/sticky: metadata.name: defined twice"]


@pytest.mark.parametrize(("key", "value", "meant"), [
    ("portico.io/ips", "198.51.100.9", "portico.io/loadBalancerIPs"),
    ("portico.io/addresses", "198.51.100.9, 2001:db8:100::9", "portico.io/loadBalancerIPs"),
    ("portico.io/poool", "public", "portico.io/pool"),
    ("portico.io/mode", "direct", "portico.io/backend-mode"),
    ("portico.io/keep-client-ip", "false", "portico.io/preserve-source-ip"),
    ("portico.io/health-check-intervall", "500", "portico.io/health-check-interval-ms"),
    ("portico.io/check-path", "/ready", "portico.io/health-check-path"),
])
def test_misspelt_annotations_are_suggested_by_meaning_and_spelling(key, value, meant):
    assert suggest(key, value) == meant
    raw = service("sticky")
    raw["metadata"]["annotations"] = {key: value}
    assert text(entries([raw])["sticky"]["problems"]) == [
        f"lab/shop/sticky: metadata.annotations['{key}']: unknown annotation (did you mean '{meant}'?)"]


def test_skipped_services_are_counted_by_reason():
    skipped: dict[str, int] = {}
    other = service("sticky")
    other["metadata"]["name"] = "other-class"
    other["spec"]["loadBalancerClass"] = "example.com/other"
    internal = service("sticky")
    internal["metadata"]["name"] = "internal"
    internal["spec"] = {"type": "ClusterIP", "ports": [{"port": 80}]}
    entries([*SERVICES, other, internal], skipped=skipped)
    assert skipped == {"class": 1, "no-class": 1, "deleting": 1}  # ClusterIP Services are not counted


# --- 6. the API's own rules --------------------------------------------------------------


def test_what_the_api_would_refuse_is_refused_on_the_same_field():
    assert text(entries()["unvalidated"]["problems"]) == [
        "lab/shop/unvalidated: spec.ports[0].name: 'café' is not a DNS label: at most 63 characters a-z, 0-9 and '-', "
        "starting and ending with a letter or digit",
        "lab/shop/unvalidated: spec.ports[1].name: 'HTTPS' is not a DNS label: at most 63 characters a-z, 0-9 and '-', "
        "starting and ending with a letter or digit",
        "lab/shop/unvalidated: spec.ports[1].targetPort: 'tls--port' is not a port number or an IANA service name "
        "(at most 15 characters a-z, 0-9 and '-', at least one letter, no '-' at either end or twice in a row)",
    ]


@pytest.mark.parametrize(("change", "expected"), [
    ({"ports": [{"protocol": "TCP", "port": 80, "nodePort": 31090}, {"protocol": "TCP", "port": 81, "nodePort": 31091}]},
     ["spec.ports[0].name: is required when the Service has more than one port",
      "spec.ports[1].name: is required when the Service has more than one port"]),
    ({"ports": [{"name": "a", "protocol": "TCP", "port": 80, "nodePort": 31090},
                {"name": "a", "protocol": "UDP", "port": 80, "nodePort": 31091}]},
     ["spec.ports[1].name: 'a' is also the name of spec.ports[0]"]),
    ({"ports": [{"name": "a", "protocol": "TCP", "port": 80, "nodePort": 31090},
                {"name": "b", "protocol": "TCP", "port": 81, "nodePort": 31090}]},
     ["spec.ports[1].nodePort: TCP/31090 is also the nodePort of spec.ports[0]"]),
    ({"ports": [{"name": "a", "protocol": "tcp", "port": 80, "nodePort": 31090}]},
     ["spec.ports[0].protocol: unsupported value 'tcp' (the API accepts TCP, UDP, SCTP)"]),
    ({"ports": [{"name": "a", "protocol": "TCP", "port": 80, "targetPort": "8080", "nodePort": 31090}]},
     ["spec.ports[0].targetPort: '8080' is not a port number or an IANA service name (at most 15 characters a-z, 0-9 "
      "and '-', at least one letter, no '-' at either end or twice in a row)"]),
    ({"externalTrafficPolicy": "Nearest"}, ["spec.externalTrafficPolicy: unsupported value 'Nearest' (the API accepts Cluster, Local)"]),
    ({"healthCheckNodePort": 32000}, ["spec.healthCheckNodePort: may only be set when externalTrafficPolicy is Local"]),
])
def test_api_rules(change, expected):
    raw = service("sticky")
    raw["spec"].update(change)
    del raw["spec"]["sessionAffinityConfig"]
    raw["spec"]["sessionAffinity"] = "None"
    assert [line.split(": ", 1)[1] for line in text(entries([raw])["sticky"]["problems"])] == expected


def test_valid_names_pass():
    raw = service("sticky")
    raw["spec"]["ports"] = [{"name": "8080", "protocol": "TCP", "port": 80, "targetPort": "http-alt", "nodePort": 31090},
                            {"name": "a" * 63, "protocol": "UDP", "port": 80, "targetPort": 53, "nodePort": 31090}]
    assert entries([raw])["sticky"]["problems"] == []
