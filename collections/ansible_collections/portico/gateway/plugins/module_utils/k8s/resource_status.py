# -*- coding: utf-8 -*-
# Copyright: Portico developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The status of Portico's LoadBalancer resource: what lb_validate decided, and what the gateways
did with it.

``status`` holds, for ``kubectl get plb`` and anything that watches the object:

- ``observedGeneration``, ``state`` (active, disabled, or refused) and ``addresses``;
- condition ``Accepted``: True when the definition and its addresses are valid; False with the
  model's and the allocation's problems on the resource's own fields
  (``spec.listeners[0].port: 70000 is out of range 1-65535``), reason ``AddressNotAvailable`` when
  only the addresses are the problem (outside the namespace's pools, taken), else ``Invalid``;
- condition ``Programmed``: True when every gateway runs it (converged in this run, and its health
  checker loaded that configuration) and at least one announces its addresses; else why not
  (``Pending`` with the gateways that do not run it yet, ``NoHealthyBackend``, ``Disabled``,
  ``Invalid``); ``gateways`` has the same per gateway;
- ``backends``: each backend as the gateways' health checkers last saw it (Healthy, Unhealthy
  with their words, Unchecked, Unknown), and ``healthy``, the healthy/total count of the backends
  taking new connections, as ``portico-healthd status`` counts them.

A condition keeps its ``lastTransitionTime`` while its status stays the same, and nothing is
written when the status is already what it should be, so a second run changes nothing. The
status is written only for the generation lb_validate read: an object changed since is left to
the run its change starts. Standard library only, like every module_util.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ansible_collections.portico.gateway.plugins.module_utils.k8s.kinds import LOADBALANCER
from ansible_collections.portico.gateway.plugins.module_utils.k8s.writeback import Desired, StatusWriter, WriteContext
from ansible_collections.portico.gateway.plugins.module_utils.model.observed import GatewayObservation
from ansible_collections.portico.gateway.plugins.module_utils.model.problems import Problem

# Every field of the status Portico writes (a merge patch sets the ones it leaves out to null).
STATUS_FIELDS = ("observedGeneration", "state", "addresses", "healthy", "backends", "gateways", "conditions")
HEALTHY, UNHEALTHY, UNCHECKED, UNKNOWN = "Healthy", "Unhealthy", "Unchecked", "Unknown"
_ADDRESS_FIELDS = ("spec.addresses", "pools")


def _own_terms(problem: Problem, key: str) -> str:
    """A problem as the object's own status says it: its field and what is wrong (the object is
    the one the status belongs to), or whole when it is about another object."""
    if problem.subject in ("", key):
        return ": ".join(part for part in (problem.field, problem.message) if part)
    return problem.render()


def _condition(kind: str, status: str, reason: str, message: str, generation: Any, old: Mapping[str, Any], now: str) -> dict[str, Any]:
    before = old.get(kind) or {}
    since = before.get("lastTransitionTime") if before.get("status") == status and before.get("lastTransitionTime") else now
    condition = {"type": kind, "status": status, "reason": reason, "message": message, "lastTransitionTime": since}
    if isinstance(generation, int):
        condition["observedGeneration"] = generation
    return condition


@dataclass(frozen=True)
class _GatewayView:
    name: str
    programmed: bool
    announced: bool
    message: str
    observation: GatewayObservation


def _gateway_views(desired: Desired, context: WriteContext) -> list[_GatewayView]:
    """Per gateway: whether it runs this load balancer, and whether it announces its addresses."""
    views = []
    for name, (converged, seen) in sorted(context.gateways.items()):
        if context.converge and not converged:
            why = "did not converge in this run"
        elif not seen.reached:
            why = "sent no report"
        elif not seen.running:
            why = "its health checker is not running"
        elif not seen.current:
            why = "its health checker has not loaded the configuration applied last"
        elif not all(seen.lb(lb).loaded for lb in desired.loadbalancers):
            why = "does not run it"
        else:
            why = ""
        announced = not why and any(seen.lb(lb).announced for lb in desired.loadbalancers)
        message = why or ("announces " + ", ".join(desired.ips) if announced else "runs it, announces nothing")
        views.append(_GatewayView(name, not why, announced, message, seen))
    return views


def _programmed(desired: Desired, disabled: bool, views: Sequence[_GatewayView]) -> tuple[str, str, str]:
    """(status, reason, message) of the Programmed condition."""
    if not desired.served:
        return "False", "Invalid", "not accepted (see the Accepted condition)"
    addresses = ", ".join(desired.ips)
    if disabled:
        return "False", "Disabled", f"state is disabled: {addresses} kept, refusing connections; no gateway announces it"
    if not views:
        return "Unknown", "Pending", "no gateway reported yet"
    pending = [f"{view.name} {view.message}" for view in views if not view.programmed]
    if pending:
        return "False", "Pending", "; ".join(pending)
    announcing = [view.name for view in views if view.announced]
    if not announcing:
        return "False", "NoHealthyBackend", f"every gateway runs it, none announces {addresses}: no healthy backend"
    return "True", "Programmed", f"{', '.join(announcing)} announce{'s' if len(announcing) == 1 else ''} {addresses}"


def _family(address: Any) -> int | None:
    try:
        return ipaddress.ip_address(str(address)).version
    except ValueError:
        return None


def _backend_health(address: str, lb: str, views: Sequence[_GatewayView]) -> tuple[str, str]:
    """(health, message) of one active backend of one LB, over the gateways that run it."""
    seen = [(view.name, view.observation.lb(lb)) for view in views if view.programmed]
    if not seen:
        return UNKNOWN, "no gateway runs it yet"
    reports = [(name, lb_seen.backends.get(address)) for name, lb_seen in seen]
    down = [f"{name}: {report.detail or 'down'}" for name, report in reports if report is not None and not report.up]
    if down:
        return UNHEALTHY, "; ".join(down)
    if all(report is None for _name, report in reports):
        return UNCHECKED, "not checked (healthCheck type none)"
    return HEALTHY, ""


def _backends(desired: Desired, spec: Mapping[str, Any], disabled: bool, views: Sequence[_GatewayView]) -> tuple[list[dict[str, Any]], str]:
    """Each backend of the spec with its health, and healthy/total of the ones taking new connections."""
    lb_of = {_family(ip): lb for ip, lb in zip(desired.ips, desired.loadbalancers)}
    items, healthy, total = [], 0, 0
    raw = spec.get("backends") if isinstance(spec.get("backends"), list) else []
    for backend in raw:
        if not isinstance(backend, Mapping):
            continue
        address, admin = str(backend.get("address") or ""), str(backend.get("adminState") or "active")
        item: dict[str, Any] = {"address": address, "adminState": admin}
        for name in ("port", "name"):
            if backend.get(name) not in (None, ""):
                item[name] = backend[name]
        lb = lb_of.get(_family(address))
        if disabled:
            health, message = UNCHECKED, "the load balancer is disabled"
        elif admin != "active":
            health, message = UNCHECKED, ("draining: takes no new connections, keeps its own" if admin == "drain"
                                          else "disabled: left out of the load balancer")
        elif lb is None:
            health, message = UNCHECKED, f"IPv{_family(address)} is not served"
        else:
            health, message = _backend_health(address, lb, views)
            total += 1
            healthy += health in (HEALTHY, UNCHECKED)
        item["health"] = health
        if message:
            item["message"] = message
        items.append(item)
    return items, f"{healthy}/{total}"


def _accepted(desired: Desired) -> tuple[str, str, str]:
    if desired.problems:
        reason = ("AddressNotAvailable" if all(p.field.startswith(_ADDRESS_FIELDS) for p in desired.problems)
                  else "Invalid")
        return "False", reason, "; ".join(_own_terms(p, desired.key) for p in desired.problems)
    if desired.served:
        message = f"served on {', '.join(desired.ips)}"
        if desired.warnings:
            message += "; warnings: " + "; ".join(_own_terms(w, desired.key) for w in desired.warnings)
        return "True", "Accepted", message
    return "Unknown", "Pending", "no address allocated yet"


class LoadBalancerStatusWriter(StatusWriter):
    """The status of a LoadBalancer resource (see the module comment)."""

    kind = LOADBALANCER

    def addresses(self, live: Mapping[str, Any]) -> list[str]:
        status = live.get("status") if isinstance(live.get("status"), Mapping) else {}
        return [str(address) for address in status.get("addresses") or []]

    def served_message(self, desired: Desired) -> str:
        if desired.details.get("state") == "disabled":
            return f"Portico keeps {', '.join(desired.ips)} for this LoadBalancer (state disabled: it serves nothing)"
        return super().served_message(desired)

    def compose(self, desired: Desired, live: Mapping[str, Any], context: WriteContext) -> dict[str, Any]:
        """The whole status, from what lb_validate decided and what the gateways reported."""
        spec = live.get("spec") if isinstance(live.get("spec"), Mapping) else {}
        status = live.get("status") if isinstance(live.get("status"), Mapping) else {}
        old = {c.get("type"): c for c in status.get("conditions") or [] if isinstance(c, Mapping)}
        generation = desired.details.get("generation")
        disabled = desired.details.get("state") == "disabled"
        views = _gateway_views(desired, context) if desired.served else []
        accepted = _accepted(desired)
        composed: dict[str, Any] = {
            "observedGeneration": generation if isinstance(generation, int) else None,
            "state": "refused" if desired.problems else ("disabled" if disabled else "active") if desired.served else None,
            "addresses": list(desired.ips) if desired.served else None,
            "healthy": None, "backends": None,
            "gateways": [{"name": view.name, "programmed": view.programmed, "announced": view.announced, "message": view.message}
                         for view in views] or None,
            "conditions": [_condition("Accepted", *accepted, generation, old, context.now),
                           _condition("Programmed", *_programmed(desired, disabled, views), generation, old, context.now)],
        }
        if desired.served:
            backends, healthy = _backends(desired, spec, disabled, views)
            composed["backends"], composed["healthy"] = backends or None, "-" if disabled else healthy
        return composed

    def wanted(self, desired: Desired, live: Mapping[str, Any], context: WriteContext) -> dict[str, Any] | None:
        generation = (live.get("metadata") or {}).get("generation")
        if desired.details.get("generation") is not None and generation != desired.details.get("generation"):
            return None  # changed since the inventory read it: the run its change starts writes the status
        composed = self.compose(desired, live, context)
        status = live.get("status") if isinstance(live.get("status"), Mapping) else {}
        if all(status.get(name) == composed.get(name) for name in STATUS_FIELDS):
            return None
        return composed

    def cleared(self, live: Mapping[str, Any]) -> dict[str, Any] | None:
        status = live.get("status") if isinstance(live.get("status"), Mapping) else {}
        if not any(status.get(name) is not None for name in STATUS_FIELDS):
            return None
        return {name: None for name in STATUS_FIELDS}


LOADBALANCER_WRITER = LoadBalancerStatusWriter()
