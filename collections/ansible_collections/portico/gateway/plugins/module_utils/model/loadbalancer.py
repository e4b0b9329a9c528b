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
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from ansible_collections.portico.gateway.plugins.module_utils.model.ipam import (
    IPAddress,
    IPNetwork,
    Pool,
    pool_of,
)
from ansible_collections.portico.gateway.plugins.module_utils.model.problems import Problem, Report, field_path, render

PROTOCOLS = ("tcp", "udp")
HEALTH_CHECK_TYPES = ("none", "tcp", "http", "https", "udp")
SESSION_AFFINITIES = ("none", "client_ip")
MAX_WEIGHT = 1000

LB_FIELDS = (
    "name", "vip", "pool", "ports", "backends", "health_check", "source_ranges",
    "preserve_source_ip", "session_affinity", "snat_address", "source",
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
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,252}$")


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
    snat_address: str | None = None
    source: str = "static"

    @property
    def ident(self) -> str:
        """Short identifier safe for nftables object names, stable for a name."""
        slug = re.sub(r"[^a-z0-9]+", "_", self.name.lower()).strip("_")[:24]
        digest = hashlib.sha256(self.name.encode()).hexdigest()[:8]
        return f"{slug}_{digest}" if slug else digest

    def to_dict(self) -> dict[str, Any]:
        """Plain data, re-parseable by ``parse_loadbalancer`` (used to ship the model to modules)."""
        data = asdict(self)
        data.pop("family")
        data["health_check"]["expected_status"] = list(self.health_check.expected_status)
        data["ports"] = [dict(p) for p in data["ports"]]
        data["backends"] = [{k: v for k, v in b.items() if v is not None} for b in data["backends"]]
        data["source_ranges"] = list(self.source_ranges)
        if data["snat_address"] is None:
            data.pop("snat_address")
        return data


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
        return ipaddress.ip_address(value.strip())
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
        if name is not None and not isinstance(name, str):
            report.problem(field_path(where, "name"), f"expected a string, got {name!r}")
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
            network = ipaddress.ip_network(str(item).strip(), strict=False)
        except ValueError:
            report.problem(where, f"{item!r} is not a CIDR")
            continue
        if family is not None and network.version != family:
            report.problem(where, f"{network} is IPv{network.version} but the vip is IPv{family}")
            continue
        ranges.append(network)
    # Collapsing keeps the rendered interval set free of overlaps nft would refuse.
    return tuple(str(net) for net in ipaddress.collapse_addresses(ranges)) if ranges else ()


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


def parse_loadbalancer(raw: Any, pools: Mapping[str, Pool]) -> LoadBalancer:
    """Parse, default and validate one definition; raise LBValidationError listing every problem."""
    if not isinstance(raw, Mapping):
        raise LBValidationError([Problem("<unnamed>", "definition", f"expected a mapping, got {type(raw).__name__}")])
    name = raw.get("name")
    if not isinstance(name, str) or not _NAME_RE.match(name):
        label = name if isinstance(name, str) and name else "<unnamed>"
        raise LBValidationError([Problem(label, "name", f"expected letters, digits and . _ / - (1-253 chars), got {name!r}")])
    report = Report(name)
    _unknown_fields(raw, LB_FIELDS, "", report)
    vip, pool_name = _parse_vip(raw, pools, report)
    family = vip.version if vip is not None else None
    ports = _parse_ports(raw.get("ports"), report)
    backends = _parse_backends(raw.get("backends"), family, report)
    health_check = _parse_health_check(raw.get("health_check"), ports, report)
    source_ranges = _parse_source_ranges(raw.get("source_ranges"), family, report)
    preserve = raw.get("preserve_source_ip", True)
    if not isinstance(preserve, bool):
        report.problem("preserve_source_ip", f"expected true or false, got {preserve!r}")
    affinity = raw.get("session_affinity", "none")
    if affinity not in SESSION_AFFINITIES:
        report.problem("session_affinity", f"unknown value {affinity!r} (expected one of: {', '.join(SESSION_AFFINITIES)})")
    snat_address = _parse_snat_address(raw.get("snat_address"), family, report)
    source = raw.get("source", "static")
    if report.problems or vip is None:
        raise LBValidationError(report.problems)
    return LoadBalancer(
        name=name, vip=str(vip), family=vip.version, pool=pool_name, ports=ports, backends=backends,
        health_check=health_check, source_ranges=source_ranges, preserve_source_ip=bool(preserve),
        session_affinity=str(affinity), snat_address=snat_address, source=str(source),
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


def parse_loadbalancers(raws: Any, pools: Mapping[str, Pool], existing: Sequence[LoadBalancer] = ()) -> ModelResult:
    """Parse a list of definitions; first definition wins a clash, later ones are refused.

    ``existing`` are LBs accepted earlier (static ones, when parsing Services): their names and
    listeners are taken, and they are not part of the result.
    """
    if raws is None:
        raws = []
    if not isinstance(raws, list):
        return ModelResult([], [Problem("loadbalancers", "", f"expected a list, got {type(raws).__name__}")], [])
    parsed: list[LoadBalancer] = []
    problems: list[Problem] = []
    refused: list[str] = []
    names: set[str] = {lb.name for lb in existing}
    for index, raw in enumerate(raws):
        try:
            lb = parse_loadbalancer(raw, pools)
        except LBValidationError as err:
            problems.extend(err.problems)
            refused.append(raw.get("name", f"loadbalancers[{index}]") if isinstance(raw, Mapping) else f"loadbalancers[{index}]")
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
