# -*- coding: utf-8 -*-
# Copyright: Portico developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What portico-console shows, computed from what Portico already collects (pure, no I/O).

The input is the status play's snapshot (``playbooks/status.yml -e portico_status_dir=DIR``
writes ``DIR/status.json``: per gateway ``gateway_status`` and ``lb_details``). Two snapshots in a
row give rates: a counter's increase over the time between them, summed over the gateways (each
gateway counts what it forwards). Lives on the controller only (plugin_utils: never shipped to a
gateway, and nothing here needs Ansible).
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass, field
from typing import Any, Mapping

# The LB model's ``source`` as people call it.
SOURCE_LABELS = {"static": "inventory", "kubernetes": "Service", "loadbalancer": "LoadBalancer resource",
                 "route": "route", "gateway-api": "route"}
TRAFFIC_KEYS = ("new_connections", "packets_in", "packets_out", "bytes_in", "bytes_out")


def source_label(source: str) -> str:
    return SOURCE_LABELS.get(source, source or "inventory")


def snapshot_time(snapshot: Mapping[str, Any]) -> float | None:
    """When the snapshot was written (its ``generated``), as a UNIX time."""
    try:
        stamp = datetime.datetime.strptime(str(snapshot.get("generated", "")), "%Y-%m-%dT%H:%M:%SZ")
    except ValueError:
        return None
    return stamp.replace(tzinfo=datetime.timezone.utc).timestamp()


@dataclass
class GatewayView:
    name: str
    reachable: bool
    mode: str = ""
    drained: bool = False
    healthd_running: bool = False
    problems: list[str] = field(default_factory=list)


@dataclass
class BackendView:
    address: str
    name: str | None
    states: dict[str, str]  # gateway -> up / down / unchecked
    since: float | None
    latency: float | None
    detail: str
    new_connections: int | None
    new_per_s: float | None

    @property
    def state(self) -> str:
        """Down when a gateway sees it down (that gateway stops sending it traffic)."""
        values = set(self.states.values())
        if "down" in values:
            return "down"
        return "up" if "up" in values else "unchecked"


@dataclass
class LbView:
    name: str
    vip: str
    source: str
    pool: str
    listeners: list[dict[str, Any]]
    announced_by: list[str]
    gateways: list[str]  # gateways serving it
    healthy: int
    total: int
    backends: list[BackendView]
    traffic: dict[str, int] | None  # totals over gateways
    rates: dict[str, float] | None  # per second, from the previous snapshot
    dropped_packets: int | None
    per_gateway: dict[str, dict[str, Any]]  # gateway -> its traffic totals and health counts

    @property
    def ports(self) -> str:
        return ", ".join(f"{item['port']}/{item['protocol']}" for item in self.listeners)


def gateways(snapshot: Mapping[str, Any]) -> list[GatewayView]:
    views = []
    for name, status in sorted((snapshot.get("status") or {}).items()):
        details = (snapshot.get("details") or {}).get(name)
        if not isinstance(status, Mapping) or status.get("failed") or status.get("unreachable"):
            message = (status or {}).get("msg", "unreachable or failed") if isinstance(status, Mapping) else "unreachable or failed"
            views.append(GatewayView(name, False, problems=[f"no status: {message}"]))
            continue
        views.append(GatewayView(name, True, mode=str(status.get("mode", "")), drained=bool(status.get("drained")),
                                 healthd_running=bool((details or {}).get("healthd_running", True)),
                                 problems=[str(p) for p in status.get("problems") or []]))
    return views


def _vip_key(vip: str) -> tuple[int, Any]:
    try:
        address = ipaddress.ip_address(vip)
        return (address.version, address)
    except ValueError:
        return (9, vip)


def _rate(now: int | None, before: int | None, seconds: float | None) -> float | None:
    if now is None or before is None or not seconds or seconds <= 0 or now < before:
        return None  # a counter that went back restarted (reboot, LB re-created): no rate this time
    return (now - before) / seconds


def loadbalancers(snapshot: Mapping[str, Any], previous: Mapping[str, Any] | None = None) -> list[LbView]:
    """Every LB any gateway serves, merged over gateways, with rates against ``previous``."""
    seconds = None
    if previous is not None:
        now_t, before_t = snapshot_time(snapshot), snapshot_time(previous)
        seconds = now_t - before_t if now_t is not None and before_t is not None else None
    merged: dict[str, dict[str, Mapping[str, Any]]] = {}  # lb -> gateway -> its details
    for gateway, details in sorted((snapshot.get("details") or {}).items()):
        for name, lb in ((details or {}).get("loadbalancers") or {}).items():
            merged.setdefault(name, {})[gateway] = lb
    old: dict[str, dict[str, Mapping[str, Any]]] = {}
    for gateway, details in ((previous or {}).get("details") or {}).items():
        for name, lb in ((details or {}).get("loadbalancers") or {}).items():
            old.setdefault(name, {})[gateway] = lb
    status = snapshot.get("status") or {}
    views = [_lb_view(name, per_gateway, old.get(name, {}), status, seconds) for name, per_gateway in merged.items()]
    return sorted(views, key=lambda view: (_vip_key(view.vip), view.name))


def _lb_view(name: str, per_gateway: Mapping[str, Mapping[str, Any]], before: Mapping[str, Mapping[str, Any]],
             status: Mapping[str, Any], seconds: float | None) -> LbView:
    first = next(iter(per_gateway.values()))
    vip = str(first.get("vip", ""))
    announced = sorted(gw for gw in per_gateway
                       if isinstance(status.get(gw), Mapping) and ((status[gw].get("vips") or {}).get(vip) or {}).get("announced"))
    totals: dict[str, int] | None = None
    old_totals: dict[str, int] | None = None
    shares: dict[str, dict[str, Any]] = {}
    for gateway, lb in per_gateway.items():
        shares[gateway] = {"healthy": lb.get("healthy", 0), "total": lb.get("total", 0), "traffic": lb.get("traffic")}
        if lb.get("traffic"):
            totals = {key: (totals or {}).get(key, 0) + int(lb["traffic"].get(key, 0)) for key in TRAFFIC_KEYS}
        if (before.get(gateway) or {}).get("traffic"):
            old_totals = {key: (old_totals or {}).get(key, 0) + int(before[gateway]["traffic"].get(key, 0)) for key in TRAFFIC_KEYS}
    rates = None
    if totals is not None and old_totals is not None:
        computed = {key: _rate(totals[key], old_totals[key], seconds) for key in TRAFFIC_KEYS}
        rates = {key: value for key, value in computed.items() if value is not None} or None
    backends = _backends(per_gateway, before, seconds)
    healthy = min((int(lb.get("healthy", 0)) for lb in per_gateway.values()), default=0)
    drops = [lb.get("dropped_packets") for lb in per_gateway.values() if lb.get("dropped_packets") is not None]
    return LbView(name=name, vip=vip, source=source_label(str(first.get("source", ""))), pool=str(first.get("pool") or ""),
                  listeners=_listeners(per_gateway), announced_by=announced, gateways=sorted(per_gateway),
                  healthy=healthy, total=int(first.get("total", 0)), backends=backends, traffic=totals, rates=rates,
                  dropped_packets=sum(drops) if drops else None, per_gateway=shares)


def _listeners(per_gateway: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Each listener with its counters summed over gateways."""
    merged: dict[tuple[str, int], dict[str, Any]] = {}
    for lb in per_gateway.values():
        for item in lb.get("listeners") or []:
            entry = merged.setdefault((str(item.get("protocol")), int(item.get("port", 0))),
                                      {"protocol": item.get("protocol"), "port": item.get("port"),
                                       "backend_port": item.get("backend_port")})
            for key in TRAFFIC_KEYS:
                if key in item:
                    entry[key] = entry.get(key, 0) + int(item[key])
    return [merged[key] for key in sorted(merged)]


def _backends(per_gateway: Mapping[str, Mapping[str, Any]], before: Mapping[str, Mapping[str, Any]],
              seconds: float | None) -> list[BackendView]:
    rows: dict[str, BackendView] = {}
    old_counts: dict[str, int] = {}
    for lb in before.values():
        for backend in lb.get("backends") or []:
            if backend.get("new_connections") is not None:
                old_counts[backend["address"]] = old_counts.get(backend["address"], 0) + int(backend["new_connections"])
    for gateway, lb in per_gateway.items():
        for backend in lb.get("backends") or []:
            address = str(backend.get("address", ""))
            row = rows.setdefault(address, BackendView(address, backend.get("name"), {}, None, None, "", None, None))
            row.states[gateway] = str(backend.get("state", "unchecked"))
            if backend.get("since") is not None:
                # Since when it is in its state, as the gateway that changed last saw it.
                row.since = max(row.since or 0.0, float(backend["since"]))
            if backend.get("latency") is not None:
                row.latency = max(row.latency or 0.0, float(backend["latency"]))
            if backend.get("detail"):
                row.detail = f"{row.detail}; {gateway}: {backend['detail']}" if row.detail else str(backend["detail"])
            if backend.get("new_connections") is not None:
                row.new_connections = (row.new_connections or 0) + int(backend["new_connections"])
    for address, row in rows.items():
        row.new_per_s = _rate(row.new_connections, old_counts.get(address), seconds)
    return sorted(rows.values(), key=lambda row: _vip_key(row.address))
