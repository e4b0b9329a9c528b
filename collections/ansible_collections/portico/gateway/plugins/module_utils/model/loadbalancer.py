# -*- coding: utf-8 -*-
# Copyright: Portico developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The load balancer definition: the one model every Portico component shares.

Static LBs from inventory and LBs generated from Kubernetes Services both pass
through ``parse_loadbalancer`` so a bad definition is refused in one place. Problems are
``Problem``s about the LB (its name) and a field of the definition.

Standard library only: this file also runs on gateways inside modules.
"""

from __future__ import annotations

import difflib
import hashlib
import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from ansible_collections.portico.gateway.plugins.module_utils.model.documents import (
    LB_MODEL_FORMAT,
    BackendSetPacker,
    DocumentError,
    decode,
    encode,
    set_id,
)
from ansible_collections.portico.gateway.plugins.module_utils.model.ipam import (
    IPAddress,
    IPNetwork,
    Pool,
    parse_address,
    parse_network,
    pool_of,
)
from ansible_collections.portico.gateway.plugins.module_utils.model.problems import Problem, Report, field_path, render

PROTOCOLS = ("tcp", "udp")
HEALTH_CHECK_TYPES = ("none", "tcp", "http", "https", "udp")
SESSION_AFFINITIES = ("none", "client_ip")
# Kubernetes' sessionAffinityConfig.clientIP.timeoutSeconds: default and valid range.
DEFAULT_AFFINITY_TIMEOUT_S = 10800
MAX_AFFINITY_TIMEOUT_S = 86400
MAX_WEIGHT = 1000

LB_FIELDS = (
    "name", "vip", "pool", "ports", "backends", "health_check", "source_ranges",
    "preserve_source_ip", "session_affinity", "session_affinity_timeout_s", "snat_address", "source",
)
PORT_FIELDS = ("name", "protocol", "port", "backend_port")
BACKEND_FIELDS = ("address", "weight", "port", "name")
HEALTH_CHECK_FIELDS = (
    "type", "port", "path", "host", "expected_status", "interval_ms", "timeout_ms",
    "rise", "fall", "send", "expect",
)
HEALTH_CHECK_DEFAULTS: dict[str, Any] = {
    "type": "tcp",
    "port": None,
    "path": "/",
    "host": None,
    "expected_status": [200],
    # Sub-second detection (interval x fall + interval = 800 ms) with hysteresis against flapping.
    "interval_ms": 200,
    "timeout_ms": 150,
    "rise": 2,
    "fall": 3,
    "send": None,
    "expect": None,
}
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,252}")  # whole names only (fullmatch)
# Port names end up in nftables comments and status text: letters, digits, '.', '_', '-'.
_PORT_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")


class LBValidationError(ValueError):
    """One or more problems with a definition."""

    def __init__(self, problems: Sequence[Problem]):
        super().__init__("\n".join(render(problems)))
        self.problems = list(problems)


@dataclass(frozen=True)
class Port:
    name: str
    protocol: str
    port: int
    backend_port: int


@dataclass(frozen=True)
class Backend:
    address: str
    weight: int = 1
    port: int | None = None  # overrides every Port.backend_port (direct mode: a pod's targetPort)
    name: str | None = None

    def target_port(self, port: Port) -> int:
        return self.port if self.port is not None else port.backend_port

    def key(self, port: Port) -> str:
        """Stable identity of this backend for one service port (hashing, health)."""
        address = f"[{self.address}]" if ":" in self.address else self.address
        return f"{address}:{self.target_port(port)}"


@dataclass(frozen=True)
class HealthCheck:
    type: str = "tcp"
    port: int | None = None
    path: str = "/"
    host: str | None = None
    expected_status: tuple[int, ...] = (200,)
    interval_ms: int = 200
    timeout_ms: int = 150
    rise: int = 2
    fall: int = 3
    send: str | None = None
    expect: str | None = None


@dataclass(frozen=True)
class LoadBalancer:
    name: str
    vip: str
    family: int
    pool: str
    ports: tuple[Port, ...]
    backends: tuple[Backend, ...]
    health_check: HealthCheck = field(default_factory=HealthCheck)
    source_ranges: tuple[str, ...] = ()
    preserve_source_ip: bool = True
    session_affinity: str = "none"
    # client_ip only: how long a client keeps its backend after its last new connection.
    session_affinity_timeout_s: int | None = None
    snat_address: str | None = None
    source: str = "static"

    @property
    def ident(self) -> str:
        """Short identifier safe for nftables object names, stable for a name."""
        slug = re.sub(r"[^a-z0-9]+", "_", self.name.lower()).strip("_")[:24]
        digest = hashlib.sha256(self.name.encode()).hexdigest()[:8]
        return f"{slug}_{digest}" if slug else digest

    def to_dict(self, backends: Any = None) -> dict[str, Any]:
        """Plain data, re-parseable by ``parse_loadbalancer`` (used to ship the model to modules).

        ``backends``: what to write instead of the backend list (a backend set reference).
        Spelled out field by field: ``dataclasses.asdict`` costs seconds at thousands of LBs.
        """
        check = self.health_check
        data: dict[str, Any] = {
            "name": self.name, "vip": self.vip, "pool": self.pool,
            "ports": [{"name": p.name, "protocol": p.protocol, "port": p.port, "backend_port": p.backend_port} for p in self.ports],
            "backends": backends if backends is not None else backend_dicts(self.backends),
            "health_check": {
                "type": check.type, "port": check.port, "path": check.path, "host": check.host,
                "expected_status": list(check.expected_status), "interval_ms": check.interval_ms,
                "timeout_ms": check.timeout_ms, "rise": check.rise, "fall": check.fall, "send": check.send,
                "expect": check.expect,
            },
            "source_ranges": list(self.source_ranges), "preserve_source_ip": self.preserve_source_ip,
            "session_affinity": self.session_affinity,
        }
        if self.session_affinity_timeout_s is not None:
            data["session_affinity_timeout_s"] = self.session_affinity_timeout_s
        if self.snat_address is not None:
            data["snat_address"] = self.snat_address
        data["source"] = self.source
        return data


def probe_port(lb: LoadBalancer, backend: Backend) -> int:
    """Health-check port of one backend: the configured one, else where the first listener of the
    probe's protocol sends its traffic (the model guarantees there is one)."""
    if lb.health_check.port is not None:
        return lb.health_check.port
    protocol = "udp" if lb.health_check.type == "udp" else "tcp"
    candidates = sorted(lb.ports, key=lambda p: (p.protocol != protocol, p.port))
    return backend.target_port(candidates[0])


def check_identity(lb: LoadBalancer) -> tuple[Any, ...]:
    """What the health checker probes for this LB's serving backends, and how: equal for two LBs
    exactly when they get one verdict per backend (the checker probes each identity once)."""
    hc = lb.health_check
    if hc.type == "none":
        return ("none",)
    probes = tuple(sorted((b.address, probe_port(lb, b)) for b in lb.backends if b.weight > 0))
    return (hc.type, hc.path, hc.host, hc.expected_status, hc.interval_ms, hc.timeout_ms, hc.rise, hc.fall,
            hc.send, hc.expect, probes)


def backend_dicts(backends: Iterable[Backend]) -> list[dict[str, Any]]:
    """Backends as plain data (fields that are not set are left out)."""
    result = []
    for backend in backends:
        item: dict[str, Any] = {"address": backend.address, "weight": backend.weight}
        if backend.port is not None:
            item["port"] = backend.port
        if backend.name is not None:
            item["name"] = backend.name
        result.append(item)
    return result


def _unknown_fields(raw: Mapping[str, Any], known: Sequence[str], parent: str, report: Report) -> None:
    for key in raw:
        if key in known:
            continue
        hint = difflib.get_close_matches(str(key), known, n=1)
        suggestion = f" (did you mean '{hint[0]}'?)" if hint else f" (known: {', '.join(known)})"
        report.problem(field_path(parent, str(key)), f"unknown field{suggestion}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int_in(value: Any, low: int, high: int, where: str, report: Report) -> int | None:
    if not _is_int(value):
        report.problem(where, f"expected an integer from {low} to {high}, got {value!r}")
        return None
    if not low <= value <= high:
        report.problem(where, f"{value} is out of range {low}-{high}")
        return None
    return int(value)


def _parse_ip(value: Any, where: str, report: Report) -> IPAddress | None:
    if not isinstance(value, str):
        report.problem(where, f"expected an IP address, got {value!r}")
        return None
    try:
        return parse_address(value)
    except ValueError:
        report.problem(where, f"{value!r} is not an IP address")
        return None


def _parse_ports(raw: Any, report: Report) -> tuple[Port, ...]:
    if not isinstance(raw, list) or not raw:
        report.problem("ports", "expected a non-empty list of {protocol, port, backend_port}")
        return ()
    ports: list[Port] = []
    seen: dict[tuple[str, int], int] = {}
    for index, item in enumerate(raw):
        where = field_path("ports", index)
        if not isinstance(item, Mapping):
            report.problem(where, f"expected a mapping, got {item!r}")
            continue
        _unknown_fields(item, PORT_FIELDS, where, report)
        protocol = item.get("protocol", "tcp")
        if not isinstance(protocol, str) or protocol.lower() not in PROTOCOLS:
            report.problem(field_path(where, "protocol"), f"unknown protocol {protocol!r} (expected one of: {', '.join(PROTOCOLS)})")
            protocol = None
        else:
            protocol = protocol.lower()
        if "port" not in item:
            report.problem(field_path(where, "port"), "is required")
            continue
        port = _int_in(item["port"], 1, 65535, field_path(where, "port"), report)
        backend_port = port
        if "backend_port" in item:
            backend_port = _int_in(item["backend_port"], 1, 65535, field_path(where, "backend_port"), report)
        name = item.get("name")
        if name is not None and not (isinstance(name, str) and _PORT_NAME_RE.fullmatch(name)):
            report.problem(field_path(where, "name"), f"expected letters, digits and . _ - (1-63 chars), got {name!r}")
            name = None
        if protocol is None or port is None or backend_port is None:
            continue
        if (protocol, port) in seen:
            report.problem(field_path(where, "port"), f"{protocol}/{port} is already declared by ports[{seen[(protocol, port)]}]")
            continue
        seen[(protocol, port)] = index
        ports.append(Port(name=name or f"{protocol}-{port}", protocol=protocol, port=port, backend_port=backend_port))
    return tuple(ports)


def _parse_backends(raw: Any, family: int | None, report: Report) -> tuple[Backend, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        report.problem("backends", f"expected a list of {{address, weight}}, got {raw!r}")
        return ()
    backends: list[Backend] = []
    seen: dict[tuple[str, int | None], int] = {}
    for index, item in enumerate(raw):
        where = field_path("backends", index)
        if isinstance(item, str):
            item = {"address": item}
        if not isinstance(item, Mapping):
            report.problem(where, f"expected a mapping or an address, got {item!r}")
            continue
        _unknown_fields(item, BACKEND_FIELDS, where, report)
        address = _parse_ip(item.get("address"), field_path(where, "address"), report)
        weight = _int_in(item.get("weight", 1), 0, MAX_WEIGHT, field_path(where, "weight"), report)
        port = None
        if item.get("port") is not None:
            port = _int_in(item["port"], 1, 65535, field_path(where, "port"), report)
        if address is None or weight is None:
            continue
        if family is not None and address.version != family:
            report.problem(field_path(where, "address"), f"{address} is IPv{address.version} but the vip is IPv{family}")
            continue
        key = (str(address), port)
        if key in seen:
            report.problem(field_path(where, "address"), f"{address} is listed twice (also backends[{seen[key]}])")
            continue
        seen[key] = index
        name = item.get("name")
        backends.append(Backend(address=str(address), weight=weight, port=port, name=name if isinstance(name, str) else None))
    return tuple(backends)


class BackendSets:
    """The backend sets of a document (``model.documents``): each set is parsed once per address
    family and every LB that references it shares the result (and its problems, if any)."""

    def __init__(self, raw_sets: Mapping[str, Any] | None = None):
        self.raw: Mapping[str, Any] = raw_sets or {}
        self._parsed: dict[tuple[str, int | None], tuple[tuple[Backend, ...], list[Problem]]] = {}

    def backends(self, raw: Any, family: int | None, report: Report) -> tuple[Backend, ...]:
        ident = set_id(raw)
        if ident is None:
            return _parse_backends(raw, family, report)
        if ident not in self.raw:
            report.problem("backends", f"unknown backend set {ident!r}")
            return ()
        key = (ident, family)
        if key not in self._parsed:
            scratch = Report("")
            self._parsed[key] = (_parse_backends(self.raw[ident], family, scratch), scratch.problems)
        parsed, problems = self._parsed[key]
        for problem in problems:
            report.problem(problem.field, problem.message)
        return parsed


def _parse_health_check(raw: Any, ports: Sequence[Port], report: Report) -> HealthCheck:
    protocols = {port.protocol for port in ports}
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        report.problem("health_check", f"expected a mapping, got {raw!r}")
        return HealthCheck()
    _unknown_fields(raw, HEALTH_CHECK_FIELDS, "health_check", report)
    merged = {**HEALTH_CHECK_DEFAULTS, **{k: v for k, v in raw.items() if k in HEALTH_CHECK_FIELDS}}
    if "type" not in raw and ports and "tcp" not in protocols:
        # UDP-only: a TCP probe would always fail, and UDP needs a payload the service answers.
        merged["type"] = "none"
    kind = merged["type"]
    if kind not in HEALTH_CHECK_TYPES:
        report.problem("health_check.type", f"unknown type {kind!r} (expected one of: {', '.join(HEALTH_CHECK_TYPES)})")
        kind = "tcp"
    port = None
    if merged["port"] is not None:
        port = _int_in(merged["port"], 1, 65535, "health_check.port", report)
    elif ports and kind in ("tcp", "http", "https", "udp"):
        wanted = "udp" if kind == "udp" else "tcp"
        if wanted not in protocols:
            report.problem("health_check.port", f"is required: a {kind} check needs a {wanted} listener or an explicit port")
    interval = _int_in(merged["interval_ms"], 50, 60000, "health_check.interval_ms", report) or HealthCheck.interval_ms
    timeout = _int_in(merged["timeout_ms"], 10, 60000, "health_check.timeout_ms", report) or HealthCheck.timeout_ms
    if timeout > interval:
        report.problem("health_check.timeout_ms", f"{timeout} ms is longer than interval_ms {interval}")
    rise = _int_in(merged["rise"], 1, 100, "health_check.rise", report) or HealthCheck.rise
    fall = _int_in(merged["fall"], 1, 100, "health_check.fall", report) or HealthCheck.fall
    path = merged["path"]
    if not isinstance(path, str) or not path.startswith("/"):
        report.problem("health_check.path", f"expected an absolute path starting with '/', got {path!r}")
        path = "/"
    statuses = merged["expected_status"]
    if _is_int(statuses):
        statuses = [statuses]
    if not isinstance(statuses, list) or not statuses or not all(_is_int(s) and 100 <= s <= 599 for s in statuses):
        report.problem("health_check.expected_status", f"expected HTTP status codes 100-599, got {statuses!r}")
        statuses = [200]
    for text_field in ("host", "send", "expect"):
        if merged[text_field] is not None and not isinstance(merged[text_field], str):
            report.problem(f"health_check.{text_field}", f"expected a string, got {merged[text_field]!r}")
            merged[text_field] = None
    return HealthCheck(
        type=kind, port=port, path=path, host=merged["host"], expected_status=tuple(statuses),
        interval_ms=interval, timeout_ms=timeout, rise=rise, fall=fall,
        send=merged["send"], expect=merged["expect"],
    )


def _parse_source_ranges(raw: Any, family: int | None, report: Report) -> tuple[str, ...]:
    if raw is None or raw == []:
        if family is None:
            return ()
        return ("0.0.0.0/0",) if family == 4 else ("::/0",)
    if not isinstance(raw, list):
        report.problem("source_ranges", f"expected a list of CIDRs, got {raw!r}")
        return ()
    ranges: list[IPNetwork] = []
    for index, item in enumerate(raw):
        where = field_path("source_ranges", index)
        try:
            network = parse_network(item)
        except ValueError:
            report.problem(where, f"{item!r} is not a CIDR")
            continue
        if family is not None and network.version != family:
            report.problem(where, f"{network} is IPv{network.version} but the vip is IPv{family}")
            continue
        ranges.append(network)
    # Collapsing keeps the rendered interval set free of overlaps nft would refuse. Per family:
    # with no valid vip both may be listed, and collapse_addresses raises on a mix.
    return tuple(str(net) for version in (4, 6)
                 for net in ipaddress.collapse_addresses(n for n in ranges if n.version == version))


def _parse_vip(raw: Mapping[str, Any], pools: Mapping[str, Pool], report: Report) -> tuple[IPAddress | None, str]:
    vip = _parse_ip(raw.get("vip"), "vip", report) if "vip" in raw else None
    if "vip" not in raw:
        report.problem("vip", "is required (allocation from a pool happens before the model)")
    pool_name = raw.get("pool")
    if pool_name is not None and not isinstance(pool_name, str):
        report.problem("pool", f"expected a pool name, got {pool_name!r}")
        pool_name = None
    if vip is None:
        return None, pool_name or ""
    if pool_name is not None:
        pool = pools.get(pool_name)
        if pool is None:
            known = ", ".join(sorted(pools)) or "none defined"
            report.problem("pool", f"unknown pool {pool_name!r} (pools: {known})")
        elif not pool.contains(vip):
            report.problem("vip", f"{vip} is outside pool {pool_name!r} ({', '.join(str(r) for r in pool.ranges)})")
        return vip, pool_name
    pool = pool_of(vip, pools)
    if pool is None:
        report.problem("vip", f"{vip} is not in any pool ({', '.join(sorted(pools)) or 'no pools defined'})")
        return vip, ""
    return vip, pool.name


def _parse_snat_address(raw: Any, family: int | None, report: Report) -> str | None:
    if raw is None:
        return None
    snat_ip = _parse_ip(raw, "snat_address", report)
    if snat_ip is None:
        return None
    if family is not None and snat_ip.version != family:
        report.problem("snat_address", f"{snat_ip} is IPv{snat_ip.version} but the vip is IPv{family}")
    return str(snat_ip)


def _parse_affinity(raw: Mapping[str, Any], report: Report) -> tuple[str, int | None]:
    """session_affinity and its timeout: client_ip defaults to Kubernetes' 10800 s, and a timeout
    without client_ip affinity is refused (as the API refuses a config with affinity None)."""
    affinity = raw.get("session_affinity", "none")
    if affinity not in SESSION_AFFINITIES:
        report.problem("session_affinity", f"unknown value {affinity!r} (expected one of: {', '.join(SESSION_AFFINITIES)})")
        return "none", None
    timeout = raw.get("session_affinity_timeout_s")
    if affinity != "client_ip":
        if timeout is not None:
            report.problem("session_affinity_timeout_s", "is only allowed with session_affinity client_ip")
        return str(affinity), None
    if timeout is None:
        return "client_ip", DEFAULT_AFFINITY_TIMEOUT_S
    return "client_ip", _int_in(timeout, 1, MAX_AFFINITY_TIMEOUT_S, "session_affinity_timeout_s", report)


def parse_loadbalancer(raw: Any, pools: Mapping[str, Pool], backend_sets: BackendSets | None = None) -> LoadBalancer:
    """Parse, default and validate one definition; raise LBValidationError listing every problem.

    ``backend_sets``: the sets a ``{"set": id}`` backend list may refer to (``model.documents``).
    """
    if not isinstance(raw, Mapping):
        raise LBValidationError([Problem("<unnamed>", "definition", f"expected a mapping, got {type(raw).__name__}")])
    name = raw.get("name")
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        label = name if isinstance(name, str) and name else "<unnamed>"
        raise LBValidationError([Problem(label, "name", f"expected letters, digits and . _ / - (1-253 chars), got {name!r}")])
    report = Report(name)
    _unknown_fields(raw, LB_FIELDS, "", report)
    vip, pool_name = _parse_vip(raw, pools, report)
    family = vip.version if vip is not None else None
    ports = _parse_ports(raw.get("ports"), report)
    backends = (backend_sets or BackendSets()).backends(raw.get("backends"), family, report)
    health_check = _parse_health_check(raw.get("health_check"), ports, report)
    source_ranges = _parse_source_ranges(raw.get("source_ranges"), family, report)
    preserve = raw.get("preserve_source_ip", True)
    if not isinstance(preserve, bool):
        report.problem("preserve_source_ip", f"expected true or false, got {preserve!r}")
    affinity, affinity_timeout = _parse_affinity(raw, report)
    snat_address = _parse_snat_address(raw.get("snat_address"), family, report)
    source = raw.get("source", "static")
    if report.problems or vip is None:
        raise LBValidationError(report.problems)
    return LoadBalancer(
        name=name, vip=str(vip), family=vip.version, pool=pool_name, ports=ports, backends=backends,
        health_check=health_check, source_ranges=source_ranges, preserve_source_ip=bool(preserve),
        session_affinity=affinity, session_affinity_timeout_s=affinity_timeout, snat_address=snat_address,
        source=str(source),
    )


@dataclass
class ModelResult:
    """Valid LBs, and the refused ones' names and problems (one bad LB never blocks the others)."""

    loadbalancers: list[LoadBalancer]
    problems: list[Problem]
    refused: list[str]


def _listener_clashes(lbs: Iterable[LoadBalancer], existing: Sequence[LoadBalancer] = ()) -> dict[str, list[Problem]]:
    """Problems per LB name for a VIP:protocol:port declared twice; ``existing`` LBs own theirs first."""
    owner = {(lb.vip, port.protocol, port.port): lb.name for lb in existing for port in lb.ports}
    snat_of = {lb.vip: (lb.snat_address, lb.name) for lb in existing if lb.snat_address}
    clashes: dict[str, list[Problem]] = {}
    for lb in lbs:
        problems = [
            Problem(lb.name, field_path("ports", index, "port"),
                    f"{lb.vip} {port.protocol}/{port.port} is already used by {owner[(lb.vip, port.protocol, port.port)]}")
            for index, port in enumerate(lb.ports) if (lb.vip, port.protocol, port.port) in owner
        ]
        if lb.snat_address and snat_of.get(lb.vip, (lb.snat_address,))[0] != lb.snat_address:
            other_address, other = snat_of[lb.vip]
            problems.append(Problem(lb.name, "snat_address", f"{lb.vip} already SNATs to {other_address} for {other}"))
        if problems:
            clashes[lb.name] = problems
            continue  # a refused LB claims nothing, so it cannot block a later one
        owner.update({(lb.vip, port.protocol, port.port): lb.name for port in lb.ports})
        if lb.snat_address:
            snat_of.setdefault(lb.vip, (lb.snat_address, lb.name))
    return clashes


def parse_loadbalancers(
    raws: Any, pools: Mapping[str, Pool], existing: Sequence[LoadBalancer] = (), backend_sets: Mapping[str, Any] | None = None,
) -> ModelResult:
    """Parse a list of definitions; first definition wins a clash, later ones are refused.

    ``raws`` is a list of definitions, or an LB model document (``model.documents``, as JSON text
    or decoded), whose backend sets then apply. ``existing`` are LBs accepted earlier (static
    ones, when parsing Services): their names and listeners are taken, and they are not part of
    the result. ``backend_sets``: the sets a plain list's definitions refer to.
    """
    if raws is None:
        raws = []
    if isinstance(raws, (str, Mapping)):
        try:
            document = decode(raws, LB_MODEL_FORMAT, "loadbalancers")
        except DocumentError as err:
            return ModelResult([], [err.problem], [])
        raws, backend_sets = document["loadbalancers"], document["backend_sets"]
    if not isinstance(raws, list):
        return ModelResult([], [Problem("loadbalancers", "", f"expected a list, got {type(raws).__name__}")], [])
    sets = BackendSets(backend_sets)
    parsed: list[LoadBalancer] = []
    problems: list[Problem] = []
    refused: list[str] = []
    names: set[str] = {lb.name for lb in existing}
    for index, raw in enumerate(raws):
        try:
            lb = parse_loadbalancer(raw, pools, sets)
        except LBValidationError as err:
            name = raw.get("name") if isinstance(raw, Mapping) else None
            label = name if isinstance(name, str) and name else f"loadbalancers[{index}]"
            # A definition without a usable name is named by its place in the list.
            problems.extend(replace(p, subject=label) if p.subject == "<unnamed>" else p for p in err.problems)
            refused.append(label)
            continue
        if lb.name in names:
            problems.append(Problem(lb.name, "name", "defined twice"))
            refused.append(lb.name)
            continue
        names.add(lb.name)
        parsed.append(lb)
    clashes = _listener_clashes(parsed, existing)
    for name, items in clashes.items():
        problems.extend(items)
        refused.append(name)
    valid = [lb for lb in parsed if lb.name not in clashes]
    return ModelResult(loadbalancers=valid, problems=problems, refused=refused)


def encode_model(loadbalancers: Sequence[LoadBalancer]) -> str:
    """The LB model document (JSON text) of validated LBs: each distinct backend list once."""
    packer = BackendSetPacker()
    refs: dict[int, tuple[tuple[Backend, ...], Any]] = {}
    items = []
    for lb in loadbalancers:
        ref = None
        if lb.backends:
            known = refs.get(id(lb.backends))
            if known is None or known[0] is not lb.backends:
                known = (lb.backends, packer.ref(backend_dicts(lb.backends)))
                refs[id(lb.backends)] = known
            ref = known[1]
        items.append(lb.to_dict(backends=ref))
    return encode(LB_MODEL_FORMAT, items, packer.sets)
