# -*- coding: utf-8 -*-
# Copyright: Portico developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What one gateway knows about each of its load balancers, for the console.

Pure functions joining three things the gateway already has: the LB definitions it applied (the
dataplane record's model: name, VIP, source, listeners, backends), the health checker's state (each
backend's state, since when, probe latency) and the health checker's ``/metrics`` (traffic
counters per listener and backend address, drops per VIP). The ``lb_details`` module returns
this; the status play writes it into the console's snapshot.
Standard library only.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any, Mapping, Sequence

from ansible_collections.portico.gateway.plugins.module_utils.model.loadbalancer import LoadBalancer

# One sample line of the Prometheus text format: name, optional {labels}, value.
_SAMPLE = re.compile(r'^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>[^}]*)\})?\s+(?P<value>\S+)')
_LABEL = re.compile(r'(?P<key>[a-zA-Z_][a-zA-Z0-9_]*)="(?P<value>(?:[^"\\]|\\.)*)"')
_UNESCAPE = re.compile(r"\\(.)")
TRAFFIC_SERIES = ("portico_lb_new_connections_total", "portico_lb_packets_total", "portico_lb_bytes_total",
                  "portico_backend_new_connections_total", "portico_vip_dropped_packets_total")


def parse_samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    """(name, labels, value) of every sample of a Prometheus text exposition (comments skipped)."""
    samples = []
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if not match:
            continue
        try:
            value = float(match["value"])
        except ValueError:
            continue
        labels = {m["key"]: _UNESCAPE.sub(lambda e: "\n" if e[1] == "n" else e[1], m["value"])
                  for m in _LABEL.finditer(match["labels"] or "")}
        samples.append((match["name"], labels, value))
    return samples


def traffic_counters(text: str) -> dict[str, Any]:
    """The traffic series of a ``/metrics`` text: per listener, per backend address, per VIP."""
    listeners: dict[tuple[str, str, int], dict[str, int]] = {}
    backends: dict[str, int] = {}
    drops: dict[str, int] = {}
    for name, labels, value in parse_samples(text):
        if name not in TRAFFIC_SERIES:
            continue
        if name == "portico_backend_new_connections_total":
            backends[labels.get("backend", "")] = int(value)
        elif name == "portico_vip_dropped_packets_total":
            drops[labels.get("vip", "")] = int(value)
        else:
            try:
                key = (labels["vip"], labels["protocol"], int(labels["port"]))
            except (KeyError, ValueError):
                continue
            entry = listeners.setdefault(key, {})
            if name == "portico_lb_new_connections_total":
                entry["new_connections"] = int(value)
            else:
                unit = "packets" if name == "portico_lb_packets_total" else "bytes"
                entry[f"{unit}_{labels.get('direction', 'in')}"] = int(value)
    return {"listeners": listeners, "backends": backends, "drops": drops}


def _canonical(address: str) -> str:
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        return address


def _backend_rows(lb: LoadBalancer, checks: Sequence[Mapping[str, Any]], counts: Mapping[str, int]) -> list[dict[str, Any]]:
    """Every backend of the LB: its health check's verdict (or ``unchecked``) and its new-connection count."""
    rows = []
    by_address: dict[str, list[Mapping[str, Any]]] = {}
    for check in checks:
        by_address.setdefault(_canonical(str(check.get("address", ""))), []).append(check)
    for backend in lb.backends:
        address = _canonical(backend.address)
        found = by_address.get(address, [])
        row: dict[str, Any] = {"address": address, "name": backend.name, "weight": backend.weight,
                               "new_connections": counts.get(address)}
        if found:
            # A backend is up when every check of it is (one per check port).
            row.update(state="up" if all(c.get("up") for c in found) else "down",
                       since=max(float(c.get("since") or 0) for c in found),
                       latency=max(float(c.get("latency") or 0) for c in found),
                       detail="; ".join(sorted({str(c.get("detail", "")) for c in found if c.get("detail")})),
                       checks=[str(c.get("endpoint", "")) for c in found], kind=str(found[0].get("kind", "")))
        else:
            row.update(state="unchecked", since=None, latency=None, detail="", checks=[], kind="none")
        rows.append(row)
    return rows


def lb_details(loadbalancers: Sequence[LoadBalancer], healthd: Mapping[str, Any] | None,
               traffic: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    """LB name -> definition, backends with health and connections, and traffic counters."""
    traffic = traffic or {"listeners": {}, "backends": {}, "drops": {}}
    checks_by_lb: dict[str, list[Mapping[str, Any]]] = {}
    for check in (healthd or {}).get("backends") or []:
        if isinstance(check, Mapping):
            checks_by_lb.setdefault(str(check.get("lb", "")), []).append(check)
    result: dict[str, dict[str, Any]] = {}
    for lb in loadbalancers:
        vip = _canonical(lb.vip)
        listeners = []
        for port in lb.ports:
            counters = traffic["listeners"].get((vip, port.protocol, port.port), {})
            listeners.append({"protocol": port.protocol, "port": port.port, "backend_port": port.backend_port, **counters})
        backends = _backend_rows(lb, checks_by_lb.get(lb.name, []), traffic["backends"])
        totals = {key: sum(item.get(key, 0) for item in listeners)
                  for key in ("new_connections", "packets_in", "packets_out", "bytes_in", "bytes_out")}
        result[lb.name] = {
            "name": lb.name, "vip": vip, "source": lb.source, "pool": lb.pool,
            "listeners": listeners, "backends": backends,
            "healthy": sum(1 for b in backends if b["state"] in ("up", "unchecked")), "total": len(backends),
            "traffic": totals if any(listener.keys() - {"protocol", "port", "backend_port"} for listener in listeners) else None,
            "dropped_packets": traffic["drops"].get(vip),
        }
    return result
