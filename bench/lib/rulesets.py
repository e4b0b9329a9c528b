"""Rulesets under test: Portico's rendered table, and a kube-proxy-iptables-shaped linear chain."""

from __future__ import annotations

import ipaddress
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .netns_topology import BACKEND_ADDRS, HTTP_PORT, BenchError

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "collections"))

from ansible_collections.portico.gateway.plugins.module_utils.dataplane.options import RenderOptions  # noqa: E402
from ansible_collections.portico.gateway.plugins.module_utils.dataplane.render import render_table  # noqa: E402
from ansible_collections.portico.gateway.plugins.module_utils.model import ipam  # noqa: E402
from ansible_collections.portico.gateway.plugins.module_utils.model import loadbalancer as lb_model  # noqa: E402

MEASURED_VIP = "198.51.100.10"
FILLER_NET = ipaddress.ip_network("198.18.128.0/17")
# Common service ports, so fillers look like a real cluster: 8 listeners per filler VIP.
FILLER_PORTS = (80, 443, 8080, 8443, 3306, 5432, 6379, 9090)
POOLS = {"bench": {"addresses": ["198.51.100.0/24", str(FILLER_NET), "2001:db8:100::/64"]}}
# Loading either ruleset variant first removes both: exactly one is live at a time.
UNLOAD_ALL = "table inet portico\ndelete table inet portico\ntable ip linear\ndelete table ip linear\n"


@dataclass(frozen=True)
class PorticoRuleset:
    script: str
    services: int
    parse_seconds: float
    render_seconds: float


def filler_listeners(count: int) -> list[tuple[str, int]]:
    if count > (FILLER_NET.num_addresses - 2) * len(FILLER_PORTS):
        raise BenchError(f"{count} filler services do not fit in {FILLER_NET}")
    return [(str(FILLER_NET[1 + i // len(FILLER_PORTS)]), FILLER_PORTS[i % len(FILLER_PORTS)]) for i in range(count)]


def measured_lb(extra_ports: Sequence[int] = ()) -> dict[str, Any]:
    ports = [{"protocol": "tcp", "port": port, "backend_port": port} for port in (HTTP_PORT, *extra_ports)]
    return {"name": "bench-measured", "vip": MEASURED_VIP, "ports": ports, "backends": list(BACKEND_ADDRS)}


def portico_ruleset(fillers: int, extra_ports: Sequence[int] = ()) -> PorticoRuleset:
    """N single-backend filler services plus the measured 3-backend service, through the real model."""
    raws: list[dict[str, Any]] = [
        {"name": f"filler-{i}", "vip": vip, "ports": [{"protocol": "tcp", "port": port, "backend_port": HTTP_PORT}],
         "backends": [BACKEND_ADDRS[0]]}
        for i, (vip, port) in enumerate(filler_listeners(fillers))
    ]
    raws.append(measured_lb(extra_ports))
    start = time.perf_counter()
    result = lb_model.parse_loadbalancers(raws, ipam.parse_pools(POOLS))
    parsed = time.perf_counter()
    if result.problems:
        raise BenchError(f"lb_model refused bench services: {result.problems[:3]}")
    script = render_table(result.loadbalancers, RenderOptions()).script
    rendered = time.perf_counter()
    return PorticoRuleset(script, fillers, parsed - start, rendered - parsed)


def linear_ruleset(fillers: int) -> str:
    """kube-proxy (iptables mode) shape: one rule per service, the measured one last.

    Every new flow to the measured service walks all N filler rules first.
    The measured service picks a backend at random, as kube-proxy's statistic rules do.
    """
    backends = ", ".join(f"{i} : {addr} . {HTTP_PORT}" for i, addr in enumerate(BACKEND_ADDRS))
    rules = [f"\t\tip daddr {vip} tcp dport {port} dnat to {BACKEND_ADDRS[0]}:{HTTP_PORT}"
             for vip, port in filler_listeners(fillers)]
    rules.append(f"\t\tip daddr {MEASURED_VIP} tcp dport {HTTP_PORT} "
                 f"dnat to numgen random mod {len(BACKEND_ADDRS)} map {{ {backends} }}")
    return ("table ip linear\ndelete table ip linear\ntable ip linear {\n\tchain prerouting {\n"
            "\t\ttype nat hook prerouting priority dstnat; policy accept;\n"
            + "\n".join(rules) + "\n\t}\n}\n")
