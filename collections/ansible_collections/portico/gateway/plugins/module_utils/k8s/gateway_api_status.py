# -*- coding: utf-8 -*-
# Copyright: Portico developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The status of the Gateway API objects Portico serves, as the write-back writes it.

The verdicts come from the inventory (``k8s.gateway_api``: an entry's ``status_details``), the
addresses from the allocation (what lb_validate decided); a writer dates the conditions against
the object as read, so a condition keeps its ``lastTransitionTime`` while its status stays, and
nothing is written when the status is already what it should be:

- a GatewayClass of Portico's controller: condition ``Accepted``;
- a Gateway: ``addresses``, conditions ``Accepted`` and ``Programmed``, and per listener
  ``supportedKinds``, ``attachedRoutes`` and the conditions ``Accepted``, ``Programmed``,
  ``ResolvedRefs`` and ``Conflicted``; released, the status the CRD starts with;
- a TCPRoute or UDPRoute: one ``status.parents`` item per parentRef that names a Gateway Portico
  serves, with ``Accepted`` and ``ResolvedRefs``; the items of other controllers are kept as read.

Each condition carries the ``observedGeneration`` it was decided for, and the status is written
only for the generation the inventory read (an object changed since is left to the run its
change starts). Standard library only, like every module_util.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ansible_collections.portico.gateway.plugins.module_utils.k8s.gateway_api import (
    CONTROLLER_NAME,
    Verdict,
    condition,
    listener_programmed,
    verdict_of,
)
from ansible_collections.portico.gateway.plugins.module_utils.k8s.kinds import GATEWAY, GATEWAY_CLASS, TCPROUTE, UDPROUTE, Kind
from ansible_collections.portico.gateway.plugins.module_utils.k8s.writeback import Desired, StatusWriter, WriteContext
from ansible_collections.portico.gateway.plugins.module_utils.model.problems import Problem

# The status a Gateway starts with (the CRD's default): what a release leaves.
PENDING_CONDITIONS = [
    {"type": kind, "status": "Unknown", "reason": "Pending", "message": "Waiting for controller", "lastTransitionTime": "1970-01-01T00:00:00Z"}
    for kind in ("Accepted", "Programmed")
]


def _status(live: Mapping[str, Any]) -> Mapping[str, Any]:
    status = live.get("status")
    return status if isinstance(status, Mapping) else {}


def _previous(conditions: Any) -> dict[str, Mapping[str, Any]]:
    return {str(c.get("type")): c for c in conditions or [] if isinstance(c, Mapping)}


def _stale(desired: Desired, live: Mapping[str, Any]) -> bool:
    """The object changed since the inventory read it: its verdicts are for another generation."""
    wanted = desired.details.get("generation")
    return wanted is not None and (live.get("metadata") or {}).get("generation") != wanted


def _own_terms(problem: Problem, key: str) -> str:
    if problem.subject in ("", key):
        return ": ".join(part for part in (problem.field, problem.message) if part)
    return problem.render()


class GatewayClassStatusWriter(StatusWriter):
    kind = GATEWAY_CLASS

    def addresses(self, live: Mapping[str, Any]) -> list[str]:
        return []

    def wanted(self, desired: Desired, live: Mapping[str, Any], context: WriteContext) -> dict[str, Any] | None:
        if _stale(desired, live):
            return None
        previous = _previous(_status(live).get("conditions"))
        conditions = [condition("Accepted", verdict_of(desired.details.get("accepted")), live, previous, context.now)]
        return None if _status(live).get("conditions") == conditions else {"conditions": conditions}

    def cleared(self, live: Mapping[str, Any]) -> dict[str, Any] | None:
        return None


class GatewayStatusWriter(StatusWriter):
    kind = GATEWAY

    def addresses(self, live: Mapping[str, Any]) -> list[str]:
        return [str(item.get("value")) for item in _status(live).get("addresses") or [] if isinstance(item, Mapping)]

    def compose(self, desired: Desired, live: Mapping[str, Any], context: WriteContext) -> dict[str, Any]:
        status = _status(live)
        previous = _previous(status.get("conditions"))
        accepted = verdict_of(desired.details.get("accepted"))
        if accepted.status != "True":
            programmed = Verdict("False", "Invalid", "the Gateway is not accepted")
        elif not desired.served:
            reasons = "; ".join(_own_terms(problem, desired.key) for problem in desired.problems)
            programmed = Verdict("False", "AddressNotAssigned", reasons or "no address assigned yet")
        else:
            programmed = Verdict("True", "Programmed", f"served on {', '.join(desired.ips)}")
        live_listeners = {str(item.get("name")): _previous(item.get("conditions")) for item in status.get("listeners") or []
                          if isinstance(item, Mapping)}
        listeners = []
        for item in desired.details.get("listeners") or []:
            old = live_listeners.get(str(item.get("name")), {})
            verdicts = (("Accepted", verdict_of(item.get("accepted"))),
                        ("Programmed", listener_programmed(item.get("servable") is True, item.get("routed") is True,
                                                           programmed.status == "True")),
                        ("ResolvedRefs", verdict_of(item.get("resolved"))), ("Conflicted", verdict_of(item.get("conflicted"))))
            listeners.append({"name": item.get("name"), "supportedKinds": list(item.get("supportedKinds") or []),
                              "attachedRoutes": int(item.get("attachedRoutes") or 0),
                              "conditions": [condition(kind, verdict, live, old, context.now) for kind, verdict in verdicts]})
        return {
            "addresses": [{"type": "IPAddress", "value": ip} for ip in desired.ips] if programmed.status == "True" else None,
            "conditions": [condition("Accepted", accepted, live, previous, context.now),
                           condition("Programmed", programmed, live, previous, context.now)],
            "listeners": listeners or None,
        }

    def wanted(self, desired: Desired, live: Mapping[str, Any], context: WriteContext) -> dict[str, Any] | None:
        if _stale(desired, live):
            return None
        composed = self.compose(desired, live, context)
        status = _status(live)
        if all(status.get(name) == composed.get(name) for name in composed):
            return None
        return composed

    def cleared(self, live: Mapping[str, Any]) -> dict[str, Any] | None:
        status = _status(live)
        if not status.get("addresses") and not status.get("listeners") and status.get("conditions") == PENDING_CONDITIONS:
            return None
        return {"addresses": None, "listeners": None, "conditions": PENDING_CONDITIONS}


def _parent_identity(parent_ref: Mapping[str, Any]) -> str:
    return repr(sorted((str(k), str(v)) for k, v in parent_ref.items()))


class RouteStatusWriter(StatusWriter):
    """A route's ``status.parents``: Portico's items (one per parentRef naming a Gateway it
    serves), after the other controllers' items as read."""

    def __init__(self, kind: Kind):
        self.kind = kind

    def addresses(self, live: Mapping[str, Any]) -> list[str]:
        return []

    @staticmethod
    def _controller(desired: Desired) -> str:
        return str(desired.details.get("controller") or CONTROLLER_NAME)

    def _parents(self, live: Mapping[str, Any], controller: str) -> tuple[list[Any], dict[str, Mapping[str, Any]]]:
        """The other controllers' items, and Portico's conditions by parentRef."""
        others, ours = [], {}
        for item in _status(live).get("parents") or []:
            if isinstance(item, Mapping) and item.get("controllerName") == controller:
                ours[_parent_identity(item.get("parentRef") or {})] = _previous(item.get("conditions"))
            else:
                others.append(item)
        return others, ours

    def wanted(self, desired: Desired, live: Mapping[str, Any], context: WriteContext) -> dict[str, Any] | None:
        if _stale(desired, live):
            return None
        controller = self._controller(desired)
        others, ours = self._parents(live, controller)
        resolved = verdict_of(desired.details.get("resolved"))
        parents = list(others)
        for item in desired.details.get("parents") or []:
            parent_ref = dict(item.get("parentRef") or {})
            previous = ours.get(_parent_identity(parent_ref), {})
            parents.append({"parentRef": parent_ref, "controllerName": controller,
                            "conditions": [condition("Accepted", verdict_of(item.get("accepted")), live, previous, context.now),
                                           condition("ResolvedRefs", resolved, live, previous, context.now)]})
        if list(_status(live).get("parents") or []) == parents:
            return None
        return {"parents": parents}

    def cleared(self, live: Mapping[str, Any]) -> dict[str, Any] | None:
        others, ours = self._parents(live, CONTROLLER_NAME)
        return {"parents": others} if ours else None


GATEWAY_API_WRITERS: Mapping[str, StatusWriter] = {
    GATEWAY_CLASS.kind: GatewayClassStatusWriter(),
    GATEWAY.kind: GatewayStatusWriter(),
    TCPROUTE.kind: RouteStatusWriter(TCPROUTE),
    UDPROUTE.kind: RouteStatusWriter(UDPROUTE),
}
