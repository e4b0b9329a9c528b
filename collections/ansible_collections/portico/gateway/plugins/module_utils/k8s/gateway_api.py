# -*- coding: utf-8 -*-
# Copyright: Portico developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Gateway API L4 (GatewayClass, Gateway, TCPRoute, UDPRoute, ReferenceGrant) -> LB definitions
and the status each object gets.

Pure translation of plain dicts in the API's JSON shape, in three steps:

1. ``translate_gateway_api``: which GatewayClasses are Portico's (``spec.controllerName``), which
   Gateways use them (every other Gateway is ignored: no LB, no status), which listeners are
   valid, which routes attach to which listeners, and how each route's backendRefs resolve. Each
   served Gateway becomes one allocation entry (``model.ipam``'s input, like a Service's entry),
   so Gateways share pools, requested addresses and the age order of contests with Services.
2. ``model.ipam.allocate`` gives each Gateway one address per IP family: the ones its
   ``spec.addresses`` ask for, else one from a pool (``portico.io/pool`` or any auto-assign pool).
3. ``finish``: one LB definition per served listener and family (the Gateway's address, the
   listener's port and protocol, the backends of the route that holds the listener) and the
   status documents.

A TCP or UDP listener cannot tell connections apart, so one route serves a listener: when
several attach, all are Accepted and the oldest (creationTimestamp, then namespace/name, as the
Gateway API's route precedence says) gets the traffic. A route's backendRefs are Services; their
endpoints are resolved as a LoadBalancer Service's (``k8s.translate``), and a backendRef's
weight is split over its endpoints, so the Maglev weights keep the backendRefs' proportions.

The inventory source does not call step 3: ``gateway_api_entries`` turns step 1 into service
entries (a Gateway's listener LBs as ``parts`` of its per-family LB), which the Services'
allocation and model take, and the status writers (``k8s.gateway_api_status``) date the verdicts.

Problems are ``Problem``s on the object's own fields (``spec.listeners[1].protocol``,
``spec.rules[0].backendRefs[2].name``); one bad object never stops the others. Standard library
only, like every module_util.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from ansible_collections.portico.gateway.plugins.module_utils.k8s.annotations import POOL_ANNOTATION, annotation_field
from ansible_collections.portico.gateway.plugins.module_utils.k8s.kinds import GATEWAY, GATEWAY_API_GROUP
from ansible_collections.portico.gateway.plugins.module_utils.k8s.translate import (
    NodeBackends,
    ServiceSpecPort,
    TranslateOptions,
    Translation,
    direct_backends,
    index_endpoint_slices,
    is_claimed,
    lb_name,
    model_problems,
    node_backends,
    node_targets,
    object_identity,
    object_scope,
    wants_namespace,
)
from ansible_collections.portico.gateway.plugins.module_utils.model.documents import object_key
from ansible_collections.portico.gateway.plugins.module_utils.model.ipam import Allocation, Pool, allocate, parse_address
from ansible_collections.portico.gateway.plugins.module_utils.model.loadbalancer import MAX_WEIGHT
from ansible_collections.portico.gateway.plugins.module_utils.model.problems import FieldSources, Problem, Report, field_path, to_data

Obj = Mapping[str, Any]

GROUP = GATEWAY_API_GROUP
CONTROLLER_NAME = "portico.io/gateway-controller"
# Preferred first: a cluster's Gateway API release may serve the routes at v1, or at v1alpha2 only.
ROUTE_VERSIONS = ("v1", "v1alpha2")
BACKEND_MODES = ("direct", "nodeport")
# The listener protocols Portico serves, the route kind each takes and the LB model's protocol.
ROUTE_KINDS = {"TCP": "TCPRoute", "UDP": "UDPRoute"}
LB_PROTOCOLS = {"TCPRoute": "tcp", "UDPRoute": "udp"}
# Listeners on one port conflict when they share a transport: HTTP, HTTPS and TLS ride on TCP.
UDP_PROTOCOLS = ("UDP",)
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
GATEWAY_ADDRESS_FIELD = "status.addresses"
_PORT_NAME_MAX = 63  # the LB model's port names are at most 63 characters


@dataclass(frozen=True)
class GatewayApiOptions:
    """How one cluster's Gateway API objects are served."""

    cluster: str
    controller_name: str = CONTROLLER_NAME
    # direct: pods are the backends (a route's Services are usually ClusterIP, without node ports);
    # nodeport: the nodes, on the Service port's nodePort (only Services that have one).
    backend_mode: str = "direct"


@dataclass(frozen=True)
class GatewayApiObjects:
    """What the API returned, as plain dicts (either served version of a route kind)."""

    gateway_classes: Sequence[Obj] = ()
    gateways: Sequence[Obj] = ()
    tcp_routes: Sequence[Obj] = ()
    udp_routes: Sequence[Obj] = ()
    reference_grants: Sequence[Obj] = ()
    services: Sequence[Obj] = ()
    endpoint_slices: Sequence[Obj] = ()
    namespaces: Sequence[Obj] = ()
    nodes: Sequence[Obj] = ()


@dataclass(frozen=True)
class Verdict:
    """One condition before it is dated: status ``True``/``False``, reason, message."""

    status: str
    reason: str
    message: str


@dataclass
class BackendRefView:
    """One backendRef of a route and what it resolved to."""

    where: str  # spec.rules[i].backendRefs[j]
    weight: int
    service: Obj | None = None
    port: ServiceSpecPort | None = None
    failure: Verdict | None = None  # why it does not resolve (None: it does)


@dataclass
class ParentVerdict:
    """A route's verdict for one of its parentRefs that names a Gateway Portico serves."""

    index: int
    parent_ref: Obj
    gateway_key: str
    accepted: Verdict


@dataclass
class RouteView:
    obj: Obj
    kind: str  # TCPRoute, UDPRoute
    key: str
    namespace: str
    name: str
    refs: list[BackendRefView]
    resolved: Verdict
    report: Report
    parents: list[ParentVerdict] = field(default_factory=list)

    @property
    def precedence(self) -> tuple[int, str, str, str]:
        """The Gateway API's route precedence: oldest first, then namespace/name."""
        created = str(((self.obj.get("metadata") or {}).get("creationTimestamp")) or "")
        return (0 if created else 1, created, self.namespace, self.name)


@dataclass
class ListenerView:
    index: int
    name: str
    port: int
    protocol: str
    route_kinds: tuple[str, ...]  # the route kinds it takes (empty: none, e.g. an unsupported protocol)
    invalid_kinds: tuple[str, ...]  # kinds allowedRoutes asks for that Portico does not serve here
    allowed_from: str
    selector: Obj | None
    conflicted: bool = False
    routes: list[RouteView] = field(default_factory=list)

    @property
    def supported(self) -> bool:
        return self.protocol in ROUTE_KINDS

    @property
    def winner(self) -> RouteView | None:
        return min(self.routes, key=lambda route: route.precedence) if self.routes else None


@dataclass
class GatewayView:
    obj: Obj
    key: str
    namespace: str
    name: str
    listeners: list[ListenerView]
    families: list[int]
    requested: list[dict[str, Any]]  # ipam's per-family ``addresses`` items
    address_failure: Verdict | None
    report: Report

    @property
    def accepted(self) -> Verdict:
        if self.address_failure is not None:
            return self.address_failure
        valid = [listener for listener in self.listeners if listener.supported]
        if len(valid) == len(self.listeners):
            return Verdict("True", "Accepted", "accepted by Portico")
        invalid = ", ".join(listener.name for listener in self.listeners if not listener.supported)
        if valid:
            return Verdict("True", "ListenersNotValid", f"listeners not served: {invalid}")
        return Verdict("False", "ListenersNotValid", f"no listener can be served: {invalid}")


@dataclass
class GatewayApiTranslation:
    """Step 1's outcome: allocation entries for the served Gateways, and what step 3 needs."""

    options: GatewayApiOptions
    entries: list[dict[str, Any]]
    classes: list[tuple[Obj, Verdict]]
    gateways: list[GatewayView]
    routes: list[RouteView]
    nodes: NodeBackends
    slices: Mapping[tuple[str, str], list[Obj]]


@dataclass(frozen=True)
class StatusUpdate:
    """The status Portico writes to one object (a route's holds Portico's parents only: the
    write-back keeps the entries of other controllers)."""

    kind: str
    api_version: str
    namespace: str
    name: str
    status: dict[str, Any]


@dataclass
class GatewayApiResult:
    loadbalancers: list[dict[str, Any]]
    statuses: list[StatusUpdate]
    problems: list[Problem]
    warnings: list[Problem]


# --- small readers -----------------------------------------------------------------


def _meta(obj: Obj) -> Obj:
    return obj.get("metadata") or {}


def _spec(obj: Obj) -> Obj:
    return obj.get("spec") or {}


def _ns_name(obj: Obj) -> tuple[str, str]:
    meta = _meta(obj)
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


def _key(cluster: str, obj: Obj, kind: str) -> str:
    namespace, name = _ns_name(obj)
    return object_key(cluster, namespace, name, kind)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def served_route_version(served: Iterable[str]) -> str | None:
    """The version of TCPRoute/UDPRoute to read and write, of those the cluster serves."""
    versions = set(served)
    return next((version for version in ROUTE_VERSIONS if version in versions), None)


def rfc3339_now() -> str:
    """Now, as the API writes times (UTC, whole seconds)."""
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- label selectors -----------------------------------------------------------------


def _expression_matches(labels: Mapping[str, str], expression: Obj) -> bool:
    key, operator = str(expression.get("key") or ""), expression.get("operator")
    values = [str(v) for v in expression.get("values") or []]
    if operator == "In":
        return key in labels and labels[key] in values
    if operator == "NotIn":
        return key not in labels or labels[key] not in values
    if operator == "Exists":
        return key in labels
    if operator == "DoesNotExist":
        return key not in labels
    return False  # an operator the API would refuse selects nothing


def selector_matches(selector: Obj, labels: Mapping[str, str]) -> bool:
    """A metav1.LabelSelector: every matchLabels pair and every matchExpressions entry holds."""
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(str(key)) != str(value):
            return False
    return all(_expression_matches(labels, expression) for expression in selector.get("matchExpressions") or [])


def _namespace_labels(namespaces: Iterable[Obj]) -> dict[str, dict[str, str]]:
    """Labels by namespace; the API sets kubernetes.io/metadata.name on every namespace."""
    found: dict[str, dict[str, str]] = {}
    for namespace in namespaces:
        name = str(_meta(namespace).get("name") or "")
        labels = {str(k): str(v) for k, v in (_meta(namespace).get("labels") or {}).items()}
        labels.setdefault(NAMESPACE_NAME_LABEL, name)
        found[name] = labels
    return found


# --- GatewayClasses -------------------------------------------------------------------


def class_verdict(gateway_class: Obj) -> Verdict:
    """Portico's GatewayClasses take no parameters: one that names some is not accepted."""
    if _spec(gateway_class).get("parametersRef"):
        return Verdict("False", "InvalidParameters", "Portico takes no parameters (spec.parametersRef must not be set)")
    return Verdict("True", "Accepted", "handled by Portico")


def _our_classes(classes: Iterable[Obj], options: GatewayApiOptions) -> list[tuple[Obj, Verdict]]:
    return [(c, class_verdict(c)) for c in classes if _spec(c).get("controllerName") == options.controller_name]


# --- Gateways and listeners ----------------------------------------------------------


def _listener_kinds(raw: Obj, protocol: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The route kinds a listener takes, and those its allowedRoutes.kinds ask for in vain."""
    served = ROUTE_KINDS.get(protocol)
    asked = (raw.get("allowedRoutes") or {}).get("kinds")
    if not asked:
        return ((served,) if served else ()), ()
    kinds, invalid = [], []
    for item in asked:
        kind, group = str(item.get("kind") or ""), item.get("group", GROUP)
        if served and kind == served and group in (GROUP, None):
            kinds.append(kind)
        else:
            invalid.append(kind)
    return tuple(dict.fromkeys(kinds)), tuple(invalid)


def _listener(index: int, raw: Obj, report: Report) -> ListenerView:
    protocol = str(raw.get("protocol") or "")
    where = field_path("spec", "listeners", index)
    if protocol not in ROUTE_KINDS:
        report.warning(field_path(where, "protocol"), f"{protocol} listeners are not served (Portico serves L4: TCP, UDP)")
    kinds, invalid = _listener_kinds(raw, protocol)
    if invalid:
        report.warning(field_path(where, "allowedRoutes", "kinds"), f"route kinds not served on a {protocol} listener: {', '.join(invalid)}")
    namespaces = (raw.get("allowedRoutes") or {}).get("namespaces") or {}
    port = raw.get("port")
    return ListenerView(
        index=index, name=str(raw.get("name") or ""), port=port if _is_int(port) else 0, protocol=protocol,
        route_kinds=kinds, invalid_kinds=invalid, allowed_from=str(namespaces.get("from") or "Same"),
        selector=namespaces.get("selector"),
    )


def _transport(protocol: str) -> str:
    return "udp" if protocol in UDP_PROTOCOLS else "tcp"


def _mark_conflicts(listeners: Sequence[ListenerView], report: Report) -> None:
    """Listeners that share a port and a transport, one of them L4, cannot be told apart."""
    groups: dict[tuple[int, str], list[ListenerView]] = {}
    for listener in listeners:
        groups.setdefault((listener.port, _transport(listener.protocol)), []).append(listener)
    for (port, transport), group in groups.items():
        if len(group) > 1 and any(listener.supported for listener in group):
            names = ", ".join(listener.name for listener in group)
            for listener in group:
                listener.conflicted = True
                report.problem(field_path("spec", "listeners", listener.index, "port"),
                               f"{transport.upper()} port {port} is used by several listeners ({names}): none of them is served")


def _requested_addresses(spec: Obj, report: Report) -> tuple[list[int], list[dict[str, Any]], Verdict | None]:
    """The families and per-family addresses spec.addresses asks for, or why they cannot be served."""
    families: list[int] = []
    requested: list[dict[str, Any]] = []
    failures: list[str] = []
    for index, item in enumerate(spec.get("addresses") or []):
        where = field_path("spec", "addresses", index)
        kind = item.get("type") or "IPAddress"
        if kind != "IPAddress":
            failures.append(f"{where}: type {kind} is not supported (Portico gives IPAddress addresses)")
            report.problem(field_path(where, "type"), f"{kind} is not supported (supported: IPAddress)")
            continue
        value = item.get("value")
        if value in (None, ""):
            continue  # an empty IPAddress asks for any address: the pool's
        try:
            address = parse_address(value)
        except ValueError:
            failures.append(f"{where}.value: {value!r} is not an IP address")
            report.problem(field_path(where, "value"), f"{value!r} is not an IP address")
            continue
        if address.version in families:
            failures.append(f"{where}.value: a Gateway gets one address per IP family")
            report.problem(field_path(where, "value"), f"a second IPv{address.version} address (Portico gives a Gateway one per family)")
            continue
        families.append(address.version)
        requested.append({"family": address.version, "ip": str(address), "ip_field": field_path(where, "value")})
    failure = Verdict("False", "UnsupportedAddress", "; ".join(failures)) if failures else None
    return families or [4], requested, failure


def _gateway_view(gateway: Obj, options: GatewayApiOptions) -> GatewayView:
    key = _key(options.cluster, gateway, GATEWAY.kind)
    report = Report(key)
    spec = _spec(gateway)
    listeners = [_listener(index, raw, report) for index, raw in enumerate(spec.get("listeners") or [])]
    _mark_conflicts(listeners, report)
    families, requested, failure = _requested_addresses(spec, report)
    namespace, name = _ns_name(gateway)
    return GatewayView(obj=gateway, key=key, namespace=namespace, name=name, listeners=listeners, families=families,
                       requested=requested, address_failure=failure, report=report)


# --- routes and their backendRefs -----------------------------------------------------


def _granted(grants: Iterable[Obj], route_kind: str, route_namespace: str, service_name: str) -> bool:
    """A ReferenceGrant in the Service's namespace lets routes of this kind and namespace refer to it."""
    for grant in grants:
        spec = _spec(grant)
        froms = any(item.get("group") == GROUP and item.get("kind") == route_kind and item.get("namespace") == route_namespace
                    for item in spec.get("from") or [])
        tos = any(item.get("group") in ("", None) and item.get("kind") == "Service" and item.get("name") in (None, "", service_name)
                  for item in spec.get("to") or [])
        if froms and tos:
            return True
    return False


def _service_port(service: Obj, number: Any, protocol: str) -> ServiceSpecPort | str:
    """The Service port a backendRef's port names (by number, of the route's protocol: a Service
    may have port 53 over TCP and over UDP), or why there is none."""
    other = None
    for index, raw in enumerate(_spec(service).get("ports") or []):
        if raw.get("port") != number:
            continue
        if str(raw.get("protocol") or "TCP").lower() != protocol:
            other = other or f"port {number} is {raw.get('protocol') or 'TCP'}, not {protocol.upper()}"
            continue
        node_port = raw.get("nodePort")
        return ServiceSpecPort(index=index, name=str(raw.get("name") or ""), protocol=protocol, port=int(number),
                               node_port=node_port if _is_int(node_port) else None, target_port=raw.get("targetPort"),
                               spec_field=field_path("spec", "ports", index))
    return other or f"has no port {number}"


@dataclass(frozen=True)
class _RefContext:
    route_kind: str
    route_namespace: str
    services: Mapping[tuple[str, str], Obj]
    grants: Mapping[str, list[Obj]]


def _backend_ref(raw: Obj, where: str, context: _RefContext) -> BackendRefView:
    weight = raw.get("weight", 1)
    view = BackendRefView(where=where, weight=weight if _is_int(weight) and weight >= 0 else 1)
    group, kind = raw.get("group") or "", raw.get("kind") or "Service"
    name = str(raw.get("name") or "")
    namespace = str(raw.get("namespace") or context.route_namespace)
    if group != "" or kind != "Service":
        view.failure = Verdict("False", "InvalidKind", f"{kind}.{group or 'core'} is not a Service")
        return view
    if namespace != context.route_namespace and not _granted(context.grants.get(namespace, []), context.route_kind,
                                                             context.route_namespace, name):
        view.failure = Verdict("False", "RefNotPermitted",
                               f"no ReferenceGrant in namespace {namespace} lets {context.route_kind}s of "
                               f"{context.route_namespace} refer to Service {name}")
        return view
    service = context.services.get((namespace, name))
    if service is None:
        view.failure = Verdict("False", "BackendNotFound", f"Service {namespace}/{name} not found")
        return view
    port = _service_port(service, raw.get("port"), LB_PROTOCOLS[context.route_kind])
    if isinstance(port, str):
        reason = "UnsupportedProtocol" if port.startswith("port ") else "BackendNotFound"
        view.failure = Verdict("False", reason, f"Service {namespace}/{name} {port}")
        return view
    view.service, view.port = service, port
    return view


def _resolved(refs: Sequence[BackendRefView]) -> Verdict:
    failed = [(ref.where, ref.failure) for ref in refs if ref.failure is not None]
    if not failed:
        return Verdict("True", "ResolvedRefs", "every backendRef resolved")
    return Verdict("False", failed[0][1].reason, "; ".join(f"{where}: {failure.message}" for where, failure in failed))


def _route_view(route: Obj, kind: str, context_of: Any, options: GatewayApiOptions) -> RouteView:
    namespace, name = _ns_name(route)
    report = Report(_key(options.cluster, route, kind))
    context = context_of(kind, namespace)
    refs = []
    for rule_index, rule in enumerate(_spec(route).get("rules") or []):
        for ref_index, raw in enumerate(rule.get("backendRefs") or []):
            ref = _backend_ref(raw, field_path("spec", "rules", rule_index, "backendRefs", ref_index), context)
            if ref.failure is not None:
                report.problem(ref.where, ref.failure.message)
            refs.append(ref)
    return RouteView(obj=route, kind=kind, key=report.subject, namespace=namespace, name=name, refs=refs,
                     resolved=_resolved(refs), report=report)


# --- attaching routes to listeners ----------------------------------------------------


def _namespace_allowed(listener: ListenerView, gateway: GatewayView, namespace: str, labels: Mapping[str, Mapping[str, str]]) -> bool:
    if listener.allowed_from == "All":
        return True
    if listener.allowed_from == "Selector":
        return listener.selector is not None and selector_matches(listener.selector, labels.get(namespace, {}))
    return namespace == gateway.namespace


def _matching_listeners(gateway: GatewayView, parent_ref: Obj) -> list[ListenerView]:
    section, port = parent_ref.get("sectionName"), parent_ref.get("port")
    return [listener for listener in gateway.listeners
            if (section in (None, "") or listener.name == section) and (port is None or listener.port == port)]


def _attach(route: RouteView, index: int, parent_ref: Obj, gateway: GatewayView, labels: Mapping[str, Mapping[str, str]]) -> None:
    where = field_path("spec", "parentRefs", index)
    matching = _matching_listeners(gateway, parent_ref)
    if not matching:
        verdict = Verdict("False", "NoMatchingParent", f"Gateway {gateway.namespace}/{gateway.name} has no listener "
                          f"matching sectionName {parent_ref.get('sectionName')!r} and port {parent_ref.get('port')!r}")
        route.report.problem(where, verdict.message)
    else:
        allowed = [listener for listener in matching
                   if route.kind in listener.route_kinds and _namespace_allowed(listener, gateway, route.namespace, labels)]
        for listener in allowed:
            listener.routes.append(route)
        if allowed:
            verdict = Verdict("True", "Accepted", f"attached to listener(s) {', '.join(listener.name for listener in allowed)}")
        else:
            verdict = Verdict("False", "NotAllowedByListeners", f"no listener of Gateway {gateway.namespace}/{gateway.name} "
                              f"matching this parentRef allows {route.kind}s from namespace {route.namespace}")
            route.report.problem(where, verdict.message)
    route.parents.append(ParentVerdict(index=index, parent_ref=parent_ref, gateway_key=gateway.key, accepted=verdict))


def _attach_all(routes: Sequence[RouteView], gateways: Mapping[tuple[str, str], GatewayView], labels: Mapping[str, Mapping[str, str]]) -> None:
    """Each route's parentRefs to Gateways Portico serves (others are another controller's)."""
    for route in routes:
        for index, parent_ref in enumerate(_spec(route.obj).get("parentRefs") or []):
            if (parent_ref.get("group", GROUP), parent_ref.get("kind", "Gateway")) != (GROUP, "Gateway"):
                continue
            gateway = gateways.get((str(parent_ref.get("namespace") or route.namespace), str(parent_ref.get("name") or "")))
            if gateway is not None:
                _attach(route, index, parent_ref, gateway, labels)
    for gateway in gateways.values():
        for listener in gateway.listeners:
            winner = listener.winner
            for route in listener.routes:
                if route is not winner and winner is not None:
                    route.report.warning("spec.parentRefs", f"listener {listener.name} of Gateway {gateway.namespace}/{gateway.name} "
                                         f"serves the older route {winner.namespace}/{winner.name}: this one gets no traffic there")


# --- allocation entries ---------------------------------------------------------------


def _served_listeners(gateway: GatewayView) -> list[ListenerView]:
    return [listener for listener in gateway.listeners if listener.supported and not listener.conflicted and listener.winner]


def _allocation_entry(gateway: GatewayView, options: GatewayApiOptions) -> dict[str, Any]:
    """The Gateway as ``model.ipam.allocate`` takes an entry: one LB per family (its listener
    ports, for address sharing), the addresses asked for, and the ones its status holds."""
    meta = _meta(gateway.obj)
    ports = [{"protocol": LB_PROTOCOLS[ROUTE_KINDS[listener.protocol]], "port": listener.port} for listener in _served_listeners(gateway)]
    status_ips = [str(item.get("value")) for item in (gateway.obj.get("status") or {}).get("addresses") or []
                  if (item.get("type") or "IPAddress") == "IPAddress" and item.get("value")]
    return {
        "cluster": options.cluster, "namespace": gateway.namespace, "name": gateway.name, "kind": GATEWAY.kind,
        "uid": str(meta.get("uid") or ""), "creation_timestamp": str(meta.get("creationTimestamp") or ""),
        "ip_families": list(gateway.families), "addresses": list(gateway.requested), "status_ips": status_ips,
        "status_ips_field": GATEWAY_ADDRESS_FIELD, "pool": (meta.get("annotations") or {}).get(POOL_ANNOTATION),
        "pool_field": annotation_field(POOL_ANNOTATION), "requested_ips": [], "requested_ips_field": "spec.addresses",
        "loadbalancers": [{"name": lb_name(gateway.key, index, family), "ports": ports} for index, family in enumerate(gateway.families)],
        "problems": [], "warnings": [],
    }


def translate_gateway_api(objects: GatewayApiObjects, options: GatewayApiOptions) -> GatewayApiTranslation:
    """Step 1 (see the module comment): the served Gateways' allocation entries and verdicts."""
    if options.backend_mode not in BACKEND_MODES:
        raise ValueError(f"backend_mode: {options.backend_mode!r} is not one of {', '.join(BACKEND_MODES)}")
    classes = _our_classes(objects.gateway_classes, options)
    accepted = {str(_meta(c).get("name")) for c, verdict in classes if verdict.status == "True"}
    views = [_gateway_view(g, options) for g in objects.gateways if _spec(g).get("gatewayClassName") in accepted]
    by_name = {(view.namespace, view.name): view for view in views}
    services = {_ns_name(s): s for s in objects.services}
    grants: dict[str, list[Obj]] = {}
    for grant in objects.reference_grants:
        grants.setdefault(_ns_name(grant)[0], []).append(grant)

    def context_of(kind: str, namespace: str) -> _RefContext:
        return _RefContext(kind, namespace, services, grants)

    routes = [_route_view(r, "TCPRoute", context_of, options) for r in objects.tcp_routes]
    routes += [_route_view(r, "UDPRoute", context_of, options) for r in objects.udp_routes]
    _attach_all(routes, by_name, _namespace_labels(objects.namespaces))
    entries = [_allocation_entry(view, options) for view in views if view.accepted.status == "True"]
    return GatewayApiTranslation(
        options=options, entries=entries, classes=classes, gateways=views,
        routes=[route for route in routes if route.parents], nodes=node_backends(node_targets(objects.nodes)),
        slices=index_endpoint_slices(objects.endpoint_slices),
    )


# --- backends and weights -------------------------------------------------------------


def _ref_backends(ref: BackendRefView, family: int, mode: str, translation: GatewayApiTranslation, name: str,
                  report: Report) -> list[dict[str, Any]]:
    """One resolved backendRef's backends of one family, each with its own port."""
    if ref.service is None or ref.port is None:
        return []
    if mode == "nodeport":
        if ref.port.node_port is None:
            report.warning(ref.where, f"Service port {ref.port.port} has no nodePort: nodeport mode cannot reach it")
            return []
        return [{**node, "port": ref.port.node_port} for node in translation.nodes.by_family.get(family) or []]
    namespace, service_name = _ns_name(ref.service)
    defaults, backends = direct_backends(translation.slices.get((namespace, service_name), []), [ref.port], family, name, report)
    return [{**backend, "port": backend.get("port", defaults[0])} for backend in backends]


def _lcm(one: int, other: int) -> int:
    return one * other // math.gcd(one, other)


def weighted_backends(groups: Sequence[tuple[int, Sequence[Mapping[str, Any]]]]) -> list[dict[str, Any]]:
    """Backends with Maglev weights from (backendRef weight, its backends) pairs: a backendRef's
    weight is split evenly over its backends, then the shares are made whole numbers with the
    smallest common factor (90/10 over one pod each is 9:1), capped at the model's MAX_WEIGHT."""
    shares: dict[tuple[str, Any], Fraction] = {}
    first: dict[tuple[str, Any], Mapping[str, Any]] = {}
    for weight, backends in groups:
        for backend in backends:
            key = (str(backend["address"]), backend.get("port"))
            shares[key] = shares.get(key, Fraction(0)) + Fraction(weight, len(backends))
            first.setdefault(key, backend)
    scale = functools.reduce(_lcm, (share.denominator for share in shares.values()), 1)
    whole = {key: int(share * scale) for key, share in shares.items()}
    divisor = functools.reduce(math.gcd, whole.values(), 0) or 1
    whole = {key: value // divisor for key, value in whole.items()}
    top = max(whole.values(), default=0)
    if top > MAX_WEIGHT:
        whole = {key: (max(1, round(value * MAX_WEIGHT / top)) if value else 0) for key, value in whole.items()}
    return [{**first[key], "weight": whole[key]} for key in sorted(whole, key=lambda k: (parse_address(k[0]), k[1] or 0))]


def _listener_lb(gateway: GatewayView, listener: ListenerView, index: int, family: int, address: str, pool: str,
                 translation: GatewayApiTranslation) -> tuple[dict[str, Any], list[Problem]]:
    route = listener.winner
    if route is None:
        raise ValueError(f"listener {listener.name} has no route")
    name = lb_name(f"{gateway.key}/{listener.name}", index, family)
    mode = translation.options.backend_mode
    groups = [(ref.weight, _ref_backends(ref, family, mode, translation, name, route.report)) for ref in route.refs]
    backends = weighted_backends([(weight, items) for weight, items in groups if items])
    protocol = LB_PROTOCOLS[route.kind]
    port: dict[str, Any] = {"protocol": protocol, "port": listener.port,
                            "backend_port": backends[0]["port"] if backends else listener.port}
    if len(listener.name) <= _PORT_NAME_MAX:
        port["name"] = listener.name
    lb = {
        "name": name, "vip": address, "pool": pool, "ports": [port], "backends": backends,
        "health_check": {"type": "tcp"} if protocol == "tcp" else {"type": "none"},
        "source_ranges": [], "preserve_source_ip": True, "session_affinity": "none", "source": GATEWAY.lb_source,
    }
    where = field_path("spec", "listeners", listener.index)
    sources = FieldSources(gateway.key, {"name": "metadata.name", "ports": where, "ports[0].port": field_path(where, "port"),
                                         "ports[0].name": field_path(where, "name")})
    return lb, model_problems(lb, family, sources, check_backends=True)


# --- status ---------------------------------------------------------------------------


def condition(kind: str, verdict: Verdict, obj: Obj, previous: Mapping[str, Obj], now: str) -> dict[str, Any]:
    """A metav1.Condition: its lastTransitionTime moves only when its status changes."""
    before = previous.get(kind) or {}
    since = before.get("lastTransitionTime") if before.get("status") == verdict.status and before.get("lastTransitionTime") else now
    result: dict[str, Any] = {"type": kind, "status": verdict.status, "reason": verdict.reason,
                              "message": verdict.message, "lastTransitionTime": since}
    generation = _meta(obj).get("generation")
    if _is_int(generation):
        result["observedGeneration"] = generation
    return result


def _previous(conditions: Any) -> dict[str, Obj]:
    return {str(c.get("type")): c for c in conditions or [] if isinstance(c, Mapping)}


def _status_update(obj: Obj, kind: str, status: dict[str, Any]) -> StatusUpdate:
    namespace, name = _ns_name(obj)
    return StatusUpdate(kind=kind, api_version=str(obj.get("apiVersion") or f"{GROUP}/v1"), namespace=namespace, name=name, status=status)


def _class_status(gateway_class: Obj, verdict: Verdict, now: str) -> StatusUpdate:
    previous = _previous((gateway_class.get("status") or {}).get("conditions"))
    return _status_update(gateway_class, "GatewayClass", {"conditions": [condition("Accepted", verdict, gateway_class, previous, now)]})


def _listener_verdicts(listener: ListenerView) -> tuple[Verdict, Verdict, Verdict]:
    """A listener's Accepted, ResolvedRefs and Conflicted, which do not depend on the address."""
    if listener.supported:
        accepted = Verdict("True", "Accepted", "served by Portico")
    else:
        accepted = Verdict("False", "UnsupportedProtocol", f"{listener.protocol} is not served (Portico serves TCP and UDP)")
    if listener.invalid_kinds:
        resolved = Verdict("False", "InvalidRouteKinds", f"not served on a {listener.protocol} listener: {', '.join(listener.invalid_kinds)}")
    else:
        resolved = Verdict("True", "ResolvedRefs", "route kinds resolved")
    if listener.conflicted:
        conflicted = Verdict("True", "ProtocolConflict", f"another listener uses {_transport(listener.protocol).upper()} port {listener.port}")
    else:
        conflicted = Verdict("False", "NoConflicts", "no conflicts")
    return accepted, resolved, conflicted


def listener_programmed(servable: bool, routed: bool, programmed: bool) -> Verdict:
    """A listener's Programmed: a served listener of a Gateway that has its address."""
    if servable and programmed:
        return Verdict("True", "Programmed", "programmed on the gateways" if routed else "ready for a route")
    return Verdict("False", "Invalid", "not served")


def _listener_status(listener: ListenerView, gateway: GatewayView, programmed: bool, previous: Mapping[str, Obj], now: str) -> dict[str, Any]:
    obj = gateway.obj
    accepted, resolved, conflicted = _listener_verdicts(listener)
    live = listener_programmed(listener.supported and not listener.conflicted, listener.winner is not None, programmed)
    return {
        "name": listener.name,
        "supportedKinds": [{"group": GROUP, "kind": kind} for kind in listener.route_kinds],
        "attachedRoutes": len(listener.routes),
        "conditions": [condition(kind, verdict, obj, previous, now) for kind, verdict in
                       (("Accepted", accepted), ("Programmed", live), ("ResolvedRefs", resolved), ("Conflicted", conflicted))],
    }


def _gateway_status(gateway: GatewayView, allocation: Allocation | None, now: str) -> StatusUpdate:
    old = gateway.obj.get("status") or {}
    previous = _previous(old.get("conditions"))
    accepted = gateway.accepted
    if accepted.status != "True":
        programmed = Verdict("False", "Invalid", "the Gateway is not accepted")
    elif allocation is None or allocation.problems or not allocation.ips:
        problems = "; ".join(problem.render() for problem in (allocation.problems if allocation else []))
        programmed = Verdict("False", "AddressNotAssigned", problems or "no address assigned")
    else:
        programmed = Verdict("True", "Programmed", f"served on {', '.join(allocation.ips)}")
    live = programmed.status == "True"
    old_listeners = {str(item.get("name")): _previous(item.get("conditions")) for item in old.get("listeners") or []}
    status = {
        "addresses": [{"type": "IPAddress", "value": ip} for ip in (allocation.ips if allocation and live else [])],
        "conditions": [condition("Accepted", accepted, gateway.obj, previous, now),
                       condition("Programmed", programmed, gateway.obj, previous, now)],
        "listeners": [_listener_status(listener, gateway, live, old_listeners.get(listener.name, {}), now) for listener in gateway.listeners],
    }
    return _status_update(gateway.obj, GATEWAY.kind, status)


def _route_status(route: RouteView, controller: str, now: str) -> StatusUpdate:
    old = {}
    for item in (route.obj.get("status") or {}).get("parents") or []:
        if item.get("controllerName") == controller:
            old[_parent_identity(item.get("parentRef") or {}, route.namespace)] = _previous(item.get("conditions"))
    parents = []
    for parent in route.parents:
        previous = old.get(_parent_identity(parent.parent_ref, route.namespace), {})
        parents.append({
            "parentRef": dict(parent.parent_ref), "controllerName": controller,
            "conditions": [condition("Accepted", parent.accepted, route.obj, previous, now),
                           condition("ResolvedRefs", route.resolved, route.obj, previous, now)],
        })
    return _status_update(route.obj, route.kind, {"parents": parents})


def _parent_identity(parent_ref: Obj, route_namespace: str) -> tuple[str, str, str, str, str, str]:
    return (str(parent_ref.get("group", GROUP)), str(parent_ref.get("kind", "Gateway")),
            str(parent_ref.get("namespace") or route_namespace), str(parent_ref.get("name") or ""),
            str(parent_ref.get("sectionName") or ""), str(parent_ref.get("port") or ""))


# --- step 3 and the whole -------------------------------------------------------------


def _gateway_lbs(gateway: GatewayView, allocation: Allocation, translation: GatewayApiTranslation) -> list[dict[str, Any]]:
    lbs = []
    for listener in _served_listeners(gateway):
        for index, (address, lb) in enumerate(zip(allocation.ips, allocation.loadbalancers)):
            family = parse_address(address).version
            definition, problems = _listener_lb(gateway, listener, index, family, address, str(lb.get("pool") or ""), translation)
            for problem in problems:
                gateway.report.problems.append(problem)
            if not problems:
                lbs.append(definition)
    return lbs


def finish(translation: GatewayApiTranslation, allocations: Iterable[Allocation], now: str) -> GatewayApiResult:
    """Step 3: LB definitions for the listeners of the Gateways that got their addresses, and the
    status of every GatewayClass, Gateway and route Portico is responsible for."""
    by_key = {allocation.key: allocation for allocation in allocations}
    result = GatewayApiResult(loadbalancers=[], statuses=[], problems=[], warnings=[])
    for gateway_class, verdict in translation.classes:
        result.statuses.append(_class_status(gateway_class, verdict, now))
    for gateway in translation.gateways:
        allocation = by_key.get(gateway.key)
        if allocation is not None:
            result.problems.extend(allocation.problems)
            result.warnings.extend(allocation.warnings)
            if not allocation.problems and gateway.accepted.status == "True":
                result.loadbalancers.extend(_gateway_lbs(gateway, allocation, translation))
        result.statuses.append(_gateway_status(gateway, allocation, now))
    for route in translation.routes:
        result.statuses.append(_route_status(route, translation.options.controller_name, now))
    for report in [gateway.report for gateway in translation.gateways] + [route.report for route in translation.routes]:
        result.problems.extend(report.problems)
        result.warnings.extend(report.warnings)
    result.loadbalancers.sort(key=lambda lb: lb["name"])
    return result


def serve_gateway_api(objects: GatewayApiObjects, options: GatewayApiOptions, pools: Mapping[str, Pool],
                      reserved: Iterable[str] = (), now: str | None = None) -> GatewayApiResult:
    """The three steps for a cluster whose Gateways are allocated on their own (the wiring
    allocates them together with the Services' entries instead, then calls ``finish``)."""
    translation = translate_gateway_api(objects, options)
    return finish(translation, allocate(translation.entries, pools, reserved), now or rfc3339_now())


# --- the pipeline's entries -----------------------------------------------------------
#
# The inventory source publishes one entry per object (``portico_k8s_services``), allocated
# with the Services' entries (``model.sources.merge``) and written back by the kinds' status
# writers (``k8s.gateway_api_status``). A served Gateway's entry holds one LB per family for
# the allocation (all its listener ports) whose ``parts`` are the listeners' LBs, which take the
# family's address; a class or a route only has a status (``status_only``): the verdicts are
# decided here, dated by the writer against the object it reads.


def verdict_data(verdict: Verdict) -> dict[str, str]:
    return {"status": verdict.status, "reason": verdict.reason, "message": verdict.message}


def verdict_of(data: Any) -> Verdict:
    """A verdict as ``verdict_data`` wrote it (a missing one: not decided yet)."""
    if not isinstance(data, Mapping):
        return Verdict("Unknown", "Pending", "not decided yet")
    return Verdict(str(data.get("status") or "Unknown"), str(data.get("reason") or "Pending"), str(data.get("message") or ""))


def _status_only(kind: str, obj: Obj, options: TranslateOptions, details: dict[str, Any],
                 problems: Sequence[Problem] = (), warnings: Sequence[Problem] = ()) -> dict[str, Any]:
    return {
        "kind": kind, **object_identity(options, _meta(obj)), "status_only": True, "ip_families": [], "loadbalancers": [],
        "status_ips": [], "requested_ips": [], "pool": None, "sharing_key": None, "field_sources": {}, "claimed": False,
        "release": False, "problems": to_data(problems), "warnings": to_data(warnings),
        "status_details": {"generation": _meta(obj).get("generation"), **details},
    }


def _listener_details(listener: ListenerView) -> dict[str, Any]:
    accepted, resolved, conflicted = _listener_verdicts(listener)
    return {
        "name": listener.name, "supportedKinds": [{"group": GROUP, "kind": kind} for kind in listener.route_kinds],
        "attachedRoutes": len(listener.routes), "accepted": verdict_data(accepted), "resolved": verdict_data(resolved),
        "conflicted": verdict_data(conflicted), "servable": listener.supported and not listener.conflicted,
        "routed": listener.winner is not None,
    }


def _gateway_details(gateway: GatewayView) -> dict[str, Any]:
    return {"accepted": verdict_data(gateway.accepted), "listeners": [_listener_details(listener) for listener in gateway.listeners]}


def _gateway_entry(gateway: GatewayView, translation: GatewayApiTranslation, options: TranslateOptions) -> dict[str, Any]:
    """A served Gateway: allocated like a Service; its listeners' LBs share the family's address.
    A listener that cannot be served is a warning on the Gateway (its listener status says it),
    never a reason to withdraw the others."""
    if gateway.accepted.status != "True":
        return _status_only(GATEWAY.kind, gateway.obj, options, _gateway_details(gateway),
                            warnings=gateway.report.problems + gateway.report.warnings)
    entry = _allocation_entry(gateway, translation.options)
    warnings = list(gateway.report.problems)
    for index, family in enumerate(gateway.families):
        parts = []
        for listener in _served_listeners(gateway):
            lb, problems = _listener_lb(gateway, listener, index, family, "", "", translation)
            warnings.extend(problems)
            if not problems:
                parts.append({key: value for key, value in lb.items() if key not in ("vip", "pool")})
        entry["loadbalancers"][index]["parts"] = parts
    entry.update({
        **object_identity(options, _meta(gateway.obj)), "kind": GATEWAY.kind, "sharing_key": None, "field_sources": {},
        "claimed": is_claimed(gateway.obj, options, GATEWAY.finalizer), "release": False,
        "problems": [], "warnings": to_data(warnings + gateway.report.warnings),
        "status_details": {"generation": _meta(gateway.obj).get("generation"), **_gateway_details(gateway)},
    })
    return entry


def _gateway_release_entry(gateway: Obj, options: TranslateOptions, reason: str) -> dict[str, Any]:
    """A Gateway Portico must give up (being deleted, or of a class no longer Portico's): no LBs,
    its addresses held until the write-back released it."""
    status_ips = [str(item.get("value")) for item in (gateway.get("status") or {}).get("addresses") or []
                  if (item.get("type") or "IPAddress") == "IPAddress" and item.get("value")]
    return {
        "kind": GATEWAY.kind, **object_identity(options, _meta(gateway)), "ip_families": [], "requested_ips": [],
        "status_ips": status_ips, "status_ips_field": GATEWAY_ADDRESS_FIELD, "pool": None, "sharing_key": None,
        "loadbalancers": [], "field_sources": {}, "release": True, "release_reason": reason, "problems": [], "warnings": [],
        "status_details": {"generation": _meta(gateway).get("generation")},
    }


def _route_details(route: RouteView, version: str, controller: str) -> dict[str, Any]:
    return {"version": version, "controller": controller, "resolved": verdict_data(route.resolved),
            "parents": [{"parentRef": dict(parent.parent_ref), "accepted": verdict_data(parent.accepted)} for parent in route.parents]}


def _route_entry(route: RouteView, version: str, controller: str, options: TranslateOptions) -> dict[str, Any]:
    """A route's status: refused where no parent of Portico's takes it, else served with warnings."""
    attached = any(parent.accepted.status == "True" for parent in route.parents)
    problems, warnings = ([], route.report.problems + route.report.warnings) if attached else (route.report.problems, route.report.warnings)
    return _status_only(route.kind, route.obj, options, _route_details(route, version, controller), problems, warnings)


def _shows_controller(route: Obj, controller: str) -> bool:
    return any(item.get("controllerName") == controller for item in (route.get("status") or {}).get("parents") or [])


@dataclass
class GatewayApiEntries:
    """One cluster's Gateway API entries, and what the inventory's summary line counts."""

    translation: Translation
    gateways: int = 0
    routes: int = 0
    skipped_gateways: int = 0  # of other classes (or namespaces not served)


def gateway_api_entries(objects: GatewayApiObjects, options: TranslateOptions, route_versions: Mapping[str, str] | None = None,
                        gateway_options: GatewayApiOptions | None = None) -> GatewayApiEntries:
    """The entries of one cluster's Gateway API objects: served Gateways (allocated with the
    Services), Gateways to release, and the status of Portico's classes and of every route that
    names a served Gateway or still shows a parent of Portico's (taken back). Gateways of other
    classes get nothing at all."""
    settings = gateway_options or GatewayApiOptions(cluster=options.cluster)
    ours = {str(_meta(c).get("name")) for c, verdict in _our_classes(objects.gateway_classes, settings) if verdict.status == "True"}
    result = GatewayApiEntries(Translation(entries=[], digests={}, skipped={}))
    served = []
    for gateway in objects.gateways:
        class_reason = None if _spec(gateway).get("gatewayClassName") in ours else "class"
        scope = object_scope(gateway, options, class_reason, GATEWAY.finalizer)
        if scope.action == "serve":
            served.append(gateway)
        elif scope.action == "release":
            result.translation.entries.append(_gateway_release_entry(gateway, options, scope.reason))
        else:
            result.skipped_gateways += 1
    routes = {kind: [r for r in items if wants_namespace(_ns_name(r)[0], options)]
              for kind, items in (("TCPRoute", objects.tcp_routes), ("UDPRoute", objects.udp_routes))}
    translation = translate_gateway_api(dataclasses.replace(objects, gateways=served, tcp_routes=routes["TCPRoute"],
                                                            udp_routes=routes["UDPRoute"]), settings)
    entries = result.translation.entries
    entries.extend(_gateway_entry(view, translation, options) for view in translation.gateways)
    entries.extend(_status_only("GatewayClass", c, options, {"accepted": verdict_data(verdict)}) for c, verdict in translation.classes)
    versions = {kind: (route_versions or {}).get(kind) or ROUTE_VERSIONS[0] for kind in routes}
    entries.extend(_route_entry(route, versions[route.kind], settings.controller_name, options) for route in translation.routes)
    attached = {route.key for route in translation.routes}
    for kind, items in routes.items():
        for route in items:
            if _key(options.cluster, route, kind) not in attached and _shows_controller(route, settings.controller_name):
                entries.append(_status_only(kind, route, options, {"version": versions[kind], "controller": settings.controller_name,
                                                                   "parents": []}))
    entries.sort(key=lambda entry: (entry["cluster"], entry["namespace"], entry["name"], entry["kind"]))
    result.gateways, result.routes = len(translation.gateways), len(translation.routes)
    result.translation.translated = len(entries)
    return result
