# -*- coding: utf-8 -*-
# Copyright: Portico developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Health of backends: checks derived from the LB model, rise/fall, what to withhold and announce.

Pure logic, standard library only. The health state file these decisions end up in is
``dataplane.records``' format (the nft module reads it back).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Collection, Mapping, Sequence

from ansible_collections.portico.gateway.plugins.module_utils.health.probes import ProbeTarget
from ansible_collections.portico.gateway.plugins.module_utils.model.loadbalancer import LoadBalancer, probe_port

ALL_DOWN_POLICIES = ("reject", "keep_last")


@dataclass(frozen=True)
class Check:
    """One backend of one LB, probed on a schedule. ``key`` survives reloads unchanged."""

    lb: str
    address: str
    target: ProbeTarget
    interval: float
    rise: int
    fall: int

    @property
    def key(self) -> str:
        t = self.target
        return "|".join((self.lb, self.address, t.kind, str(t.port), t.path, t.host or "",
                         ",".join(map(str, t.expected_status)), t.send or "", t.expect or ""))

    @property
    def probe(self) -> tuple[str, ...]:
        """What is probed and how, whatever LB asks: checks with one probe share its verdicts."""
        t = self.target
        return (self.address, t.kind, str(t.port), t.path, t.host or "", ",".join(map(str, t.expected_status)),
                t.send or "", t.expect or "", str(t.timeout), str(self.interval), str(self.rise), str(self.fall))

    @property
    def endpoint(self) -> str:
        return f"[{self.address}]:{self.target.port}" if ":" in self.address else f"{self.address}:{self.target.port}"


def checks_for(lb: LoadBalancer) -> list[Check]:
    """The checks of one LB; none for ``type: none`` (its backends are always served)."""
    hc = lb.health_check
    if hc.type == "none":
        return []
    checks = []
    for backend in lb.backends:
        if backend.weight <= 0:
            continue
        target = ProbeTarget(
            kind=hc.type, address=backend.address, port=probe_port(lb, backend), timeout=hc.timeout_ms / 1000.0,
            path=hc.path, host=hc.host, expected_status=tuple(hc.expected_status), send=hc.send, expect=hc.expect,
        )
        checks.append(Check(lb=lb.name, address=backend.address, target=target,
                            interval=hc.interval_ms / 1000.0, rise=hc.rise, fall=hc.fall))
    return checks


@dataclass
class BackendHealth:
    """Rise/fall hysteresis for one check. Starts up: a new backend serves until proven dead."""

    up: bool = True
    successes: int = 0
    failures: int = 0
    since: float = field(default_factory=time.time)
    detail: str = "not checked yet"
    latency: float = 0.0
    transitions: int = 0

    def observe(self, ok: bool, rise: int, fall: int, detail: str = "", latency: float = 0.0, now: float | None = None) -> bool:
        """Record one probe result; return True when the state flipped."""
        self.detail, self.latency = detail, latency
        if ok:
            self.successes, self.failures = self.successes + 1, 0
            flip = not self.up and self.successes >= rise
        else:
            self.failures, self.successes = self.failures + 1, 0
            flip = self.up and self.failures >= fall
        if flip:
            self.up = not self.up
            self.since = time.time() if now is None else now
            self.transitions += 1
        return flip

    def to_dict(self) -> dict[str, Any]:
        return {"up": self.up, "since": self.since, "detail": self.detail, "latency": self.latency,
                "transitions": self.transitions}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BackendHealth:
        return cls(up=bool(data.get("up", True)), since=float(data.get("since", time.time())),
                   detail=str(data.get("detail", "restored")), latency=float(data.get("latency", 0.0)),
                   transitions=int(data.get("transitions", 0)))


def withheld_for(lb: LoadBalancer, up: Mapping[str, bool], last_served: Collection[str], policy: str) -> tuple[set[str], set[str]]:
    """(addresses to withhold, addresses now served) for one LB.

    ``up``: address -> health for checked backends (unchecked ones count as up).
    ``policy`` "keep_last": with every backend down, keep serving the last served set
    (cloud LBs "fail open"); "reject": serve nobody, new connections get a reset.
    """
    serving = [b.address for b in lb.backends if b.weight > 0]
    healthy = {address for address in serving if up.get(address, True)}
    if not healthy and policy == "keep_last":
        kept = {address for address in serving if address in last_served}
        healthy = kept or set(serving)
    return set(serving) - healthy, healthy


def vip_health(lbs: Sequence[LoadBalancer], up: Mapping[tuple[str, str], bool]) -> dict[str, dict[str, int]]:
    """Per VIP: backends configured and healthy, over every LB sharing that VIP."""
    result: dict[str, dict[str, int]] = {}
    for lb in lbs:
        entry = result.setdefault(lb.vip, {"healthy": 0, "total": 0})
        for backend in lb.backends:
            if backend.weight <= 0:
                continue
            entry["total"] += 1
            entry["healthy"] += int(up.get((lb.name, backend.address), True))
    return result


def announced_vips(health: Mapping[str, Mapping[str, int]], withdraw: bool) -> set[str]:
    """VIPs to announce: those with a healthy backend (all of them when withdrawal is off)."""
    return {vip for vip, counts in health.items() if counts["healthy"] > 0 or not withdraw}
