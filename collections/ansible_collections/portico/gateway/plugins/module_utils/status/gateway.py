# -*- coding: utf-8 -*-
# Copyright: Portico developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What one gateway is doing for each VIP, and what is wrong with it.

Pure functions over observations (the health checker's state, BGP sessions and
advertisements, addresses held, TCP answers), shared by the ``gateway_status`` module
(post-checks, status play) and the ``vip_status_table`` filter. Standard library only.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Mapping, Sequence

from ansible_collections.portico.gateway.plugins.module_utils.model.documents import loadbalancer_items
from ansible_collections.portico.gateway.plugins.module_utils.model.observed import (
    BackendObservation,
    GatewayObservation,
    LBObservation,
)

ESTABLISHED = "Established"


def _host_prefix(vip: str) -> str:
    address = ipaddress.ip_address(vip)
    return f"{address}/{address.max_prefixlen}"


def parse_bgp_summary(summary: Mapping[str, Any]) -> dict[str, str]:
    """Peer address -> session state, over every address family of ``show bgp summary json``."""
    peers: dict[str, str] = {}
    for family in summary.values():
        if not isinstance(family, Mapping):
            continue
        for address, peer in (family.get("peers") or {}).items():
            if isinstance(peer, Mapping):
                peers[address] = str(peer.get("state", "unknown"))
    return peers


def endpoint_key(address: str, port: int) -> str:
    """How a TCP check through a VIP is named in results: ``vip:port/tcp``, IPv6 in brackets."""
    return f"[{address}]:{port}/tcp" if ":" in address else f"{address}:{port}/tcp"


def advertised_vips(vips: Sequence[str], advertised: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """VIP -> peers it is advertised to, from each peer's advertised prefixes."""
    result: dict[str, list[str]] = {}
    for vip in vips:
        prefix = _host_prefix(vip)
        result[vip] = sorted(peer for peer, prefixes in advertised.items() if prefix in prefixes)
    return result


def evaluate(
    *,
    mode: str,
    healthd: Mapping[str, Any] | None,
    bgp_peers: Mapping[str, str] | None,
    advertised: Mapping[str, Sequence[str]] | None,
    held: Sequence[str],
    answers: Sequence[tuple[str, int, bool]],
    drained: bool,
    expect_vips: Sequence[str] = (),
    expect_healthy: Sequence[str] = (),
) -> dict[str, Any]:
    """Per-VIP view of this gateway and the problems a post-check fails on.

    ``answers`` lists (vip, port, whether a TCP connection through it succeeded).
    A VIP counts as announced here when this gateway attracts its traffic: BGP advertised
    to at least one peer, the VRRP master holds it, or (single) the health checker serves it.
    ``expect_vips`` are the VIPs of the configuration just applied (the health checker must
    know them all); ``expect_healthy`` those that had a healthy backend before the change
    (a change must not leave one of them with none). A VIP whose backends were already all
    down is not the change's fault, so it does not stop a rollout.
    """
    problems: list[str] = []
    vip_health: Mapping[str, Any] = (healthd or {}).get("vips", {}) if healthd else {}
    if healthd is None:
        problems.append("portico-healthd: no state (not installed or never ran)")
    elif not healthd.get("daemon_running", False):
        problems.append("portico-healthd: not running (showing its last recorded state)")
    if mode == "bgp":
        for peer, state in sorted((bgp_peers or {}).items()):
            if state != ESTABLISHED:
                problems.append(f"BGP peer {peer}: session is {state}, not {ESTABLISHED}")
        if not bgp_peers:
            problems.append("BGP: no peers configured or bgpd not answering")
    by_peer = advertised_vips(list(vip_health), advertised or {}) if mode == "bgp" else {}
    held_set = set(held)
    vips: dict[str, dict[str, Any]] = {}
    for vip, info in sorted(vip_health.items()):
        healthy, total = int(info.get("healthy", 0)), int(info.get("total", 0))
        served = bool(info.get("announced", False))
        if mode == "bgp":
            announced = bool(by_peer.get(vip))
        elif mode == "vrrp":
            announced = vip in held_set
        else:
            announced = served
        vip_answers = {endpoint_key(address, port): ok for address, port, ok in answers if address == vip}
        vips[vip] = {"healthy": healthy, "total": total, "served": served, "announced": announced,
                     "peers": by_peer.get(vip, []), "answers": vip_answers}
        if healthy > 0 and not served:
            problems.append(f"VIP {vip}: {healthy}/{total} backends healthy but the health checker withdrew it")
        if mode == "bgp" and served and not announced and not drained and bgp_peers:
            problems.append(f"VIP {vip}: served but not advertised to any BGP peer")
        for key, ok in sorted(vip_answers.items()):
            if not ok and healthy > 0:
                problems.append(f"VIP {vip}: {key} does not answer")
    if healthd is not None:
        for vip in sorted(set(expect_vips) - set(vip_health), key=str):
            problems.append(f"VIP {vip}: not known to the health checker (new configuration not loaded)")
        for vip in sorted(set(expect_healthy) & set(expect_vips or vip_health), key=str):
            if vip in vips and vips[vip]["healthy"] == 0:
                problems.append(f"VIP {vip}: had healthy backends before this change, now 0/{vips[vip]['total']}")
    return {"mode": mode, "drained": drained, "vips": vips, "bgp_peers": dict(bgp_peers or {}), "problems": problems}


def _backends_by_lb(healthd: Mapping[str, Any], names: set[str]) -> dict[str, dict[str, BackendObservation]]:
    """Per LB of ``names``: the checked backends (address -> up, detail) of the health state."""
    found: dict[str, dict[str, BackendObservation]] = {}
    for backend in healthd.get("backends") or []:
        if not isinstance(backend, Mapping):
            continue
        # A check shared by several LBs may name them all.
        owners = backend.get("lbs") if isinstance(backend.get("lbs"), list) else [backend.get("lb")]
        for owner in owners:
            if owner in names:
                found.setdefault(str(owner), {})[str(backend.get("address"))] = BackendObservation(
                    up=backend.get("up") is not False, detail=str(backend.get("detail") or ""))
    return found


def observe_loadbalancers(healthd: Mapping[str, Any] | None, names: Sequence[str], applied_digest: str,
                          vips: Mapping[str, Mapping[str, Any]]) -> GatewayObservation:
    """What this gateway does for the LBs ``names``: whether its health checker runs them (and the
    configuration applied last, ``applied_digest``), their backends' health, whether it announces
    their VIPs (``vips``: the per-VIP view of ``evaluate``)."""
    if healthd is None:
        return GatewayObservation(reached=True, loadbalancers={name: LBObservation(loaded=False) for name in names})
    loaded = healthd.get("loadbalancers") if isinstance(healthd.get("loadbalancers"), Mapping) else {}
    backends = _backends_by_lb(healthd, set(names))
    lbs = {}
    for name in names:
        info = loaded.get(name)
        vip = str(info.get("vip") or "") if isinstance(info, Mapping) else ""
        lbs[name] = LBObservation(loaded=isinstance(info, Mapping), vip=vip, announced=bool((vips.get(vip) or {}).get("announced")),
                                  checked=bool(backends.get(name)), backends=backends.get(name, {}))
    current = bool(applied_digest) and str(healthd.get("digest") or "") == applied_digest
    return GatewayObservation(reached=True, current=current, running=healthd.get("daemon_running") is True, loadbalancers=lbs)


def status_table(gateways: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """One line per VIP: who announces it and healthy/total backends as each gateway sees them."""
    rows: dict[str, dict[str, Any]] = {}
    for gateway, status in sorted(gateways.items()):
        for vip, info in (status.get("vips") or {}).items():
            row = rows.setdefault(vip, {"announcing": [], "health": []})
            if info.get("announced"):
                # A drained BGP gateway still advertises (graceful shutdown): say so.
                row["announcing"].append(f"{gateway} (drained)" if status.get("drained") else gateway)
            row["health"].append(f"{gateway} {info.get('healthy', 0)}/{info.get('total', 0)}")
    width = max([len(vip) for vip in rows] + [3])
    lines = [f"{'VIP':<{width}}  {'ANNOUNCED BY':<24}  HEALTHY/TOTAL PER GATEWAY"]
    for vip in sorted(rows, key=lambda v: (ipaddress.ip_address(v).version, ipaddress.ip_address(v))):
        row = rows[vip]
        lines.append(f"{vip:<{width}}  {', '.join(row['announcing']) or 'nobody':<24}  {', '.join(row['health'])}")
    for gateway, status in sorted(gateways.items()):
        for problem in status.get("problems") or []:
            lines.append(f"PROBLEM {gateway}: {problem}")
    return lines


def tcp_endpoints(loadbalancers: Any) -> list[dict[str, Any]]:
    """VIP and port of every TCP listener a gateway can be checked through, in model order
    (``loadbalancers``: a list, or the LB model document ``portico_lb_model``).

    LBs restricted by ``source_ranges`` are left out: the gateway's own address may not be allowed.
    """
    seen: set[tuple[str, int]] = set()
    endpoints: list[dict[str, Any]] = []
    for lb in loadbalancer_items(loadbalancers):
        if lb.get("source_ranges") or not lb.get("backends"):
            continue
        for port in lb.get("ports", []):
            key = (str(lb["vip"]), int(port["port"]))
            if port.get("protocol", "tcp") == "tcp" and key not in seen:
                seen.add(key)
                endpoints.append({"address": key[0], "port": key[1]})
    return endpoints
