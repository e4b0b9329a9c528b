"""Bad input at scale: huge port and backend lists, unicode and 63-character names, too many
addresses in one annotation.

Each odd Service goes through what a run does (translate, the inventory document, allocation,
the model, the gateway's nftables script) next to an ordinary one. It is served or refused with a
message on its own field, never a traceback; the ordinary Service gets exactly what it gets alone,
and the script nft loads stays valid (nft refuses a whole table for one bad line).
"""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
from portico_pipeline import assert_nft_loadable, run_site

from ansible_collections.portico.gateway.plugins.module_utils.k8s.translate import (
    SERVICE_NAME_LABEL,
    TranslateOptions,
)
from ansible_collections.portico.gateway.plugins.module_utils.model.ipam import parse_pools
from ansible_collections.portico.gateway.plugins.module_utils.model.loadbalancer import parse_loadbalancers
from ansible_collections.portico.gateway.plugins.module_utils.model.sources import MergedModel

POOLS = parse_pools({"public": {"addresses": ["198.51.100.0/24", "2001:db8:100::/64"]}})
OPTIONS = TranslateOptions(cluster="lab")


def node(index: int) -> dict[str, Any]:
    return {"metadata": {"name": f"node{index}"},
            "status": {"conditions": [{"type": "Ready", "status": "True"}],
                       "addresses": [{"type": "InternalIP", "address": f"192.0.2.{10 + index}"},
                                     {"type": "InternalIP", "address": f"2001:db8:192::{10 + index}"}]}}


NODES = [node(i) for i in (1, 2, 3)]


def service(name: str, namespace: str = "default", *, ports: list[dict[str, Any]] | None = None,
            annotations: dict[str, str] | None = None, families: list[str] | None = None, created: str = "2024-06-01T00:00:01Z",
            ) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "uid": f"uid-{namespace}-{name}", "resourceVersion": "1",
                            "creationTimestamp": created}
    if annotations:
        meta["annotations"] = annotations
    return {
        "metadata": meta,
        "spec": {"type": "LoadBalancer", "loadBalancerClass": "portico.io/gateway", "ipFamilies": families or ["IPv4"],
                 "externalTrafficPolicy": "Cluster", "sessionAffinity": "None",
                 "ports": ports or [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080, "nodePort": 30080}]},
        "status": {"loadBalancer": {}},
    }


def ready_slice(svc: dict[str, Any], addresses: list[str], index: int = 0, port: int = 8080) -> dict[str, Any]:
    meta = svc["metadata"]
    return {"metadata": {"name": f"{meta['name']}-{index}", "namespace": meta["namespace"],
                         "labels": {SERVICE_NAME_LABEL: meta["name"]}},
            "addressType": "IPv4", "ports": [{"name": "http", "protocol": "TCP", "port": port}],
            "endpoints": [{"addresses": [address], "conditions": {"ready": True}} for address in addresses]}


ORDINARY = service("ordinary", created="2024-01-01T00:00:00Z")
ORDINARY_SLICES = [ready_slice(ORDINARY, ["198.19.1.5"])]


def run(services: list[dict[str, Any]], slices: list[dict[str, Any]]) -> tuple[MergedModel, str]:
    _entries, model, script = run_site(services, slices, NODES, OPTIONS, POOLS)
    return model, script


def status(model: MergedModel, name: str, namespace: str = "default"):
    return next(s for s in model.services if s.key == f"lab/{namespace}/{name}")


def assert_ordinary_untouched(model: MergedModel) -> None:
    alone, _script = run([ORDINARY], ORDINARY_SLICES)
    assert status(model, "ordinary").served and status(model, "ordinary").ips == status(alone, "ordinary").ips
    assert [lb for lb in model.loadbalancers if lb.name == "lab/default/ordinary"] == alone.loadbalancers


def problems(model: MergedModel, name: str, namespace: str = "default") -> list[str]:
    return [problem.render() for problem in status(model, name, namespace).problems]


# --- 300 ports -------------------------------------------------------------------------


def many_ports(count: int) -> list[dict[str, Any]]:
    return [{"name": f"p{i}", "protocol": "UDP" if i % 3 == 2 else "TCP", "port": 1000 + i, "targetPort": 9000 + i,
             "nodePort": 30100 + i} for i in range(count)]


def test_a_service_with_300_ports_is_served_next_to_an_ordinary_one():
    wide = service("wide", ports=many_ports(300))
    model, script = run([wide, ORDINARY], ORDINARY_SLICES + [ready_slice(wide, ["198.19.2.5"])])
    assert status(model, "wide").served, problems(model, "wide")
    (lb,) = [lb for lb in model.loadbalancers if lb.name == "lab/default/wide"]
    assert len(lb.ports) == 300 and {p.port for p in lb.ports} == set(range(1000, 1300))
    assert script.count('comment "lab/default/wide ') == 300
    assert_nft_loadable(script)
    assert_ordinary_untouched(model)


@pytest.mark.parametrize(("index", "field", "value", "expected"), [
    (150, "port", 0, "lab/default/wide: spec.ports[150].port: 0 is out of range 1-65535"),
    (299, "name", "p0", "lab/default/wide: spec.ports[299].name: 'p0' is also the name of spec.ports[0]"),
    (7, "protocol", "SCTP", "lab/default/wide: spec.ports[7].protocol: SCTP is not supported (supported: TCP, UDP)"),
])
def test_one_bad_port_among_300_is_named_and_refuses_only_its_service(index, field, value, expected):
    ports = many_ports(300)
    ports[index][field] = value
    wide = service("wide", ports=ports)
    model, script = run([wide, ORDINARY], ORDINARY_SLICES)
    assert not status(model, "wide").served
    assert problems(model, "wide") == [expected]
    assert "lab/default/wide" not in script
    assert_ordinary_untouched(model)


# --- 10,000 backends -------------------------------------------------------------------


def pod_addresses(count: int) -> list[str]:
    return [str(ipaddress.IPv4Address("198.19.0.0") + 256 + i) for i in range(count)]


def test_a_direct_service_with_10000_endpoints_is_served_with_every_backend():
    """Ten EndpointSlices of 1,000 endpoints each (the API's maximum per slice)."""
    big = service("big", annotations={"portico.io/backend-mode": "direct"})
    addresses = pod_addresses(10_000)
    slices = [ready_slice(big, addresses[i:i + 1000], index=i // 1000) for i in range(0, 10_000, 1000)]
    model, script = run([big, ORDINARY], ORDINARY_SLICES + slices)
    assert status(model, "big").served, problems(model, "big")
    (lb,) = [lb for lb in model.loadbalancers if lb.name == "lab/default/big"]
    assert len(lb.backends) == 10_000 and {b.address for b in lb.backends} == set(addresses)
    assert_nft_loadable(script)
    assert_ordinary_untouched(model)


def test_a_static_lb_with_10000_backends_and_one_bad_one_names_the_bad_one():
    backends: list[Any] = [{"address": address} for address in pod_addresses(10_000)]
    backends[7321] = {"address": "198.19.300.1"}
    result = parse_loadbalancers([
        {"name": "big", "vip": "198.51.100.5", "ports": [{"port": 80}], "backends": backends},
        {"name": "small", "vip": "198.51.100.6", "ports": [{"port": 80}], "backends": ["198.19.1.1"]},
    ], POOLS)
    assert [lb.name for lb in result.loadbalancers] == ["small"]
    assert [p.render() for p in result.problems] == ["big: backends[7321].address: '198.19.300.1' is not an IP address"]


# --- unicode and 63-character names ----------------------------------------------------


@pytest.mark.parametrize(("name", "namespace"), [("ünïcødé", "default"), ("web", "名前"), ("we\nb", "default")])
def test_unicode_names_are_refused_on_the_name_field(name, namespace):
    odd = service(name, namespace)
    model, script = run([odd, ORDINARY], ORDINARY_SLICES + [ready_slice(odd, ["198.19.2.5"])])
    found = problems(model, name, namespace)
    assert found and not status(model, name, namespace).served
    assert all("metadata.name" in text or "name" in text for text in found), found
    assert all("Traceback" not in text and "cannot be translated" not in text for text in found), found
    assert_nft_loadable(script)
    assert_ordinary_untouched(model)


@pytest.mark.parametrize(("change", "field"), [
    ({"port_name": "hţtp"}, "spec.ports[0].name"),
    ({"portico.io/pool": "pübl"}, "metadata.annotations['portico.io/pool']"),
    ({"portico.io/health-check-path": "sänté"}, "metadata.annotations['portico.io/health-check-path']"),
    # 198.51.100.7 in Arabic-Indic digits: Python's int() reads them, the address parser must not.
    ({"portico.io/loadBalancerIPs": "\u0661\u0669\u0668.\u0665\u0661.\u0661\u0660\u0660.\u0667"},
     "metadata.annotations['portico.io/loadBalancerIPs']"),
    ({"portico.io/backend-mode": "dïrect"}, "metadata.annotations['portico.io/backend-mode']"),
])
def test_unicode_in_port_names_and_annotation_values_is_refused_with_the_field(change, field):
    annotations = {key: value for key, value in change.items() if key != "port_name"}
    port = {"name": change.get("port_name", "http"), "protocol": "TCP", "port": 80, "targetPort": 8080, "nodePort": 30080}
    odd = service("odd", ports=[port], annotations=annotations)
    model, _script = run([odd, ORDINARY], ORDINARY_SLICES)
    found = problems(model, "odd")
    assert not status(model, "odd").served and found
    assert all(text.startswith(f"lab/default/odd: {field}: ") for text in found), found
    assert_ordinary_untouched(model)


def test_63_character_namespace_and_name_are_served_and_nft_can_load_them():
    """The LB name is cluster/namespace/name, 131 characters: the chain comment must still fit
    nft's 128 (a longer one made nft refuse the whole table, every LB on the gateway)."""
    long = service("s" * 63, "n" * 63, ports=[{"name": "a" * 63, "protocol": "TCP", "port": 80, "targetPort": 8080,
                                               "nodePort": 30081}])
    model, script = run([long, ORDINARY], ORDINARY_SLICES + [ready_slice(long, ["198.19.2.5"])])
    assert status(model, "s" * 63, "n" * 63).served, problems(model, "s" * 63, "n" * 63)
    assert f"lab/{'n' * 63}/{'s' * 63}" in {lb.name for lb in model.loadbalancers}
    assert_nft_loadable(script)
    assert_ordinary_untouched(model)


@pytest.mark.parametrize("length", [64, 200, 253])
def test_names_longer_than_the_api_allows_are_served_or_refused_on_metadata_name(length):
    """Only a snapshot can hold them (the API refuses Service names over 63 characters): an LB
    name up to 253 characters is served, a longer one refused on the Service's name."""
    long = service("s" * length)
    model, script = run([long, ORDINARY], ORDINARY_SLICES + [ready_slice(long, ["198.19.2.5"])])
    served = status(model, "s" * length).served
    assert served == (len(f"lab/default/{'s' * length}") <= 253)
    if not served:
        assert problems(model, "s" * length) == [
            f"lab/default/{'s' * length}: metadata.name: expected letters, digits and . _ / - (1-253 chars), "
            f"got 'lab/default/{'s' * length}'"]
    assert_nft_loadable(script)
    assert_ordinary_untouched(model)


# --- three addresses in one annotation -------------------------------------------------


@pytest.mark.parametrize(("families", "value", "expected"), [
    (["IPv4", "IPv6"], "198.51.100.31,2001:db8:100::31,198.51.100.32",
     "198.51.100.32: only one IPv4 address may be requested (also 198.51.100.31)"),
    (["IPv4"], "198.51.100.31,198.51.100.32,198.51.100.33", "only one IPv4 address may be requested"),
    (["IPv4"], "198.51.100.31,2001:db8:100::31,198.51.100.400", "'198.51.100.400' is not an IP address"),
])
def test_three_addresses_in_one_annotation_are_refused_on_the_annotation(families, value, expected):
    odd = service("three", annotations={"metallb.universe.tf/loadBalancerIPs": value}, families=families)
    model, _script = run([odd, ORDINARY], ORDINARY_SLICES)
    found = problems(model, "three")
    assert any(text.startswith("lab/default/three: metadata.annotations['metallb.universe.tf/loadBalancerIPs']: ")
               and expected in text for text in found), found
    assert not status(model, "three").ips
    assert_ordinary_untouched(model)
