# -*- coding: utf-8 -*-
# Copyright: Portico developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a gateway reports about the LBs it runs, as plain data: one owner of the shape.

The ``gateway_status`` module reads the gateway's health checker (``status.gateway`` builds the
report) and the status write-back of Kubernetes objects that show health in their status (Portico's
LoadBalancer resource, ``k8s.resource_status``) reads it back, on the controller, from every
gateway's registered result. Only the LBs asked for are reported, so the data stays small however
many Services a gateway serves.

Standard library only: this file also runs on gateways inside modules.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class BackendObservation:
    up: bool
    detail: str = ""


@dataclass(frozen=True)
class LBObservation:
    """One LB as a gateway's health checker runs it."""

    loaded: bool  # the health checker runs this LB (it is in the configuration it loaded)
    vip: str = ""
    announced: bool = False  # this gateway attracts the VIP's traffic (see status.gateway.evaluate)
    checked: bool = False  # the health checker checks its backends (no checks: type none, no backend)
    backends: Mapping[str, BackendObservation] = field(default_factory=dict)  # by address

    def to_data(self) -> dict[str, Any]:
        return {"loaded": self.loaded, "vip": self.vip, "announced": self.announced, "checked": self.checked,
                "backends": {address: {"up": b.up, "detail": b.detail} for address, b in sorted(self.backends.items())}}

    @classmethod
    def from_data(cls, raw: Any) -> LBObservation:
        if not isinstance(raw, Mapping):
            return cls(loaded=False)
        backends = raw.get("backends") if isinstance(raw.get("backends"), Mapping) else {}
        return cls(loaded=raw.get("loaded") is True, vip=str(raw.get("vip") or ""), announced=raw.get("announced") is True,
                   checked=raw.get("checked") is True,
                   backends={str(address): BackendObservation(up=isinstance(b, Mapping) and b.get("up") is True,
                                                              detail=str(b.get("detail") or "") if isinstance(b, Mapping) else "")
                             for address, b in backends.items()})


@dataclass(frozen=True)
class GatewayObservation:
    """One gateway's report: whether its health checker runs the configuration last applied, and
    the LBs asked for. ``reached``: the report exists (the gateway answered)."""

    reached: bool
    current: bool = False  # the health checker loaded the configuration the gateway applied last
    running: bool = False  # the health checker answers (else its last recorded state)
    loadbalancers: Mapping[str, LBObservation] = field(default_factory=dict)

    def to_data(self) -> dict[str, Any]:
        return {"reached": self.reached, "current": self.current, "running": self.running,
                "loadbalancers": {name: lb.to_data() for name, lb in sorted(self.loadbalancers.items())}}

    @classmethod
    def from_data(cls, raw: Any) -> GatewayObservation:
        if not isinstance(raw, Mapping) or raw.get("reached") is not True:
            return cls(reached=False)
        lbs = raw.get("loadbalancers") if isinstance(raw.get("loadbalancers"), Mapping) else {}
        return cls(reached=True, current=raw.get("current") is True, running=raw.get("running") is True,
                   loadbalancers={str(name): LBObservation.from_data(lb) for name, lb in lbs.items()})

    def lb(self, name: str) -> LBObservation:
        return self.loadbalancers.get(name) or LBObservation(loaded=False)
