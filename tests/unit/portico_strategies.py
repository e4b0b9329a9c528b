"""Hypothesis strategies for hostile Portico input, and the profiles the property tests run under.

Profiles (``PORTICO_HYPOTHESIS=ci|dev``, default ``ci``):

* ``ci``: what ``make unit`` runs. Derandomized (the same examples on every run and machine, no
  example database written into the work tree) and bounded so that every property test together
  adds well under a minute to the unit stage.
* ``dev``: ``EXAMPLES_SCALE`` times as many examples, random, with a database under /tmp that
  replays failures first; run it to hunt bugs:
  ``PORTICO_HYPOTHESIS=dev pytest -p no:cacheprovider -q tests/unit/test_properties_*.py``.
* ``hunt``: ``dev`` without the explicit ``@example`` regressions, to see what the search finds
  on its own.

The strategies produce what Portico really reads: Kubernetes objects in the JSON shape the API
server returns (``endpoints: null``, absent optional fields, MetalLB/Cilium/kube-vip annotation
keys, IPv6, unicode and 63-character names, huge lists), inventory LB definitions with wrong
types, and pools. "API-shaped" strategies keep every field to the type the API schema gives it
and make the values hostile; "any"-strategies also break the types (hand-edited inventories,
snapshots, lenient sources).
"""

from __future__ import annotations

import ipaddress
import os
import string
from typing import Any

from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.database import DirectoryBasedExampleDatabase

from ansible_collections.portico.gateway.plugins.module_utils.k8s.annotations import (
    BACKEND_MODE_ANNOTATION,
    HEALTH_CHECK_ANNOTATIONS,
    LEGACY_SOURCE_RANGES_ANNOTATION,
    POOL_ANNOTATIONS,
    PRESERVE_SOURCE_IP_ANNOTATION,
    REQUESTED_IPS_ANNOTATIONS,
    SHARING_ANNOTATIONS,
)
from ansible_collections.portico.gateway.plugins.module_utils.k8s.translate import (
    CLEANUP_FINALIZER,
    DEFAULT_LOAD_BALANCER_CLASS,
    SERVICE_NAME_LABEL,
)
from ansible_collections.portico.gateway.plugins.module_utils.model.ipam import parse_pools

# --- profiles --------------------------------------------------------------------------

PROFILE = os.environ.get("PORTICO_HYPOTHESIS", "ci")
EXAMPLES_SCALE = 20 if PROFILE in ("dev", "hunt") else 1
_COMMON = {
    "deadline": None,  # two shared cores: timing is noise, speed has its benchmarks
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
    "print_blob": True,
}
settings.register_profile("ci", derandomize=True, database=None, **_COMMON)
settings.register_profile("dev", database=DirectoryBasedExampleDatabase("/tmp/portico-hypothesis"), **_COMMON)
settings.register_profile("hunt", parent=settings.get_profile("dev"), phases=[p for p in Phase if p != Phase.explicit])
settings.load_profile(PROFILE)


def examples(ci: int) -> settings:
    """Settings for a property: ``ci`` examples in CI, ``EXAMPLES_SCALE`` times more in dev."""
    return settings(max_examples=ci * EXAMPLES_SCALE)


# --- addresses -------------------------------------------------------------------------

# Small pools, so that exhaustion, contests and sharing happen often.
POOLS_RAW: dict[str, Any] = {
    "public": {"addresses": ["198.51.100.0/27", "2001:db8:100::/124"]},
    "team-a": {"addresses": ["203.0.113.16/29"], "namespaces": ["team-a"]},
    "manual": {"addresses": ["198.51.100.200-198.51.100.203"], "auto_assign": False, "avoid_buggy_ips": True},
}
POOLS = parse_pools(POOLS_RAW)
NAMESPACES = ("default", "team-a", "team-b", "n" * 63)

_IN_POOLS = [str(ip) for net in ("198.51.100.0/27", "203.0.113.16/29") for ip in ipaddress.ip_network(net)]
_IN_POOLS += [f"198.51.100.{n}" for n in range(200, 204)]
_IN_POOLS6 = [str(ip) for ip in ipaddress.ip_network("2001:db8:100::/124")]
pool_ipv4 = st.sampled_from(_IN_POOLS)
pool_ipv6 = st.sampled_from(_IN_POOLS6)
# Backends and node addresses (outside every pool: 198.18.0.0/15 and 2001:db8:200::/64).
backend_ipv4 = st.integers(0, 2**17 - 1).map(lambda n: str(ipaddress.IPv4Address("198.18.0.0") + n))
backend_ipv6 = st.integers(0, 2**16).map(lambda n: str(ipaddress.IPv6Address("2001:db8:200::") + n))
# Strings that look like addresses but are not plain ones: scoped IPv6, CIDRs, padding,
# IPv4-mapped IPv6, leading zeros, out-of-pool and non-IP text.
odd_ip_text = st.sampled_from([
    "2001:db8:100::5%eth0", "fe80::1%1", "198.51.100.7/32", "2001:db8:100::/124", " 198.51.100.7 ",
    "198.51.100.7\n", "::ffff:198.51.100.7", "198.051.100.7", "198.51.100", "198.51.100.7.1", "::", "0.0.0.0",
    "255.255.255.255", "198.51.100.300", "2001:db8:100::5::1", "localhost", "", " ", ",", "192.0.2.10",
    "2001:db8:ffff::1", "198.51.100.1,198.51.100.2", "198.51.100.3,2001:db8:100::3,198.51.100.4",
])
ip_text = st.one_of(pool_ipv4, pool_ipv6, backend_ipv4, backend_ipv6, odd_ip_text)

# --- scalars ---------------------------------------------------------------------------

# Text as users and tenants type it: unicode, quotes, newlines, template syntax, nft syntax.
hostile_text = st.one_of(
    st.text(max_size=20),
    st.text(alphabet=string.ascii_lowercase + string.digits + "-./_", min_size=1, max_size=70),
    st.sampled_from([
        "", " ", "\n", "web\n", "a" * 63, "a" * 64, "a" * 254, "ünïcødé", "名前", "web\"; flush ruleset; \"",
        "{{ lookup('pipe', 'id') }}", "{% raw %}", "$(id)", "-", "web-", "-web", "Web", "web..1", "%", "\x00",
        "null", "None", "true", "0x10", "1e3", "+80", "-1", "00080",
    ]),
)
json_scalar = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), hostile_text, ip_text,
)
any_json = st.recursive(
    json_scalar,
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(hostile_text, children, max_size=4)),
    max_leaves=12,
)
port_number = st.one_of(st.integers(1, 65535), st.sampled_from([22, 53, 80, 443, 8080, 65535, 1]))
hostile_port = st.one_of(port_number, st.integers(-(2**40), 2**40), st.sampled_from([0, 65536, True, "80", 80.0, None]))

# --- Kubernetes objects ----------------------------------------------------------------

# DNS-1035 labels, built from parts (st.from_regex costs several times more per example).
dns_label = st.builds(
    lambda first, middle, last: (first + middle + last)[:63],
    st.sampled_from(string.ascii_lowercase), st.text(alphabet=string.ascii_lowercase + string.digits + "-", max_size=12),
    st.sampled_from(["", "a", "0", "web", "1"]),
).map(lambda label: label if not label.endswith("-") else label + "x")
uid = st.integers(0, 2**64).map(lambda n: f"{n:016x}")
k8s_name = st.one_of(dns_label, st.just("s" * 63), hostile_text.filter(bool))
timestamp = st.integers(0, 10**6).map(lambda n: f"2024-{1 + n % 12:02d}-{1 + n % 28:02d}T{n % 24:02d}:{n % 60:02d}:{n // 60 % 60:02d}Z")

ANNOTATION_KEYS = (
    *REQUESTED_IPS_ANNOTATIONS, *POOL_ANNOTATIONS, *SHARING_ANNOTATIONS, BACKEND_MODE_ANNOTATION,
    PRESERVE_SOURCE_IP_ANNOTATION, *HEALTH_CHECK_ANNOTATIONS, LEGACY_SOURCE_RANGES_ANNOTATION,
    # typos and foreign keys
    "portico.io/pol", "portico.io/loadBalancerIP", "portico.io/healthcheck-port", "portico.io/", "portico.io/ü",
    "metallb.io/ip-allocated-from-pool", "kube-vip.io/vipHost", "example.com/anything", "portico.io/served-by",
)
annotation_value = st.one_of(
    ip_text,
    st.lists(st.one_of(pool_ipv4, pool_ipv6, odd_ip_text), min_size=1, max_size=3).map(",".join),
    st.sampled_from(["public", "team-a", "manual", "nope", "direct", "nodeport", "true", "false", "maybe", "http",
                     "tcp", "none", "udp", "/healthz", "healthz", "100", "0", "999999999", "1000000000", " 5 ",
                     "web", "198.51.100.0/24,2001:db8::/32", "192.0.2.0/24", "abc"]),
    hostile_text,
)
annotations = st.dictionaries(st.sampled_from(ANNOTATION_KEYS) | hostile_text, annotation_value, max_size=5)


@st.composite
def service_port(draw: st.DrawFn, index: int) -> dict[str, Any]:
    port: dict[str, Any] = {
        "name": draw(st.one_of(st.just(f"p{index}"), dns_label, hostile_text)),
        "protocol": draw(st.sampled_from(["TCP", "TCP", "UDP", "SCTP", "tcp", "HTTP"])),
        "port": draw(st.one_of(port_number, st.just(80))),
    }
    if draw(st.booleans()):
        port["targetPort"] = draw(st.one_of(port_number, st.sampled_from(["http", "dns", "web-1", "-bad", "HTTP", "a" * 16])))
    if draw(st.integers(0, 4)):
        port["nodePort"] = draw(st.one_of(st.integers(30000, 32767), st.just(30080)))
    return port


@st.composite
def service_ports(draw: st.DrawFn, max_size: int = 4) -> list[dict[str, Any]]:
    count = draw(st.integers(0, max_size))
    return [draw(service_port(index)) for index in range(count)]


FAMILY_LISTS = [["IPv4"], ["IPv4"], ["IPv6"], ["IPv4", "IPv6"], ["IPv6", "IPv4"], [], ["IPv4", "IPv4"], ["IPv5"]]


@st.composite
def service(draw: st.DrawFn, name: st.SearchStrategy[str] = k8s_name, namespace: st.SearchStrategy[str] | None = None,
            ports: st.SearchStrategy[list[dict[str, Any]]] | None = None) -> dict[str, Any]:
    """A Service as the API returns it: every field of its schema type, values anything the
    API accepts (and some it would refuse, as from a snapshot)."""
    meta: dict[str, Any] = {
        "name": draw(name),
        "namespace": draw(namespace if namespace is not None else st.sampled_from(NAMESPACES) | k8s_name),
        "uid": draw(uid),
        "resourceVersion": str(draw(st.integers(1, 10**6))),
    }
    if draw(st.integers(0, 5)):
        meta["creationTimestamp"] = draw(timestamp)
    if draw(st.booleans()):
        meta["annotations"] = draw(annotations)
    if not draw(st.integers(0, 9)):
        meta["deletionTimestamp"] = draw(timestamp)
    if not draw(st.integers(0, 4)):
        meta["finalizers"] = [CLEANUP_FINALIZER]
    families = draw(st.sampled_from(FAMILY_LISTS))
    spec: dict[str, Any] = {
        "type": draw(st.sampled_from(["LoadBalancer"] * 8 + ["ClusterIP", "NodePort"])),
        "ports": draw(ports if ports is not None else service_ports()),
        "ipFamilies": families,
        "ipFamilyPolicy": "RequireDualStack" if len(families) > 1 else "SingleStack",
        "sessionAffinity": draw(st.sampled_from(["None", "None", "ClientIP", "Sticky"])),
        "externalTrafficPolicy": draw(st.sampled_from(["Cluster", "Cluster", "Local", "Global"])),
        "allocateLoadBalancerNodePorts": draw(st.sampled_from([True, True, True, False])),
    }
    if draw(st.integers(0, 5)):
        spec["loadBalancerClass"] = draw(st.sampled_from([DEFAULT_LOAD_BALANCER_CLASS] * 5 + ["example.com/other"]))
    if spec["externalTrafficPolicy"] == "Local" or not draw(st.integers(0, 9)):
        spec["healthCheckNodePort"] = draw(st.integers(30000, 32767))
    if spec["sessionAffinity"] == "ClientIP" and draw(st.booleans()):
        spec["sessionAffinityConfig"] = {"clientIP": {"timeoutSeconds": draw(st.integers(-5, 100000))}}
    if not draw(st.integers(0, 4)):
        spec["loadBalancerSourceRanges"] = draw(st.lists(
            st.sampled_from(["203.0.113.0/24", "198.18.0.0/15", "2001:db8::/32", "0.0.0.0/0", "::/0", "192.0.2.0/24 ",
                             "198.51.100.7", "bogus", "2001:db8::%x/64", "198.18.0.1/33"]), max_size=4))
    if not draw(st.integers(0, 5)):
        spec["loadBalancerIP"] = draw(ip_text)
    status: dict[str, Any] = {"loadBalancer": {}}
    if draw(st.booleans()):
        status["loadBalancer"]["ingress"] = [{"ip": ip, "ipMode": "VIP"} for ip in draw(st.lists(ip_text, max_size=2))]
    return {"metadata": meta, "spec": spec, "status": status}


@st.composite
def endpoint_slice(draw: st.DrawFn, svc: dict[str, Any], index: int) -> dict[str, Any]:
    """An EndpointSlice of ``svc`` (``endpoints`` and ``ports`` may be null, as the API sends them)."""
    family = draw(st.sampled_from(["IPv4", "IPv4", "IPv6", "FQDN"]))
    address = {"IPv4": backend_ipv4, "IPv6": backend_ipv6, "FQDN": st.just("db.example.test")}[family]
    endpoints = draw(st.one_of(st.none(), st.lists(st.fixed_dictionaries(
        {"addresses": st.lists(address | odd_ip_text, min_size=1, max_size=2)},
        optional={"conditions": st.fixed_dictionaries({}, optional={"ready": st.sampled_from([True, False, None])}),
                  "targetRef": st.fixed_dictionaries({"kind": st.just("Pod"), "name": dns_label})},
    ), max_size=5)))
    port_names = [str(p.get("name") or "") for p in svc["spec"]["ports"]] or [""]
    ports = draw(st.one_of(st.none(), st.lists(st.fixed_dictionaries({
        "name": st.sampled_from(port_names), "protocol": st.sampled_from(["TCP", "UDP"]), "port": port_number,
    }), max_size=3)))
    meta = svc["metadata"]
    return {
        "metadata": {"name": f"{meta['name']}-{index}", "namespace": meta["namespace"],
                     "labels": {SERVICE_NAME_LABEL: meta["name"]}},
        "addressType": family, "endpoints": endpoints, "ports": ports,
    }


def node(name: str, index: int, ready: bool = True, excluded: bool = False) -> dict[str, Any]:
    labels = {"node.kubernetes.io/exclude-from-external-load-balancers": ""} if excluded else {}
    return {
        "metadata": {"name": name, "labels": labels},
        "spec": {"podCIDRs": [f"198.19.{index}.0/24", f"2001:db8:300:{index}::/64"]},
        "status": {
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
            "addresses": [{"type": "InternalIP", "address": f"198.18.255.{index}"},
                          {"type": "InternalIP", "address": f"2001:db8:200:ffff::{index}"},
                          {"type": "Hostname", "address": name}],
        },
    }


NODES = [node("node1", 1), node("node2", 2), node("node3", 3), node("node4", 4, ready=False), node("node5", 5, excluded=True)]


@st.composite
def cluster_objects(draw: st.DrawFn, max_services: int = 6) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Services with unique namespace/name, and their EndpointSlices."""
    services = draw(st.lists(service(), max_size=max_services,
                             unique_by=lambda s: (s["metadata"]["namespace"], s["metadata"]["name"])))
    slices = []
    for svc in services:
        for index in range(draw(st.integers(0, 2))):
            slices.append(draw(endpoint_slice(svc, index)))
    return services, slices


# --- inventory LB definitions ----------------------------------------------------------

lb_name = dns_label


@st.composite
def valid_lb(draw: st.DrawFn, name: str | None = None, vip: str | None = None) -> dict[str, Any]:
    """A static LB definition the model must accept (on its own)."""
    vip = vip or draw(st.one_of(pool_ipv4, pool_ipv6))
    family = ipaddress.ip_address(vip).version
    listeners = draw(st.lists(st.tuples(st.sampled_from(["tcp", "udp"]), port_number), min_size=1, max_size=4, unique=True))
    backend = backend_ipv4 if family == 4 else backend_ipv6
    lb: dict[str, Any] = {
        "name": name or draw(lb_name),
        "vip": vip,
        "ports": [{"protocol": proto, "port": port, "backend_port": draw(port_number)} for proto, port in listeners],
        "backends": [{"address": a, "weight": draw(st.integers(1, 1000))} for a in draw(st.lists(backend, max_size=5, unique=True))],
    }
    if draw(st.booleans()):
        lb["source_ranges"] = ["203.0.113.0/24"] if family == 4 else ["2001:db8::/32"]
    if draw(st.booleans()):
        lb["health_check"] = {"type": "tcp", "port": draw(port_number)} if draw(st.booleans()) else {"type": "none"}
    if draw(st.booleans()):
        lb["session_affinity"] = "client_ip"
    return lb


LB_FIELD_NAMES = ("name", "vip", "pool", "ports", "backends", "health_check", "source_ranges", "preserve_source_ip",
                  "session_affinity", "session_affinity_timeout_s", "snat_address", "source", "prots", "backend")
lb_field_value = st.one_of(
    any_json, ip_text,
    st.lists(st.dictionaries(st.sampled_from(["protocol", "port", "backend_port", "name", "proto"]), hostile_port | hostile_text,
                             max_size=4), max_size=3),
    st.lists(st.one_of(ip_text, st.dictionaries(st.sampled_from(["address", "weight", "port", "name", "addr"]),
                                                ip_text | hostile_port, max_size=3)), max_size=3),
)


@st.composite
def hostile_lb(draw: st.DrawFn) -> Any:
    """A definition as a broken inventory has it: a valid one with fields changed, added or
    removed, or not a mapping at all."""
    if not draw(st.integers(0, 9)):
        return draw(any_json)
    lb = draw(valid_lb())
    for _ in range(draw(st.integers(1, 3))):
        key = draw(st.sampled_from(LB_FIELD_NAMES))
        if draw(st.integers(0, 3)):
            lb[key] = draw(lb_field_value)
        else:
            lb.pop(key, None)
    return lb
