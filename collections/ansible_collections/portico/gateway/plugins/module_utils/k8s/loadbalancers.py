# -*- coding: utf-8 -*-
# Copyright: Portico developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Portico's LoadBalancer resources (``loadbalancers.portico.io``) -> service entries.

The resource's spec mirrors the inventory's LB definition (camelCase, listeners for ports), so
translation is mostly a copy: one LB dict per address family served, with the backends of that
family, and a ``FieldSources`` map from every LB field to the resource's own field, so the
model's verdict on an LB names ``spec.listeners[0].port`` or ``spec.backends[2].address``. The
entries then go through the same allocation, model and write-back as Services' entries (see
``k8s.translate``), with the keys and names of ``k8s.kinds``.

- ``state: disabled``: the entry keeps its addresses (allocated and reserved as for any entry)
  and its LBs have no backends, so the gateways refuse connections at once and announce nothing.
- A backend's ``adminState``: ``drain`` is weight 0 in the model (kept in the LB, never picked
  for a new connection; a connection it has keeps its conntrack entry), ``disabled`` is left out.
- Families: ``ipFamilies``, else the families of ``addresses``, else of the backends (IPv4 when
  nothing says), as the policy allows; the second family of ``PreferDualStack`` is optional
  (served when a pool has an address for it).

The API server refuses what the CRD's schema refuses; objects are still checked here (types,
shapes), as one read from a snapshot or a lenient API would not have been, and one bad object
never stops the others. Standard library only, like every module_util.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ansible_collections.portico.gateway.plugins.module_utils.k8s.kinds import LOADBALANCER
from ansible_collections.portico.gateway.plugins.module_utils.k8s.translate import (
    AFFINITY_REFRESH_WARNING,
    DEFAULT_LOAD_BALANCER_CLASS,
    DENY_ALL_SOURCES,
    Scope,
    TranslateOptions,
    Translation,
    clash_sources,
    is_claimed,
    lb_name,
    model_problems,
    object_identity,
    object_scope,
)
from ansible_collections.portico.gateway.plugins.module_utils.model.ipam import parse_address, parse_network
from ansible_collections.portico.gateway.plugins.module_utils.model.problems import (
    FieldSources,
    Problem,
    Report,
    field_path,
    to_data,
)

STATES = ("active", "disabled")
ADMIN_STATES = ("active", "drain", "disabled")
FAMILY_POLICIES = ("SingleStack", "PreferDualStack", "RequireDualStack")
_FAMILY_NAMES = {"IPv4": 4, "IPv6": 6}
# The resource's healthCheck fields and the model's health_check fields they set.
HEALTH_CHECK_FIELDS = {
    "type": "type", "port": "port", "path": "path", "host": "host", "expectedStatus": "expected_status",
    "intervalMs": "interval_ms", "timeoutMs": "timeout_ms", "rise": "rise", "fall": "fall", "send": "send",
    "expect": "expect",
}
_LISTENER_FIELDS = {"name": "name", "protocol": "protocol", "port": "port", "backendPort": "backend_port"}
_BACKEND_FIELDS = {"address": "address", "port": "port", "weight": "weight", "name": "name"}
_AFFINITY = {"none": "none", "clientIP": "client_ip"}


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, Mapping) else {}


def _spec(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    spec = obj.get("spec")
    return spec if isinstance(spec, Mapping) else {}


def load_balancer_class(obj: Mapping[str, Any]) -> str:
    """The class that serves it (the CRD defaults it; an object without one has the default)."""
    return str(_spec(obj).get("loadBalancerClass") or DEFAULT_LOAD_BALANCER_CLASS)


def scope_of_loadbalancer(obj: Mapping[str, Any], options: TranslateOptions) -> Scope:
    """Serve, release or skip one LoadBalancer resource, by its class and namespace (the same
    rules, deletion and finalizer as a Service's)."""
    reason = None if load_balancer_class(obj) == options.load_balancer_class else "class"
    return object_scope(obj, options, reason, LOADBALANCER.finalizer)


# --- the spec, read defensively ------------------------------------------------------------


def _items(spec: Mapping[str, Any], name: str, report: Report) -> list[tuple[int, Mapping[str, Any]]]:
    """(index, item) of a list of objects; anything else is a problem on its field."""
    raw = spec.get(name)
    if raw is None:
        return []
    where = field_path("spec", name)
    if not isinstance(raw, list):
        report.problem(where, f"expected a list, got {raw!r}")
        return []
    found = []
    for index, item in enumerate(raw):
        if isinstance(item, Mapping):
            found.append((index, item))
        else:
            report.problem(field_path(where, index), f"expected a mapping, got {item!r}")
    return found


def _family_of_address(value: Any) -> int | None:
    try:
        return parse_address(value).version
    except ValueError:
        return None


def _choice(spec: Mapping[str, Any], name: str, choices: Sequence[str], default: str, report: Report) -> str:
    value = spec.get(name, default)
    if value is None:
        return default
    if value not in choices:
        report.problem(field_path("spec", name), f"unsupported value {value!r} (expected one of: {', '.join(choices)})")
        return default
    return str(value)


@dataclass
class _Families:
    served: list[int]
    optional: list[int] = field(default_factory=list)


def _families(spec: Mapping[str, Any], addresses: Sequence[tuple[int, Mapping[str, Any]]],
              backends: Sequence[tuple[int, Mapping[str, Any]]], report: Report) -> _Families:
    """The families served, the primary first (see the module comment)."""
    policy = _choice(spec, "ipFamilyPolicy", FAMILY_POLICIES, "SingleStack", report)
    order: list[int] = []
    raw = spec.get("ipFamilies")
    if raw is not None and not isinstance(raw, list):
        report.problem("spec.ipFamilies", f"expected a list of IPv4 and IPv6, got {raw!r}")
        raw = None
    for index, name in enumerate(raw or []):
        if name not in _FAMILY_NAMES:
            report.problem(field_path("spec", "ipFamilies", index), f"unknown IP family {name!r}")
        elif _FAMILY_NAMES[name] not in order:
            order.append(_FAMILY_NAMES[name])
    explicit = bool(order)
    if not order:
        order = [_FAMILY_NAMES[item.get("family")] for _index, item in addresses if item.get("family") in _FAMILY_NAMES]
        order += [f for f in (_family_of_address(item.get("address")) for _i, item in backends) if f is not None]
        order = list(dict.fromkeys(order)) or [4]
    if policy == "SingleStack":
        if explicit and len(order) > 1:
            report.problem("spec.ipFamilies", "SingleStack serves one family; list only that one")
        return _Families([order[0]])
    both = list(dict.fromkeys([*order, 4, 6]))
    return _Families(both, [both[1]] if policy == "PreferDualStack" else [])


def _addresses(addresses: Sequence[tuple[int, Mapping[str, Any]]], families: Sequence[int], report: Report) -> list[dict[str, Any]]:
    """Per family: the pool and/or address asked for, each with its field (the entry's
    ``addresses``, read by ``model.ipam``)."""
    result = []
    for index, item in addresses:
        where = field_path("spec", "addresses", index)
        family = _FAMILY_NAMES.get(str(item.get("family")))
        if family is None:
            report.problem(field_path(where, "family"), f"expected IPv4 or IPv6, got {item.get('family')!r}")
            continue
        if family not in families:
            report.problem(field_path(where, "family"), f"IPv{family} is not a family this load balancer serves "
                           f"(IPv{', IPv'.join(str(f) for f in families)})")
            continue
        pool = item.get("pool")
        if pool is not None and not isinstance(pool, str):
            report.problem(field_path(where, "pool"), f"expected a pool name, got {pool!r}")
            pool = None
        result.append({"family": family, "pool": pool, "pool_field": field_path(where, "pool"),
                       "ip": item.get("ip"), "ip_field": field_path(where, "ip")})
    return result


def _source_ranges(spec: Mapping[str, Any], report: Report) -> dict[int, list[tuple[int, str]]] | None:
    """(index, CIDR) per family; None when the resource does not restrict sources."""
    raw = spec.get("sourceRanges")
    if raw in (None, []):
        return None
    if not isinstance(raw, list):
        report.problem("spec.sourceRanges", f"expected a list of CIDRs, got {raw!r}")
        return None
    by_family: dict[int, list[tuple[int, str]]] = {4: [], 6: []}
    for index, text in enumerate(raw):
        try:
            network = parse_network(text)
        except ValueError:
            report.problem(field_path("spec", "sourceRanges", index), f"{text!r} is not a CIDR")
            continue
        by_family[network.version].append((index, str(network)))
    return by_family


# --- LB dicts ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _View:
    """What the LB dicts of one resource are built from (read once, used per family)."""

    key: str
    listeners: tuple[tuple[int, Mapping[str, Any]], ...]
    backends: tuple[tuple[int, Mapping[str, Any]], ...]
    health_check: Mapping[str, Any]
    source_ranges: Mapping[int, list[tuple[int, str]]] | None
    preserve_source_ip: Any
    session_affinity: str
    affinity_timeout: Any
    disabled: bool
    split_backends: bool  # dual-stack: each family's LB gets the backends of its family


def _ports(view: _View, fields: dict[str, str]) -> list[dict[str, Any]]:
    ports = []
    fields["ports"] = "spec.listeners"
    for index, (spec_index, listener) in enumerate(view.listeners):
        port: dict[str, Any] = {"protocol": listener.get("protocol", "tcp"), "port": listener.get("port")}
        if listener.get("backendPort") is not None:
            port["backend_port"] = listener["backendPort"]
        if listener.get("name") not in (None, ""):
            port["name"] = listener["name"]
        ports.append(port)
        fields[field_path("ports", index)] = field_path("spec", "listeners", spec_index)
        for api_field, lb_field in _LISTENER_FIELDS.items():
            fields[field_path("ports", index, lb_field)] = field_path("spec", "listeners", spec_index, api_field)
    return ports


def _backends(view: _View, family: int, fields: dict[str, str]) -> list[dict[str, Any]]:
    """The backends this family's LB sends to: active ones, and drained ones at weight 0."""
    backends: list[dict[str, Any]] = []
    fields["backends"] = "spec.backends"
    if view.disabled:
        return backends
    for spec_index, item in view.backends:
        if item.get("adminState", "active") == "disabled":
            continue
        if view.split_backends and _family_of_address(item.get("address")) not in (family, None):
            continue
        backend: dict[str, Any] = {"address": item.get("address"), "weight": item.get("weight", 1)}
        if item.get("adminState") == "drain":
            backend["weight"] = 0  # in the LB, never picked for a new connection
        if item.get("port") is not None:
            backend["port"] = item["port"]
        if item.get("name") not in (None, ""):
            backend["name"] = item["name"]
        index = len(backends)
        backends.append(backend)
        for api_field, lb_field in _BACKEND_FIELDS.items():
            fields[field_path("backends", index, lb_field)] = field_path("spec", "backends", spec_index, api_field)
    return backends


def _family_ranges(view: _View, family: int, fields: dict[str, str], report: Report, name: str) -> list[str]:
    fields["source_ranges"] = "spec.sourceRanges"
    if view.source_ranges is None:
        return []
    ranges = view.source_ranges[family]
    if not ranges:
        report.warning("spec.sourceRanges", f"no IPv{family} range listed: IPv{family} clients are refused", name)
        return [DENY_ALL_SOURCES[family]]
    for index, (spec_index, _cidr) in enumerate(ranges):
        fields[field_path("source_ranges", index)] = field_path("spec", "sourceRanges", spec_index)
    return [cidr for _index, cidr in ranges]


def _loadbalancer(view: _View, index: int, family: int, report: Report) -> tuple[dict[str, Any], FieldSources]:
    name = lb_name(view.key, index, family)
    fields = {"name": "metadata.name", "preserve_source_ip": "spec.preserveSourceIP",
              "session_affinity": "spec.sessionAffinity", "session_affinity_timeout_s": "spec.sessionAffinityTimeoutSeconds",
              "health_check": "spec.healthCheck"}
    fields.update({field_path("health_check", lb_field): field_path("spec", "healthCheck", api_field)
                   for api_field, lb_field in HEALTH_CHECK_FIELDS.items()})
    backends = _backends(view, family, fields)
    if not view.disabled and view.backends and not backends:
        report.warning("spec.backends", f"no active IPv{family} backend: IPv{family} connections are refused", name)
    lb: dict[str, Any] = {
        "name": name,
        "ports": _ports(view, fields),
        "backends": backends,
        "health_check": dict(view.health_check),
        "source_ranges": _family_ranges(view, family, fields, report, name),
        "preserve_source_ip": view.preserve_source_ip,
        "session_affinity": view.session_affinity,
        "source": LOADBALANCER.lb_source,
    }
    if view.affinity_timeout is not None:
        lb["session_affinity_timeout_s"] = view.affinity_timeout
    return lb, FieldSources(subject=view.key, fields=fields)


def _health_check(spec: Mapping[str, Any], report: Report) -> dict[str, Any]:
    raw = spec.get("healthCheck")
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        report.problem("spec.healthCheck", f"expected a mapping, got {raw!r}")
        return {}
    for name in raw:
        if name not in HEALTH_CHECK_FIELDS:
            report.problem(field_path("spec", "healthCheck", str(name)), f"unknown field (known: {', '.join(HEALTH_CHECK_FIELDS)})")
    return {HEALTH_CHECK_FIELDS[name]: value for name, value in raw.items() if name in HEALTH_CHECK_FIELDS}


def _view(key: str, spec: Mapping[str, Any], families: _Families, listeners: Sequence[tuple[int, Mapping[str, Any]]],
          backends: Sequence[tuple[int, Mapping[str, Any]]], report: Report) -> _View:
    if not listeners:
        report.problem("spec.listeners", "is required: at least one listener")
    for spec_index, item in backends:
        if item.get("adminState", "active") not in ADMIN_STATES:
            report.problem(field_path("spec", "backends", spec_index, "adminState"),
                           f"unsupported value {item.get('adminState')!r} (expected one of: {', '.join(ADMIN_STATES)})")
    affinity = _AFFINITY[_choice(spec, "sessionAffinity", tuple(_AFFINITY), "none", report)]
    if affinity == "client_ip":
        report.warning("spec.sessionAffinity", AFFINITY_REFRESH_WARNING)
    return _View(
        key=key, listeners=tuple(listeners), backends=tuple(backends), health_check=_health_check(spec, report),
        source_ranges=_source_ranges(spec, report), preserve_source_ip=spec.get("preserveSourceIP", True),
        session_affinity=affinity, affinity_timeout=spec.get("sessionAffinityTimeoutSeconds"),
        disabled=_choice(spec, "state", STATES, "active", report) == "disabled",
        split_backends=len(families.served) > 1,
    )


def _status_ips(obj: Mapping[str, Any]) -> list[str]:
    status = obj.get("status")
    found = []
    for text in (status.get("addresses") if isinstance(status, Mapping) else None) or []:
        try:
            found.append(str(parse_address(text)))
        except ValueError:
            continue
    return found


def translate_loadbalancer(obj: Mapping[str, Any], options: TranslateOptions) -> dict[str, Any]:
    """One ``portico_k8s_services`` entry for a LoadBalancer resource Portico serves; problems mean
    it is not served (and say why, on its own fields)."""
    meta, spec = _meta(obj), _spec(obj)
    key = LOADBALANCER.key(options.cluster, str(meta.get("namespace", "")), str(meta.get("name", "")))
    report = Report(key)
    listeners = _items(spec, "listeners", report)
    backends = _items(spec, "backends", report)
    addresses = _items(spec, "addresses", report)
    families = _families(spec, addresses, backends, report)
    requested = _addresses(addresses, families.served, report)
    view = _view(key, spec, families, listeners, backends, report)
    loadbalancers: list[dict[str, Any]] = []
    sources: list[FieldSources] = []
    if not report.problems:
        for index, family in enumerate(families.served):
            lb, lb_sources = _loadbalancer(view, index, family, report)
            loadbalancers.append(lb)
            sources.append(lb_sources)
            report.problems.extend(p for p in model_problems(lb, family, lb_sources, check_backends=True)
                                   if p not in report.problems)
    sharing_key = spec.get("sharingKey")
    return {
        "kind": LOADBALANCER.kind,
        **object_identity(options, meta),
        "ip_families": families.served,
        "optional_families": families.optional,
        "requested_ips": [],
        "requested_ips_field": "spec.addresses",
        "addresses": requested,
        "status_ips": _status_ips(obj),
        "status_ips_field": LOADBALANCER.status_ips_field,
        "pool": None,
        "pool_field": "spec.addresses",
        "sharing_key": sharing_key if isinstance(sharing_key, str) and sharing_key else None,
        "loadbalancers": [] if report.problems else loadbalancers,
        # Clash fields (name, listener ports) map alike in every family's LB: the first one says it.
        "field_sources": clash_sources(sources[0]) if sources and not report.problems else {},
        "claimed": is_claimed(obj, options, LOADBALANCER.finalizer),
        "release": False,
        "problems": to_data(report.problems),
        "warnings": to_data(report.warnings),
        "status_details": {"generation": meta.get("generation"), "state": view.disabled and "disabled" or "active"},
    }


def _release_entry(obj: Mapping[str, Any], options: TranslateOptions, reason: str) -> dict[str, Any]:
    """A resource Portico must give up: no LBs, its addresses held until the write-back released it."""
    meta = _meta(obj)
    return {
        "kind": LOADBALANCER.kind, **object_identity(options, meta), "ip_families": [], "requested_ips": [],
        "status_ips": _status_ips(obj), "status_ips_field": LOADBALANCER.status_ips_field, "pool": None,
        "sharing_key": None, "loadbalancers": [], "field_sources": {}, "release": True, "release_reason": reason,
        "problems": [], "warnings": [], "status_details": {"generation": meta.get("generation")},
    }


def _broken_entry(obj: Any, options: TranslateOptions, err: Exception) -> dict[str, Any]:
    """A resource whose shape surprised the translation: reported, never fatal to the others."""
    meta = _meta(obj) if isinstance(obj, Mapping) else {}
    key = LOADBALANCER.key(options.cluster, str(meta.get("namespace", "")), str(meta.get("name", "")))
    problem = Problem(key, "spec", f"cannot be translated ({type(err).__name__}: {err})")
    return {
        "kind": LOADBALANCER.kind, **object_identity(options, meta), "ip_families": [], "requested_ips": [],
        "status_ips": [], "pool": None, "sharing_key": None, "loadbalancers": [], "field_sources": {},
        "release": False, "problems": to_data([problem]), "warnings": [],
        "status_details": {"generation": meta.get("generation")},
    }


def translate_loadbalancers(objects: Iterable[Mapping[str, Any]], options: TranslateOptions) -> Translation:
    """Entries for the LoadBalancer resources Portico serves or must release in one cluster,
    sorted by namespace/name; ``skipped`` counts the others by ``SKIP_REASONS`` key. Each is
    translated every run (they read nothing but themselves: no reuse needed)."""
    result = Translation(entries=[], digests={}, skipped={})
    for obj in objects:
        try:
            scope = scope_of_loadbalancer(obj, options)
            if scope.action == "serve":
                result.entries.append(translate_loadbalancer(obj, options))
                result.translated += 1
            elif scope.action == "release":
                result.entries.append(_release_entry(obj, options, scope.reason))
            else:
                result.skipped[scope.reason] = result.skipped.get(scope.reason, 0) + 1
        except Exception as err:  # pylint: disable=broad-except  # one odd object must not hide the others
            result.entries.append(_broken_entry(obj, options, err))
    result.entries.sort(key=lambda entry: (entry["cluster"], entry["namespace"], entry["name"]))
    return result
