# -*- coding: utf-8 -*-
# Copyright: Portico developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Kubernetes Services (with their EndpointSlices and the Nodes) -> Portico service entries.

Pure translation of plain dicts in the API's JSON shape (what the API server sends, or
``ApiClient().sanitize_for_serialization(obj)``) into the entries the inventory plugin
publishes as ``portico_k8s_services``. No addresses are allocated here (``ipam.allocate``
does that) and LB validation stays in ``lb_model``: this module only builds raw LB dicts
and runs them through the model with a placeholder VIP, so a Service's problems are known
(and named after the Service field or annotation they came from) before allocation.

Annotation values are data: they are copied, never evaluated.
Standard library only, like every module_util.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from ansible_collections.portico.gateway.plugins.module_utils.model.ipam import AddressRange, IPAddress, Pool
from ansible_collections.portico.gateway.plugins.module_utils.model.loadbalancer import (
    PROTOCOLS,
    LBValidationError,
    parse_loadbalancer,
)

DEFAULT_LOAD_BALANCER_CLASS = "portico.io/gateway"
BACKEND_MODES = ("nodeport", "direct")
EXCLUDE_LABEL = "node.kubernetes.io/exclude-from-external-load-balancers"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
LEGACY_SOURCE_RANGES = "service.beta.kubernetes.io/load-balancer-source-ranges"

ANNOTATION_PREFIX = "portico.io/"
POOL_ANNOTATION = "portico.io/pool"
IPS_ANNOTATION = "portico.io/loadBalancerIPs"
SHARING_ANNOTATION = "portico.io/sharing-key"
BACKEND_MODE_ANNOTATION = "portico.io/backend-mode"
PRESERVE_SOURCE_IP_ANNOTATION = "portico.io/preserve-source-ip"
# annotation -> health_check field of the LB model
HEALTH_CHECK_ANNOTATIONS = {
    "portico.io/health-check-type": "type",
    "portico.io/health-check-port": "port",
    "portico.io/health-check-path": "path",
    "portico.io/health-check-interval-ms": "interval_ms",
    "portico.io/health-check-timeout-ms": "timeout_ms",
    "portico.io/health-check-rise": "rise",
    "portico.io/health-check-fall": "fall",
}
PORTICO_ANNOTATIONS = (
    POOL_ANNOTATION, IPS_ANNOTATION, SHARING_ANNOTATION, BACKEND_MODE_ANNOTATION,
    PRESERVE_SOURCE_IP_ANNOTATION, *HEALTH_CHECK_ANNOTATIONS,
)

# Equivalents read so teams can switch from MetalLB, Cilium LB-IPAM or kube-vip without
# editing Services. Highest precedence first; ``spec.loadBalancerIP`` comes last.
REQUESTED_IPS_ANNOTATIONS = (
    IPS_ANNOTATION,
    "metallb.io/loadBalancerIPs",
    "metallb.universe.tf/loadBalancerIPs",
    "lbipam.cilium.io/ips",
    "io.cilium/lb-ipam-ips",
    "kube-vip.io/loadbalancerIPs",
)
POOL_ANNOTATIONS = (POOL_ANNOTATION, "metallb.io/address-pool", "metallb.universe.tf/address-pool")
SHARING_ANNOTATIONS = (
    SHARING_ANNOTATION,
    "metallb.io/allow-shared-ip",
    "metallb.universe.tf/allow-shared-ip",
    "lbipam.cilium.io/sharing-key",
    "io.cilium/lb-ipam-sharing-key",
)

# A family the Service's loadBalancerSourceRanges do not mention gets a range no client
# can come from: restricting IPv4 must not silently leave IPv6 open.
DENY_ALL_SOURCES = {4: "0.0.0.0/32", 6: "::/128"}
_FAMILY_NAMES = {"IPv4": 4, "IPv6": 6}
_INT_RE = re.compile(r"^\s*[0-9]{1,9}\s*$")
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
    """What the inventory plugin was configured with, for one cluster."""

    cluster: str
    load_balancer_class: str = DEFAULT_LOAD_BALANCER_CLASS
    serve_default_class: bool = False
    backend_mode: str = "nodeport"
    namespaces: tuple[str, ...] = ()
    exclude_namespaces: tuple[str, ...] = ()
    # False: a Service without any ready endpoint gets no address and a reason (the plugin's default).
    serve_without_endpoints: bool = True


@dataclass(frozen=True)
class NodeTarget:
    """A Node that may receive traffic in nodeport mode: Ready, not excluded."""

    name: str
    addresses: Mapping[int, str]  # family -> first InternalIP of that family


@dataclass(frozen=True)
class NodeBackends:
    """nodeport backends per family, built once per cluster (not once per Service)."""

    by_family: Mapping[int, tuple[Mapping[str, Any], ...]]


@dataclass(frozen=True)
class ServicePort:
    index: int
    name: str
    protocol: str  # lower case, as the LB model spells it
    port: int
    node_port: int | None
    target_port: int | str | None


def annotation_field(key: str) -> str:
    return f"metadata.annotations[{key}]"


class _Report:
    """Problems (Service not served) and warnings (served, but say so) of one Service."""

    def __init__(self, key: str):
        self.key = key
        self.problems: list[str] = []
        self.warnings: list[str] = []

    def problem(self, field_path: str, message: str) -> None:
        self.problems.append(f"{self.key}: {field_path}: {message}")

    def warning(self, field_path: str, message: str, subject: str | None = None) -> None:
        self.warnings.append(f"{subject or self.key}: {field_path}: {message}")


# --- selection -------------------------------------------------------------------


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return obj.get("metadata") or {}


def wants_namespace(namespace: str, options: TranslateOptions) -> bool:
    if options.namespaces and namespace not in options.namespaces:
        return False
    return namespace not in options.exclude_namespaces


def is_served(service: Mapping[str, Any], options: TranslateOptions) -> bool:
    """type LoadBalancer, and our loadBalancerClass (or none, when so configured)."""
    spec = service.get("spec") or {}
    if spec.get("type") != "LoadBalancer":
        return False
    lb_class = spec.get("loadBalancerClass")
    if lb_class is None:
        return options.serve_default_class
    return lb_class == options.load_balancer_class


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
            ip = ipaddress.ip_address(str(address.get("address", "")).strip())
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
    by_family: dict[int, tuple[Mapping[str, Any], ...]] = {}
    for family in (4, 6):
        pairs = sorted((ipaddress.ip_address(t.addresses[family]), t.name) for t in targets if family in t.addresses)
        by_family[family] = tuple({"address": str(ip), "name": name} for ip, name in pairs)
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


# --- annotations -----------------------------------------------------------------


def _check_unknown_annotations(annotations: Mapping[str, Any], report: _Report) -> None:
    for key in sorted(annotations):
        if not key.startswith(ANNOTATION_PREFIX) or key in PORTICO_ANNOTATIONS:
            continue
        hint = difflib.get_close_matches(key, PORTICO_ANNOTATIONS, n=1, cutoff=0.6)
        suggestion = f" (did you mean '{hint[0]}'?)" if hint else f" (known: {', '.join(PORTICO_ANNOTATIONS)})"
        report.problem(annotation_field(key), f"unknown annotation{suggestion}")


def _present(annotations: Mapping[str, Any], keys: Sequence[str]) -> list[tuple[str, str]]:
    """(annotation, stripped value) for the non-empty ones among keys, in precedence order."""
    return [(key, str(annotations[key]).strip()) for key in keys if str(annotations.get(key) or "").strip()]


def _first_of(annotations: Mapping[str, Any], keys: Sequence[str], report: _Report) -> tuple[str | None, str]:
    """Value of the highest-precedence annotation; disagreeing lower ones are reported."""
    found = _present(annotations, keys)
    if not found:
        return None, annotation_field(keys[0])
    key, value = found[0]
    for other, other_value in found[1:]:
        if other_value != value:
            report.warning(annotation_field(other), f"ignored: {annotation_field(key)} takes precedence")
    return value, annotation_field(key)


def _parse_ip_list(text: str, families: Sequence[int], field_path: str, report: _Report) -> list[str] | None:
    """One address per family, each of a family the Service has; None (and problems) if not."""
    addresses: dict[int, str] = {}
    ok = True
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        try:
            ip = ipaddress.ip_address(item)
        except ValueError:
            report.problem(field_path, f"{item!r} is not an IP address")
            ok = False
            continue
        if ip.version not in families:
            have = ", ".join(f"IPv{f}" for f in families)
            report.problem(field_path, f"{ip} is IPv{ip.version} but the Service's ipFamilies are {have}")
            ok = False
        elif ip.version in addresses:
            report.problem(field_path, f"{ip}: only one IPv{ip.version} address may be requested (also {addresses[ip.version]})")
            ok = False
        else:
            addresses[ip.version] = str(ip)
    return list(addresses.values()) if ok else None


def _requested_ips(
    annotations: Mapping[str, Any], spec: Mapping[str, Any], families: Sequence[int], report: _Report,
) -> tuple[list[str], str]:
    sources = [(annotation_field(key), value) for key, value in _present(annotations, REQUESTED_IPS_ANNOTATIONS)]
    if str(spec.get("loadBalancerIP") or "").strip():
        sources.append(("spec.loadBalancerIP", str(spec["loadBalancerIP"]).strip()))
    if not sources:
        return [], annotation_field(IPS_ANNOTATION)
    field_path, text = sources[0]
    chosen = _parse_ip_list(text, families, field_path, report)
    for other_field, other_text in sources[1:]:
        other = _parse_ip_list(other_text, families, other_field, _Report(report.key))
        # A subset agrees: kube-vip's cloud provider mirrors one address into spec.loadBalancerIP.
        if other is None or not set(other) <= set(chosen or []):
            report.warning(other_field, f"ignored: {field_path} takes precedence")
    return chosen or [], field_path


def _backend_mode(annotations: Mapping[str, Any], spec: Mapping[str, Any], default: str, report: _Report) -> str:
    node_ports = spec.get("allocateLoadBalancerNodePorts") is not False
    raw = annotations.get(BACKEND_MODE_ANNOTATION)
    if raw is None:
        # Without node ports there is nothing to send to but the pods.
        return default if node_ports else "direct"
    mode = str(raw).strip().lower()
    field_path = annotation_field(BACKEND_MODE_ANNOTATION)
    if mode not in BACKEND_MODES:
        report.problem(field_path, f"unknown value {str(raw)!r} (expected one of: {', '.join(BACKEND_MODES)})")
        return default
    if mode == "nodeport" and not node_ports:
        report.problem(field_path, "nodeport needs node ports but spec.allocateLoadBalancerNodePorts is false (use direct)")
    return mode


def _bool_annotation(annotations: Mapping[str, Any], key: str, report: _Report) -> bool | None:
    raw = annotations.get(key)
    if raw is None:
        return None
    value = str(raw).strip().lower()
    if value not in ("true", "false"):
        report.problem(annotation_field(key), f"expected \"true\" or \"false\", got {str(raw)!r}")
        return None
    return value == "true"


def _health_check_overrides(annotations: Mapping[str, Any], report: _Report) -> tuple[dict[str, Any], dict[str, str]]:
    """Health check fields set by annotation, and model field -> annotation (for messages)."""
    overrides: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for key, model_field in HEALTH_CHECK_ANNOTATIONS.items():
        if key not in annotations:
            continue
        raw = str(annotations[key])
        sources[f"health_check.{model_field}"] = annotation_field(key)
        if model_field == "type":
            overrides[model_field] = raw.strip().lower()
        elif model_field == "path":
            overrides[model_field] = raw.strip()
        elif _INT_RE.match(raw):
            overrides[model_field] = int(raw)
        else:
            report.problem(annotation_field(key), f"expected an integer, got {raw!r}")
    return overrides, sources


# --- spec ------------------------------------------------------------------------


def _ip_families(spec: Mapping[str, Any], report: _Report) -> list[int]:
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
            report.problem(f"spec.ipFamilies[{index}]", f"unknown IP family {name!r}")
        elif _FAMILY_NAMES[name] not in families:
            families.append(_FAMILY_NAMES[name])
    return families


def _service_ports(spec: Mapping[str, Any], report: _Report) -> list[ServicePort]:
    ports = []
    for index, raw in enumerate(spec.get("ports") or []):
        protocol = str(raw.get("protocol") or "TCP")
        if protocol.lower() not in PROTOCOLS:
            supported = ", ".join(p.upper() for p in PROTOCOLS)
            report.problem(f"spec.ports[{index}].protocol", f"{protocol} is not supported (supported: {supported})")
            continue
        ports.append(ServicePort(
            index=index, name=str(raw.get("name") or ""), protocol=protocol.lower(), port=raw.get("port"),
            node_port=raw.get("nodePort"), target_port=raw.get("targetPort"),
        ))
    if not ports and not report.problems:
        report.problem("spec.ports", "the Service has no ports")
    return ports


def _source_ranges(spec: Mapping[str, Any], annotations: Mapping[str, Any], report: _Report) -> dict[int, list[str]] | None:
    """Source ranges split by family; None when the Service does not restrict sources."""
    raw: list[Any] = list(spec.get("loadBalancerSourceRanges") or [])
    field_path = "spec.loadBalancerSourceRanges"
    if not raw and str(annotations.get(LEGACY_SOURCE_RANGES) or "").strip():
        raw = [part for part in str(annotations[LEGACY_SOURCE_RANGES]).split(",") if part.strip()]
        field_path = annotation_field(LEGACY_SOURCE_RANGES)
    if not raw:
        return None
    by_family: dict[int, list[str]] = {4: [], 6: []}
    for index, text in enumerate(raw):
        try:
            network = ipaddress.ip_network(str(text).strip(), strict=False)
        except ValueError:
            report.problem(f"{field_path}[{index}]", f"{text!r} is not a CIDR")
            continue
        by_family[network.version].append(str(network))
    return by_family


def _status_ips(service: Mapping[str, Any]) -> list[str]:
    ingress = ((service.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    found = []
    for item in ingress:
        try:
            found.append(str(ipaddress.ip_address(str(item.get("ip") or "").strip())))
        except ValueError:
            continue  # hostname-only entries are not ours
    return found


# --- backends --------------------------------------------------------------------


def _nodeport_backends(nodes: NodeBackends, family: int) -> list[dict[str, Any]]:
    return [dict(backend) for backend in nodes.by_family.get(family, ())]


def _slice_port_map(endpoint_slice: Mapping[str, Any]) -> dict[tuple[str, str], int]:
    found = {}
    for port in endpoint_slice.get("ports") or []:
        if isinstance(port.get("port"), int):
            found[(str(port.get("name") or ""), str(port.get("protocol") or "TCP").lower())] = port["port"]
    return found


def _resolve_targets(ports: Sequence[ServicePort], port_map: Mapping[tuple[str, str], int]) -> tuple[int, ...] | None:
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
        ip = ipaddress.ip_address(str(endpoint["addresses"][0]).strip())
    except ValueError:
        return None
    return ip if ip.version == family else None


def _ready_endpoints(
    slices: Sequence[Mapping[str, Any]], ports: Sequence[ServicePort], family: int, lb_name: str, report: _Report,
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
    slices: Sequence[Mapping[str, Any]], ports: Sequence[ServicePort], family: int, lb_name: str, report: _Report,
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


def _default_health_check(mode: str, spec: Mapping[str, Any], ports: Sequence[ServicePort], report: _Report) -> dict[str, Any]:
    tcp_ports = [port for port in ports if port.protocol == "tcp"]
    if mode == "nodeport" and spec.get("externalTrafficPolicy") == "Local":
        # kube-proxy answers 200 on healthCheckNodePort only on nodes with local endpoints.
        if not isinstance(spec.get("healthCheckNodePort"), int):
            report.problem("spec.healthCheckNodePort", "is required with externalTrafficPolicy Local")
        return {"type": "http", "port": spec.get("healthCheckNodePort"), "path": "/healthz"}
    if not tcp_ports:
        return {"type": "none"}  # UDP-only: a TCP probe would always fail
    if mode == "nodeport":
        return {"type": "tcp", "port": tcp_ports[0].node_port}
    return {"type": "tcp"}


def _lb_name(key: str, index: int, family: int) -> str:
    return key if index == 0 else f"{key}/ipv{family}"


def _lb_ports(ports: Sequence[ServicePort], backend_ports: Sequence[int | None]) -> list[dict[str, Any]]:
    result = []
    for port, backend_port in zip(ports, backend_ports):
        item: dict[str, Any] = {"protocol": port.protocol, "port": port.port, "backend_port": backend_port}
        if port.name:
            item["name"] = port.name
        result.append(item)
    return result


def _rename_fields(problems: Iterable[str], field_sources: Mapping[str, str]) -> list[str]:
    """Model problems name model fields; say which Service field or annotation set them."""
    renamed = []
    for problem in problems:
        parts = problem.split(": ", 2)
        if len(parts) == 3 and parts[1] in field_sources:
            problem = f"{parts[0]}: {field_sources[parts[1]]}: {parts[2]}"
        renamed.append(problem)
    return renamed


def _model_problems(lb: Mapping[str, Any], family: int, field_sources: Mapping[str, str]) -> list[str]:
    # Backends are valid by construction (parsed node and pod IPs of the family, deduplicated);
    # leaving them out keeps thousands of Services cheap. lb_validate still checks them later.
    probe = {**lb, "vip": "0.0.0.0" if family == 4 else "::", "pool": _ANY_POOL.name, "backends": []}
    try:
        parse_loadbalancer(probe, {_ANY_POOL.name: _ANY_POOL})
    except LBValidationError as err:
        return _rename_fields(err.problems, field_sources)
    return []


@dataclass(frozen=True)
class _ServiceView:
    """What the LB dicts of one Service are built from (parsed once, used per family)."""

    key: str
    mode: str
    ports: tuple[ServicePort, ...]
    health_check: Mapping[str, Any]
    source_ranges: Mapping[int, list[str]] | None
    preserve_source_ip: bool
    session_affinity: str
    slices: tuple[Mapping[str, Any], ...]


def _loadbalancer(view: _ServiceView, index: int, family: int, nodes: NodeBackends, report: _Report) -> dict[str, Any]:
    name = _lb_name(view.key, index, family)
    if view.mode == "nodeport":
        backend_ports: Sequence[int | None] = [port.node_port for port in view.ports]
        backends = _nodeport_backends(nodes, family)
    else:
        backend_ports, backends = _direct_backends(view.slices, view.ports, family, name, report)
    source_ranges: list[str] = []
    if view.source_ranges is not None:
        source_ranges = view.source_ranges[family] or [DENY_ALL_SOURCES[family]]
        if not view.source_ranges[family]:
            report.warning("spec.loadBalancerSourceRanges", f"no IPv{family} range listed: IPv{family} clients are refused", name)
    if not backends:
        report.warning("backends", "no ready backends", name)
    return {
        "name": name,
        "ports": _lb_ports(view.ports, backend_ports),
        "backends": backends,  # sorted by address: list order from the API must not matter
        "health_check": dict(view.health_check),
        "source_ranges": source_ranges,
        "preserve_source_ip": view.preserve_source_ip,
        "session_affinity": view.session_affinity,
        "source": "kubernetes",
    }


def _check_node_ports(ports: Sequence[ServicePort], report: _Report) -> None:
    for port in ports:
        if not isinstance(port.node_port, int):
            report.problem(f"spec.ports[{port.index}].nodePort", "is not allocated (nodeport mode needs it; "
                           f"set {BACKEND_MODE_ANNOTATION}: direct)")


def translate_service(
    service: Mapping[str, Any],
    slices: Sequence[Mapping[str, Any]],
    nodes: NodeBackends | Sequence[NodeTarget],
    options: TranslateOptions,
) -> dict[str, Any]:
    """One ``portico_k8s_services`` entry; problems mean the Service is not served."""
    meta = _meta(service)
    spec = service.get("spec") or {}
    key = f"{options.cluster}/{meta.get('namespace', '')}/{meta.get('name', '')}"
    report = _Report(key)
    annotations = {str(k): v for k, v in (meta.get("annotations") or {}).items()}
    _check_unknown_annotations(annotations, report)
    families = _ip_families(spec, report)
    requested, requested_field = _requested_ips(annotations, spec, families, report)
    pool, pool_field = _first_of(annotations, POOL_ANNOTATIONS, report)
    sharing_key, _sharing_field = _first_of(annotations, SHARING_ANNOTATIONS, report)
    mode = _backend_mode(annotations, spec, options.backend_mode, report)
    ports = tuple(_service_ports(spec, report))
    if mode == "nodeport":
        _check_node_ports(ports, report)
    overrides, field_sources = _health_check_overrides(annotations, report)
    preserve = _bool_annotation(annotations, PRESERVE_SOURCE_IP_ANNOTATION, report)
    view = _ServiceView(
        key=key, mode=mode, ports=ports,
        health_check={**_default_health_check(mode, spec, ports, report), **overrides},
        source_ranges=_source_ranges(spec, annotations, report),
        preserve_source_ip=preserve if preserve is not None else True,
        session_affinity="client_ip" if spec.get("sessionAffinity") == "ClientIP" else "none",
        slices=tuple(slices),
    )
    if not isinstance(nodes, NodeBackends):
        nodes = node_backends(nodes)
    loadbalancers: list[dict[str, Any]] = []
    if not report.problems and not options.serve_without_endpoints and not _has_ready_endpoint(slices):
        # Cloud behaviour would hand out an address that answers nothing; we say why instead
        # (an Event), and the stable hash-probe gives the same address back once a pod is ready.
        report.problem("endpoints", "no ready endpoints: not served until a pod is ready")
    if not report.problems:
        loadbalancers = [_loadbalancer(view, index, family, nodes, report) for index, family in enumerate(families)]
        for lb, family in zip(loadbalancers, families):
            report.problems.extend(_model_problems(lb, family, field_sources))
    return {
        "cluster": options.cluster,
        "namespace": str(meta.get("namespace", "")),
        "name": str(meta.get("name", "")),
        "uid": str(meta.get("uid", "")),
        "resource_version": str(meta.get("resourceVersion", "")),
        "ip_families": families,
        "requested_ips": requested,
        "requested_ips_field": requested_field,
        "status_ips": _status_ips(service),
        "pool": pool,
        "pool_field": pool_field,
        "sharing_key": sharing_key,
        "backend_mode": mode,
        "loadbalancers": [] if report.problems else loadbalancers,
        "problems": report.problems,
        "warnings": report.warnings,
    }


def _has_ready_endpoint(slices: Sequence[Mapping[str, Any]]) -> bool:
    return any(_endpoint_ready(ep) and ep.get("addresses") for s in slices for ep in s.get("endpoints") or [])


def _broken_entry(service: Mapping[str, Any], options: TranslateOptions, err: Exception) -> dict[str, Any]:
    """A Service whose shape surprised the translation: reported, never fatal to the others."""
    meta = _meta(service) if isinstance(service, Mapping) else {}
    key = f"{options.cluster}/{meta.get('namespace', '')}/{meta.get('name', '')}"
    return {
        "cluster": options.cluster, "namespace": str(meta.get("namespace", "")), "name": str(meta.get("name", "")),
        "uid": str(meta.get("uid", "")), "resource_version": str(meta.get("resourceVersion", "")),
        "ip_families": [], "requested_ips": [], "requested_ips_field": annotation_field(IPS_ANNOTATION),
        "status_ips": [], "pool": None, "pool_field": annotation_field(POOL_ANNOTATION), "sharing_key": None,
        "backend_mode": options.backend_mode, "loadbalancers": [],
        "problems": [f"{key}: spec: cannot be translated ({type(err).__name__}: {err})"], "warnings": [],
    }


def translate_cluster(
    services: Iterable[Mapping[str, Any]],
    endpoint_slices: Iterable[Mapping[str, Any]],
    nodes: Iterable[Mapping[str, Any]],
    options: TranslateOptions,
) -> list[dict[str, Any]]:
    """Entries for the Services Portico serves in one cluster, sorted by namespace/name."""
    backends = node_backends(node_targets(nodes))
    index = index_endpoint_slices(endpoint_slices)
    entries = []
    for service in services:
        meta = _meta(service)
        namespace, name = str(meta.get("namespace", "")), str(meta.get("name", ""))
        if not wants_namespace(namespace, options) or not is_served(service, options):
            continue
        try:
            entries.append(translate_service(service, index.get((namespace, name), []), backends, options))
        except Exception as err:  # pylint: disable=broad-except  # one odd object must not hide the others
            entries.append(_broken_entry(service, options, err))
    return sorted(entries, key=lambda entry: (entry["cluster"], entry["namespace"], entry["name"]))
