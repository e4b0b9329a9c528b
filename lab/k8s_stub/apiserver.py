"""A Kubernetes API stand-in on loopback: core/v1 Services, Nodes, Namespaces, Events and
discovery.k8s.io/v1 EndpointSlices, reached by the official client and kubectl through a
normal kubeconfig (plain http, bearer token).

It applies only the API server's generic semantics (server-set metadata, Service defaults
and allocations, the status subresource, merge/JSON patches, selectors, optimistic
concurrency, watch) so that code under test meets the real shapes, never Portico logic.
"""

from __future__ import annotations

import copy
import ipaddress
import json
import os
import pathlib
import random
import re
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterable, Iterator
from urllib.parse import parse_qs, urlsplit

import yaml

from .tables import to_table

Obj = dict[str, Any]
DEFAULT_TOKEN = "portico-lab-token"
NODE_PORT_RANGE = range(30000, 32768)
SERVICE_CIDRS = {"IPv4": "198.18.128.0/20", "IPv6": "2001:db8:96::/112"}
BOOKMARK_INTERVAL = 60.0  # seconds between BOOKMARK events on an idle watch (the API server's is about a minute)
BUILTIN_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
VERSION = {"major": "1", "minor": "32", "gitVersion": "v1.32.0", "gitCommit": "portico-stub", "gitTreeState": "clean",
           "buildDate": "2024-12-11T00:00:00Z", "goVersion": "go1.23.3", "compiler": "gc", "platform": "linux/amd64"}


@dataclass(frozen=True)
class Resource:
    kind: str
    plural: str
    group_version: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    has_status: bool = False  # served with a /status subresource; main-resource writes keep .status
    field_labels: tuple[str, ...] = ()  # fieldSelector labels besides metadata.name/namespace

    @property
    def group(self) -> str:
        return self.group_version.rpartition("/")[0]

    @property
    def qualified(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural


EVENT_FIELDS = tuple(f"involvedObject.{f}" for f in ("kind", "namespace", "name", "uid", "apiVersion", "resourceVersion", "fieldPath"))
RESOURCES = {r.plural: r for r in (
    Resource("Namespace", "namespaces", "v1", False, ("ns",), True, ("status.phase",)),
    Resource("Node", "nodes", "v1", False, ("no",), True, ("spec.unschedulable",)),
    Resource("Service", "services", "v1", True, ("svc",), True, ("spec.clusterIP", "spec.type")),
    Resource("Event", "events", "v1", True, ("ev",), False, EVENT_FIELDS + ("reason", "reportingComponent", "source", "type")),
    Resource("EndpointSlice", "endpointslices", "discovery.k8s.io/v1", True),
)}


def resource_for(kind: str) -> Resource:
    """The resource for a kind, plural or short name, as kubectl accepts them."""
    wanted = kind.lower()
    for res in RESOURCES.values():
        if wanted in (res.kind.lower(), res.plural, *res.short_names):
            return res
    raise KeyError(f"unknown kind {kind!r}; known: {', '.join(r.kind for r in RESOURCES.values())}")


class ApiError(Exception):
    """An API failure, rendered as a core/v1 Status like the real server's."""

    def __init__(self, code: int, reason: str, message: str, details: Obj | None = None) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details

    def status(self) -> Obj:
        body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": self.message, "reason": self.reason, "code": self.code}
        if self.details is not None:
            body["details"] = self.details
        return body


def _details(res: Resource, name: str) -> Obj:
    return {"name": name, **({"group": res.group} if res.group else {}), "kind": res.plural}


def not_found(res: Resource, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{res.qualified} "{name}" not found', _details(res, name))


def invalid(res: Resource, name: str, field: str, problem: str) -> ApiError:
    return ApiError(422, "Invalid", f'{res.kind} "{name}" is invalid: {field}: {problem}',
                    {**_details(res, name), "kind": res.kind, "causes": [{"reason": "FieldValueInvalid", "message": problem, "field": field}]})


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def now_rfc3339() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- selectors -------------------------------------------------------------------------------

LabelTest = Callable[[dict[str, str]], bool]
SET_TERM = re.compile(r"\s*([\w./-]+)\s+(in|notin)\s+\(([^)]*)\)\s*")


def _label_term(term: str) -> LabelTest:
    if match := SET_TERM.fullmatch(term):
        key, op, values = match.group(1), match.group(2), {v.strip() for v in match.group(3).split(",")}
        return (lambda lb: lb.get(key) in values) if op == "in" else (lambda lb: lb.get(key) not in values)
    for op in ("!=", "==", "="):
        if op in term:
            key, value = (part.strip() for part in term.split(op, 1))
            return (lambda lb: lb.get(key) != value) if op == "!=" else (lambda lb: lb.get(key) == value)
    key = term.strip()
    if not re.fullmatch(r"!?[\w./-]+", key):
        raise bad_request(f"unable to parse requirement: invalid label key {key!r}")
    return (lambda lb: key[1:] not in lb) if key.startswith("!") else (lambda lb: key in lb)


def label_selector(text: str | None) -> LabelTest:
    """Equality (=, ==, !=), existence (k, !k) and set (in, notin) terms, ANDed by commas."""
    terms = [_label_term(t) for t in re.split(r",(?![^(]*\))", text or "") if t.strip()]
    return lambda labels: all(test(labels) for test in terms)


def field_value(obj: Obj, path: str) -> str:
    value: Any = obj
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def field_selector(res: Resource, text: str | None) -> Callable[[Obj], bool]:
    """Like the real API: only the resource's supported field labels, with =, == and !=."""
    tests: list[Callable[[Obj], bool]] = []
    for term in filter(None, (t.strip() for t in (text or "").split(","))):
        match = re.fullmatch(r"([\w.]+)\s*(!=|==|=)\s*(.*)", term)
        if not match:
            raise bad_request(f"invalid selector: '{text}'; can't understand '{term}'")
        label, op, value = match.groups()
        if label not in ("metadata.name", "metadata.namespace", *res.field_labels):
            raise bad_request(f'field label not supported: {label}')
        path = "source.component" if label == "source" else label
        tests.append(lambda o, p=path, v=value, neg=op == "!=": (field_value(o, p) == v) != neg)
    return lambda obj: all(test(obj) for test in tests)


# --- patches ---------------------------------------------------------------------------------

def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: objects merge recursively, null deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


# Lists that strategic merge patches merge by key (patchMergeKey in the Go types); every other
# list is replaced whole, as in a JSON merge patch.
MERGE_KEYS: dict[tuple[str, ...], str] = {
    ("Service", "spec", "ports"): "port", ("Node", "status", "conditions"): "type",
    ("Node", "status", "addresses"): "type", ("*", "metadata", "ownerReferences"): "uid",
}


def strategic_merge(target: Any, patch: Any, path: tuple[str, ...]) -> Any:
    """A strategic merge patch: a JSON merge patch plus keyed list merges, `$patch: delete|replace`
    and `$setElementOrder/<list>`; other directives ($retainKeys, ...) are ignored."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if not k.startswith("$")}
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        merge_key = MERGE_KEYS.get((path[0], *path[1:], key)) or MERGE_KEYS.get(("*", *path[1:], key))
        if key.startswith("$"):
            continue
        if value is None:
            result.pop(key, None)
        elif merge_key and isinstance(value, list):
            result[key] = _merge_list(result.get(key) or [], value, merge_key, patch.get(f"$setElementOrder/{key}"))
        else:
            result[key] = strategic_merge(result.get(key), value, (*path, key))
    return result


def _merge_list(current: list[Any], patch: list[Any], key: str, order: list[Obj] | None) -> list[Any]:
    items = {item.get(key): item for item in current if isinstance(item, dict)}
    for entry in patch:
        if entry.get("$patch") == "delete":
            items.pop(entry.get(key), None)
        else:
            items[entry.get(key)] = strategic_merge(items.get(entry.get(key)), entry, ("-",))
    rank = {e.get(key): i for i, e in enumerate(order or [])}
    return sorted(items.values(), key=lambda item: rank.get(item.get(key), len(rank)))


def _pointer(path: str) -> list[str]:
    return [p.replace("~1", "/").replace("~0", "~") for p in path.split("/")[1:]]


def _parent(doc: Any, parts: list[str]) -> tuple[Any, str]:
    for part in parts[:-1]:
        doc = doc[int(part)] if isinstance(doc, list) else doc[part]
    return doc, parts[-1]


def _json_patch_op(doc: Obj, op: Obj) -> None:
    kind, parts = op.get("op"), _pointer(op.get("path", ""))
    if kind in ("move", "copy"):
        src_parent, src_key = _parent(doc, _pointer(op["from"]))
        value = copy.deepcopy(src_parent[int(src_key) if isinstance(src_parent, list) else src_key])
        if kind == "move":
            _json_patch_op(doc, {"op": "remove", "path": op["from"]})
        _json_patch_op(doc, {"op": "add", "path": op["path"], "value": value})
        return
    parent, key = _parent(doc, parts)
    index: Any = (len(parent) if key == "-" else int(key)) if isinstance(parent, list) else key
    if kind == "test":
        if parent[index] != op.get("value"):
            raise ApiError(422, "Invalid", f"the server rejected our request: test operation failed at {op['path']}")
    elif kind in ("remove", "replace"):
        _ = parent[index]  # both require the target to exist
        if kind == "remove":
            del parent[index]
        else:
            parent[index] = copy.deepcopy(op["value"])
    elif kind == "add":
        if isinstance(parent, list):
            parent.insert(index, copy.deepcopy(op["value"]))
        else:
            parent[index] = copy.deepcopy(op["value"])
    else:
        raise bad_request(f"unexpected kind of json patch operation: {kind!r}")


def json_patch(doc: Obj, ops: list[Obj]) -> Obj:
    """RFC 6902 JSON patch (add, remove, replace, move, copy, test)."""
    result = copy.deepcopy(doc)
    for op in ops:
        try:
            _json_patch_op(result, op)
        except (KeyError, IndexError, ValueError, TypeError) as err:
            raise ApiError(422, "Invalid", f"the server rejected our request: json patch {op.get('op')} "
                                           f"operation does not apply: {op.get('path')}: {err!r}") from None
    return result


def apply_patch(obj: Obj, patch: Any, content_type: str) -> Obj:
    media = content_type.split(";")[0].strip().lower()
    if media == "application/json-patch+json":
        if not isinstance(patch, list):
            raise bad_request("json patch must be a list of operations")
        return json_patch(obj, patch)
    if media in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
        if not isinstance(patch, dict):
            raise bad_request("merge patch must be a JSON object")
        return merge_patch(obj, patch) if media.startswith("application/merge") else strategic_merge(obj, patch, (obj["kind"],))
    raise ApiError(415, "UnsupportedMediaType", f'the body of the request was in an unknown format - accepted media types include: '
                                                f'application/json-patch+json, application/merge-patch+json, '
                                                f'application/strategic-merge-patch+json (got "{media}")')


# --- the store -------------------------------------------------------------------------------

@dataclass(frozen=True)
class WatchEvent:
    rv: int
    plural: str
    type: str
    obj: Obj
    old: Obj | None  # the object before a MODIFIED: selector transitions become ADDED/DELETED


class Store:
    """Objects by (plural, namespace, name), one global resourceVersion, a bounded event history."""

    def __init__(self, history: int = 1000) -> None:
        self.cond = threading.Condition()
        self.objects: dict[tuple[str, str, str], Obj] = {}
        self.rv = 0
        self.history: deque[WatchEvent] = deque(maxlen=history)
        self.compacted = 0  # watches from an older resourceVersion get 410 Expired
        self.stopped = False

    # reads

    def get(self, res: Resource, ns: str, name: str) -> Obj:
        with self.cond:
            obj = self.objects.get((res.plural, ns if res.namespaced else "", name))
            if obj is None:
                raise not_found(res, name)
            return copy.deepcopy(obj)

    def select(self, res: Resource, ns: str | None, labels: LabelTest, fields: Callable[[Obj], bool]) -> list[Obj]:
        with self.cond:
            keys = sorted(k for k in self.objects if k[0] == res.plural and (ns is None or k[1] == ns))
            objs = [self.objects[k] for k in keys]
            return [copy.deepcopy(o) for o in objs if labels(o["metadata"].get("labels") or {}) and fields(o)]

    # writes

    def create(self, res: Resource, ns: str | None, body: Obj, *, keep_status: bool = False) -> Obj:
        obj = _checked_body(res, ns, body)
        meta = obj["metadata"]
        with self.cond:
            if res.namespaced and ("namespaces", "", meta["namespace"]) not in self.objects:
                raise ApiError(404, "NotFound", f'namespaces "{meta["namespace"]}" not found', {"name": meta["namespace"], "kind": "namespaces"})
            if not meta.get("name"):
                if not meta.get("generateName"):
                    raise invalid(res, "", "metadata.name", "Required value: name or generateName is required")
                meta["name"] = meta["generateName"] + "".join(random.choices("bcdfghjklmnpqrstvwxz2456789", k=5))
            key = _key(res, obj)
            if key in self.objects:
                raise ApiError(409, "AlreadyExists", f'{res.qualified} "{meta["name"]}" already exists', _details(res, meta["name"]))
            if res.kind == "Service" and not keep_status:
                obj["status"] = {}  # the API resets a new Service's status
            meta.pop("resourceVersion", None)
            meta["uid"] = meta.get("uid") if keep_status and meta.get("uid") else str(uuid.uuid4())
            meta["creationTimestamp"] = meta.get("creationTimestamp") if keep_status and meta.get("creationTimestamp") else now_rfc3339()
            if res.kind != "Event":
                meta["generation"] = 1
            DEFAULTERS[res.kind](self, obj, None)
            return self._commit(res, obj, None)

    def replace(self, res: Resource, ns: str | None, name: str, body: Obj, sub: str | None = None, *, keep_status: bool = False) -> Obj:
        new = _checked_body(res, ns, body, name)
        with self.cond:
            return self._write(res, self.get(res, new["metadata"].get("namespace", ""), name), new, sub, keep_status)

    def patch(self, res: Resource, ns: str | None, name: str, patch: Any, content_type: str, sub: str | None = None) -> Obj:
        with self.cond:
            old = self.get(res, ns or "", name)
            new = _checked_body(res, ns, apply_patch(old, patch, content_type), name)
            return self._write(res, old, new, sub, False)

    def delete(self, res: Resource, ns: str | None, name: str) -> Obj:
        with self.cond:
            old = self.get(res, ns or "", name)
            if res.kind == "Namespace":  # contents go with it (the real API does this in the background)
                for plural, obj_ns, obj_name in [k for k in self.objects if k[1] == name]:
                    self.delete(RESOURCES[plural], obj_ns, obj_name)
            del self.objects[_key(res, old)]
            self.rv += 1
            old["metadata"]["resourceVersion"] = str(self.rv)
            self._record(WatchEvent(self.rv, res.plural, "DELETED", old, None))
            return copy.deepcopy(old)

    def _write(self, res: Resource, old: Obj, new: Obj, sub: str | None, keep_status: bool) -> Obj:
        old_meta, meta = old["metadata"], new["metadata"]
        name = old_meta["name"]
        if meta.get("resourceVersion") and meta["resourceVersion"] != old_meta["resourceVersion"]:
            raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on {res.qualified} "{name}": the object has been '
                                            f'modified; please apply your changes to the latest version and try again', _details(res, name))
        if sub == "status":  # the status subresource writes .status and nothing else
            result = copy.deepcopy(old)
            result["status"] = new.get("status") or {}
        else:
            result = new
            for field in ("uid", "creationTimestamp", "generation", "resourceVersion"):
                if field in old_meta:
                    meta[field] = old_meta[field]
            if res.has_status and not keep_status:  # main-resource writes ignore .status
                result["status"] = copy.deepcopy(old.get("status"))
        DEFAULTERS[res.kind](self, result, old)
        if "generation" in result["metadata"] and _spec(result) != _spec(old):
            result["metadata"]["generation"] += 1
        if result == old:  # a no-op write keeps the resourceVersion and makes no watch event
            return old
        return self._commit(res, result, old)

    def _commit(self, res: Resource, obj: Obj, old: Obj | None) -> Obj:
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        self.objects[_key(res, obj)] = obj
        self._record(WatchEvent(self.rv, res.plural, "MODIFIED" if old else "ADDED", copy.deepcopy(obj), old))
        return copy.deepcopy(obj)

    def _record(self, event: WatchEvent) -> None:
        if len(self.history) == self.history.maxlen:
            self.compacted = self.history[0].rv
        self.history.append(event)
        self.cond.notify_all()

    # watch

    def watch(self, res: Resource, ns: str | None, since: str | None, match: Callable[[Obj], bool], deadline: float,
              bookmarks: bool = False) -> Iterator[Obj]:
        """Watch events as the API streams them: from `since` (exclusive), or the current
        objects as ADDED first when no resourceVersion (or "0") is given. With `bookmarks`
        (allowWatchBookmarks), a BOOKMARK carries the current resourceVersion every
        BOOKMARK_INTERVAL seconds and just before the watch times out."""
        with self.cond:
            if since in (None, "", "0"):
                cursor = self.rv
                backlog = [{"type": "ADDED", "object": o} for o in self.select(res, ns, lambda _: True, match)]
            else:
                cursor, backlog = _parse_rv(since), []
        yield from backlog
        in_scope = lambda o: (ns is None or o["metadata"].get("namespace") == ns) and match(o)  # noqa: E731
        next_bookmark = time.monotonic() + BOOKMARK_INTERVAL
        while True:
            bookmark, done = False, False
            with self.cond:
                if cursor < self.compacted:
                    yield {"type": "ERROR", "object": ApiError(410, "Expired", f"too old resource version: {cursor} ({self.compacted})").status()}
                    return
                pending = [e for e in self.history if e.rv > cursor and e.plural == res.plural]
                # An open watch follows the global resourceVersion, like the API server's watch
                # cache: a quiet resource does not expire while other resources change.
                cursor = max(cursor, self.rv)
                now = time.monotonic()
                if not pending:
                    done = self.stopped or now >= deadline
                    bookmark = bookmarks and not self.stopped and (done or now >= next_bookmark)
                    if not done and not bookmark:
                        wake = min(deadline, next_bookmark) if bookmarks else deadline
                        self.cond.wait(min(1.0, max(0.0, wake - now)))
                        continue
            for event in pending:
                if translated := _transition(event, in_scope):
                    yield translated
            if bookmark:
                next_bookmark = now + BOOKMARK_INTERVAL
                yield {"type": "BOOKMARK", "object": {"kind": res.kind, "apiVersion": res.group_version,
                                                      "metadata": {"resourceVersion": str(cursor)}}}
            if done:
                return

    def close(self) -> None:
        with self.cond:
            self.stopped = True
            self.cond.notify_all()

    # allocation helpers for the Service defaulter

    def used_node_ports(self, skip: tuple[str, str, str]) -> set[int]:
        used: set[int] = set()
        for key, obj in self.objects.items():
            if key[0] == "services" and key != skip:
                spec = obj.get("spec", {})
                used.update(p["nodePort"] for p in spec.get("ports") or [] if p.get("nodePort"))
                used.update([spec["healthCheckNodePort"]] if spec.get("healthCheckNodePort") else [])
        return used

    def free_cluster_ip(self, family: str) -> str:
        taken = {ip for k, o in self.objects.items() if k[0] == "services" for ip in o.get("spec", {}).get("clusterIPs") or []}
        network = ipaddress.ip_network(SERVICE_CIDRS[family])
        for offset in range(10, network.num_addresses - 1):
            if str(network.network_address + offset) not in taken:
                return str(network.network_address + offset)
        raise ApiError(500, "InternalError", f"no {family} cluster IP left in {network}")


def _parse_rv(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise bad_request(f'invalid resource version "{value}"') from None


def _transition(event: WatchEvent, in_scope: Callable[[Obj], bool]) -> Obj | None:
    now, before = in_scope(event.obj), event.old is not None and in_scope(event.old)
    if event.type == "MODIFIED" and now != before:
        return {"type": "ADDED" if now else "DELETED", "object": event.obj}
    return {"type": event.type, "object": event.obj} if now else None


def _key(res: Resource, obj: Obj) -> tuple[str, str, str]:
    meta = obj["metadata"]
    return res.plural, meta.get("namespace", "") if res.namespaced else "", meta["name"]


def _spec(obj: Obj) -> Obj:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status")}


def _checked_body(res: Resource, ns: str | None, body: Any, name: str | None = None) -> Obj:
    """Copy of a request body with kind/apiVersion/namespace checked like the real API does."""
    if not isinstance(body, dict):
        raise bad_request("the body of the request must be a JSON object")
    obj = copy.deepcopy(body)
    obj["kind"], obj["apiVersion"] = obj.get("kind") or res.kind, obj.get("apiVersion") or res.group_version
    if (obj["kind"], obj["apiVersion"]) != (res.kind, res.group_version):
        raise bad_request(f'the API version in the data ({obj["apiVersion"]}) does not match the expected API version ({res.group_version})')
    meta = obj.setdefault("metadata", {})
    if res.namespaced:
        meta.setdefault("namespace", ns or "default")
        if ns is not None and meta["namespace"] != ns:
            raise bad_request("the namespace of the provided object does not match the namespace sent on the request")
    else:
        meta.pop("namespace", None)
    if name is not None and meta.setdefault("name", name) != name:
        raise bad_request(f"the name of the object ({meta['name']}) does not match the name on the URL ({name})")
    return obj


# --- server-side defaults (what the API server sets; never what a controller would) --------

def _default_service(store: Store, svc: Obj, old: Obj | None) -> None:
    spec, name = svc.setdefault("spec", {}), svc["metadata"]["name"]
    res = RESOURCES["services"]
    if old:
        _carry_allocations(res, name, spec, old.get("spec", {}))
    stype = spec.setdefault("type", "ClusterIP")
    spec.setdefault("sessionAffinity", "None")
    if stype != "ExternalName":
        spec.setdefault("internalTrafficPolicy", "Cluster")
        _default_cluster_ips(store, res, name, spec)
    for port in spec.get("ports") or []:
        port.setdefault("protocol", "TCP")
        port.setdefault("targetPort", port.get("port"))
    if stype in ("NodePort", "LoadBalancer"):
        spec.setdefault("externalTrafficPolicy", "Cluster")
        if stype == "LoadBalancer":
            spec.setdefault("allocateLoadBalancerNodePorts", True)
        used = store.used_node_ports(_key(res, svc))
        if stype == "NodePort" or spec["allocateLoadBalancerNodePorts"]:
            _allocate_node_ports(res, name, spec, used)
        if stype == "LoadBalancer" and spec["externalTrafficPolicy"] == "Local":
            spec["healthCheckNodePort"] = _node_port(res, name, "spec.healthCheckNodePort", spec.get("healthCheckNodePort"), used)
        else:  # released when the Service stops needing it
            spec.pop("healthCheckNodePort", None)
    status = svc.get("status")
    svc["status"] = status if isinstance(status, dict) else {}
    svc["status"].setdefault("loadBalancer", {})


def _carry_allocations(res: Resource, name: str, spec: Obj, old_spec: Obj) -> None:
    """An update that omits allocated values keeps them (like PUT of an edited manifest)."""
    if old_spec.get("clusterIPs"):
        given = spec.get("clusterIPs") or ([spec["clusterIP"]] if spec.get("clusterIP") else [])
        if given and given != old_spec["clusterIPs"][:len(given)]:
            raise invalid(res, name, "spec.clusterIPs[0]", f"Invalid value: {given!r}: may not change once set")
        spec.update(clusterIP=old_spec["clusterIP"], clusterIPs=old_spec["clusterIPs"])
        spec.setdefault("ipFamilies", old_spec.get("ipFamilies"))
        spec.setdefault("ipFamilyPolicy", old_spec.get("ipFamilyPolicy"))
    if spec.get("type", "ClusterIP") not in ("NodePort", "LoadBalancer"):
        return
    old_ports = {p.get("name", ""): p.get("nodePort") for p in old_spec.get("ports") or []}
    for port in spec.get("ports") or []:
        if not port.get("nodePort") and old_ports.get(port.get("name", "")):
            port["nodePort"] = old_ports[port.get("name", "")]
    if old_spec.get("healthCheckNodePort") and spec.get("externalTrafficPolicy") == "Local":
        spec.setdefault("healthCheckNodePort", old_spec["healthCheckNodePort"])


def _default_cluster_ips(store: Store, res: Resource, name: str, spec: Obj) -> None:
    ips = list(spec.get("clusterIPs") or ([spec["clusterIP"]] if spec.get("clusterIP") else []))
    if ips == ["None"]:  # headless
        spec.update(clusterIP="None", clusterIPs=["None"])
    families = list(spec.get("ipFamilies") or [])
    if not families and ips and ips != ["None"]:
        families = ["IPv6" if ":" in ip else "IPv4" for ip in ips]
    policy = spec.setdefault("ipFamilyPolicy", "SingleStack")
    if not families:
        families = ["IPv4"]
    if policy != "SingleStack" and len(families) == 1:  # this stand-in is a dual-stack cluster
        families.append("IPv6" if families[0] == "IPv4" else "IPv4")
    if policy == "SingleStack" and len(families) > 1:
        raise invalid(res, name, "spec.ipFamilyPolicy",
                      "Invalid value: \"SingleStack\": must be RequireDualStack or PreferDualStack when multiple 'ipFamilies' are specified")
    spec["ipFamilies"] = families
    if ips != ["None"]:
        ips += [store.free_cluster_ip(family) for family in families[len(ips):]]
        spec.update(clusterIP=ips[0], clusterIPs=ips)


def _node_port(res: Resource, name: str, field: str, wanted: int | None, used: set[int]) -> int:
    if wanted:
        if wanted not in NODE_PORT_RANGE:
            raise invalid(res, name, field, f"Invalid value: {wanted}: provided port is not in the valid range. The range of valid ports is 30000-32767")
        if wanted in used:
            raise invalid(res, name, field, f"Invalid value: {wanted}: provided port is already allocated")
        port = wanted
    else:
        port = next(p for p in NODE_PORT_RANGE if p not in used)
    used.add(port)
    return port


def _allocate_node_ports(res: Resource, name: str, spec: Obj, used: set[int]) -> None:
    by_number: dict[int, int] = {}  # the same port number over TCP and UDP shares one nodePort
    for index, port in enumerate(spec.get("ports") or []):
        shared = by_number.get(port.get("port"))
        if shared and port.get("nodePort") in (None, 0, shared):
            port["nodePort"] = shared
            continue
        port["nodePort"] = _node_port(res, name, f"spec.ports[{index}].nodePort", port.get("nodePort"), used)
        by_number[port.get("port")] = port["nodePort"]


def _default_endpointslice(_store: Store, slice_: Obj, _old: Obj | None) -> None:
    if not slice_.get("addressType"):
        raise invalid(RESOURCES["endpointslices"], slice_["metadata"]["name"], "addressType", "Required value")
    # Empty lists are stored and served as null, like the real API (endpoints: null when no pods).
    slice_["endpoints"] = slice_.get("endpoints") or None
    slice_["ports"] = slice_.get("ports") or None
    for port in slice_["ports"] or []:
        port.setdefault("name", "")
        port.setdefault("protocol", "TCP")


def _default_namespace(_store: Store, ns: Obj, _old: Obj | None) -> None:
    ns["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = ns["metadata"]["name"]
    ns.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
    ns["status"] = ns.get("status") or {"phase": "Active"}


def _default_event(_store: Store, event: Obj, _old: Obj | None) -> None:
    for field, empty in (("firstTimestamp", None), ("lastTimestamp", None), ("eventTime", None),
                         ("reportingComponent", ""), ("reportingInstance", ""), ("source", {})):
        event.setdefault(field, empty)
    involved = event.setdefault("involvedObject", {}).get("namespace")
    if event["eventTime"] is None and involved and involved != event["metadata"]["namespace"]:
        raise invalid(RESOURCES["events"], event["metadata"]["name"], "involvedObject.namespace",
                      f'Invalid value: "{involved}": does not match event.namespace')


def _default_node(_store: Store, node: Obj, _old: Obj | None) -> None:
    node.setdefault("spec", {})
    node["status"] = node.get("status") or {}


DEFAULTERS: dict[str, Callable[[Store, Obj, Obj | None], None]] = {
    "Service": _default_service, "EndpointSlice": _default_endpointslice, "Namespace": _default_namespace,
    "Event": _default_event, "Node": _default_node,
}


# --- HTTP ------------------------------------------------------------------------------------

def _api_resource_list(group_version: str) -> Obj:
    resources = []
    for res in (r for r in RESOURCES.values() if r.group_version == group_version):
        resources.append({"name": res.plural, "singularName": res.kind.lower(), "namespaced": res.namespaced, "kind": res.kind,
                          "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"], "shortNames": list(res.short_names),
                          **({"categories": ["all"]} if res.kind == "Service" else {})})
        if res.has_status:
            resources.append({"name": f"{res.plural}/status", "singularName": "", "namespaced": res.namespaced,
                              "kind": res.kind, "verbs": ["get", "patch", "update"]})
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources}


def _openapi_v3(group_version: str) -> Obj:
    """Just enough OpenAPI v3 for kubectl: each PATCH operation declares `fieldValidation`, so
    kubectl leaves validation to the server (which ignores it) instead of downloading schemas,
    and no strategic-merge body, so `kubectl apply` computes patches from its built-in types."""
    prefix = "/api/v1" if group_version == "v1" else f"/apis/{group_version}"
    paths = {}
    for res in (r for r in RESOURCES.values() if r.group_version == group_version):
        gvk = {"group": res.group, "version": group_version.rpartition("/")[2], "kind": res.kind}
        path = f"{prefix}/namespaces/{{namespace}}/{res.plural}/{{name}}" if res.namespaced else f"{prefix}/{res.plural}/{{name}}"
        paths[path] = {"patch": {"operationId": f"patch{res.kind}", "x-kubernetes-action": "patch", "x-kubernetes-group-version-kind": gvk,
                                 "parameters": [{"name": "fieldValidation", "in": "query", "schema": {"type": "string"}}],
                                 "requestBody": {"content": {"application/merge-patch+json": {"schema": {"type": "object"}}}},
                                 "responses": {"200": {"description": "OK"}}}}
    return {"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": VERSION["gitVersion"]}, "paths": paths}


DISCOVERY_GROUP = {"name": "discovery.k8s.io", "versions": [{"groupVersion": "discovery.k8s.io/v1", "version": "v1"}],
                   "preferredVersion": {"groupVersion": "discovery.k8s.io/v1", "version": "v1"}}
DISCOVERY: dict[str, Obj] = {
    "/version": VERSION,
    "/apis": {"kind": "APIGroupList", "apiVersion": "v1", "groups": [DISCOVERY_GROUP]},
    "/apis/discovery.k8s.io": {"kind": "APIGroup", "apiVersion": "v1", **DISCOVERY_GROUP},
    "/api/v1": _api_resource_list("v1"),
    "/apis/discovery.k8s.io/v1": _api_resource_list("discovery.k8s.io/v1"),
    "/openapi/v3": {"paths": {p: {"serverRelativeURL": f"/openapi/v3/{p}?hash=stub"} for p in ("api/v1", "apis/discovery.k8s.io/v1")}},
    "/openapi/v3/api/v1": _openapi_v3("v1"),
    "/openapi/v3/apis/discovery.k8s.io/v1": _openapi_v3("discovery.k8s.io/v1"),
}
PUBLIC_PATHS = ("/version", "/healthz", "/livez", "/readyz")


@dataclass(frozen=True)
class Route:
    res: Resource
    namespace: str | None
    name: str | None
    sub: str | None


def parse_route(path: str) -> Route | None:
    parts = [p for p in path.split("/") if p]
    if parts[:2] == ["api", "v1"]:
        group_version, rest = "v1", parts[2:]
    elif parts[:3] == ["apis", "discovery.k8s.io", "v1"]:
        group_version, rest = "discovery.k8s.io/v1", parts[3:]
    else:
        return None
    namespace = None
    if len(rest) >= 3 and rest[0] == "namespaces" and rest[2] in RESOURCES and RESOURCES[rest[2]].namespaced:
        namespace, rest = rest[1], rest[2:]
    res = RESOURCES.get(rest[0]) if rest else None
    if res is None or res.group_version != group_version or len(rest) > 3 or (len(rest) == 3 and not (rest[2] == "status" and res.has_status)):
        return None
    return Route(res, namespace, *(rest[1:] + [None, None])[:2])


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive for kubectl; watches use chunked encoding
    server: "_HttpServer"

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._handle("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._handle("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._handle("PUT")

    def do_PATCH(self) -> None:  # noqa: N802
        self._handle("PATCH")

    def do_DELETE(self) -> None:  # noqa: N802
        self._handle("DELETE")

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - signature of the base class
        if self.server.api.verbose:
            super().log_message(format, *args)

    def _handle(self, method: str) -> None:
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            self._authorise(url.path)
            if url.path in PUBLIC_PATHS[1:]:
                return self._send(200, b"ok", "text/plain")
            if method == "GET" and url.path.rstrip("/") in ("/api", *DISCOVERY):
                return self._send_json(200, self._discovery(url.path.rstrip("/")))
            route = parse_route(url.path)
            if route is None:
                raise ApiError(404, "NotFound", "the server could not find the requested resource", {})
            body = self._body(method, raw)
            self._serve(method, route, query, body)
        except (json.JSONDecodeError, yaml.YAMLError) as err:
            self._send_json(400, bad_request(f"invalid request body: {err}").status())
        except ApiError as err:
            self._send_json(err.code, err.status())

    def _body(self, method: str, raw: bytes) -> Any:
        media = self.headers.get("Content-Type", "application/json").split(";")[0].strip()
        if method in ("POST", "PUT") and media not in ("application/json", "application/yaml"):
            # e.g. protobuf from kubectl's typed clients: 415 makes client-go retry in JSON
            raise ApiError(415, "UnsupportedMediaType", f'the body of the request was in an unknown format - accepted media types include: '
                                                         f'application/json, application/yaml (got "{media}")')
        if not raw.strip():
            return None
        return yaml.safe_load(raw) if media == "application/yaml" else json.loads(raw)

    def _authorise(self, path: str) -> None:
        # kubectl sends no credentials over plain http, so a request without any is let in (as
        # on the API server's old insecure port); a wrong token is refused like the real API.
        sent, token = self.headers.get("Authorization"), self.server.api.token
        if sent is not None and token and path not in PUBLIC_PATHS and sent != f"Bearer {token}":
            raise ApiError(401, "Unauthorized", "Unauthorized")

    def _discovery(self, path: str) -> Obj:
        if path == "/api":
            address = f"{self.server.server_address[0]}:{self.server.server_address[1]}"
            return {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": address}]}
        return DISCOVERY[path]

    def _serve(self, method: str, route: Route, query: dict[str, str], body: Any) -> None:
        store, res, ns, name = self.server.api.store, route.res, route.namespace, route.name
        if res.namespaced and ns is None and not (method == "GET" and name is None):
            raise ApiError(404, "NotFound", "the server could not find the requested resource", {})
        if method == "GET" and name is None:
            match = _matcher(res, query)
            if query.get("watch") in ("true", "1"):
                deadline = time.monotonic() + float(query.get("timeoutSeconds") or 1800)
                bookmarks = query.get("allowWatchBookmarks") in ("true", "1")
                events = store.watch(res, ns, query.get("resourceVersion"), match, deadline, bookmarks)
                return self._stream(self._as_tables(res, events, query) if self._wants_table() else events)
            with store.cond:
                items, rv = store.select(res, ns, lambda _: True, match), store.rv
            return self._send_list(res, items, rv, query)
        if name is None and method != "POST" or name is not None and method == "POST":
            raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")
        if method == "GET":
            obj = store.get(res, ns or "", name)
            return self._send_list(res, [obj], store.rv, query) if self._wants_table() else self._send_json(200, obj)
        if method == "POST":
            return self._send_json(201, store.create(res, ns, body))
        if method == "PUT":
            return self._send_json(200, store.replace(res, ns, name, body, route.sub))
        if method == "PATCH":
            return self._send_json(200, store.patch(res, ns, name, body, self.headers.get("Content-Type", ""), route.sub))
        deleted = store.delete(res, ns, name)
        if res.kind in ("Service", "Namespace"):  # these return the object; others a Success Status
            return self._send_json(200, deleted)
        self._send_json(200, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                              "details": {**_details(res, name), "uid": deleted["metadata"]["uid"]}})

    def _wants_table(self) -> bool:
        return "as=Table" in self.headers.get("Accept", "")

    def _send_list(self, res: Resource, items: list[Obj], rv: int, query: dict[str, str]) -> None:
        if self._wants_table():
            return self._send_json(200, to_table(res.kind, items, query.get("includeObject", "Metadata"), str(rv)))
        for item in items:  # list items carry no kind/apiVersion in the real API
            item.pop("kind", None)
            item.pop("apiVersion", None)
        self._send_json(200, {"kind": f"{res.kind}List", "apiVersion": res.group_version,
                              "metadata": {"resourceVersion": str(rv)}, "items": items})

    @staticmethod
    def _as_tables(res: Resource, events: Iterable[Obj], query: dict[str, str]) -> Iterator[Obj]:
        """`kubectl get -w` watches in Table form too."""
        for event in events:
            if event["type"] not in ("ERROR", "BOOKMARK"):
                rv = event["object"]["metadata"]["resourceVersion"]
                event = {**event, "object": to_table(res.kind, [event["object"]], query.get("includeObject", "Metadata"), rv)}
            yield event

    def _stream(self, events: Iterable[Obj]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for event in events:
                data = (json.dumps(event) + "\n").encode()
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _send_json(self, code: int, payload: Obj) -> None:
        self._send(code, json.dumps(payload).encode(), "application/json")

    def _send(self, code: int, data: bytes, content_type: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def _matcher(res: Resource, query: dict[str, str]) -> Callable[[Obj], bool]:
    labels, fields = label_selector(query.get("labelSelector")), field_selector(res, query.get("fieldSelector"))
    return lambda obj: labels(obj["metadata"].get("labels") or {}) and fields(obj)


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True
    api: "FakeApiServer"


# --- fixtures and the Python control API -----------------------------------------------------

KIND_ORDER = {"Namespace": 0, "Node": 1}  # namespaces must exist before what lives in them


def read_manifests(path: str | os.PathLike[str]) -> list[Obj]:
    """Objects of a YAML/JSON manifest file or directory (multi-document, `kind: List` ok)."""
    root = pathlib.Path(path)
    files = sorted(p for p in root.rglob("*") if p.suffix in (".yaml", ".yml", ".json")) if root.is_dir() else [root]
    objects: list[Obj] = []
    for file in files:
        for doc in yaml.safe_load_all(file.read_text(encoding="utf-8")):
            if isinstance(doc, dict):
                objects.extend(doc.get("items") or [] if doc.get("kind", "").endswith("List") else [doc])
    return sorted(objects, key=lambda o: KIND_ORDER.get(o.get("kind", ""), 2))


class FakeApiServer:
    """The stand-in: `FakeApiServer(fixtures=DIR).start()`, then point a kubeconfig at `.url`."""

    def __init__(self, port: int = 0, fixtures: str | os.PathLike[str] | list[Any] | None = None, *,
                 host: str = "127.0.0.1", token: str = DEFAULT_TOKEN, history: int = 1000, verbose: bool = False) -> None:
        self.store, self.host, self.port, self.token, self.verbose = Store(history), host, port, token, verbose
        self._httpd: _HttpServer | None = None
        self._thread: threading.Thread | None = None
        for name in BUILTIN_NAMESPACES:
            self.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
        for path in fixtures if isinstance(fixtures, list) else [fixtures] if fixtures else []:
            self.load(path)

    def load(self, path: str | os.PathLike[str]) -> list[Obj]:
        return [self.apply(obj) for obj in read_manifests(path)]

    def start(self) -> "FakeApiServer":
        self._httpd = _HttpServer((self.host, self.port), _Handler)
        self._httpd.api = self
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1},
                                        name=f"k8s-stub-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.store.close()  # ends open watches
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> "FakeApiServer":
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def kubeconfig(self, context: str = "lab", cluster_name: str = "lab") -> Obj:
        user = f"{cluster_name}-admin"
        return {"apiVersion": "v1", "kind": "Config", "preferences": {}, "current-context": context,
                "clusters": [{"name": cluster_name, "cluster": {"server": self.url}}],
                "users": [{"name": user, "user": {"token": self.token}}],
                "contexts": [{"name": context, "context": {"cluster": cluster_name, "user": user, "namespace": "default"}}]}

    def write_kubeconfig(self, path: str | os.PathLike[str], context: str = "lab", cluster_name: str = "lab") -> pathlib.Path:
        target = pathlib.Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(yaml.safe_dump(self.kubeconfig(context, cluster_name), sort_keys=False), encoding="utf-8")
        target.chmod(0o600)  # kubectl warns about group/world-readable kubeconfigs holding tokens
        return target

    def apply(self, obj: Obj) -> Obj:
        """Create or replace an object as given, status included (a test's or fixture's truth)."""
        res = resource_for(obj.get("kind", ""))
        meta = obj.get("metadata") or {}
        ns = meta.get("namespace", "default") if res.namespaced else None
        with self.store.cond:
            if (res.plural, ns or "", meta.get("name")) in self.store.objects:
                return self.store.replace(res, ns, meta["name"], {**obj, "metadata": {**meta, "resourceVersion": None}}, keep_status=True)
            return self.store.create(res, ns, obj, keep_status=True)

    def delete(self, kind: str, namespace: str | None, name: str) -> Obj:
        res = resource_for(kind)
        return self.store.delete(res, namespace if res.namespaced else None, name)

    def get(self, kind: str, namespace: str | None, name: str) -> Obj | None:
        res = resource_for(kind)
        try:
            return self.store.get(res, namespace or "" if res.namespaced else "", name)
        except ApiError:
            return None

    def list(self, kind: str, namespace: str | None = None) -> list[Obj]:
        return self.store.select(resource_for(kind), namespace, lambda _: True, lambda _: True)
