"""Properties of the Service translation and the annotation parsers on hostile API objects (Hypothesis).

Services come as the API server returns them (types as its schema gives them, values anything a
tenant can write; some values only a snapshot could hold). Every Service yields an entry that is
served or carries problems on its own fields, never an exception or a "cannot be translated"
catch-all; the entries do not depend on the API's list order; the whole pipeline (translate,
inventory document, allocation, model, nftables rendering) serves the good Services whatever
stands beside them. Profiles and strategies: portico_strategies.
"""

from __future__ import annotations

import copy
import ipaddress
from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st
from portico_pipeline import assert_nft_loadable, run_site
from portico_strategies import (
    NODES,
    POOLS,
    annotations,
    cluster_objects,
    dns_label,
    examples,
    hostile_text,
    service,
    service_port,
)

from ansible_collections.portico.gateway.plugins.module_utils.k8s.annotations import (
    PORTICO_ANNOTATIONS,
    annotation_field,
    read_annotations,
    suggest,
)
from ansible_collections.portico.gateway.plugins.module_utils.k8s.translate import (
    SERVICE_NAME_LABEL,
    TranslateOptions,
    translate_cluster,
)
from ansible_collections.portico.gateway.plugins.module_utils.model.problems import Report

OPTIONS = TranslateOptions(cluster="lab")
DIRECT = TranslateOptions(cluster="lab", backend_mode="direct")
STATIC = [{"name": "static-web", "vip": "198.51.100.9", "ports": [{"port": 80}], "backends": ["198.18.9.1"]}]


def key_of(entry: dict[str, Any]) -> str:
    return f"{entry['cluster']}/{entry['namespace']}/{entry['name']}"


def pipeline(services: list[dict[str, Any]], slices: list[dict[str, Any]], options: TranslateOptions = OPTIONS):
    return run_site(services, slices, NODES, options, POOLS, STATIC)


# --- any Service: served, or problems on its own fields ----------------------------------


@examples(100)
@given(cluster_objects(), st.sampled_from([OPTIONS, DIRECT]))
def test_every_service_is_served_or_told_why_on_its_own_fields(objects, options):
    services, slices = objects
    entries = translate_cluster(services, slices, NODES, options)
    keys = [key_of(e) for e in entries]
    assert len(keys) == len(set(keys))
    for entry in entries:
        for problem in entry["problems"]:
            assert problem["subject"] == key_of(entry), problem
            assert problem["field"] and problem["message"], problem
            assert "cannot be translated" not in problem["message"], problem
        if entry["problems"] or entry["release"]:
            assert entry["loadbalancers"] == []
        else:
            assert entry["loadbalancers"] and all(lb["name"].startswith(key_of(entry)) for lb in entry["loadbalancers"])


@examples(60)
@given(cluster_objects(), st.randoms(use_true_random=False))
def test_entries_do_not_depend_on_list_order(objects, rng):
    services, slices = objects
    shuffled_slices = copy.deepcopy(slices)
    for endpoint_slice in shuffled_slices:
        rng.shuffle(endpoint_slice.get("endpoints") or [])
    shuffled = [list(services), shuffled_slices, list(NODES)]
    for items in shuffled:
        rng.shuffle(items)
    for options in (OPTIONS, DIRECT):
        assert translate_cluster(*shuffled, options) == translate_cluster(services, slices, NODES, options)


@examples(70)
@given(cluster_objects(), st.sampled_from([OPTIONS, DIRECT]))
def test_the_pipeline_serves_or_refuses_every_service_and_renders(objects, options):
    services, slices = objects
    entries, model, script = pipeline(services, slices, options)
    assert "static-web" in {lb.name for lb in model.loadbalancers}
    assert len(model.services) == len(entries)
    for status in model.services:
        assert status.served or status.problems or status.release or not status.ips, status
        for problem in status.problems:
            assert problem.subject.startswith(status.key) and problem.message, problem
    assert_nft_loadable(script)


# --- good Services survive next to hostile ones -------------------------------------------


@st.composite
def good_services(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Valid Services, each already holding a distinct address of the public pool."""
    names = draw(st.lists(dns_label.filter(lambda n: len(n) < 40), min_size=1, max_size=3, unique=True))
    result = []
    for index, name in enumerate(names):
        ports = [{"name": f"p{i}", "protocol": proto, "port": port, "targetPort": 8000 + i, "nodePort": 30000 + 10 * index + i}
                 for i, (proto, port) in enumerate(draw(st.lists(st.tuples(st.sampled_from(["TCP", "UDP"]), st.integers(1, 65535)),
                                                                 min_size=1, max_size=3, unique=True)))]
        result.append({
            "metadata": {"name": f"good-{name}", "namespace": "default", "uid": f"good-{index}", "resourceVersion": "1",
                         "creationTimestamp": f"2020-01-01T00:00:0{index}Z"},
            "spec": {"type": "LoadBalancer", "loadBalancerClass": "portico.io/gateway", "ports": ports, "ipFamilies": ["IPv4"],
                     "externalTrafficPolicy": "Cluster", "sessionAffinity": "None"},
            "status": {"loadBalancer": {"ingress": [{"ip": f"198.51.100.{20 + index}"}]}},
        })
    return result


def ready_slice(svc: dict[str, Any]) -> dict[str, Any]:
    meta = svc["metadata"]
    return {"metadata": {"name": f"{meta['name']}-x", "namespace": meta["namespace"], "labels": {SERVICE_NAME_LABEL: meta["name"]}},
            "addressType": "IPv4", "endpoints": [{"addresses": ["198.18.1.1"], "conditions": {"ready": True}}],
            "ports": [{"name": p["name"], "protocol": p["protocol"], "port": p["targetPort"]} for p in svc["spec"]["ports"]]}


@examples(60)
@given(good_services(), cluster_objects(max_services=5), st.randoms(use_true_random=False))
def test_good_services_survive_next_to_hostile_ones(good, hostile, rng):
    hostile_services, hostile_slices = hostile
    # The hostile ones are newer: an older Service wins an address contest by design.
    hostile_services = [s for s in hostile_services if s["metadata"]["name"] not in {g["metadata"]["name"] for g in good}]
    for svc in hostile_services:
        svc["metadata"]["creationTimestamp"] = "2024-01-01T00:00:00Z"
    good_slices = [ready_slice(svc) for svc in good]
    _entries, alone, _script = pipeline(good, good_slices)
    services, slices = good + hostile_services, good_slices + hostile_slices
    rng.shuffle(services)
    _entries, together, script = pipeline(services, slices)
    served_alone = {s.key: s.ips for s in alone.services if s.served}
    assert len(served_alone) == len(good)
    served = {s.key: s.ips for s in together.services if s.served}
    assert {key: served.get(key) for key in served_alone} == served_alone
    good_lbs = set(alone.loadbalancers)
    assert good_lbs <= set(together.loadbalancers)
    assert_nft_loadable(script)


# --- annotations -----------------------------------------------------------------------


@examples(300)
@given(annotations, st.sampled_from([[4], [6], [4, 6], [6, 4]]), st.one_of(st.just({}), st.fixed_dictionaries(
    {"loadBalancerIP": st.sampled_from(["198.51.100.5", "2001:db8:100::5", "bogus", ""])},
    optional={"allocateLoadBalancerNodePorts": st.booleans()})))
@example({"portico.io/loadBalancerIPs": "2001:db8:100::5%eth0"}, [6], {})
@example({"portico.io/loadBalancerIPs": "198.51.100.1,198.51.100.2,198.51.100.3"}, [4, 6], {})
def test_annotations_give_values_or_problems_on_the_annotation(raw, families, spec):
    report = Report("lab/default/svc")
    settings = read_annotations(raw, spec, families, "nodeport", report)
    fields = {annotation_field(key) for key in raw} | {"spec.loadBalancerIP"}
    for problem in report.problems + report.warnings:
        assert problem.field in fields, problem
    requested = [ipaddress.ip_address(ip) for ip in settings.requested_ips]
    assert [str(ip) for ip in requested] == settings.requested_ips and all("%" not in ip for ip in settings.requested_ips)
    assert all(ip.version in families for ip in requested) and len({ip.version for ip in requested}) == len(requested)
    assert settings.backend_mode in ("nodeport", "direct")
    for value in settings.health_check.values():
        assert isinstance(value, (int, str))


@examples(200)
@given(st.one_of(hostile_text, st.just("portico.io/").map(lambda p: p) | st.text(max_size=30).map(lambda t: "portico.io/" + t)),
       st.one_of(hostile_text, st.integers(), st.none()))
def test_suggestions_are_known_annotations(key, value):
    hint = suggest(key, value)
    assert hint is None or hint in PORTICO_ANNOTATIONS


@examples(30)
@given(st.data())
def test_port_lists_of_any_length_are_served_or_refused_per_port(data):
    count = data.draw(st.integers(1, 40))
    ports = [data.draw(service_port(index)) for index in range(count)]
    svc = data.draw(service(ports=st.just(ports)))
    svc["spec"]["type"], svc["spec"]["loadBalancerClass"] = "LoadBalancer", "portico.io/gateway"
    svc["metadata"].pop("deletionTimestamp", None)
    (entry,) = translate_cluster([svc], [], NODES, OPTIONS)
    for problem in entry["problems"]:
        assert problem["field"] and "cannot be translated" not in problem["message"], problem
