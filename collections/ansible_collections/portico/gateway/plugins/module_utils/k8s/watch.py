# -*- coding: utf-8 -*-
# Copyright: Portico developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""On-demand reconcile: watch Kubernetes and trigger a debounced, serialised apply of what changed.

Shared by ``bin/portico-watch`` (a plain command and systemd service) and the Event-Driven
Ansible source plugin ``portico.gateway.k8s_services``; it imports nothing from Ansible so
both run it outside Ansible.

- ``ClusterState`` keeps a fingerprint of the parts of each Service, EndpointSlice, Node and
  object of the other kinds a source serves (``k8s.resources``: Portico's LoadBalancer resource)
  that Portico reads, so no-op writes (above all Portico's own status write-back) are dropped
  instead of triggering a run that triggers the next one.
- ``Debouncer`` is the pure scheduling state (clock passed in): a dirty set of keys, a quiet
  window, a cap on the wait, one run at a time, exponential back-off, a periodic full resync.
- ``ClusterWatcher`` runs list+watch per resource with resourceVersion tracking, bookmarks,
  410 Gone -> relist (diffed against the fingerprints) and reconnect with back-off.
- ``Reconciler`` ties them together and calls ``run(batch)`` for every trigger.

Keys are ``<cluster>/<namespace>/<service>``, ``<cluster>/<namespace>/<Kind>/<name>`` for the
other kinds (``model.documents.object_key``); a Node is ``<cluster>//<node>`` (no namespace,
as Kubernetes keys cluster-scoped objects): it affects every nodeport Service of its cluster
and the pod-CIDR routes. A Gateway API object (GatewayClass, Gateway, TCPRoute, UDPRoute,
ReferenceGrant), and a Service or EndpointSlice a route sends to, is keyed the same way
(``<cluster>//<Kind>/<namespace>/<name>``): its change is a full run. Namespaces and names are checked against the API's DNS naming rules
before they become keys, so a key is always plain text that templating cannot act on.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ansible_collections.portico.gateway.plugins.module_utils.k8s.client import api_client
from ansible_collections.portico.gateway.plugins.module_utils.k8s.gateway_api import ROUTE_VERSIONS
from ansible_collections.portico.gateway.plugins.module_utils.k8s.kinds import (
    GATEWAY,
    GATEWAY_CLASS,
    REFERENCE_GRANT,
    TCPROUTE,
    UDPROUTE,
    Kind,
)
from ansible_collections.portico.gateway.plugins.module_utils.k8s.resources import RESOURCE_KINDS, resource_kinds
from ansible_collections.portico.gateway.plugins.module_utils.k8s.sources import ClusterConfig
from ansible_collections.portico.gateway.plugins.module_utils.k8s.annotations import SERVED_BY_ANNOTATION
from ansible_collections.portico.gateway.plugins.module_utils.k8s.translate import (
    SERVICE_NAME_LABEL,
    Scope,
    TranslateOptions,
    node_entries,
    scope_of,
)

try:
    from kubernetes import client as k8s
    from kubernetes.client.exceptions import ApiException
    from kubernetes.watch import Watch

    HAS_KUBERNETES = True
except ImportError:  # reported by k8s.client.api_client when a cluster is watched
    HAS_KUBERNETES = False
    k8s = None

    class ApiException(Exception):  # type: ignore[no-redef]
        status: int = 0

    class Watch:  # type: ignore[no-redef]
        """Placeholder so that _RawWatch can be defined without the client."""

LOG = logging.getLogger("portico.watch")

KINDS = ("Service", "EndpointSlice", "Node")
# The Gateway API kinds a source that serves ``Gateway`` watches, each at the versions to try in
# turn (the first the API serves): a route kind may be served at v1 or only at v1alpha2.
GATEWAY_API_WATCHED: Mapping[str, tuple[Kind, tuple[str, ...]]] = {
    GATEWAY_CLASS.kind: (GATEWAY_CLASS, (GATEWAY_CLASS.version,)),
    GATEWAY.kind: (GATEWAY, (GATEWAY.version,)),
    TCPROUTE.kind: (TCPROUTE, ROUTE_VERSIONS),
    UDPROUTE.kind: (UDPROUTE, ROUTE_VERSIONS),
    REFERENCE_GRANT.kind: (REFERENCE_GRANT, ("v1", "v1beta1")),
}
_ROUTE_KINDS = (TCPROUTE.kind, UDPROUTE.kind)
# A listener may allow routes from the namespaces a label selector picks: their labels count.
NAMESPACE_KIND = "Namespace"
HTTP_GONE = 410
HTTP_NOT_FOUND = 404
# A kind the API does not serve (its CRD is not installed) is looked for again this often.
ABSENT_KIND_RETRY = 60.0
# DNS-1123 subdomain (names) and label (namespaces), as the API server enforces them.
_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_NAMESPACE_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")

Fingerprint = Mapping[str, str]  # relevant part -> digest


@dataclass(frozen=True)
class Change:
    """One reason to reconcile one key."""

    key: str
    reason: str


# --- relevance ---------------------------------------------------------------------------


def _digest(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return obj.get("metadata") or {}


def service_fingerprint(service: Mapping[str, Any], options: TranslateOptions) -> Fingerprint | None:
    """Digests of what Portico reads from a Service it serves or must release; None otherwise."""
    return object_fingerprint(service, scope_of(service, options))


def object_fingerprint(obj: Mapping[str, Any], scope: Scope) -> Fingerprint | None:
    """Digests of what Portico reads from an object it serves or must release (``scope``, by its
    kind's rules); None otherwise.

    What Portico writes itself is left out on purpose, so its own writes never trigger the next
    run: ``status``, the cleanup finalizer and its ``portico.io/served-by`` mark. The start of a
    deletion (``deletionTimestamp``) is in: it turns a served object into one to release.
    """
    if scope.action == "skip":
        return None
    meta = _meta(obj)
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if k != SERVED_BY_ANNOTATION}
    return {
        "spec": _digest(obj.get("spec") or {}),
        "annotations": _digest(annotations),
        "labels": _digest(meta.get("labels") or {}),
        "scope": _digest([scope.action, scope.reason]),
    }


def slice_fingerprint(endpoint_slice: Mapping[str, Any]) -> Fingerprint:
    """Endpoints, ports and owner; not the annotations (the controller stamps trigger times)."""
    return {
        "service": str((_meta(endpoint_slice).get("labels") or {}).get(SERVICE_NAME_LABEL, "")),
        "endpoints": _digest([endpoint_slice.get("addressType"), endpoint_slice.get("endpoints") or []]),
        "ports": _digest(endpoint_slice.get("ports") or []),
    }


def node_fingerprint(node: Mapping[str, Any], cluster: str) -> Fingerprint:
    """Readiness, exclusion, InternalIPs and pod CIDRs (not heartbeats, not capacity)."""
    entry = node_entries([node], cluster)[0]
    return {part: _digest(entry[part]) for part in ("ready", "excluded", "internal_ips", "pod_cidrs")}


def gateway_api_fingerprint(obj: Mapping[str, Any]) -> Fingerprint:
    """What Portico reads from a Gateway API object: every one counts (a Gateway may turn to
    Portico's class, a route to Portico's Gateway); never its status, finalizers or mark."""
    deleting = bool(_meta(obj).get("deletionTimestamp"))
    return dict(object_fingerprint(obj, Scope("release" if deleting else "serve")) or {})


def route_backends(route: Mapping[str, Any]) -> frozenset[tuple[str, str]]:
    """(namespace, name) of the Services a route's backendRefs name."""
    namespace = str(_meta(route).get("namespace") or "")
    found = set()
    for rule in (route.get("spec") or {}).get("rules") or []:
        for ref in (rule or {}).get("backendRefs") or []:
            if (ref.get("group") or "") == "" and (ref.get("kind") or "Service") == "Service" and ref.get("name"):
                found.add((str(ref.get("namespace") or namespace), str(ref["name"])))
    return frozenset(found)


def gateway_api_key(cluster: str, kind: str, namespace: str, name: str) -> str:
    """A Gateway API change's key: shaped like a cluster-scoped object's (``cluster//...``), so the
    run is a full one. A route or Gateway changes its Gateway's listeners and the other routes'
    precedence, and a route's backends are Services Portico does not serve on their own."""
    return f"{cluster}//{kind}/{namespace}/{name}" if namespace else f"{cluster}//{kind}/{name}"


def _valid_identity(kind: str, namespace: str, name: str) -> bool:
    if not _NAME_RE.match(name):
        return False
    if kind in (GATEWAY_CLASS.kind, "Node", NAMESPACE_KIND):
        return not namespace
    return bool(_NAMESPACE_RE.match(namespace))


def _changed_parts(old: Fingerprint, new: Fingerprint) -> str:
    return ", ".join(part for part in new if old.get(part) != new.get(part))


class ClusterState:
    """Fingerprints of the objects one cluster's watches have seen, turned into Changes.

    Thread-safe: the three watch threads of a cluster share it (an EndpointSlice matters only
    while its Service is served, which the Service watch knows).
    """

    def __init__(self, options: TranslateOptions):
        self.options = options
        self._lock = threading.Lock()
        gateway_api = (*GATEWAY_API_WATCHED, NAMESPACE_KIND) if GATEWAY.kind in options.kinds else ()
        self.kinds = (*KINDS, *(resource.kind.kind for resource in resource_kinds(options)), *gateway_api)
        self._seen: dict[str, dict[tuple[str, str], Fingerprint]] = {kind: {} for kind in self.kinds}
        # The Services routes send to (not served on their own): what of them Portico reads.
        self._backends: dict[tuple[str, str], Fingerprint] = {}

    def _route_backends(self) -> set[tuple[str, str]]:
        """Called with the lock held."""
        return {(str(namespace), str(name)) for kind in _ROUTE_KINDS for fingerprint in self._seen.get(kind, {}).values()
                for namespace, name in json.loads(fingerprint.get("backends") or "[]")}

    def _fingerprint(self, kind: str, obj: Mapping[str, Any]) -> Fingerprint | None:
        if kind == NAMESPACE_KIND:
            return {"labels": _digest(_meta(obj).get("labels") or {})}
        if kind in GATEWAY_API_WATCHED:
            fingerprint = gateway_api_fingerprint(obj)
            if kind in _ROUTE_KINDS:
                fingerprint["backends"] = json.dumps(sorted(route_backends(obj)))
            return fingerprint
        if kind == "Service":
            return service_fingerprint(obj, self.options)
        if kind == "EndpointSlice":
            return slice_fingerprint(obj)
        if kind in RESOURCE_KINDS:
            return object_fingerprint(obj, RESOURCE_KINDS[kind].scope(obj, self.options))
        return node_fingerprint(obj, self.options.cluster)

    def _identity(self, kind: str, obj: Mapping[str, Any]) -> tuple[str, str] | None:
        meta = _meta(obj)
        namespace, name = str(meta.get("namespace") or ""), str(meta.get("name") or "")
        if not _valid_identity(kind, namespace, name):
            LOG.warning("cluster %s: ignoring a %s with an invalid name %r/%r", self.options.cluster, kind, namespace, name)
            return None
        return namespace, name

    def event(self, kind: str, event_type: str, obj: Mapping[str, Any]) -> list[Change]:
        """Changes for one watch event (ADDED, MODIFIED or DELETED)."""
        ident = self._identity(kind, obj)
        if ident is None:
            return []
        new = None if event_type == "DELETED" else self._fingerprint(kind, obj)
        with self._lock:
            seen = self._seen[kind]
            old = seen.pop(ident, None)
            if new is not None:
                seen[ident] = new
            changes = self._compare(kind, ident, old, new, event_type)
            if kind == "Service":
                changes += self._backend_change(ident, None if event_type == "DELETED" else obj, event_type)
            return changes

    def _backend_change(self, ident: tuple[str, str], service: Mapping[str, Any] | None, how: str) -> list[Change]:
        """A change of a Service a route sends to (its ports, its deletion). Called with the lock held."""
        if not self._seen.get(TCPROUTE.kind) and not self._seen.get(UDPROUTE.kind):
            return []
        new = None
        if service is not None and ident in self._route_backends():
            new = {"ports": _digest((service.get("spec") or {}).get("ports") or []),
                   "deleting": _digest(bool(_meta(service).get("deletionTimestamp")))}
        old = self._backends.pop(ident, None)
        if new is not None:
            self._backends[ident] = new
        if old == new or (old is None and how == "relist"):
            return []
        namespace, name = ident
        return [Change(gateway_api_key(self.options.cluster, "Service", namespace, name), f"Service {name}, a route's backend, changed")]

    def relist(self, kind: str, objects: Iterable[Mapping[str, Any]], prime: bool = False) -> list[Change]:
        """Replace what is known of a kind by a fresh list; the differences are the Changes
        missed while not watching (none when priming: the first run is a full one anyway)."""
        fresh: dict[tuple[str, str], Fingerprint] = {}
        for obj in objects:
            ident = self._identity(kind, obj)
            fingerprint = self._fingerprint(kind, obj) if ident else None
            if ident and fingerprint is not None:
                fresh[ident] = fingerprint
        with self._lock:
            old_seen, self._seen[kind] = self._seen[kind], fresh
            changes = []
            if kind == "Service":
                for obj in objects if isinstance(objects, list) else []:
                    ident = self._identity(kind, obj)
                    if ident:
                        changes += self._backend_change(ident, obj, "relist")
            if prime:
                return []
            for ident in sorted(set(old_seen) | set(fresh)):
                changes.extend(self._compare(kind, ident, old_seen.get(ident), fresh.get(ident), "relist"))
            return changes

    def _compare(self, kind: str, ident: tuple[str, str], old: Fingerprint | None, new: Fingerprint | None,
                 how: str) -> list[Change]:
        """``how``: the watch event type, or "relist" (then a vanished object may also have
        merely stopped being served). Called with the lock held."""
        if old == new:
            return []
        namespace, name = ident
        cluster = self.options.cluster
        if kind == "EndpointSlice":
            service = (new or old or {}).get("service", "")
            verb = "added" if old is None else "deleted" if new is None else "changed"
            if service and (namespace, service) in self._route_backends():
                return [Change(gateway_api_key(cluster, "Service", namespace, service), f"EndpointSlice {name} of a route's backend {verb}")]
            if not service or (namespace, service) not in self._seen["Service"]:
                return []  # a Service Portico does not serve (or not yet: its own event will come)
            return [Change(f"{cluster}/{namespace}/{service}", f"EndpointSlice {name} {verb}")]
        if kind == NAMESPACE_KIND:
            if old is None or new is None or not self._seen.get(GATEWAY.kind):
                return []  # a namespace's own coming and going reaches us through its objects
            return [Change(gateway_api_key(cluster, kind, "", name), f"{kind} labels changed (listeners may select it)")]
        if kind in GATEWAY_API_WATCHED:
            reason = f"{kind} added" if old is None else f"{kind} deleted" if new is None else f"{kind} {_changed_parts(old, new)} changed"
            key = gateway_api_key(cluster, kind, namespace, name)
            return [Change(key, f"{reason} (relist)" if how == "relist" else reason)]
        if old is None:
            reason = f"{kind} added" if how != "MODIFIED" else f"{kind} now served"
        elif new is None:
            reason = {"DELETED": f"{kind} deleted", "MODIFIED": f"{kind} no longer served"}.get(how, f"{kind} gone")
        else:
            reason = f"{kind} {_changed_parts(old, new)} changed"
        key = RESOURCE_KINDS[kind].kind.key(cluster, namespace, name) if kind in RESOURCE_KINDS else f"{cluster}/{namespace}/{name}"
        return [Change(key, f"{reason} (relist)" if how == "relist" else reason)]


# --- debounce, serialise, back off, resync -------------------------------------------------


@dataclass(frozen=True)
class DebounceSettings:
    quiet: float = 0.3  # run once no change arrived for this long ...
    max_wait: float = 2.0  # ... or once the oldest pending change is this old
    resync: float = 300.0  # full reconcile at least this often (0: never)
    backoff_initial: float = 1.0  # first retry delay after a failed run, doubled each time
    backoff_max: float = 60.0


@dataclass(frozen=True)
class Batch:
    """One trigger: the keys to reconcile, why, and whether to reconcile everything."""

    number: int
    changed: tuple[str, ...]
    reasons: Mapping[str, tuple[str, ...]]
    full: bool
    full_reason: str
    attempt: int  # 1, then 2, 3 ... for retries after failed runs
    started_at: float
    first_change_at: float | None  # when the oldest change of this batch arrived

    def summary(self, limit: int = 400) -> str:
        parts = [f"full reconcile ({self.full_reason})"] if self.full else []
        parts += [f"{key}: {', '.join(self.reasons.get(key, ()))}" for key in self.changed]
        text = "; ".join(parts)
        return text if len(text) <= limit else text[: limit - 3] + "..."


class Debouncer:
    """Scheduling state only; every method takes the current time, so tests use a fake clock.

    Not thread-safe: the Reconciler calls it under its own lock.
    """

    def __init__(self, settings: DebounceSettings, now: float):
        self.settings = settings
        self._dirty: dict[str, list[str]] = {}
        self._first: float | None = None
        self._last: float | None = None
        self._full: str | None = None  # reason of a pending full reconcile
        self._retry = False  # the pending work is a failed batch: due when the back-off ends
        self._retry_at = 0.0
        self._failures = 0
        self._running: Batch | None = None
        self._count = 0
        self._next_resync = now + settings.resync if settings.resync > 0 else math.inf

    @property
    def running(self) -> Batch | None:
        return self._running

    @property
    def failures(self) -> int:
        return self._failures

    def add(self, changes: Iterable[Change], now: float) -> None:
        for change in changes:
            reasons = self._dirty.setdefault(change.key, [])
            if change.reason not in reasons:
                reasons.append(change.reason)
            self._first = now if self._first is None else self._first
            self._last = now

    def request_full(self, reason: str, now: float) -> None:
        self._full = self._full or reason
        self._first = now if self._first is None else self._first
        self._last = now if self._last is None else self._last

    def _has_work(self) -> bool:
        return bool(self._dirty) or self._full is not None

    def due_at(self, now: float) -> float | None:
        """When ``take`` may next return a batch (None: not before a change or a finished run)."""
        if self._running is not None:
            return None
        # A pending full run (a failed resync among them) waits for its back-off, not for the
        # resync time that already passed.
        when = self._next_resync if self._full is None else math.inf
        if self._has_work():
            if self._full is not None or self._retry:
                ready = now
            else:
                first = now if self._first is None else self._first  # both set by the first change
                last = now if self._last is None else self._last
                ready = min(last + self.settings.quiet, first + self.settings.max_wait)
            when = min(when, max(ready, self._retry_at))
        return None if math.isinf(when) else when

    def take(self, now: float) -> Batch | None:
        """The next batch if one is due (it is then running until ``finish``)."""
        if self._running is not None:
            return None
        if now >= self._next_resync and self._full is None:
            self.request_full(f"resync every {self.settings.resync:g}s", now)
        due = self.due_at(now)
        if not self._has_work() or due is None or now < due:
            return None
        self._count += 1
        batch = Batch(
            number=self._count,
            changed=tuple(sorted(self._dirty)),
            reasons={key: tuple(reasons) for key, reasons in self._dirty.items()},
            full=self._full is not None,
            full_reason=self._full or "",
            attempt=self._failures + 1,
            started_at=now,
            first_change_at=self._first,
        )
        self._dirty, self._first, self._last, self._full, self._retry = {}, None, None, None, False
        self._running = batch
        return batch

    def finish(self, batch: Batch, ok: bool, now: float) -> float | None:
        """Record a run's outcome; a failed batch is merged back and retried after the
        returned delay (changes that arrived meanwhile join that retry)."""
        self._running = None
        if ok:
            self._failures, self._retry_at = 0, 0.0
            if batch.full and self.settings.resync > 0:
                self._next_resync = batch.started_at + self.settings.resync
            return None
        self._failures += 1
        delay = min(self.settings.backoff_initial * 2 ** (self._failures - 1), self.settings.backoff_max)
        self._retry_at, self._retry = now + delay, True
        for key in batch.changed:
            reasons = self._dirty.setdefault(key, [])
            reasons[:0] = [reason for reason in batch.reasons.get(key, ()) if reason not in reasons]
        if batch.full:
            self._full = self._full or batch.full_reason
        if batch.first_change_at is not None:
            self._first = batch.first_change_at if self._first is None else min(self._first, batch.first_change_at)
        self._last = now if self._last is None else self._last
        return delay


# --- what a trigger hands on --------------------------------------------------------------


def batch_payload(batch: Batch) -> dict[str, Any]:
    """What a trigger hands to the apply: JSON-ready, keys and reasons only."""
    return {
        "trigger": batch.number,
        "attempt": batch.attempt,
        "full": batch.full,
        "reason": batch.summary(),
        "changed": list(batch.changed),
        "reasons": {key: list(reasons) for key, reasons in batch.reasons.items()},
    }


def eda_event(batch: Batch) -> dict[str, Any]:
    """The event the EDA source puts on its queue for one trigger."""
    payload = batch_payload(batch)
    return {"portico": {key: payload[key] for key in ("changed", "reason", "full", "reasons", "trigger")}}


# --- list + watch --------------------------------------------------------------------------


class _RawWatch(Watch):  # type: ignore[misc,valid-type]
    """Events as the API's JSON: the client's models reject real objects such as an
    EndpointSlice with ``endpoints: null``, and we only read a few fields anyway."""

    def get_return_type(self, func: Callable[..., Any]) -> None:  # noqa: ARG002 - interface of Watch
        return None


@dataclass(frozen=True)
class WatchTimings:
    request_timeout: float = 30.0  # each list request
    watch_timeout: float = 300.0  # server-side watch length (randomised up to 1.5x, like client-go)
    backoff_initial: float = 0.5  # reconnect delay after an error, doubled up to backoff_max
    backoff_max: float = 30.0
    page_size: int = 500


@dataclass
class _Resource:
    kind: str
    call: Callable[..., Any]
    kwargs: dict[str, Any] = field(default_factory=dict)
    rv: str | None = None  # where to resume watching; None: list first
    optional: bool = False  # a custom resource: the API may not serve it (CRD not installed)
    versions: tuple[str, ...] = ()  # the versions to try in turn (the first the API serves)


Submit = Callable[[list[Change]], None]


def _next_version(resource: _Resource) -> bool:
    """Move to the next version of the resource to try; False (and back to the first) when none is left."""
    if not resource.versions:
        return False
    current = resource.kwargs.get("version")
    index = resource.versions.index(current) + 1 if current in resource.versions else len(resource.versions)
    if index < len(resource.versions):
        resource.kwargs["version"] = resource.versions[index]
        return True
    resource.kwargs["version"] = resource.versions[0]
    return False


class ClusterWatcher:
    """List+watch Services, EndpointSlices and Nodes of one cluster, one thread each."""

    def __init__(self, cluster: ClusterConfig, submit: Submit, timings: WatchTimings | None = None):
        self.cluster = cluster
        self.state = ClusterState(cluster.options)
        self._submit = submit
        self._timings = timings or WatchTimings()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._watches: set[Any] = set()
        self._lock = threading.Lock()
        self.resources: list[_Resource] = []

    def start(self) -> None:
        client = api_client(self.cluster.auth)
        core, discovery, custom = k8s.CoreV1Api(client), k8s.DiscoveryV1Api(client), k8s.CustomObjectsApi(client)
        self.resources = [
            _Resource("Service", core.list_service_for_all_namespaces),
            # Only slices that belong to a Service (the inventory plugin lists the same ones).
            _Resource("EndpointSlice", discovery.list_endpoint_slice_for_all_namespaces, {"label_selector": SERVICE_NAME_LABEL}),
            _Resource("Node", core.list_node),
            *(_Resource(resource.kind.kind, custom.list_cluster_custom_object,
                        {"group": resource.kind.group, "version": resource.kind.version, "plural": resource.kind.plural},
                        optional=True)
              for resource in resource_kinds(self.cluster.options)),
        ]
        if GATEWAY.kind in self.cluster.options.kinds:
            self.resources += [_Resource(kind.kind, custom.list_cluster_custom_object,
                                         {"group": kind.group, "version": versions[0], "plural": kind.plural},
                                         optional=True, versions=versions)
                               for kind, versions in GATEWAY_API_WATCHED.values()]
            self.resources.append(_Resource(NAMESPACE_KIND, core.list_namespace))
        if "Service" not in self.cluster.options.kinds and GATEWAY.kind not in self.cluster.options.kinds:
            # EndpointSlices and Nodes only matter to Services (and to the routes' backends, Services too)
            self.resources = [r for r in self.resources if r.kind not in KINDS]
        for resource in self.resources:
            thread = threading.Thread(target=self.loop, args=(resource,), daemon=True,
                                      name=f"watch-{self.cluster.name}-{resource.kind}")
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 2.0) -> None:
        self._stopping.set()
        with self._lock:
            watches = list(self._watches)
        for watch in watches:
            watch.stop()
        for thread in self._threads:
            thread.join(timeout)

    def loop(self, resource: _Resource) -> None:
        """List, then watch from the list's resourceVersion, for as long as not stopped."""
        primed = False
        delay = self._timings.backoff_initial
        where = f"cluster {self.cluster.name}: {resource.kind}s"
        while not self._stopping.is_set():
            try:
                if resource.rv is None:
                    objects, resource.rv = self.list(resource)
                    self._emit(self.state.relist(resource.kind, objects, prime=not primed))
                    primed = True
                LOG.info("%s: watching from resourceVersion %s", where, resource.rv)
                started = time.monotonic()
                self.watch(resource)
                if time.monotonic() - started < 1.0:
                    delay = self._pause(delay)  # a server that ends every watch at once must not spin us
                else:
                    delay = self._timings.backoff_initial
            except ApiException as err:
                if err.status == HTTP_GONE:
                    LOG.info("%s: resourceVersion %s is gone, listing again", where, resource.rv)
                    resource.rv = None
                    continue
                tried = resource.kwargs.get("version")
                if err.status == HTTP_NOT_FOUND and resource.optional and _next_version(resource):
                    LOG.info("%s: not served at %s, trying %s", where, tried, resource.kwargs["version"])
                    resource.rv = None
                    continue
                if err.status == HTTP_NOT_FOUND and resource.optional:
                    LOG.info("%s: not served by the API (CRD not installed); looking again in %gs", where, ABSENT_KIND_RETRY)
                    resource.rv = None
                    self._stopping.wait(ABSENT_KIND_RETRY)
                    continue
                LOG.warning("%s: API error %s %s; retrying in %.1fs", where, err.status, err.reason, delay)
                delay = self._pause(delay)
            except Exception as err:  # pylint: disable=broad-except  # connection errors of urllib3 and the client alike
                if self._stopping.is_set():
                    break
                LOG.warning("%s: %s: %s; retrying in %.1fs", where, type(err).__name__, err, delay)
                delay = self._pause(delay)

    def _pause(self, delay: float) -> float:
        self._stopping.wait(delay * random.uniform(0.8, 1.2))  # jitter: gateways must not reconnect in step
        return min(delay * 2, self._timings.backoff_max)

    def _emit(self, changes: list[Change]) -> None:
        if changes:
            self._submit(changes)

    def list(self, resource: _Resource) -> tuple[list[Mapping[str, Any]], str]:
        """Every object (following ``continue``) and the list's resourceVersion, as raw JSON."""
        items: list[Mapping[str, Any]] = []
        token = None
        while True:
            response = resource.call(limit=self._timings.page_size, _continue=token, _preload_content=False,
                                     _request_timeout=self._timings.request_timeout, **resource.kwargs)
            body = json.loads(response.data)
            items.extend(body.get("items") or [])
            meta = body.get("metadata") or {}
            token = meta.get("continue")
            if not token:
                return items, str(meta.get("resourceVersion") or "")

    def watch(self, resource: _Resource) -> None:
        """Follow one watch until the server ends it, advancing ``resource.rv`` event by event
        (an error mid-stream then resumes after the last event seen, not before it)."""
        for event in self.stream(resource, resource.rv or "", self._timings.watch_timeout * random.uniform(1.0, 1.5)):
            obj = event.get("raw_object") or event.get("object") or {}
            if event.get("type") in ("ADDED", "MODIFIED", "DELETED"):
                self._emit(self.state.event(resource.kind, str(event["type"]), obj))
            resource.rv = str(_meta(obj).get("resourceVersion") or resource.rv)
            if self._stopping.is_set():
                break

    def stream(self, resource: _Resource, rv: str, timeout: float) -> Iterator[Mapping[str, Any]]:
        """Raw watch events; an expired resourceVersion raises ApiException(410)."""
        watch = _RawWatch()
        with self._lock:
            self._watches.add(watch)
        try:
            # The read timeout outlasts the server's own timeout: it only catches dead connections.
            yield from watch.stream(resource.call, resource_version=rv, timeout_seconds=int(timeout),
                                    allow_watch_bookmarks=True, _request_timeout=(10, timeout + 30),
                                    **resource.kwargs)
        finally:
            with self._lock:
                self._watches.discard(watch)


# --- the loop --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    ok: bool
    detail: str = ""


Runner = Callable[[Batch], Outcome]


class Reconciler:
    """Watches feed the debouncer; ``run_forever`` calls ``run`` for each due batch, one at a
    time, and logs one line per trigger."""

    def __init__(self, clusters: Sequence[ClusterConfig], run: Runner, settings: DebounceSettings | None = None, *,
                 initial_full: bool = True, timings: WatchTimings | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self._run = run
        self._clock = clock
        self._cond = threading.Condition()
        self._stopping = threading.Event()
        self._initial_full = initial_full
        self.debouncer = Debouncer(settings or DebounceSettings(), clock())
        self.watchers = [ClusterWatcher(cluster, self.submit, timings) for cluster in clusters]

    def submit(self, changes: list[Change]) -> None:
        """Called from watch threads."""
        with self._cond:
            self.debouncer.add(changes, self._clock())
            self._cond.notify_all()
        for change in changes:
            LOG.debug("change %s: %s", change.key, change.reason)

    def request_full(self, reason: str) -> None:
        with self._cond:
            self.debouncer.request_full(reason, self._clock())
            self._cond.notify_all()

    def stop(self) -> None:
        """Safe from a signal handler: sets a flag and wakes the loop (no run is interrupted)."""
        self._stopping.set()
        with self._cond:
            self._cond.notify_all()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def run_forever(self) -> None:
        try:
            for watcher in self.watchers:
                watcher.start()
            if self._initial_full:
                self.request_full("start")  # changes made while nothing watched
            while not self._stopping.is_set():
                batch = self._next_batch()
                if batch is not None:
                    self.run_batch(batch)
        finally:
            for watcher in self.watchers:
                watcher.stop()

    def _next_batch(self) -> Batch | None:
        with self._cond:
            now = self._clock()
            batch = self.debouncer.take(now)
            if batch is None:
                due = self.debouncer.due_at(now)
                # Bounded wait: stop() from a signal handler is seen within a second.
                self._cond.wait(min(1.0, max(0.0, due - now)) if due is not None else 1.0)
            return batch

    def run_full_once(self, reason: str) -> Outcome:
        """One full run now, without watching (``portico-watch --once``)."""
        self.request_full(reason)
        with self._cond:
            batch = self.debouncer.take(self._clock())
        return self.run_batch(batch) if batch is not None else Outcome(False, "a run is already in progress")

    def run_batch(self, batch: Batch) -> Outcome:
        try:
            outcome = self._run(batch)
        except Exception as err:  # pylint: disable=broad-except  # a broken runner is a failed run, not a dead watcher
            outcome = Outcome(False, f"{type(err).__name__}: {err}")
        end = self._clock()
        with self._cond:
            retry_in = self.debouncer.finish(batch, outcome.ok, end)
        waited = f" waited={batch.started_at - batch.first_change_at:.2f}s" if batch.first_change_at is not None else ""
        result = "ok" if outcome.ok else f"FAILED, retry in {retry_in:g}s"
        detail = f" ({outcome.detail})" if outcome.detail else ""
        log = LOG.info if outcome.ok else LOG.warning
        log("trigger %d attempt %d: %d key(s)%s%s duration=%.2fs -> %s%s; reasons: %s", batch.number, batch.attempt,
            len(batch.changed), " full" if batch.full else "", waited, end - batch.started_at, result, detail,
            batch.summary())
        return outcome
