#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Portico developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: k8s_service_status
short_description: Write the status, finalizers and Events of the Kubernetes objects Portico serves
version_added: "0.1.0"
description:
  - Batch mode (O(services)) - brings every object of one cluster (LoadBalancer Services, Portico's
    LoadBalancer resources, and the Gateway API's GatewayClasses, Gateways, TCPRoutes and UDPRoutes) to
    what C(portico.gateway.lb_validate) decided (its C(portico_k8s_status) document) in one call, writing
    only what differs, from a bounded pool of threads (O(workers)). Each kind has its own finalizer and
    status; the protocol (claim, publish, release) is the same.
  - In stage C(claim), before a converge, a Service about to be served gets the cleanup finalizer
    C(service.kubernetes.io/load-balancer-cleanup) and the annotation C(portico.io/served-by) (the
    class this Portico serves), so it is not removed while a VIP for it may be announced and is
    recognised after it leaves Portico's scope. Nothing else is written.
  - In stage C(publish), after the converge, a Service's C(status.loadBalancer.ingress) is set where it
    differs (C(kubectl get svc) shows it in EXTERNAL-IP); a LoadBalancer resource's status gets its
    addresses, the conditions C(Accepted) and C(Programmed), and each backend's health as the
    gateways' health checkers see it (O(gateways)); a Gateway's status gets its addresses, the conditions
    C(Accepted) and C(Programmed) and its listeners' conditions and C(attachedRoutes), a GatewayClass of
    Portico's controller C(Accepted), and a route one C(status.parents) item per Gateway of Portico's it
    names (C(Accepted), C(ResolvedRefs); other controllers' items are kept). Events are recorded - C(IPAllocated) when an
    address is written, C(NotServed) or C(ServedWithWarnings) once per distinct message while a
    problem lasts. An object Portico must release (being deleted, or out of its scope) gets its status
    cleared, a C(Released) Event, and the annotation and finalizer removed (a deleted object then
    goes away) - only with O(release=true), which playbooks set when the converge reached every
    gateway; otherwise it is left as it is and counted as withheld.
  - A full run reads the cluster's Services with one list and Portico's Events with another; a run
    limited by O(only) reads just those Services and their Events, so it costs in proportion to
    what changed. Stage C(claim) reads only the served Services that did not carry the claim when the
    inventory read them (C(claimed) in O(services)).
  - Single mode (O(namespace), O(name)) - sets C(status.loadBalancer.ingress) of one Service to
    O(ingress) and optionally records one O(event).
  - Writes are JSON merge patches guarded by the resourceVersion they were computed from, retried
    after a re-read on a conflict; status goes through the C(status) subresource.
  - Runs where the Kubernetes API is reachable, normally the controller (C(delegate_to=localhost)).
author:
  - Portico developers (@portico)
extends_documentation_fragment:
  - portico.gateway.k8s_auth
options:
  services:
    description:
      - Batch mode - the C(portico_k8s_status) document set by C(portico.gateway.lb_validate) (JSON
        text), or a list of its items (C(cluster), C(namespace), C(name), C(uid), C(ips), C(problems),
        C(warnings), C(served), C(release), C(release_reason), C(claimed)).
    type: raw
  cluster:
    description: Batch mode - only the items of this cluster (the connection options reach it).
    type: str
  only:
    description:
      - Batch mode - only these objects (C(cluster/namespace/name) keys of Services,
        C(cluster/namespace/LoadBalancer/name) of LoadBalancer resources, as the watcher passes them in
        C(PORTICO_CHANGED)); empty means every object of O(services).
    type: list
    elements: str
    default: []
  stage:
    description: Batch mode - C(claim) before a converge, C(publish) after it.
    type: str
    choices: [claim, publish]
    default: publish
  release:
    description:
      - Batch mode - release the Services Portico gave up. Set it only after a converge that reached
        every gateway without a failure, so that no gateway may still announce their VIPs.
    type: bool
    default: false
  load_balancer_class:
    description: Batch mode - the class this Portico serves, written as the C(portico.io/served-by) annotation.
    type: str
    default: portico.io/gateway
  workers:
    description: Batch mode - how many objects are written at the same time.
    type: int
    default: 8
  gateways:
    description:
      - Batch mode - per gateway of the run, C(converged) (this run converged it) and C(observed) (what
        C(portico.gateway.gateway_status) reported with C(loadbalancers)), for the status of objects
        that show the gateways' view (LoadBalancer resources).
    type: dict
    default: {}
  refresh:
    description:
      - Batch mode - this run converged nothing (a status refresh), so a gateway counts as running an object
        when its health checker does, whatever C(converged) says.
    type: bool
    default: false
  namespace:
    description: Single mode - namespace of the Service.
    type: str
  name:
    description: Single mode - name of the Service.
    type: str
  ingress:
    description:
      - Single mode - IP addresses (IPv4 or IPv6) for C(status.loadBalancer.ingress), in order.
      - An empty list clears the status. When omitted, the status is left alone (only O(event) is recorded).
    type: list
    elements: str
  ip_mode:
    description:
      - C(ipMode) of every ingress entry. C(VIP) tells kube-proxy that traffic to the IP may be
        short-circuited inside the cluster; C(Proxy) that it must go through the load balancer.
    type: str
    choices: [VIP, Proxy]
    default: VIP
  event:
    description:
      - Single mode - a core/v1 Event to record on the Service, with the keys C(type) (C(Normal), the default,
        or C(Warning)), C(reason) (required; short UpperCamelCase such as C(IPAllocated) or
        C(PoolExhausted)) and C(message) (required; a human-readable explanation).
      - A free-form dictionary checked by the module, because Ansible reserves the option name C(message).
    type: dict
  field_manager:
    description: Field manager name sent with writes (shown in the Service's C(managedFields)).
    type: str
    default: portico
  missing_ok:
    description: Single mode - succeed without a change when the Service does not exist (it may have just been deleted).
    type: bool
    default: false
  event_repeat:
    description:
      - Single mode - what to do when an identical Event already exists. C(bump) raises its count as
        Kubernetes' event recorder does (a change); C(once) leaves it, so a periodic sync that
        keeps seeing the same problem stays idempotent.
    type: str
    choices: [bump, once]
    default: bump
notes:
  - Supports check mode (reports what would change, writes nothing) and diff mode (the ingress
    before and after, per Service written).
  - Needs RBAC to list, get and patch Services, C(loadbalancers.portico.io) and Gateways, patch their
    C(status) and that of GatewayClasses, TCPRoutes and UDPRoutes, and list, create and patch Events
    (docs/rbac.yaml).
"""

EXAMPLES = r"""
- name: After a converge that reached every gateway, publish status and release what Portico gave up
  portico.gateway.k8s_service_status:
    kubeconfig: /etc/portico/prod.kubeconfig
    services: "{{ portico_k8s_status }}"
    cluster: prod
    release: true
  delegate_to: localhost

- name: Publish the VIP of default/echo
  portico.gateway.k8s_service_status:
    kubeconfig: /etc/portico/kubeconfig
    namespace: default
    name: echo
    ingress: [198.51.100.10, "2001:db8:100::10"]
  delegate_to: localhost

- name: Say why a Service gets no IP, and clear any stale one
  portico.gateway.k8s_service_status:
    namespace: team-a
    name: web
    ingress: []
    event:
      type: Warning
      reason: PoolExhausted
      message: no free address in pool public for namespace team-a
  delegate_to: localhost
"""

RETURN = r"""
counts:
  description:
    - Batch mode - objects C(considered), C(missing) (gone since the inventory read them), C(claimed),
      C(status_written), C(events), C(released), C(withheld) (releases waiting for a full converge),
      C(failed).
  returned: batch mode
  type: dict
  sample: {"considered": 5000, "missing": 0, "claimed": 0, "status_written": 3, "events": 3, "released": 1, "withheld": 0, "failed": 0}
changed_services:
  description: Batch mode - the keys of the objects written (or that would be, in check mode).
  returned: batch mode
  type: list
  elements: str
withheld:
  description: Batch mode - the keys of the objects whose release waits for a converge that reaches every gateway.
  returned: batch mode
  type: list
  elements: str
failures:
  description: "Batch mode - C(<key>: <what failed>) per object a write failed for (the task then fails)."
  returned: batch mode
  type: list
  elements: str
ingress:
  description: Single mode - C(status.loadBalancer.ingress) after the run (what it would be, in check mode).
  returned: single mode
  type: list
  elements: dict
  sample: [{"ip": "198.51.100.10", "ipMode": "VIP"}]
found:
  description: Single mode - whether the Service exists (false only with O(missing_ok)).
  returned: single mode
  type: bool
event_created:
  description: Single mode - a new Event was (or, in check mode, would be) created.
  returned: single mode
  type: bool
event_updated:
  description: Single mode - an identical Event existed and its count was (or would be) bumped.
  returned: single mode
  type: bool
"""

import socket
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Any, Callable

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.portico.gateway.plugins.module_utils.k8s.client import (
    HAS_KUBERNETES,
    KUBERNETES_IMPORT_ERROR,
    ApiError,
    K8sAuth,
    K8sConfigError,
    api_client,
    list_items,
    request,
)
from ansible_collections.portico.gateway.plugins.module_utils.k8s.kinds import SERVICE, Kind
from ansible_collections.portico.gateway.plugins.module_utils.k8s.resources import kind_of, writer_for
from ansible_collections.portico.gateway.plugins.module_utils.k8s.writeback import (
    EVENT_SOURCE,
    Desired,
    Plan,
    WriteContext,
    claim_patch,
    current_ingress,
    desired_ingress,
    event_object,
    plan,
    read_status_document,
    same_ingress,
    seen_events,
    status_patch,
    status_patch_of,
)
from ansible_collections.portico.gateway.plugins.module_utils.model.documents import DocumentError
from ansible_collections.portico.gateway.plugins.module_utils.model.observed import GatewayObservation

MERGE_PATCH = "application/merge-patch+json"
CONFLICT_RETRIES = 3  # another writer (e.g. a second controller) may patch the Service in between
HTTP_NOT_FOUND = 404
HTTP_CONFLICT = 409


class StatusError(Exception):
    """A failure with a message meant for the user."""


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def read_object(client: Any, namespace: str, name: str, kind: Kind = SERVICE) -> dict[str, Any] | None:
    try:
        return request(client, "GET", kind.object_path(namespace, name))
    except ApiError as err:
        if err.status == HTTP_NOT_FOUND:
            return None
        raise StatusError(f"get {kind.kind} {namespace}/{name}: {err}") from None


def guarded_patch(client: Any, obj: dict[str, Any], make_patch: Callable[[dict[str, Any]], dict[str, Any] | None],
                  subresource: str, field_manager: str, kind: Kind = SERVICE) -> dict[str, Any] | None:
    """Merge-patch what ``make_patch`` computes from the object as read (None: nothing left to
    do); on a conflict read it again and recompute. Returns the object after the write, or None
    when it is gone."""
    meta = obj["metadata"]
    namespace, name = meta.get("namespace") or "", meta["name"]
    for _attempt in range(CONFLICT_RETRIES):
        patch = make_patch(obj)
        if patch is None:
            return obj
        try:
            return request(client, "PATCH", kind.object_path(namespace, name, subresource), body=patch,
                           content_type=MERGE_PATCH, query=[("fieldManager", field_manager)])
        except ApiError as err:
            if err.status == HTTP_NOT_FOUND:
                return None
            if err.status != HTTP_CONFLICT:
                raise StatusError(f"patch {kind.kind} {namespace}/{name}{'/' + subresource if subresource else ''}: {err}") from None
        fresh = read_object(client, namespace, name, kind)
        if fresh is None:
            return None
        obj = fresh
    raise StatusError(f"patch {kind.kind} {namespace}/{name}: still conflicting after {CONFLICT_RETRIES} attempts")


def create_event(client: Any, obj: dict[str, Any], event: dict[str, str], field_manager: str, kind: Kind = SERVICE) -> None:
    body = event_object(obj, event, _now(), socket.gethostname(), f"{time.time_ns():x}", kind)
    namespace = obj["metadata"]["namespace"]
    try:
        request(client, "POST", f"/api/v1/namespaces/{namespace}/events", body=body, query=[("fieldManager", field_manager)])
    except ApiError as err:
        raise StatusError(f"create Event in {namespace}: {err}") from None


# --- batch mode ------------------------------------------------------------------------


def apply_plan(client: Any, obj: dict[str, Any], todo: Plan, mark: str, field_manager: str) -> None:
    """The writes of one plan, in order: claim, status, Events, then the release of the claim."""
    kind, finalizer = todo.kind, todo.kind.finalizer
    current: dict[str, Any] | None = obj
    if todo.claim:
        current = guarded_patch(client, obj, lambda s: claim_patch(s, mark, True, finalizer), "", field_manager, kind)
    if current is not None and todo.status is not None:
        first, recompute = todo.status, todo.recompute

        def status_of(live: dict[str, Any]) -> dict[str, Any] | None:
            body = first if live is current or recompute is None else recompute(live)
            return None if body is None else status_patch_of(live, body)

        current = guarded_patch(client, current, status_of, "status", field_manager, kind)
    for event in todo.events:
        create_event(client, current or obj, event, field_manager, kind)
    if current is not None and todo.unclaim:
        guarded_patch(client, current, lambda s: claim_patch(s, mark, False, finalizer), "", field_manager, kind)


def _parallel(workers: int, func: Callable[[Any], Any], items: list[Any]) -> list[Any]:
    if len(items) <= 1 or workers <= 1:
        return [func(item) for item in items]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(func, items))


def _list_kind(client: Any, kind: Kind) -> list[dict[str, Any]]:
    """Every object of a kind (none when the API does not serve it: a CRD not installed)."""
    try:
        return list_items(client, kind.collection_path())[0]
    except ApiError as err:
        if err.status == HTTP_NOT_FOUND and kind is not SERVICE:
            return []
        raise


def read_live(client: Any, items: list[Desired], focused: bool, workers: int) -> dict[str, dict[str, Any]]:
    """The objects as they are now: one list per kind (and version) for a full run, one read each
    for a focused one. A cluster-scoped object (a GatewayClass) has no namespace."""
    if not focused:
        found: dict[str, dict[str, Any]] = {}
        for kind in sorted({kind_of(item.kind, item.details) for item in items}, key=lambda k: (k.kind, k.version)):
            by_name = {(o["metadata"].get("namespace") or "", o["metadata"]["name"]): o for o in _list_kind(client, kind)}
            found.update({item.key: by_name[(item.namespace, item.name)] for item in items
                          if kind_of(item.kind, item.details) == kind and (item.namespace, item.name) in by_name})
        return found
    read = _parallel(workers, lambda item: (item.key, read_object(client, item.namespace, item.name, kind_of(item.kind, item.details))), items)
    return {key: obj for key, obj in read if obj is not None}


def read_seen(client: Any, live: dict[str, dict[str, Any]], focused: bool, workers: int) -> set[tuple[str, str, str, str]]:
    """Portico's Events (the ones a run might otherwise record again)."""
    selector = f"source={EVENT_SOURCE}"
    if not focused:
        return seen_events(list_items(client, "/api/v1/events", fieldSelector=selector)[0])

    def of_object(obj: dict[str, Any]) -> list[dict[str, Any]]:
        meta = obj["metadata"]
        if not meta.get("namespace"):
            return []  # cluster-scoped (a GatewayClass): Portico records no Events on it
        return list_items(client, f"/api/v1/namespaces/{meta['namespace']}/events",
                          fieldSelector=f"{selector},involvedObject.uid={meta['uid']}")[0]

    return seen_events(event for events in _parallel(workers, of_object, list(live.values())) for event in events)


def write_context(params: dict[str, Any]) -> WriteContext:
    """The gateways' reports (``gateways``) as the status writers read them."""
    gateways = {}
    for name, raw in (params["gateways"] or {}).items():
        raw = raw if isinstance(raw, dict) else {}
        gateways[str(name)] = (raw.get("converged") is True, GatewayObservation.from_data(raw.get("observed")))
    return WriteContext(gateways=gateways, converge=not params["refresh"], now=_now(), ip_mode=params["ip_mode"])


def run_batch(module: AnsibleModule, client: Any) -> dict[str, Any]:
    params = module.params
    try:
        items = read_status_document(params["services"])
        writers = {item.kind: writer_for(item.kind) for item in items}
    except (DocumentError, ValueError) as err:
        raise StatusError(f"services: {err}") from None
    if params["cluster"]:
        items = [item for item in items if item.cluster == params["cluster"]]
    only = set(params["only"] or ())
    if only:
        items = [item for item in items if item.key in only]
    focused = bool(only)
    if params["stage"] == "claim":
        # Only the served Services the inventory saw without the claim need one: read just those.
        items, focused = [item for item in items if item.served and not item.claimed], True
    workers = max(1, params["workers"])
    try:
        live = read_live(client, items, focused, workers)
        seen = read_seen(client, live, focused, workers) if params["stage"] == "publish" else set()
    except ApiError as err:
        raise StatusError(f"reading the objects and Events: {err}") from None
    mark = params["load_balancer_class"]
    context = write_context(params)
    plans = [(item, plan(item, live[item.key], seen, stage=params["stage"], release_allowed=params["release"], mark=mark,
                         writer=writers[item.kind], context=context))
             for item in items if item.key in live]
    for item, each in plans:
        each.kind = kind_of(item.kind, item.details)  # the version it was read at (a route's may be v1alpha2)
    todo = [(item, each) for item, each in plans if each.writes]
    failures: list[str] = []
    if not module.check_mode:
        def write(pair: tuple[Desired, Plan]) -> str | None:
            item, each = pair
            try:
                apply_plan(client, live[item.key], each, mark, params["field_manager"])
            except (StatusError, ApiError) as err:
                return f"{item.key}: {err}"
            return None

        failures = [failure for failure in _parallel(workers, write, todo) if failure]
    result: dict[str, Any] = {
        "changed": bool(todo),
        "counts": {
            "considered": len(items), "missing": len(items) - len(live),
            "claimed": sum(1 for _item, each in todo if each.claim),
            "status_written": sum(1 for _item, each in todo if each.status is not None),
            "events": sum(len(each.events) for _item, each in todo),
            "released": sum(1 for item, _each in todo if item.release),
            "withheld": sum(1 for _item, each in plans if each.withheld),
            "failed": len(failures),
        },
        "changed_services": [each.key for _item, each in todo],
        "withheld": [each.key for _item, each in plans if each.withheld],
        "failures": failures,
    }
    if module._diff:
        moved = [each for _item, each in todo if each.status is not None and each.after != each.before]
        result["diff"] = {"before": {each.key: each.before for each in moved}, "after": {each.key: each.after for each in moved},
                          "before_header": "addresses in status", "after_header": "addresses in status"}
    return result


# --- single mode -------------------------------------------------------------------------


def checked_event(event: dict[str, Any]) -> dict[str, str]:
    """The event option as {type, reason, message}; Ansible cannot check it (it reserves `message`)."""
    unknown = sorted(set(event) - {"type", "reason", "message"})
    if unknown:
        raise StatusError(f"event: unknown key(s) {', '.join(unknown)}; expected type, reason, message")
    checked = {"type": str(event.get("type") or "Normal"), "reason": str(event.get("reason") or ""), "message": str(event.get("message") or "")}
    if checked["type"] not in ("Normal", "Warning"):
        raise StatusError(f"event: type must be Normal or Warning, not {checked['type']!r}")
    missing = [key for key in ("reason", "message") if not checked[key]]
    if missing:
        raise StatusError(f"event: {' and '.join(missing)} required")
    return checked


def find_event(client: Any, service: dict[str, Any], event: dict[str, str]) -> dict[str, Any] | None:
    """An Event Portico already recorded on this Service (by UID) with the same type, reason and message."""
    meta = service["metadata"]
    selector = f"involvedObject.uid={meta['uid']},reason={event['reason']}"
    try:
        events = list_items(client, f"/api/v1/namespaces/{meta['namespace']}/events", fieldSelector=selector)[0]
    except ApiError as err:
        raise StatusError(f"list Events in {meta['namespace']}: {err}") from None
    for item in events:
        if (item.get("message"), item.get("type"), (item.get("source") or {}).get("component")) == (event["message"], event["type"], EVENT_SOURCE):
            return item
    return None


def record_event(client: Any, service: dict[str, Any], event: dict[str, str], field_manager: str, check_mode: bool,
                 repeat: str = "bump") -> tuple[bool, bool]:
    """Create the Event, or bump the identical one (or leave it, with repeat=once); returns (created, updated)."""
    existing = find_event(client, service, event)
    if existing is not None and repeat == "once":
        return False, False
    if check_mode:
        return existing is None, existing is not None
    if existing is None:
        create_event(client, service, event, field_manager)
        return True, False
    namespace, name = service["metadata"]["namespace"], existing["metadata"]["name"]
    bump = {"count": (existing.get("count") or 1) + 1, "lastTimestamp": _now()}
    try:
        request(client, "PATCH", f"/api/v1/namespaces/{namespace}/events/{name}", body=bump, content_type=MERGE_PATCH,
                query=[("fieldManager", field_manager)])
    except ApiError as err:
        raise StatusError(f"patch Event {namespace}/{name}: {err}") from None
    return False, True


def write_ingress(client: Any, service: dict[str, Any], wanted: list[dict[str, str]], field_manager: str) -> dict[str, Any]:
    """Patch the status subresource, guarded by the resourceVersion the Service was read at (a
    concurrent change is a 409: read again, and patch again if still needed)."""
    written = guarded_patch(client, service, lambda s: None if same_ingress(current_ingress(s), wanted) else status_patch(s, wanted),
                            "status", field_manager)
    if written is None:
        meta = service["metadata"]
        raise StatusError(f"Service {meta['namespace']}/{meta['name']} was deleted while its status was being written")
    return written


def run_single(module: AnsibleModule, client: Any) -> dict[str, Any]:
    params = module.params
    namespace, name = params["namespace"], params["name"]
    try:
        wanted = desired_ingress(params["ingress"], params["ip_mode"]) if params["ingress"] is not None else None
    except ValueError as err:
        raise StatusError(str(err)) from None
    event = checked_event(params["event"]) if params["event"] else None
    result: dict[str, Any] = {"changed": False, "ingress": [], "found": False, "event_created": False, "event_updated": False}
    service = read_object(client, namespace, name)
    if service is None:
        if params["missing_ok"]:
            return result
        raise StatusError(f"Service {namespace}/{name} not found")
    before = current_ingress(service)
    after = before if wanted is None else wanted
    result.update(found=True, ingress=after, changed=wanted is not None and not same_ingress(before, wanted))
    if module._diff:
        header = f"Service {namespace}/{name} status.loadBalancer.ingress"
        result["diff"] = {"before": {"ingress": before}, "after": {"ingress": after}, "before_header": header, "after_header": header}
    if result["changed"] and not module.check_mode:
        service = write_ingress(client, service, after, params["field_manager"])
        result["ingress"] = current_ingress(service)
    if event:
        created, updated = record_event(client, service, event, params["field_manager"], module.check_mode, params["event_repeat"])
        result.update(event_created=created, event_updated=updated, changed=result["changed"] or created or updated)
    return result


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            kubeconfig=dict(type="path"),
            context=dict(type="str"),
            host=dict(type="str"),
            api_key=dict(type="str", no_log=True),
            validate_certs=dict(type="bool", default=True),
            ca_cert=dict(type="path"),
            services=dict(type="raw"),
            cluster=dict(type="str"),
            only=dict(type="list", elements="str", default=[]),
            stage=dict(type="str", choices=["claim", "publish"], default="publish"),
            release=dict(type="bool", default=False),
            load_balancer_class=dict(type="str", default="portico.io/gateway"),
            workers=dict(type="int", default=8),
            namespace=dict(type="str"),
            name=dict(type="str"),
            ingress=dict(type="list", elements="str"),
            ip_mode=dict(type="str", choices=["VIP", "Proxy"], default="VIP"),
            event=dict(type="dict"),
            field_manager=dict(type="str", default="portico"),
            missing_ok=dict(type="bool", default=False),
            event_repeat=dict(type="str", choices=["bump", "once"], default="bump"),
            gateways=dict(type="dict", default={}),
            refresh=dict(type="bool", default=False),
        ),
        mutually_exclusive=[("services", "namespace"), ("services", "ingress"), ("services", "event")],
        required_one_of=[("services", "namespace")],
        required_together=[("namespace", "name")],
        supports_check_mode=True,
    )
    if not HAS_KUBERNETES:
        module.fail_json(msg=missing_required_lib("kubernetes"), exception=str(KUBERNETES_IMPORT_ERROR))
    try:
        client = api_client(K8sAuth.from_options(module.params))
        if module.params["services"] is not None:
            result = run_batch(module, client)
            if result["failures"]:
                module.fail_json(msg=f"{len(result['failures'])} object(s) could not be written: " + "; ".join(result["failures"][:10]),
                                 **result)
        else:
            result = run_single(module, client)
    except (StatusError, K8sConfigError) as err:
        module.fail_json(msg=str(err))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
