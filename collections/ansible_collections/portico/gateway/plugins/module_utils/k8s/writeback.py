# -*- coding: utf-8 -*-
# Copyright: Portico developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the status write-back does to each Service: pure planning, one plan per Service.

The write-back runs in two stages around a converge, as the cloud-provider service controller
does around its load balancer:

- ``claim`` (before the gateways are touched): a Service about to be served gets the cleanup
  finalizer ``service.kubernetes.io/load-balancer-cleanup`` and Portico's ``portico.io/served-by``
  mark, so it cannot disappear while a VIP for it may be announced, and Portico can recognise it
  after it left its scope;
- ``publish`` (after the converge): ``status.loadBalancer.ingress`` where it differs, an Event
  where one is due, and the release of Services Portico gave up (cleared status, then the mark
  and the finalizer removed: a deleted Service then goes away). A release happens only when the
  converge reached every gateway (``release_allowed``): a VIP that may still be announced
  somewhere never loses its finalizer.

Events: ``IPAllocated`` when an address is written, ``NotServed`` / ``ServedWithWarnings`` while a
problem lasts (one per distinct message, not repeated), ``Released`` when Portico lets go.

Works on the API's JSON (``live`` is the Service as read), never on typed models.
Standard library only, like every module_util.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ansible_collections.portico.gateway.plugins.module_utils.k8s.annotations import SERVED_BY_ANNOTATION
from ansible_collections.portico.gateway.plugins.module_utils.k8s.translate import CLEANUP_FINALIZER
from ansible_collections.portico.gateway.plugins.module_utils.model.documents import STATUS_FORMAT, decode

STAGES = ("claim", "publish")
EVENT_SOURCE = "portico"
REPORTING_COMPONENT = "portico.io/gateway"

EventKey = tuple[str, str, str, str]  # involved uid, type, reason, message


@dataclass(frozen=True)
class Desired:
    """One item of ``portico_k8s_status``: what lb_validate decided for one Service."""

    cluster: str
    namespace: str
    name: str
    uid: str
    ips: tuple[str, ...]
    problems: tuple[str, ...]
    warnings: tuple[str, ...]
    served: bool
    release: bool
    release_reason: str
    claimed: bool = False  # carried the finalizer and the mark when the inventory read it

    @property
    def key(self) -> str:
        return f"{self.cluster}/{self.namespace}/{self.name}"

    @classmethod
    def from_item(cls, raw: Mapping[str, Any]) -> Desired:
        return cls(
            cluster=str(raw.get("cluster") or ""), namespace=str(raw.get("namespace") or ""),
            name=str(raw.get("name") or ""), uid=str(raw.get("uid") or ""),
            ips=tuple(str(ip) for ip in raw.get("ips") or ()), problems=tuple(str(p) for p in raw.get("problems") or ()),
            warnings=tuple(str(w) for w in raw.get("warnings") or ()), served=bool(raw.get("served")),
            release=bool(raw.get("release")), release_reason=str(raw.get("release_reason") or ""),
            claimed=raw.get("claimed") is True,
        )


def read_status_document(value: Any) -> list[Desired]:
    """The items of a ``portico_k8s_status`` document (or a plain list of items)."""
    return [Desired.from_item(item) for item in decode(value, STATUS_FORMAT, "services")["services"] if isinstance(item, Mapping)]


@dataclass
class Plan:
    """The writes for one Service, in the order they are made."""

    key: str
    namespace: str
    name: str
    claim: bool = False  # add the finalizer and the mark
    ingress: list[dict[str, str]] | None = None  # the new status.loadBalancer.ingress (None: leave it)
    events: list[dict[str, str]] = field(default_factory=list)
    unclaim: bool = False  # remove the mark and the finalizer (after the status is cleared)
    withheld: bool = False  # a release waiting for a converge that reaches every gateway
    before: list[str] = field(default_factory=list)  # ingress IPs as read, for the diff

    @property
    def writes(self) -> bool:
        return self.claim or self.ingress is not None or bool(self.events) or self.unclaim


def desired_ingress(ips: Iterable[str], ip_mode: str) -> list[dict[str, str]]:
    """Normalised, de-duplicated entries in the given order; an invalid IP raises ValueError."""
    entries: list[dict[str, str]] = []
    for text in ips:
        try:
            ip = str(ipaddress.ip_address(str(text).strip()))
        except ValueError:
            raise ValueError(f"ingress: {text!r} is not an IP address") from None
        if all(entry["ip"] != ip for entry in entries):
            entries.append({"ip": ip, "ipMode": ip_mode})
    return entries


def current_ingress(service: Mapping[str, Any]) -> list[dict[str, Any]]:
    return ((service.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []


def same_ingress(live: list[dict[str, Any]], wanted: list[dict[str, str]]) -> bool:
    """Same IPs in the same order; ipMode compared only where the cluster keeps it.

    API servers without the LoadBalancerIPMode feature drop ipMode, and entries may carry
    other fields (ports): comparing whole entries would patch on every run.
    """
    if [entry.get("ip") for entry in live] != [entry["ip"] for entry in wanted]:
        return False
    return all("ipMode" not in entry or entry["ipMode"] == want["ipMode"] for entry, want in zip(live, wanted))


def is_claimed(live: Mapping[str, Any], mark: str) -> bool:
    meta = live.get("metadata") or {}
    return CLEANUP_FINALIZER in (meta.get("finalizers") or []) and (meta.get("annotations") or {}).get(SERVED_BY_ANNOTATION) == mark


def has_claim(live: Mapping[str, Any], mark: str) -> bool:
    """Anything of Portico's claim is left (the finalizer, or this installation's mark)."""
    meta = live.get("metadata") or {}
    return CLEANUP_FINALIZER in (meta.get("finalizers") or []) or (meta.get("annotations") or {}).get(SERVED_BY_ANNOTATION) == mark


def event_key(uid: str, event: Mapping[str, str]) -> EventKey:
    return (uid, event["type"], event["reason"], event["message"])


def _problem_event(desired: Desired) -> dict[str, str] | None:
    if desired.problems:
        return {"type": "Warning", "reason": "NotServed", "message": "; ".join(desired.problems)}
    if desired.warnings:
        return {"type": "Warning", "reason": "ServedWithWarnings", "message": "; ".join(desired.warnings)}
    return None


def plan(desired: Desired, live: Mapping[str, Any], seen: set[EventKey], *, stage: str, release_allowed: bool,
         mark: str, ip_mode: str = "VIP") -> Plan:
    """The writes that bring one live Service to what lb_validate decided (``seen``: the
    Events Portico already recorded, by ``event_key``)."""
    meta = live.get("metadata") or {}
    uid = str(meta.get("uid") or "")
    result = Plan(key=desired.key, namespace=desired.namespace, name=desired.name,
                  before=[str(entry.get("ip")) for entry in current_ingress(live)])
    if desired.uid and uid and desired.uid != uid:
        return result  # deleted and created again since the inventory read it: the next run sees the new one
    deleting = bool(meta.get("deletionTimestamp"))
    if desired.release:
        if not has_claim(live, mark) and not current_ingress(live):
            return result
        if stage != "publish":
            return result
        if not release_allowed:
            result.withheld = True
            return result
        if current_ingress(live):
            result.ingress = []
        reason = desired.release_reason or "no longer served"
        released = ", ".join(result.before) or "no address"
        event = {"type": "Normal", "reason": "Released",
                 "message": f"Portico no longer serves this Service ({reason}); {released} withdrawn from every gateway"}
        if event_key(uid, event) not in seen:
            result.events.append(event)
        result.unclaim = has_claim(live, mark)
        return result
    if desired.served and not deleting and not is_claimed(live, mark):
        result.claim = True  # also in publish: a Service claimed nowhere else is claimed here
    if stage != "publish":
        return result
    wanted = desired_ingress(desired.ips if desired.served else (), ip_mode)
    if not same_ingress(current_ingress(live), wanted):
        result.ingress = wanted
        if desired.served:
            result.events.append({"type": "Normal", "reason": "IPAllocated",
                                  "message": f"Portico serves this Service on {', '.join(desired.ips)}"})
    problem = _problem_event(desired)
    if problem is not None and event_key(uid, problem) not in seen:
        result.events.append(problem)
    return result


def claim_patch(live: Mapping[str, Any], mark: str, claim: bool) -> dict[str, Any]:
    """The merge patch that adds (or removes) the finalizer and the mark, guarded by the
    resourceVersion it was computed from (a finalizer list is replaced whole by a merge patch)."""
    meta = live.get("metadata") or {}
    finalizers = [f for f in meta.get("finalizers") or [] if f != CLEANUP_FINALIZER]
    if claim:
        finalizers.append(CLEANUP_FINALIZER)
    return {"metadata": {"resourceVersion": meta.get("resourceVersion"), "finalizers": finalizers or None,
                         "annotations": {SERVED_BY_ANNOTATION: mark if claim else None}}}


def status_patch(live: Mapping[str, Any], ingress: list[dict[str, str]]) -> dict[str, Any]:
    """The status merge patch (``null`` removes the list), guarded by the resourceVersion."""
    return {"metadata": {"resourceVersion": (live.get("metadata") or {}).get("resourceVersion")},
            "status": {"loadBalancer": {"ingress": ingress or None}}}


def event_object(service: Mapping[str, Any], event: Mapping[str, str], now: str, instance: str, suffix: str) -> dict[str, Any]:
    """A core/v1 Event about the Service, as client-go's event recorder writes one (its name is
    ``<object>.<suffix>``, the recorder uses hex nanoseconds)."""
    meta = service["metadata"]
    return {
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": f"{meta['name']}.{suffix}", "namespace": meta["namespace"]},
        "involvedObject": {"kind": "Service", "apiVersion": "v1", "namespace": meta["namespace"], "name": meta["name"],
                           "uid": meta["uid"], "resourceVersion": meta.get("resourceVersion")},
        "type": event["type"], "reason": event["reason"], "message": event["message"],
        "source": {"component": EVENT_SOURCE}, "reportingComponent": REPORTING_COMPONENT, "reportingInstance": instance,
        "firstTimestamp": now, "lastTimestamp": now, "count": 1,
    }


def seen_events(events: Iterable[Mapping[str, Any]]) -> set[EventKey]:
    """The Events Portico recorded, by ``event_key`` (others' Events are not ours to judge)."""
    found: set[EventKey] = set()
    for item in events:
        if (item.get("source") or {}).get("component") != EVENT_SOURCE:
            continue
        uid = str((item.get("involvedObject") or {}).get("uid") or "")
        found.add((uid, str(item.get("type")), str(item.get("reason")), str(item.get("message"))))
    return found
