# -*- coding: utf-8 -*-
# Copyright: Portico developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the status write-back does to each object: pure planning, one plan per object.

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

The same protocol holds for every kind (``k8s.kinds``: its finalizer and paths); what the status
holds is the kind's: a ``StatusWriter`` computes it from what lb_validate decided and the object as
read. A Service's is ``status.loadBalancer.ingress`` (``ServiceStatusWriter``, here); Portico's
LoadBalancer resource has addresses, conditions and the backends' health (``k8s.resource_status``).

Works on the API's JSON (``live`` is the object as read), never on typed models.
Standard library only, like every module_util.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ansible_collections.portico.gateway.plugins.module_utils.k8s.annotations import SERVED_BY_ANNOTATION
from ansible_collections.portico.gateway.plugins.module_utils.k8s.kinds import SERVICE, Kind
from ansible_collections.portico.gateway.plugins.module_utils.model.documents import STATUS_FORMAT, decode, object_key
from ansible_collections.portico.gateway.plugins.module_utils.model.observed import GatewayObservation
from ansible_collections.portico.gateway.plugins.module_utils.model.problems import Problem, render

STAGES = ("claim", "publish")
EVENT_SOURCE = "portico"
REPORTING_COMPONENT = "portico.io/gateway"
CLEANUP_FINALIZER = SERVICE.finalizer

EventKey = tuple[str, str, str, str]  # involved uid, type, reason, message


@dataclass(frozen=True)
class Desired:
    """One item of ``portico_k8s_status``: what lb_validate decided for one object.

    ``loadbalancers``: its LBs' names in the model (the gateways report health by them);
    ``details``: what its kind's writer needs besides (a LoadBalancer resource's generation and state).
    """

    cluster: str
    namespace: str
    name: str
    uid: str
    ips: tuple[str, ...]
    problems: tuple[Problem, ...]
    warnings: tuple[Problem, ...]
    served: bool
    release: bool
    release_reason: str
    claimed: bool = False  # carried the finalizer and the mark when the inventory read it
    kind: str = SERVICE.kind
    loadbalancers: tuple[str, ...] = ()
    details: Mapping[str, Any] = field(default_factory=dict, hash=False)

    @property
    def key(self) -> str:
        return object_key(self.cluster, self.namespace, self.name, self.kind)

    @classmethod
    def from_item(cls, raw: Mapping[str, Any]) -> Desired:
        key = object_key(str(raw.get("cluster") or ""), str(raw.get("namespace") or ""), str(raw.get("name") or ""),
                         str(raw.get("kind") or SERVICE.kind))
        details = raw.get("details")
        return cls(
            cluster=str(raw.get("cluster") or ""), namespace=str(raw.get("namespace") or ""),
            name=str(raw.get("name") or ""), uid=str(raw.get("uid") or ""),
            ips=tuple(str(ip) for ip in raw.get("ips") or ()),
            problems=_problems(raw.get("problems"), key), warnings=_problems(raw.get("warnings"), key),
            served=bool(raw.get("served")), release=bool(raw.get("release")),
            release_reason=str(raw.get("release_reason") or ""), claimed=raw.get("claimed") is True,
            kind=str(raw.get("kind") or SERVICE.kind),
            loadbalancers=tuple(str(name) for name in raw.get("loadbalancers") or ()),
            details=dict(details) if isinstance(details, Mapping) else {},
        )


def _problems(raws: Any, key: str) -> tuple[Problem, ...]:
    """Problems as data ({subject, field, message}); a plain string is one rendered already."""
    return tuple(Problem("", "", raw) if isinstance(raw, str) else Problem.from_dict(raw, key) for raw in raws or ())


def read_status_document(value: Any) -> list[Desired]:
    """The items of a ``portico_k8s_status`` document (or a plain list of items)."""
    return [Desired.from_item(item) for item in decode(value, STATUS_FORMAT, "services")["services"] if isinstance(item, Mapping)]


@dataclass(frozen=True)
class WriteContext:
    """What a status writer may need besides the object: the gateways' reports (name -> whether
    this run converged it, and what it observed), whether this run converged at all, the time."""

    gateways: Mapping[str, tuple[bool, GatewayObservation]] = field(default_factory=dict, hash=False)
    converge: bool = True  # False: a status refresh with no converge (programmed = running it)
    now: str = ""
    ip_mode: str = "VIP"


class StatusWriter:
    """What one kind's status holds: computed from what lb_validate decided and the object as read."""

    kind: Kind = SERVICE

    def addresses(self, live: Mapping[str, Any]) -> list[str]:
        """The addresses the object's status shows (for the diff and the Events)."""
        raise NotImplementedError

    def wanted(self, desired: Desired, live: Mapping[str, Any], context: WriteContext) -> dict[str, Any] | None:
        """The status to write, None when the object has it already."""
        raise NotImplementedError

    def cleared(self, live: Mapping[str, Any]) -> dict[str, Any] | None:
        """The status that takes back what Portico wrote (a release), None when there is nothing."""
        raise NotImplementedError

    def served_message(self, desired: Desired) -> str:
        return f"Portico serves this {self.kind.kind} on {', '.join(desired.ips)}"


def status_patch_of(live: Mapping[str, Any], status: Mapping[str, Any] | None) -> dict[str, Any]:
    """The status merge patch (``null`` removes a field), guarded by the resourceVersion read."""
    return {"metadata": {"resourceVersion": (live.get("metadata") or {}).get("resourceVersion")}, "status": status}


@dataclass
class Plan:
    """The writes for one object, in the order they are made."""

    key: str
    namespace: str
    name: str
    kind: Kind = SERVICE
    claim: bool = False  # add the finalizer and the mark
    status: dict[str, Any] | None = None  # the status to write (None: leave it)
    # The same for the object as read again (after a write conflict): None when nothing is left to write.
    recompute: Callable[[Mapping[str, Any]], dict[str, Any] | None] | None = None
    events: list[dict[str, str]] = field(default_factory=list)
    unclaim: bool = False  # remove the mark and the finalizer (after the status is cleared)
    withheld: bool = False  # a release waiting for a converge that reaches every gateway
    before: list[str] = field(default_factory=list)  # addresses as read, for the diff
    after: list[str] = field(default_factory=list)  # addresses written, for the diff

    @property
    def writes(self) -> bool:
        return self.claim or self.status is not None or bool(self.events) or self.unclaim

    @property
    def ingress(self) -> list[dict[str, Any]] | None:
        """A Service's new status.loadBalancer.ingress (None: left as it is)."""
        if self.status is None:
            return None
        return list((self.status.get("loadBalancer") or {}).get("ingress") or [])


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


class ServiceStatusWriter(StatusWriter):
    """A Service's status: ``status.loadBalancer.ingress`` (kubectl shows it as EXTERNAL-IP)."""

    kind = SERVICE

    def addresses(self, live: Mapping[str, Any]) -> list[str]:
        return [str(entry.get("ip")) for entry in current_ingress(live)]

    def wanted(self, desired: Desired, live: Mapping[str, Any], context: WriteContext) -> dict[str, Any] | None:
        ingress = desired_ingress(desired.ips if desired.served else (), context.ip_mode)
        if same_ingress(current_ingress(live), ingress):
            return None
        return {"loadBalancer": {"ingress": ingress or None}}

    def cleared(self, live: Mapping[str, Any]) -> dict[str, Any] | None:
        return {"loadBalancer": {"ingress": None}} if current_ingress(live) else None


def status_patch(live: Mapping[str, Any], ingress: list[dict[str, str]]) -> dict[str, Any]:
    """A Service's status merge patch (``null`` removes the list), guarded by the resourceVersion."""
    return status_patch_of(live, {"loadBalancer": {"ingress": ingress or None}})


def is_claimed(live: Mapping[str, Any], mark: str, finalizer: str = CLEANUP_FINALIZER) -> bool:
    meta = live.get("metadata") or {}
    return finalizer in (meta.get("finalizers") or []) and (meta.get("annotations") or {}).get(SERVED_BY_ANNOTATION) == mark


def has_claim(live: Mapping[str, Any], mark: str, finalizer: str = CLEANUP_FINALIZER) -> bool:
    """Anything of Portico's claim is left (the finalizer, or this installation's mark)."""
    meta = live.get("metadata") or {}
    return finalizer in (meta.get("finalizers") or []) or (meta.get("annotations") or {}).get(SERVED_BY_ANNOTATION) == mark


def event_key(uid: str, event: Mapping[str, str]) -> EventKey:
    return (uid, event["type"], event["reason"], event["message"])


def _problem_event(desired: Desired) -> dict[str, str] | None:
    if desired.problems:
        return {"type": "Warning", "reason": "NotServed", "message": "; ".join(render(desired.problems))}
    if desired.warnings:
        return {"type": "Warning", "reason": "ServedWithWarnings", "message": "; ".join(render(desired.warnings))}
    return None


SERVICE_WRITER = ServiceStatusWriter()


def plan(desired: Desired, live: Mapping[str, Any], seen: set[EventKey], *, stage: str, release_allowed: bool,
         mark: str, ip_mode: str = "VIP", writer: StatusWriter | None = None, context: WriteContext | None = None) -> Plan:
    """The writes that bring one live object to what lb_validate decided (``seen``: the Events
    Portico already recorded, by ``event_key``; ``writer``: its kind's, a Service's by default)."""
    writer = writer or SERVICE_WRITER
    context = context or WriteContext(ip_mode=ip_mode)
    finalizer = writer.kind.finalizer
    meta = live.get("metadata") or {}
    uid = str(meta.get("uid") or "")
    result = Plan(key=desired.key, namespace=desired.namespace, name=desired.name, kind=writer.kind,
                  before=writer.addresses(live))
    if desired.uid and uid and desired.uid != uid:
        return result  # deleted and created again since the inventory read it: the next run sees the new one
    deleting = bool(meta.get("deletionTimestamp"))
    if desired.release:
        if not has_claim(live, mark, finalizer) and writer.cleared(live) is None:
            return result
        if stage != "publish":
            return result
        if not release_allowed:
            result.withheld = True
            return result
        result.status = writer.cleared(live)
        result.recompute = writer.cleared
        reason = desired.release_reason or "no longer served"
        released = ", ".join(result.before) or "no address"
        event = {"type": "Normal", "reason": "Released",
                 "message": f"Portico no longer serves this {writer.kind.kind} ({reason}); {released} withdrawn from every gateway"}
        if event_key(uid, event) not in seen:
            result.events.append(event)
        result.unclaim = has_claim(live, mark, finalizer)
        return result
    if desired.served and not deleting and not is_claimed(live, mark, finalizer):
        result.claim = True  # also in publish: an object claimed nowhere else is claimed here
    if stage != "publish":
        return result
    result.status = writer.wanted(desired, live, context)
    result.recompute = lambda fresh: writer.wanted(desired, fresh, context)
    if result.status is not None:
        result.after = writer.addresses({"status": result.status})
        if desired.served and result.after != result.before:
            result.events.append({"type": "Normal", "reason": "IPAllocated", "message": writer.served_message(desired)})
    problem = _problem_event(desired)
    if problem is not None and event_key(uid, problem) not in seen:
        result.events.append(problem)
    return result


def claim_patch(live: Mapping[str, Any], mark: str, claim: bool, finalizer: str = CLEANUP_FINALIZER) -> dict[str, Any]:
    """The merge patch that adds (or removes) the finalizer and the mark, guarded by the
    resourceVersion it was computed from (a finalizer list is replaced whole by a merge patch)."""
    meta = live.get("metadata") or {}
    finalizers = [f for f in meta.get("finalizers") or [] if f != finalizer]
    if claim:
        finalizers.append(finalizer)
    return {"metadata": {"resourceVersion": meta.get("resourceVersion"), "finalizers": finalizers or None,
                         "annotations": {SERVED_BY_ANNOTATION: mark if claim else None}}}


def event_object(obj: Mapping[str, Any], event: Mapping[str, str], now: str, instance: str, suffix: str,
                 kind: Kind = SERVICE) -> dict[str, Any]:
    """A core/v1 Event about the object, as client-go's event recorder writes one (its name is
    ``<object>.<suffix>``, the recorder uses hex nanoseconds)."""
    meta = obj["metadata"]
    return {
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": f"{meta['name']}.{suffix}", "namespace": meta["namespace"]},
        "involvedObject": kind.involved_object(obj),
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
