# -*- coding: utf-8 -*-
# Copyright: Portico developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Kubernetes Services (with their EndpointSlices and the Nodes) -> Portico service entries.

Pure translation of plain dicts in the API's JSON shape (what the API server sends, or
``ApiClient().sanitize_for_serialization(obj)``) into the entries the inventory plugin
publishes as ``portico_k8s_services``. No addresses are allocated here (``model.ipam``
does that) and LB validation stays in ``model.loadbalancer``: this module only builds raw LB
dicts and runs them through the model with a placeholder VIP, so a Service's problems are
known before allocation, each on the Service field or annotation it came from.

Which Services an entry is made for (``scope_of``): the Services Portico serves (type
LoadBalancer, its class, a selected namespace), and the ones it must *release*: a Service it
served that is being deleted (it carries the cleanup finalizer), or that left Portico's scope
(type or class changed, namespace no longer selected) while it still carries Portico's
``portico.io/served-by`` mark. A release entry has no LBs: its status addresses stay held until
the write-back, after a converge that reached every gateway, clears its status and finalizer.

Services are checked against the API's own rules where the API server would refuse them (port
names, target port names, protocols, affinity settings): objects from a snapshot or a lenient
source get the message the API would give, on the same field.

Annotations are read by ``k8s.annotations``. Values from the API are data: they are copied,
never evaluated. Standard library only, like every module_util.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any

from ansible_collections.portico.gateway.plugins.module_utils.k8s.annotations import (
    BACKEND_MODE_ANNOTATION,
    IPS_ANNOTATION,
    LEGACY_SOURCE_RANGES_ANNOTATION,
    POOL_ANNOTATION,
    PRESERVE_SOURCE_IP_ANNOTATION,
    SERVED_BY_ANNOTATION,
    ServiceAnnotations,
    annotation_field,
    read_annotations,
)
from ansible_collections.portico.gateway.plugins.module_utils.k8s.kinds import SERVICE, SOURCE_KINDS
from ansible_collections.portico.gateway.plugins.module_utils.model.ipam import (
    AddressRange,
    IPAddress,
    Pool,
    parse_address,
    parse_network,
)
from ansible_collections.portico.gateway.plugins.module_utils.model.loadbalancer import (
    PROTOCOLS,
    LBValidationError,
    parse_loadbalancer,
)
from ansible_collections.portico.gateway.plugins.module_utils.model.problems import (
    FieldSources,
    Problem,
    Report,
    field_path,
    to_data,
)

DEFAULT_LOAD_BALANCER_CLASS = "portico.io/gateway"
# How nodeport backends of externalTrafficPolicy Cluster Services are checked: the Service's own
# nodePort (one check per Service and node), or kube-proxy's node health (KEP-3836: one check per
# node, the same for every Service, failing while the node drains).
NODE_HEALTH_CHECKS = ("node_port", "kube_proxy")
KUBE_PROXY_HEALTH_CHECK = {"type": "http", "port": 10256, "path": "/healthz"}
EXCLUDE_LABEL = "node.kubernetes.io/exclude-from-external-load-balancers"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
# The cloud-provider service controller's finalizer: a Service that carries it is not removed
# before its load balancer is gone (Portico adds it when it starts serving a Service).
CLEANUP_FINALIZER = SERVICE.finalizer
# Why a LoadBalancer Service got no entry (counted for the inventory's summary line).
SKIP_REASONS = {
    "class": "of another loadBalancerClass",
    "no-class": "without loadBalancerClass (serve_default_class is false)",
    "namespace": "in a namespace not served",
    "deleting": "being deleted (not Portico's)",
}
# Kubernetes' own rules (apimachinery validation) for what Portico checks.
_DNS_LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_IANA_SVC_NAME_RE = re.compile(r"^[-a-z0-9]+$")
API_PROTOCOLS = ("TCP", "UDP", "SCTP")
SESSION_AFFINITY_VALUES = ("None", "ClientIP")
TRAFFIC_POLICIES = ("Cluster", "Local")
AFFINITY_TIMEOUT_FIELD = "spec.sessionAffinityConfig.clientIP.timeoutSeconds"
# The gateways keep a client's backend for the timeout after its last new connection (as
# kube-proxy does): said on every ClientIP Service, so the difference is never silent.
AFFINITY_REFRESH_WARNING = ("the timeout counts from the client's last new connection, not from its last packet "
                            "(as kube-proxy): a client that only keeps one long connection open moves after it")

# A family the Service's loadBalancerSourceRanges do not mention gets a range no client
# can come from: restricting IPv4 must not silently leave IPv6 open.
DENY_ALL_SOURCES = {4: "0.0.0.0/32", 6: "::/128"}
_FAMILY_NAMES = {"IPv4": 4, "IPv6": 6}
# Validation-only pool: the model checks everything but the (not yet allocated) VIP.
_ANY_POOL = Pool(
    name="kubernetes",
    ranges=(
        AddressRange(ipaddress.IPv4Address(0), ipaddress.IPv4Address(2**32 - 1)),
        AddressRange(ipaddress.IPv6Address(0), ipaddress.IPv6Address(2**128 - 1)),
    ),
)


@dataclass(frozen=True)
class TranslateOptions:
    """How one cluster's objects are selected and translated (``k8s.sources`` reads them from
    the inventory source)."""

    cluster: str
    load_balancer_class: str = DEFAULT_LOAD_BALANCER_CLASS
    serve_default_class: bool = False
    backend_mode: str = "nodeport"
    namespaces: tuple[str, ...] = ()
    exclude_namespaces: tuple[str, ...] = ()
    # A Service without a ready endpoint keeps (or gets) its address, unannounced and refusing
    # connections; True: in nodeport mode it is sent to the nodes anyway (kube-proxy decides).
    serve_without_endpoints: bool = False
    node_health_check: str = "node_port"  # one of NODE_HEALTH_CHECKS
    # The kinds of objects served (``k8s.kinds.SOURCE_KINDS``): Services, Portico's LoadBalancer
    # resources, and the Gateway API (``Gateway``).
    kinds: tuple[str, ...] = SOURCE_KINDS


@dataclass(frozen=True)
class NodeTarget:
    """A Node that may receive traffic in nodeport mode: Ready, not excluded."""

    name: str
    addresses: Mapping[int, str]  # family -> first InternalIP of that family


@dataclass(frozen=True)
class NodeBackends:
    """nodeport backends per family, built once per cluster (not once per Service): every
    nodeport LB of the family gets this very list, which is what the documents' backend sets
    recognise (``model.documents``). Entries are read-only data."""

    by_family: Mapping[int, list[dict[str, Any]]]


@dataclass(frozen=True)
class ServiceSpecPort:
    """One entry of a Service's ``spec.ports`` that Portico can serve."""

    index: int  # position in spec.ports, for messages
    name: str
    protocol: str  # lower case, as the LB model spells it
    port: int
    node_port: int | None
    target_port: int | str | None
    spec_field: str  # spec.ports[<index>]


# --- selection -------------------------------------------------------------------


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return obj.get("metadata") or {}


def wants_namespace(namespace: str, options: TranslateOptions) -> bool:
    if options.namespaces and namespace not in options.namespaces:
        return False
    return namespace not in options.exclude_namespaces


def is_served(service: Mapping[str, Any], options: TranslateOptions) -> bool:
    """type LoadBalancer, and our loadBalancerClass (or none, when so configured)."""
    return _class_reason(service, options) is None


def _class_reason(service: Mapping[str, Any], options: TranslateOptions) -> str | None:
    """Why the type or class is not Portico's (a ``SKIP_REASONS`` key, or "type"), None if it is."""
    spec = service.get("spec") or {}
    if spec.get("type") != "LoadBalancer":
        return "type"
    lb_class = spec.get("loadBalancerClass")
    if lb_class is None:
        return None if options.serve_default_class else "no-class"
    return None if lb_class == options.load_balancer_class else "class"


def has_cleanup_finalizer(obj: Mapping[str, Any], finalizer: str = CLEANUP_FINALIZER) -> bool:
    """The object carries its kind's cleanup finalizer (a Service's by default)."""
    return finalizer in (_meta(obj).get("finalizers") or [])


def is_marked(obj: Mapping[str, Any], options: TranslateOptions) -> bool:
    """Portico (this installation: its class) served the object and has not released it yet."""
    return (_meta(obj).get("annotations") or {}).get(SERVED_BY_ANNOTATION) == options.load_balancer_class


def is_claimed(obj: Mapping[str, Any], options: TranslateOptions, finalizer: str = CLEANUP_FINALIZER) -> bool:
    """The object carries its kind's cleanup finalizer and this installation's mark."""
    return has_cleanup_finalizer(obj, finalizer) and is_marked(obj, options)


@dataclass(frozen=True)
class Scope:
    """What Portico does with one Service: ``serve``, ``release`` or ``skip``, and why."""

    action: str
    reason: str = ""  # release: for logs and Events; skip: a SKIP_REASONS key, or "type"


def scope_of(service: Mapping[str, Any], options: TranslateOptions) -> Scope:
    """Serve, release (Portico served it and must now give it up) or skip one Service."""
    return object_scope(service, options, _class_reason(service, options), CLEANUP_FINALIZER)


def object_scope(obj: Mapping[str, Any], options: TranslateOptions, class_reason: str | None, finalizer: str) -> Scope:
    """Serve, release or skip one object of any kind, given why its kind's type or class is not
    Portico's (``class_reason``, None when it is) and the kind's cleanup finalizer."""
    meta = _meta(obj)
    reason = class_reason
    if reason is None and not wants_namespace(str(meta.get("namespace", "")), options):
        reason = "namespace"
    deleting = bool(meta.get("deletionTimestamp"))
    if reason is None and not deleting:
        return Scope("serve")
    if reason is None:
        # Being deleted: the finalizer holds it until Portico withdrew the VIP.
        return Scope("release", "being deleted") if has_cleanup_finalizer(obj, finalizer) else Scope("skip", "deleting")
    if is_marked(obj, options) and (has_cleanup_finalizer(obj, finalizer) or not deleting):
        return Scope("release", "being deleted" if deleting else _left_scope(obj, reason))
    return Scope("skip", reason)


def _left_scope(service: Mapping[str, Any], reason: str) -> str:
    spec = service.get("spec") or {}
    if reason == "type":
        return f"type changed to {spec.get('type')}"
    if reason == "class":
        return f"loadBalancerClass changed to {spec.get('loadBalancerClass')}"
    if reason == "no-class":
        return "no loadBalancerClass, and Portico does not serve the default class"
    return "its namespace is not served any more"


# --- nodes and endpoint slices ---------------------------------------------------


def _node_ready(node: Mapping[str, Any]) -> bool:
    for condition in (node.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Ready":
            return condition.get("status") == "True"
    return False


def _internal_ips(node: Mapping[str, Any]) -> dict[int, IPAddress]:
    found: dict[int, IPAddress] = {}
    for address in (node.get("status") or {}).get("addresses") or []:
        if address.get("type") != "InternalIP":
            continue
        try:
            ip = parse_address(address.get("address", ""))
        except ValueError:
            continue
        found.setdefault(ip.version, ip)
    return found


def node_targets(nodes: Iterable[Mapping[str, Any]]) -> list[NodeTarget]:
    """Nodes eligible as nodeport backends, sorted by name (list order must not matter)."""
    targets = []
    for node in nodes:
        labels = _meta(node).get("labels") or {}
        if EXCLUDE_LABEL in labels or not _node_ready(node):
            continue
        addresses = {family: str(ip) for family, ip in _internal_ips(node).items()}
        targets.append(NodeTarget(name=str(_meta(node).get("name", "")), addresses=addresses))
    return sorted(targets, key=lambda target: target.name)


def node_backends(targets: Sequence[NodeTarget]) -> NodeBackends:
    """Backend dicts per family, sorted by address (cheap to reuse for thousands of Services)."""
    by_family: dict[int, list[dict[str, Any]]] = {}
    for family in (4, 6):
        pairs = sorted((ipaddress.ip_address(t.addresses[family]), t.name) for t in targets if family in t.addresses)
        by_family[family] = [{"address": str(ip), "name": name} for ip, name in pairs]
    return NodeBackends(by_family=by_family)


def node_entries(nodes: Iterable[Mapping[str, Any]], cluster: str) -> list[dict[str, Any]]:
    """Per-node facts the playbooks need (direct mode routes pod CIDRs to nodes)."""
    entries = []
    for node in nodes:
        meta = _meta(node)
        spec = node.get("spec") or {}
        pod_cidrs = spec.get("podCIDRs") or ([spec["podCIDR"]] if spec.get("podCIDR") else [])
        addresses = {family: str(ip) for family, ip in _internal_ips(node).items()}
        entries.append({
            "cluster": cluster,
            "name": str(meta.get("name", "")),
            "ready": _node_ready(node),
            "excluded": EXCLUDE_LABEL in (meta.get("labels") or {}),
            "internal_ips": [addresses[family] for family in sorted(addresses)],
            "pod_cidrs": [str(cidr) for cidr in pod_cidrs],
        })
    return sorted(entries, key=lambda entry: entry["name"])


def index_endpoint_slices(slices: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], list[Mapping[str, Any]]]:
    """EndpointSlices by (namespace, Service name), from the kubernetes.io/service-name label."""
    index: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for endpoint_slice in slices:
        meta = _meta(endpoint_slice)
        service = (meta.get("labels") or {}).get(SERVICE_NAME_LABEL)
        if service:
            index.setdefault((str(meta.get("namespace", "")), str(service)), []).append(endpoint_slice)
    return index


def _endpoint_ready(endpoint: Mapping[str, Any]) -> bool:
    # API semantics: a nil "ready" condition is to be interpreted as ready.
    return (endpoint.get("conditions") or {}).get("ready") is not False


# --- spec ------------------------------------------------------------------------


def _ip_families(spec: Mapping[str, Any], report: Report) -> list[int]:
    raw = spec.get("ipFamilies")
    if not raw:
        # Only very old objects lack ipFamilies; their clusterIP tells the family.
        try:
            return [ipaddress.ip_address(str(spec.get("clusterIP", ""))).version]
        except ValueError:
            return [4]
    families: list[int] = []
    for index, name in enumerate(raw):
        if name not in _FAMILY_NAMES:
            report.problem(field_path("spec", "ipFamilies", index), f"unknown IP family {name!r}")
        elif _FAMILY_NAMES[name] not in families:
            families.append(_FAMILY_NAMES[name])
    return families


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_port_name(name: Any, where: str, count: int, report: Report) -> None:
    """ports[].name: a DNS-1123 label, required when there is more than one port (the API's rule)."""
    if name in (None, ""):
        if count > 1:
            report.problem(where, "is required when the Service has more than one port")
        return
    text = str(name)
    if len(text) > 63 or not _DNS_LABEL_RE.match(text):
        report.problem(where, f"{text!r} is not a DNS label: at most 63 characters a-z, 0-9 and '-', "
                       "starting and ending with a letter or digit")


def _check_target_port(value: Any, where: str, report: Report) -> None:
    """targetPort: a number 1-65535 or an IANA service name (the API's rule)."""
    if value is None or _is_int(value):
        if _is_int(value) and not 1 <= value <= 65535:
            report.problem(where, f"{value} is out of range 1-65535")
        return
    text = str(value)
    if (len(text) > 15 or not _IANA_SVC_NAME_RE.match(text) or not re.search(r"[a-z]", text)
            or text.startswith("-") or text.endswith("-") or "--" in text):
        report.problem(where, f"{text!r} is not a port number or an IANA service name (at most 15 characters "
                       "a-z, 0-9 and '-', at least one letter, no '-' at either end or twice in a row)")


def _spec_ports(spec: Mapping[str, Any], report: Report) -> list[ServiceSpecPort]:
    raws = spec.get("ports") or []
    if not raws:
        report.problem("spec.ports", "the Service has no ports")
    ports = []
    names: dict[str, int] = {}
    node_ports: dict[tuple[str, int], int] = {}
    for index, raw in enumerate(raws):
        where = field_path("spec", "ports", index)
        name = raw.get("name")
        _check_port_name(name, field_path(where, "name"), len(raws), report)
        if name and str(name) in names:
            report.problem(field_path(where, "name"), f"{name!r} is also the name of spec.ports[{names[str(name)]}]")
        names.setdefault(str(name or ""), index)
        _check_target_port(raw.get("targetPort"), field_path(where, "targetPort"), report)
        protocol = raw.get("protocol") or "TCP"
        if protocol not in API_PROTOCOLS:
            report.problem(field_path(where, "protocol"), f"unsupported value {protocol!r} (the API accepts {', '.join(API_PROTOCOLS)})")
            continue
        if protocol.lower() not in PROTOCOLS:
            supported = ", ".join(p.upper() for p in PROTOCOLS)
            report.problem(field_path(where, "protocol"), f"{protocol} is not supported (supported: {supported})")
            continue
        node_port = raw.get("nodePort")
        if _is_int(node_port) and node_port:
            if (protocol, node_port) in node_ports:
                report.problem(field_path(where, "nodePort"), f"{protocol}/{node_port} is also the nodePort of "
                               f"spec.ports[{node_ports[(protocol, node_port)]}]")
            node_ports.setdefault((protocol, node_port), index)
        ports.append(ServiceSpecPort(
            index=index, name=str(name or ""), protocol=protocol.lower(), port=raw.get("port"),
            node_port=node_port, target_port=raw.get("targetPort"), spec_field=where,
        ))
    return ports


def _session_affinity(spec: Mapping[str, Any], report: Report) -> tuple[str, Any]:
    """The LB's session_affinity and the timeout the Service asks for (None: the default)."""
    value = spec.get("sessionAffinity") or "None"
    config = spec.get("sessionAffinityConfig")
    if value not in SESSION_AFFINITY_VALUES:
        report.problem("spec.sessionAffinity", f"unsupported value {value!r} (the API accepts {', '.join(SESSION_AFFINITY_VALUES)})")
        return "none", None
    if value == "None":
        if config:
            report.problem("spec.sessionAffinityConfig", "must not be set when sessionAffinity is None")
        return "none", None
    timeout = ((config or {}).get("clientIP") or {}).get("timeoutSeconds")
    report.warning(AFFINITY_TIMEOUT_FIELD, AFFINITY_REFRESH_WARNING)
    return "client_ip", timeout


def _check_traffic_policy(spec: Mapping[str, Any], report: Report) -> None:
    policy = spec.get("externalTrafficPolicy")
    if policy is not None and policy not in TRAFFIC_POLICIES:
        report.problem("spec.externalTrafficPolicy", f"unsupported value {policy!r} (the API accepts {', '.join(TRAFFIC_POLICIES)})")
    if spec.get("healthCheckNodePort") and policy != "Local":
        report.problem("spec.healthCheckNodePort", "may only be set when externalTrafficPolicy is Local")


def _source_ranges(spec: Mapping[str, Any], annotations: Mapping[str, Any], report: Report) -> dict[int, list[str]] | None:
    """Source ranges split by family; None when the Service does not restrict sources."""
    raw: list[Any] = list(spec.get("loadBalancerSourceRanges") or [])
    where = "spec.loadBalancerSourceRanges"
    if not raw and str(annotations.get(LEGACY_SOURCE_RANGES_ANNOTATION) or "").strip():
        raw = [part for part in str(annotations[LEGACY_SOURCE_RANGES_ANNOTATION]).split(",") if part.strip()]
        where = annotation_field(LEGACY_SOURCE_RANGES_ANNOTATION)
    if not raw:
        return None
    by_family: dict[int, list[str]] = {4: [], 6: []}
    for index, text in enumerate(raw):
        try:
            network = parse_network(text)
        except ValueError:
            report.problem(field_path(where, index), f"{text!r} is not a CIDR")
            continue
        by_family[network.version].append(str(network))
    return by_family


def _status_ips(service: Mapping[str, Any]) -> list[str]:
    ingress = ((service.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    found = []
    for item in ingress:
        try:
            found.append(str(parse_address(item.get("ip") or "")))
        except ValueError:
            continue  # hostname-only entries are not ours
    return found


# --- backends --------------------------------------------------------------------


def _nodeport_backends(nodes: NodeBackends, family: int) -> list[dict[str, Any]]:
    return nodes.by_family.get(family) or []


def _slice_port_map(endpoint_slice: Mapping[str, Any]) -> dict[tuple[str, str], int]:
    found = {}
    for port in endpoint_slice.get("ports") or []:
        if isinstance(port.get("port"), int):
            found[(str(port.get("name") or ""), str(port.get("protocol") or "TCP").lower())] = port["port"]
    return found


def _resolve_targets(ports: Sequence[ServiceSpecPort], port_map: Mapping[tuple[str, str], int]) -> tuple[int, ...] | None:
    """Target port per Service port for one slice (slices hold the resolved named ports)."""
    resolved = []
    for port in ports:
        number = port_map.get((port.name, port.protocol))
        if number is None and isinstance(port.target_port, int):
            number = port.target_port
        if number is None:
            return None
        resolved.append(number)
    return tuple(resolved)


def _endpoint_address(endpoint: Mapping[str, Any], family: int) -> IPAddress | None:
    """The endpoint's address if it is an IP of the family (only the first address has
    defined semantics in the EndpointSlice API)."""
    try:
        ip = parse_address(endpoint["addresses"][0])
    except ValueError:
        return None
    return ip if ip.version == family else None


def _ready_endpoints(
    slices: Sequence[Mapping[str, Any]], ports: Sequence[ServiceSpecPort], family: int, lb_name: str, report: Report,
) -> list[tuple[tuple[int, ...], IPAddress, str | None]]:
    """(target ports, address, pod name) of the ready endpoints of one family."""
    address_type = f"IPv{family}"
    found = []
    for endpoint_slice in sorted(slices, key=lambda s: str(_meta(s).get("name", ""))):
        if endpoint_slice.get("addressType") != address_type:
            continue
        targets = _resolve_targets(ports, _slice_port_map(endpoint_slice))
        ready = [ep for ep in endpoint_slice.get("endpoints") or [] if _endpoint_ready(ep) and ep.get("addresses")]
        if targets is None:
            if ready:
                report.warning("backends", f"EndpointSlice {_meta(endpoint_slice).get('name')}: target ports "
                               "cannot be resolved for every Service port; its endpoints are skipped", lb_name)
            continue
        for endpoint in ready:
            address = _endpoint_address(endpoint, family)
            pod = (endpoint.get("targetRef") or {}).get("name")
            if address is not None:
                found.append((targets, address, str(pod) if pod else None))
    return found


def _direct_backends(
    slices: Sequence[Mapping[str, Any]], ports: Sequence[ServiceSpecPort], family: int, lb_name: str, report: Report,
) -> tuple[tuple[int, ...], list[dict[str, Any]]]:
    """Backend port per Service port, and pod backends (with a port only where it differs)."""
    endpoints = _ready_endpoints(slices, ports, family, lb_name, report)
    if endpoints:
        default = Counter(targets for targets, _address, _pod in endpoints).most_common(1)[0][0]
    else:
        default = tuple(p.target_port if isinstance(p.target_port, int) else p.port for p in ports)
    backends: dict[tuple[IPAddress, int | None], dict[str, Any]] = {}
    for targets, address, pod in sorted(endpoints, key=lambda item: item[1]):
        override = None
        if targets != default:
            if len(set(targets)) != 1:
                # The model has one port override per backend, valid for every Service port.
                report.warning("backends", f"{address}: target ports {targets} differ from the other endpoints' "
                               f"{default} in a way one backend port cannot express; skipped", lb_name)
                continue
            override = targets[0]
        backend: dict[str, Any] = {"address": str(address)}
        if override is not None:
            backend["port"] = override
        if pod:
            backend["name"] = pod
        backends.setdefault((address, override), backend)
    return default, list(backends.values())


# --- LB dicts --------------------------------------------------------------------


_HEALTH_CHECK_PORT = field_path("health_check", "port")


def _default_health_check(
    mode: str, spec: Mapping[str, Any], ports: Sequence[ServiceSpecPort], node_check: str, report: Report,
) -> tuple[dict[str, Any], dict[str, str]]:
    """The health check a Service gets without annotations, and where its port came from."""
    tcp_ports = [port for port in ports if port.protocol == "tcp"]
    if mode == "nodeport" and spec.get("externalTrafficPolicy") == "Local":
        # kube-proxy answers 200 on healthCheckNodePort only on nodes with local endpoints.
        if not isinstance(spec.get("healthCheckNodePort"), int):
            report.problem("spec.healthCheckNodePort", "is required with externalTrafficPolicy Local")
        check = {"type": "http", "port": spec.get("healthCheckNodePort"), "path": "/healthz"}
        return check, {_HEALTH_CHECK_PORT: "spec.healthCheckNodePort"}
    if mode == "nodeport" and node_check == "kube_proxy":
        return dict(KUBE_PROXY_HEALTH_CHECK), {}  # the node's, not the Service's: UDP-only ones too
    if not tcp_ports:
        return {"type": "none"}, {}  # UDP-only: a TCP probe would always fail
    if mode == "nodeport":
        return {"type": "tcp", "port": tcp_ports[0].node_port}, {_HEALTH_CHECK_PORT: field_path(tcp_ports[0].spec_field, "nodePort")}
    return {"type": "tcp"}, {}


def lb_name(key: str, index: int, family: int) -> str:
    """The name of an object's LB of one family: its key for the first family."""
    return key if index == 0 else f"{key}/ipv{family}"


def _lb_ports(ports: Sequence[ServiceSpecPort], backend_ports: Sequence[int | None]) -> list[dict[str, Any]]:
    result = []
    for port, backend_port in zip(ports, backend_ports):
        item: dict[str, Any] = {"protocol": port.protocol, "port": port.port, "backend_port": backend_port}
        if port.name:
            item["name"] = port.name
        result.append(item)
    return result


def model_problems(lb: Mapping[str, Any], family: int, sources: FieldSources, check_backends: bool = False) -> list[Problem]:
    """The model's verdict on one LB dict (all but its VIP, not allocated yet), each problem on
    the source object's field that set the value."""
    # A Service's backends are valid by construction (parsed node and pod IPs of the family,
    # deduplicated); leaving them out keeps thousands of Services cheap. lb_validate still checks
    # them later. Backends a user lists (a LoadBalancer resource) are checked here.
    backends = lb.get("backends") if check_backends else []
    probe = {**lb, "vip": "0.0.0.0" if family == 4 else "::", "pool": _ANY_POOL.name, "backends": backends}
    try:
        parse_loadbalancer(probe, {_ANY_POOL.name: _ANY_POOL})
    except LBValidationError as err:
        return [sources.locate(problem) for problem in err.problems]
    return []


NO_ENDPOINTS_WARNING = "no ready endpoints: the address is kept and refuses connections until a pod is ready"


@dataclass(frozen=True)
class _ServiceView:
    """What the LB dicts of one Service are built from (parsed once, used per family)."""

    key: str
    mode: str
    ports: tuple[ServiceSpecPort, ...]
    health_check: Mapping[str, Any]
    source_ranges: Mapping[int, list[str]] | None
    preserve_source_ip: bool
    session_affinity: str
    session_affinity_timeout: Any  # as the Service sets it; None: the model's default
    slices: tuple[Mapping[str, Any], ...]
    send_to_nodes: bool  # nodeport mode: the nodes are the backends (false with no ready endpoint)
    field_sources: FieldSources  # LB field -> the Service field that set it


def _port_sources(ports: Sequence[ServiceSpecPort], mode: str) -> dict[str, str]:
    """``ports[i].*`` of the LB -> ``spec.ports[j].*`` of the Service (j skips nothing Portico
    serves, but stays the Service's own index)."""
    backend_port = "nodePort" if mode == "nodeport" else "targetPort"
    fields = {"ports": "spec.ports"}
    for index, port in enumerate(ports):
        lb_port = field_path("ports", index)
        fields[lb_port] = port.spec_field
        for lb_field, spec_field in (("port", "port"), ("protocol", "protocol"), ("name", "name"), ("backend_port", backend_port)):
            fields[field_path(lb_port, lb_field)] = field_path(port.spec_field, spec_field)
    return fields


# The LB fields whose problems depend on other LBs (a name or listener taken by another one),
# so they are only found when the whole model is parsed: entries carry where these came from.
_CLASH_FIELD_RE = re.compile(r"^(name|ports\[[0-9]+\]\.port)$")


def clash_sources(sources: FieldSources) -> dict[str, str]:
    """The part of a field map that an entry carries to the whole model (``field_sources``)."""
    return {lb_field: spec_field for lb_field, spec_field in sources.fields.items() if _CLASH_FIELD_RE.match(lb_field)}


def _field_sources(
    key: str, ports: Sequence[ServiceSpecPort], mode: str, health_check_fields: Mapping[str, str],
    settings: ServiceAnnotations,
) -> FieldSources:
    fields = {"name": "metadata.name", "session_affinity": "spec.sessionAffinity",
              "session_affinity_timeout_s": AFFINITY_TIMEOUT_FIELD, **_port_sources(ports, mode), **health_check_fields}
    if settings.preserve_source_ip is not None:
        fields["preserve_source_ip"] = annotation_field(PRESERVE_SOURCE_IP_ANNOTATION)
    return FieldSources(subject=key, fields=fields)


def _loadbalancer(view: _ServiceView, index: int, family: int, nodes: NodeBackends, report: Report) -> dict[str, Any]:
    name = lb_name(view.key, index, family)
    if view.mode == "nodeport":
        backend_ports: Sequence[int | None] = [port.node_port for port in view.ports]
        backends = _nodeport_backends(nodes, family) if view.send_to_nodes else []
    else:
        backend_ports, backends = _direct_backends(view.slices, view.ports, family, name, report)
    source_ranges: list[str] = []
    if view.source_ranges is not None:
        source_ranges = view.source_ranges[family] or [DENY_ALL_SOURCES[family]]
        if not view.source_ranges[family]:
            report.warning("spec.loadBalancerSourceRanges", f"no IPv{family} range listed: IPv{family} clients are refused", name)
    if not backends and _has_ready_endpoint(view.slices):
        report.warning("backends", f"no ready IPv{family} backends" if view.mode == "direct" else "no ready nodes", name)
    lb: dict[str, Any] = {
        "name": name,
        "ports": _lb_ports(view.ports, backend_ports),
        "backends": backends,  # sorted by address: list order from the API must not matter
        "health_check": dict(view.health_check),
        "source_ranges": source_ranges,
        "preserve_source_ip": view.preserve_source_ip,
        "session_affinity": view.session_affinity,
        "source": SERVICE.lb_source,
    }
    if view.session_affinity_timeout is not None:
        lb["session_affinity_timeout_s"] = view.session_affinity_timeout
    return lb


def _check_node_ports(ports: Sequence[ServiceSpecPort], report: Report) -> None:
    for port in ports:
        if not isinstance(port.node_port, int):
            report.problem(field_path(port.spec_field, "nodePort"), "is not allocated (nodeport mode needs it; "
                           f"set {BACKEND_MODE_ANNOTATION}: direct)")


def _service_key(cluster: str, meta: Mapping[str, Any]) -> str:
    return f"{cluster}/{meta.get('namespace', '')}/{meta.get('name', '')}"


def _service_view(
    key: str, spec: Mapping[str, Any], annotations: Mapping[str, Any], settings: ServiceAnnotations,
    slices: Sequence[Mapping[str, Any]], options: TranslateOptions, report: Report,
) -> _ServiceView:
    mode = settings.backend_mode
    ports = tuple(_spec_ports(spec, report))
    if mode == "nodeport":
        _check_node_ports(ports, report)
    health_check, health_check_fields = _default_health_check(mode, spec, ports, options.node_health_check, report)
    affinity, timeout = _session_affinity(spec, report)
    return _ServiceView(
        key=key, mode=mode, ports=ports,
        health_check={**health_check, **settings.health_check},
        source_ranges=_source_ranges(spec, annotations, report),
        preserve_source_ip=settings.preserve_source_ip if settings.preserve_source_ip is not None else True,
        session_affinity=affinity, session_affinity_timeout=timeout,
        slices=tuple(slices),
        send_to_nodes=options.serve_without_endpoints or _has_ready_endpoint(slices),
        field_sources=_field_sources(key, ports, mode, {**health_check_fields, **settings.health_check_fields}, settings),
    )


def _loadbalancers(view: _ServiceView, families: Sequence[int], nodes: NodeBackends, report: Report) -> list[dict[str, Any]]:
    """One LB dict per IP family; the model's problems with them go to ``report`` (once each:
    the families share the Service's fields)."""
    loadbalancers = [_loadbalancer(view, index, family, nodes, report) for index, family in enumerate(families)]
    for lb, family in zip(loadbalancers, families):
        report.problems.extend(p for p in model_problems(lb, family, view.field_sources) if p not in report.problems)
    return loadbalancers


def translate_service(
    service: Mapping[str, Any],
    slices: Sequence[Mapping[str, Any]],
    nodes: NodeBackends | Sequence[NodeTarget],
    options: TranslateOptions,
) -> dict[str, Any]:
    """One ``portico_k8s_services`` entry for a Service Portico serves; problems mean it is not served.

    A Service without a ready endpoint is served all the same, as cloud load balancers and
    MetalLB do: it keeps (or gets) its address, and its LBs have no backends, so the gateways
    refuse connections to it and announce nothing until a pod is ready.
    """
    meta = _meta(service)
    spec = service.get("spec") or {}
    report = Report(_service_key(options.cluster, meta))
    annotations = {str(k): v for k, v in (meta.get("annotations") or {}).items()}
    families = _ip_families(spec, report)
    _check_traffic_policy(spec, report)
    settings = read_annotations(annotations, spec, families, options.backend_mode, report)
    view = _service_view(report.subject, spec, annotations, settings, slices, options, report)
    loadbalancers: list[dict[str, Any]] = []
    if not report.problems:
        if not _has_ready_endpoint(slices):
            report.warning("", NO_ENDPOINTS_WARNING)
        backends = nodes if isinstance(nodes, NodeBackends) else node_backends(nodes)
        loadbalancers = _loadbalancers(view, families, backends, report)
    return {
        **object_identity(options, meta),
        "ip_families": families,
        "requested_ips": settings.requested_ips,
        "requested_ips_field": settings.requested_ips_field,
        "status_ips": _status_ips(service),
        "pool": settings.pool,
        "pool_field": settings.pool_field,
        "sharing_key": settings.sharing_key,
        "backend_mode": settings.backend_mode,
        "loadbalancers": [] if report.problems else loadbalancers,
        "field_sources": clash_sources(view.field_sources) if loadbalancers and not report.problems else {},
        "claimed": is_claimed(service, options),
        "release": False,
        "problems": to_data(report.problems),
        "warnings": to_data(report.warnings),
    }


def release_entry(service: Mapping[str, Any], options: TranslateOptions, reason: str) -> dict[str, Any]:
    """The entry of a Service Portico must give up: no LBs, its status addresses held until the
    write-back released it (status cleared, finalizer removed) after the gateways converged."""
    meta = _meta(service)
    return {
        **object_identity(options, meta),
        "ip_families": [], "requested_ips": [], "requested_ips_field": annotation_field(IPS_ANNOTATION),
        "status_ips": _status_ips(service), "pool": None, "pool_field": annotation_field(POOL_ANNOTATION),
        "sharing_key": None, "backend_mode": options.backend_mode, "loadbalancers": [], "field_sources": {},
        "release": True, "release_reason": reason, "problems": [], "warnings": [],
    }


def object_identity(options: TranslateOptions, meta: Mapping[str, Any]) -> dict[str, str]:
    """Who an entry is about: the fields every kind's entries share."""
    return {
        "cluster": options.cluster,
        "namespace": str(meta.get("namespace", "")),
        "name": str(meta.get("name", "")),
        "uid": str(meta.get("uid", "")),
        "resource_version": str(meta.get("resourceVersion", "")),
        "creation_timestamp": str(meta.get("creationTimestamp") or ""),
    }


def _has_ready_endpoint(slices: Sequence[Mapping[str, Any]]) -> bool:
    return any(_endpoint_ready(ep) and ep.get("addresses") for s in slices for ep in s.get("endpoints") or [])


def _broken_entry(service: Mapping[str, Any], options: TranslateOptions, err: Exception) -> dict[str, Any]:
    """A Service whose shape surprised the translation: reported, never fatal to the others."""
    meta = _meta(service) if isinstance(service, Mapping) else {}
    problem = Problem(_service_key(options.cluster, meta), "spec", f"cannot be translated ({type(err).__name__}: {err})")
    return {
        **object_identity(options, meta),
        "ip_families": [], "requested_ips": [], "requested_ips_field": annotation_field(IPS_ANNOTATION),
        "status_ips": [], "pool": None, "pool_field": annotation_field(POOL_ANNOTATION), "sharing_key": None,
        "backend_mode": options.backend_mode, "loadbalancers": [], "field_sources": {}, "release": False,
        "problems": to_data([problem]), "warnings": [],
    }


@dataclass
class Translation:
    """One cluster's entries, with what a later run needs to reuse them."""

    entries: list[dict[str, Any]]
    digests: dict[str, str]  # entry key -> digest of what its translation read from the Service
    skipped: dict[str, int]  # SKIP_REASONS key -> LoadBalancer Services skipped for it
    translated: int = 0  # entries translated in this run (the others were reused)


def service_digest(service: Mapping[str, Any]) -> str:
    """What translating a Service reads from the Service itself (its EndpointSlices and the Nodes
    aside): two Services with the same digest translate the same. Status, the finalizers and
    Portico's mark are left out: entries reused across runs get those fresh (``refreshed``)."""
    meta = _meta(service)
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if k != SERVED_BY_ANNOTATION}
    text = json.dumps([meta.get("uid"), meta.get("creationTimestamp"), annotations, meta.get("labels") or {},
                       service.get("spec") or {}], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.blake2b(text.encode("utf-8"), digest_size=12).hexdigest()


def refreshed(entry: Mapping[str, Any], service: Mapping[str, Any], options: TranslateOptions) -> dict[str, Any]:
    """An entry of an earlier run with what may have changed since without changing the
    translation: the status addresses, the claim and the resourceVersion."""
    return {**entry, "status_ips": _status_ips(service), "claimed": is_claimed(service, options),
            "resource_version": str(_meta(service).get("resourceVersion", ""))}


def _entry_key(options: TranslateOptions, namespace: str, name: str) -> str:
    return f"{options.cluster}/{namespace}/{name}"


def translate_services(
    services: Iterable[Mapping[str, Any]],
    endpoint_slices: Iterable[Mapping[str, Any]],
    nodes: Iterable[Mapping[str, Any]],
    options: TranslateOptions,
    prior: Mapping[str, tuple[str, Mapping[str, Any]]] | None = None,
    changed: Collection[str] = (),
) -> Translation:
    """Entries for the Services Portico serves or must release in one cluster, sorted by
    namespace/name; ``skipped`` counts the other LoadBalancer Services by ``SKIP_REASONS`` key.

    ``prior`` (entry key -> (digest, entry) of an earlier run with the same Nodes) lets a focused
    run reuse what it translated before: a served Service whose key is not in ``changed`` and
    whose digest is the same keeps its entry (refreshed), so ``endpoint_slices`` need only hold
    the slices of the others. Release entries are always made fresh (they cost nothing).
    """
    backends = node_backends(node_targets(nodes))
    index = index_endpoint_slices(endpoint_slices)
    result = Translation(entries=[], digests={}, skipped={})
    for service in services:
        meta = _meta(service)
        namespace, name = str(meta.get("namespace", "")), str(meta.get("name", ""))
        try:
            scope = scope_of(service, options)
            if scope.action == "serve":
                key = _entry_key(options, namespace, name)
                digest = service_digest(service)
                earlier = (prior or {}).get(key)
                if earlier is not None and earlier[0] == digest and key not in changed:
                    entry = refreshed(earlier[1], service, options)
                else:
                    entry = translate_service(service, index.get((namespace, name), []), backends, options)
                    result.translated += 1
                result.entries.append(entry)
                result.digests[key] = digest
            elif scope.action == "release":
                result.entries.append(release_entry(service, options, scope.reason))
            elif scope.reason != "type":
                result.skipped[scope.reason] = result.skipped.get(scope.reason, 0) + 1
        except Exception as err:  # pylint: disable=broad-except  # one odd object must not hide the others
            result.entries.append(_broken_entry(service, options, err))
    result.entries.sort(key=lambda entry: (entry["cluster"], entry["namespace"], entry["name"]))
    return result


def translate_cluster(
    services: Iterable[Mapping[str, Any]],
    endpoint_slices: Iterable[Mapping[str, Any]],
    nodes: Iterable[Mapping[str, Any]],
    options: TranslateOptions,
    skipped: MutableMapping[str, int] | None = None,
) -> list[dict[str, Any]]:
    """Entries for the Services Portico serves or must release in one cluster, sorted by
    namespace/name (``translate_services`` without reuse). ``skipped`` counts the other
    LoadBalancer Services by ``SKIP_REASONS`` key."""
    result = translate_services(services, endpoint_slices, nodes, options)
    if skipped is not None:
        skipped.update(result.skipped)
    return result.entries


# --- shared with other kinds -----------------------------------------------------


def direct_backends(
    slices: Sequence[Mapping[str, Any]], ports: Sequence[ServiceSpecPort], family: int, lb_name: str, report: Report,
) -> tuple[tuple[int, ...], list[dict[str, Any]]]:
    """A Service's pod backends of one family, resolved exactly as a LoadBalancer Service's are
    in direct mode (for kinds whose backends are Services, such as Gateway API routes)."""
    return _direct_backends(slices, ports, family, lb_name, report)


def has_ready_endpoint(slices: Sequence[Mapping[str, Any]]) -> bool:
    """Any of the slices has a ready endpoint with an address."""
    return _has_ready_endpoint(slices)
