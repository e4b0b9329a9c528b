"""The API server's generic semantics over the store, for every resource alike: server-set
metadata (uid, creationTimestamp, generation, resourceVersion, managedFields), unknown-field
handling (`fieldValidation` Ignore/Warn/Strict), defaults and validation (built-in defaulters,
custom resource schemas, CRD checks), the status subresource rules, optimistic concurrency,
patches and server-side apply, deletion with finalizers, paged lists, watches, and the
controllers that live inside the real API server (CRD naming/establishing and cleanup,
namespace termination). Nothing here knows about Portico.
"""

from __future__ import annotations

import base64
import binascii
import json
import random
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from . import crd as crds
from . import errors, fieldmanager
from .builtins import DEFAULTERS, Allocations
from .errors import ApiError, FieldError
from .patches import APPLY_PATCH, apply_patch, patch_media
from .resources import Registry, Resource
from .schema import prune_metadata
from .selectors import matcher
from .store import Store, clone, parse_rv

Obj = dict[str, Any]
SYSTEM_META = ("uid", "creationTimestamp", "generation", "deletionTimestamp", "deletionGracePeriodSeconds")
DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
DNS1035_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
NAME_RULES = {  # kind -> (pattern, max length, what the API server calls it)
    "Service": (DNS1035_LABEL, 63, "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with "
                                   "an alphabetic character, and end with an alphanumeric character"),
    "Namespace": (DNS1123_LABEL, 63, "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', "
                                     "and must start and end with an alphanumeric character"),
}
SUBDOMAIN_RULE = (DNS1123_SUBDOMAIN, 253, "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, "
                                          "'-' or '.', and must start and end with an alphanumeric character")


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Request:
    """What a write asks for besides its body."""

    dry_run: bool = False
    manager: str = ""  # fieldManager, or derived from the User-Agent
    manager_given: bool = False  # server-side apply needs an explicit one
    validation: str = "Warn"  # fieldValidation: Ignore | Warn | Strict
    force: bool = False
    fixture: bool = False  # the Python control API: status, uid and timestamps as given, no managedFields
    warnings: list[str] = field(default_factory=list)


def not_found(res: Resource, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{res.qualified} "{name}" not found',
                    {"name": name, **({"group": res.group} if res.group else {}), "kind": res.plural})


def _details(res: Resource, name: str) -> Obj:
    return {"name": name, **({"group": res.group} if res.group else {}), "kind": res.plural}


def conflict(res: Resource, name: str) -> ApiError:
    return ApiError(409, "Conflict", f'Operation cannot be fulfilled on {res.qualified} "{name}": the object has been modified; '
                                     f'please apply your changes to the latest version and try again', _details(res, name))


def encode_continue(rv: int, key: tuple[str, str]) -> str:
    raw = json.dumps({"v": "meta.k8s.io/v1", "rv": rv, "start": list(key)}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_continue(token: str) -> tuple[int, tuple[str, str]]:
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        return int(data["rv"]), (str(data["start"][0]), str(data["start"][1]))
    except (ValueError, KeyError, IndexError, TypeError, binascii.Error):
        raise errors.bad_request(f"continue key is not valid: {token}") from None


class Api:
    def __init__(self, registry: Registry, store: Store, allocations: Allocations) -> None:
        self.registry, self.store, self.alloc = registry, store, allocations

    # --- versions ---------------------------------------------------------------------------

    def convert(self, res: Resource, obj: Obj, version: str) -> Obj:
        """An object as served at a version: conversion strategy None (apiVersion changes, and the
        version's defaults apply, as when the API server reads)."""
        api_version = res.api_version(version)
        if res.custom is None or obj.get("apiVersion") == api_version or version not in res.custom.versions:
            return obj
        out = clone(obj)
        out["apiVersion"] = api_version
        res.custom.versions[version].schema.default(out)
        return out

    def _to_storage(self, res: Resource, obj: Obj) -> Obj:
        if res.custom is not None:
            obj["apiVersion"] = res.api_version(res.storage_version)
        return obj

    def _lists(self, res: Resource, version: str) -> fieldmanager.ListTypes:
        if res.custom is None:
            return fieldmanager.builtin_lists
        return fieldmanager.schema_lists(res.custom.versions[version].schema.raw)

    @staticmethod
    def _key(res: Resource, namespace: str | None, name: str) -> tuple[str, str]:
        return (namespace or "") if res.namespaced else "", name

    # --- reads ------------------------------------------------------------------------------

    def get(self, res: Resource, version: str, namespace: str | None, name: str) -> Obj:
        with self.store.cond:
            obj = self.store.lookup(res.qualified, self._key(res, namespace, name))
        if obj is None:
            raise not_found(res, name)
        return self.convert(res, obj, version)

    def list(self, res: Resource, version: str, namespace: str | None, query: dict[str, str]) -> tuple[list[Obj], Obj]:
        """(items, list metadata) with limit/continue paging, each page as of the first page's
        resourceVersion (410 once the history no longer reaches it)."""
        match = matcher(res.field_labels, query.get("labelSelector"), query.get("fieldSelector"))
        try:
            limit = int(query.get("limit") or 0)
        except ValueError:
            raise errors.bad_request(f'invalid limit "{query.get("limit")}"') from None
        at, after = None, None
        if query.get("continue"):
            at, after = decode_continue(query["continue"])
        elif query.get("resourceVersionMatch") == "Exact" and query.get("resourceVersion"):
            at = parse_rv(query["resourceVersion"])
        with self.store.cond:
            items, rv, last, remaining = self.store.page(res.qualified, namespace, at, after, max(0, limit), match)
        meta: Obj = {"resourceVersion": str(rv)}
        if last is not None:
            meta["continue"] = encode_continue(rv, last)
            if remaining is not None:
                meta["remainingItemCount"] = remaining
        return [self.convert(res, o, version) for o in items], meta

    def watch(self, res: Resource, version: str, namespace: str | None, query: dict[str, str],
              deadline: float) -> Iterator[tuple[str, Obj]]:
        match = matcher(res.field_labels, query.get("labelSelector"), query.get("fieldSelector"))
        bookmarks = query.get("allowWatchBookmarks") in ("true", "1")
        initial = query.get("sendInitialEvents") in ("true", "1")
        if initial and not bookmarks:
            raise errors.unprocessable("ListOptions", "meta.k8s.io", "", [errors.forbidden(
                "allowWatchBookmarks", "allowWatchBookmarks required when using streaming list")])
        events = self.store.watch(res.qualified, namespace, query.get("resourceVersion"), match, deadline, bookmarks, initial)
        return self._served_events(res, version, events)

    def _served_events(self, res: Resource, version: str, events: Iterator[tuple[str, Obj]]) -> Iterator[tuple[str, Obj]]:
        for kind, obj in events:
            if kind == "BOOKMARK":
                meta: Obj = {"resourceVersion": obj["resourceVersion"]}
                if obj.get("initialEventsEnd"):
                    meta["annotations"] = {"k8s.io/initial-events-end": "true"}
                yield kind, {"kind": res.kind, "apiVersion": res.api_version(version), "metadata": meta}
            else:
                yield kind, obj if kind == "ERROR" else self.convert(res, obj, version)

    # --- decoding ---------------------------------------------------------------------------

    def _decode(self, res: Resource, version: str, namespace: str | None, body: Any, req: Request, name: str | None = None) -> Obj:
        """A request body as the API server decodes it: kind/apiVersion/namespace/name checked,
        unknown fields dropped (warned about, or refused when Strict), schema defaults set."""
        if not isinstance(body, dict):
            raise errors.bad_request("the body of the request must be a JSON object")
        obj = clone(body)
        api_version = res.api_version(version)
        if res.custom is not None:
            for field_name in ("kind", "apiVersion"):
                if not obj.get(field_name):
                    raise errors.bad_request(f"Object '{field_name[0].upper() + field_name[1:]}' is missing in '{json.dumps(body)}'")
        obj["kind"], obj["apiVersion"] = obj.get("kind") or res.kind, obj.get("apiVersion") or api_version
        if (obj["kind"], obj["apiVersion"]) != (res.kind, api_version):
            raise errors.bad_request(f'the API version in the data ({obj["apiVersion"]}) does not match the expected API version '
                                     f'({api_version})' if obj["apiVersion"] != api_version else
                                     f'the kind in the data ({obj["kind"]}) does not match the expected kind ({res.kind})')
        meta = obj.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise errors.bad_request("metadata must be an object")
        if res.namespaced:
            meta.setdefault("namespace", namespace or "default")
            if namespace is not None and meta["namespace"] != namespace:
                raise errors.bad_request("the namespace of the provided object does not match the namespace sent on the request")
        else:
            meta.pop("namespace", None)
        if name is not None and meta.setdefault("name", name) != name:
            raise errors.bad_request(f"the name of the object ({meta['name']}) does not match the name on the URL ({name})")
        unknown = prune_metadata(obj)
        if res.custom is not None:
            schema = res.custom.versions[version].schema
            unknown += schema.prune(obj)
            schema.default(obj)
        if unknown and req.validation == "Strict":
            raise errors.bad_request(f'{res.kind} in version "{version}" cannot be handled as a {res.kind}: strict decoding error: '
                                     + ", ".join(f'unknown field "{path}"' for path in unknown))
        if req.validation != "Ignore":
            req.warnings.extend(f'unknown field "{path}"' for path in unknown)
        return obj

    # --- writes -----------------------------------------------------------------------------

    def create(self, res: Resource, version: str, namespace: str | None, body: Any, req: Request) -> Obj:
        obj = self._decode(res, version, namespace, body, req)
        with self.store.cond:
            return self._create(res, version, obj, req)

    def _create(self, res: Resource, version: str, obj: Obj, req: Request, managed: list[Obj] | None = None) -> Obj:
        meta = obj["metadata"]
        if res.namespaced:
            self._check_namespace(res, meta)
        self._check_crd_live(res)
        if not meta.get("name"):
            if not meta.get("generateName"):
                raise errors.unprocessable(res.kind, res.group, "", [errors.required("metadata.name", "name or generateName is required")])
            meta["name"] = meta["generateName"] + "".join(random.choices("bcdfghjklmnpqrstvwxz2456789", k=5))
        key = self._key(res, meta.get("namespace"), meta["name"])
        if self.store.lookup(res.qualified, key) is not None:
            raise ApiError(409, "AlreadyExists", f'{res.qualified} "{meta["name"]}" already exists', _details(res, meta["name"]))
        meta.pop("resourceVersion", None)
        if not req.fixture:
            for name in ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds"):
                meta.pop(name, None)
            self._reset_status_on_create(res, version, obj)
        meta["uid"] = meta.get("uid") or str(uuid.uuid4())
        meta["creationTimestamp"] = meta.get("creationTimestamp") or now_rfc3339()
        if res.generation:
            meta["generation"] = 1
        else:
            meta.pop("generation", None)
        if crds.is_crd(res) and crds.CLEANUP_FINALIZER not in (meta.get("finalizers") or []):
            meta["finalizers"] = [*(meta.get("finalizers") or []), crds.CLEANUP_FINALIZER]
        self._default(res, version, obj, None)
        self._validate(res, version, obj, None)
        if not req.fixture:
            meta["managedFields"] = managed if managed is not None else fieldmanager.record_update(
                None, obj, req.manager, "", res.api_version(version), now_rfc3339(), self._lists(res, version))
        if req.dry_run:
            return obj
        return self.convert(res, self._commit(res, obj, None), version)

    def _reset_status_on_create(self, res: Resource, version: str, obj: Obj) -> None:
        if res.kind == "Service" and res.group == "":
            obj["status"] = {}  # the API resets a new Service's status
        elif crds.is_crd(res):
            obj["status"] = {"acceptedNames": dict(crds.NO_NAMES)}  # the controllers fill it in
        elif res.custom is not None and res.status_enabled(version):
            obj.pop("status", None)  # create cannot set the status of a resource with a status subresource

    def update(self, res: Resource, version: str, namespace: str | None, name: str, body: Any, sub: str | None,
               req: Request) -> Obj:
        new = self._decode(res, version, namespace, body, req, name)
        with self.store.cond:
            return self._update(res, version, self._current(res, version, namespace, name), new, sub, req)

    def patch(self, res: Resource, version: str, namespace: str | None, name: str, body: Any, content_type: str,
              sub: str | None, req: Request) -> tuple[Obj, bool]:
        """(the object, whether a server-side apply created it)."""
        media = patch_media(content_type, strategic=res.custom is None)
        if media == APPLY_PATCH:
            return self._server_side_apply(res, version, namespace, name, body, sub, req)
        with self.store.cond:
            old = self._current(res, version, namespace, name)
            new = self._decode(res, version, namespace, apply_patch(old, body, media), req, name)
            return self._update(res, version, old, new, sub, req), False

    def _current(self, res: Resource, version: str, namespace: str | None, name: str) -> Obj:
        stored = self.store.lookup(res.qualified, self._key(res, namespace, name))
        if stored is None:
            raise not_found(res, name)
        return self.convert(res, stored, version)

    def _server_side_apply(self, res: Resource, version: str, namespace: str | None, name: str, body: Any,
                           sub: str | None, req: Request) -> tuple[Obj, bool]:
        if not req.manager_given:
            raise errors.bad_request("fieldManager: Required value: is required for apply patch")
        if not isinstance(body, dict) or not body.get("apiVersion") or not body.get("kind"):
            raise errors.bad_request("the applied configuration must set apiVersion and kind")
        probe = clone(body)
        unknown = prune_metadata(probe) + (res.custom.versions[version].schema.prune(probe) if res.custom else [])
        if unknown:
            raise errors.bad_request(f"failed to create typed patch object ({namespace + '/' if namespace else ''}{name}; "
                                     f"{res.api_version(version)}, Kind={res.kind}): "
                                     + ", ".join(f".{path}: field not declared in schema" for path in unknown))
        applied = {**body, "metadata": {**(body.get("metadata") or {}), "name": name}}
        if res.namespaced:
            applied["metadata"]["namespace"] = namespace or "default"
        now, lists = now_rfc3339(), self._lists(res, version)
        with self.store.cond:
            stored = self.store.lookup(res.qualified, self._key(res, namespace, name))
            if stored is None:
                if sub:
                    raise not_found(res, name)
                merged, managed = fieldmanager.server_side_apply(None, applied, req.manager, "", req.force,
                                                                 res.api_version(version), now, lists)
                obj = self._decode(res, version, namespace, merged, req, name)
                return self._create(res, version, obj, req, managed), True
            old = self.convert(res, stored, version)
            merged, managed = fieldmanager.server_side_apply(old, applied, req.manager, sub or "", req.force,
                                                             res.api_version(version), now, lists)
            new = self._decode(res, version, namespace, merged, req, name)
            return self._update(res, version, old, new, sub, req, managed), False

    def _update(self, res: Resource, version: str, old: Obj, new: Obj, sub: str | None, req: Request,
                managed: list[Obj] | None = None) -> Obj:
        old_meta, meta = old["metadata"], new["metadata"]
        name = old_meta["name"]
        if meta.get("resourceVersion") and meta["resourceVersion"] != old_meta["resourceVersion"]:
            raise conflict(res, name)
        if not req.fixture and meta.get("uid") and meta["uid"] != old_meta.get("uid"):
            raise errors.unprocessable(res.kind, res.group, name, [errors.invalid("metadata.uid", meta["uid"], "field is immutable")])
        if sub == "status":  # the status subresource writes .status and nothing else
            result = clone(old)
            if "status" in new:
                result["status"] = new["status"]
            else:
                result.pop("status", None)
        else:
            result = new
            for system in SYSTEM_META:
                if system in old_meta:
                    meta[system] = old_meta[system]
                else:
                    meta.pop(system, None)
            meta.setdefault("managedFields", old_meta.get("managedFields"))
            if res.status_enabled(version) and not req.fixture:  # main-resource writes ignore .status
                if "status" in old:
                    result["status"] = clone(old["status"])
                else:
                    result.pop("status", None)
        self._check_finalizers(res, old, result)
        self._default(res, version, result, old)
        self._validate(res, version, result, old)
        if res.generation and _content(result, res.status_enabled(version)) != _content(old, res.status_enabled(version)):
            result["metadata"]["generation"] = old_meta.get("generation", 0) + 1
        if _essence(result) == _essence(old):  # a no-op write keeps the resourceVersion and makes no watch event
            return old
        if not req.fixture:
            result["metadata"]["managedFields"] = managed if managed is not None else fieldmanager.record_update(
                old, result, req.manager, sub or "", res.api_version(version), now_rfc3339(), self._lists(res, version))
        if not result["metadata"].get("managedFields"):
            result["metadata"].pop("managedFields", None)
        if req.dry_run:
            return result
        stored_old = self.store.lookup(res.qualified, self._key(res, old_meta.get("namespace"), name))
        if result["metadata"].get("deletionTimestamp") and not result["metadata"].get("finalizers"):
            return self.convert(res, self._remove(res, stored_old, last=result), version)
        return self.convert(res, self._commit(res, result, stored_old), version)

    def _check_finalizers(self, res: Resource, old: Obj, new: Obj) -> None:
        if not old["metadata"].get("deletionTimestamp"):
            return
        added = [f for f in new["metadata"].get("finalizers") or [] if f not in (old["metadata"].get("finalizers") or [])]
        if added:
            raise errors.unprocessable(res.kind, res.group, old["metadata"]["name"], [errors.forbidden(
                "metadata.finalizers", "no new finalizers can be added if the object is being deleted, found new finalizers "
                "[]string{" + ", ".join(json.dumps(f) for f in added) + "}")])

    def _default(self, res: Resource, version: str, obj: Obj, old: Obj | None) -> None:
        if res.custom is not None:
            res.custom.versions[version].schema.default(obj)
        elif crds.is_crd(res):
            crds.default_crd(obj)
        elif res.group in ("", "discovery.k8s.io") and res.kind in DEFAULTERS:
            DEFAULTERS[res.kind](self.alloc, obj, old)

    def _validate(self, res: Resource, version: str, obj: Obj, old: Obj | None) -> None:
        found: list[FieldError] = []
        name = obj["metadata"].get("name", "")
        pattern, limit, words = NAME_RULES.get(res.kind, SUBDOMAIN_RULE) if res.group == "" else SUBDOMAIN_RULE
        if old is None and (len(name) > limit or not pattern.fullmatch(name)):
            found.append(errors.invalid("metadata.name", name, words if len(name) <= limit else f"must be no more than {limit} characters"))
        if res.custom is not None:
            found += res.custom.versions[version].schema.validate(obj, old)
        elif crds.is_crd(res):
            found += crds.validate_crd(obj, old)
        if found:
            raise errors.unprocessable(res.kind, res.group, name, found)

    def _check_namespace(self, res: Resource, meta: Obj) -> None:
        namespace = self.store.lookup("namespaces", ("", meta["namespace"]))
        if namespace is None:
            raise ApiError(404, "NotFound", f'namespaces "{meta["namespace"]}" not found', {"name": meta["namespace"], "kind": "namespaces"})
        if namespace["metadata"].get("deletionTimestamp"):
            message = (f'{res.plural} "{meta.get("name") or meta.get("generateName", "")}" is forbidden: unable to create new content '
                       f'in namespace {meta["namespace"]} because it is being terminated')
            raise ApiError(403, "Forbidden", message, {"name": meta.get("name", ""), **({"group": res.group} if res.group else {}),
                                                       "kind": res.plural, "causes": [{"reason": "NamespaceTerminating",
                                                                                       "message": message, "field": "metadata.namespace"}]})

    def _check_crd_live(self, res: Resource) -> None:
        if res.custom is None:
            return
        definition = self.store.lookup(crds_resource(self.registry).qualified, ("", res.custom.crd_name))
        if definition is not None and definition["metadata"].get("deletionTimestamp"):
            raise ApiError(405, "MethodNotAllowed", "create not allowed while custom resource definition is terminating")

    # --- deletion ---------------------------------------------------------------------------

    def delete(self, res: Resource, version: str, namespace: str | None, name: str, options: Obj | None,
               req: Request) -> tuple[Obj, bool]:
        """(the object, whether it is gone now); with finalizers it stays, marked for deletion."""
        with self.store.cond:
            stored = self.store.lookup(res.qualified, self._key(res, namespace, name))
            if stored is None:
                raise not_found(res, name)
            preconditions = (options or {}).get("preconditions") or {}
            for field_name, label in (("uid", "UID"), ("resourceVersion", "ResourceVersion")):
                wanted, actual = preconditions.get(field_name), stored["metadata"].get(field_name)
                if wanted and wanted != actual:
                    raise ApiError(409, "Conflict", f"Precondition failed: {label} in precondition: {wanted}, {label} in object meta: "
                                                    f"{actual}", _details(res, name))
            if req.dry_run:
                return self.convert(res, stored, version), not stored["metadata"].get("finalizers")
            obj, gone_now = self._delete_object(res, stored)
            return self.convert(res, obj, version), gone_now

    def delete_collection(self, res: Resource, version: str, namespace: str | None, query: dict[str, str],
                          req: Request) -> list[Obj]:
        match = matcher(res.field_labels, query.get("labelSelector"), query.get("fieldSelector"))
        with self.store.cond:
            items = self.store.page(res.qualified, namespace, None, None, 0, match)[0]
            if req.dry_run:
                return [self.convert(res, o, version) for o in items]
            return [self.convert(res, self._delete_object(res, o)[0], version) for o in items]

    def _delete_object(self, res: Resource, stored: Obj) -> tuple[Obj, bool]:
        meta = stored["metadata"]
        is_namespace = res.group == "" and res.kind == "Namespace"
        if not meta.get("finalizers") and not is_namespace:
            return self._remove(res, stored), True
        if meta.get("deletionTimestamp"):
            return stored, False
        marked = clone(stored)
        marked["metadata"].update(deletionTimestamp=now_rfc3339(), deletionGracePeriodSeconds=0)
        if "generation" in meta:
            marked["metadata"]["generation"] = meta["generation"] + 1
        if is_namespace:
            marked["status"] = {**(marked.get("status") or {}), "phase": "Terminating"}
        committed = self._commit(res, marked, stored)
        if is_namespace:
            committed = self._terminate_namespace(meta["name"]) or committed
        final = self.store.lookup(res.qualified, self._key(res, meta.get("namespace"), meta["name"]))
        return (committed, False) if final is not None else (committed, True)

    def _remove(self, res: Resource, stored: Obj, last: Obj | None = None) -> Obj:
        final = self.store.remove(res.qualified, self._to_storage(res, last) if last is not None else stored)
        if res.group == "" and res.kind == "Service":
            self.alloc.track(self._key(res, stored["metadata"].get("namespace"), stored["metadata"]["name"]), stored, None)
        if crds.is_crd(res):
            served = self.registry.by_qualified(stored["metadata"]["name"])
            if served is not None:
                self.registry.remove(served.group, served.plural)
            self.store.drop_resource(stored["metadata"]["name"])
        if res.custom is not None:
            self._finish_crd(res.custom.crd_name)
        if res.namespaced:
            self._finish_namespace(stored["metadata"].get("namespace", ""))
        return final

    def _commit(self, res: Resource, obj: Obj, old_stored: Obj | None, sync: bool = True) -> Obj:
        stored = self.store.put(res.qualified, self._to_storage(res, obj), old_stored)
        if res.group == "" and res.kind == "Service":
            self.alloc.track(self._key(res, obj["metadata"].get("namespace"), obj["metadata"]["name"]), old_stored, stored)
        if sync and crds.is_crd(res):
            self._sync_crd(stored, old_stored)
        return stored

    # --- controllers inside the API server ---------------------------------------------------

    def _terminate_namespace(self, name: str) -> Obj | None:
        """The namespace controller: delete everything in it, then the namespace once empty."""
        for resource, key in self.store.namespace_used(name):
            res, obj = self.registry.by_qualified(resource), self.store.lookup(resource, key)
            if res is not None and obj is not None and not obj["metadata"].get("deletionTimestamp"):
                self._delete_object(res, obj)
        return self._finish_namespace(name)

    def _finish_namespace(self, name: str) -> Obj | None:
        namespace = self.store.lookup("namespaces", ("", name))
        if namespace is None or not namespace["metadata"].get("deletionTimestamp") or self.store.namespace_used(name):
            return None
        return self.store.remove("namespaces", namespace)

    def _sync_crd(self, definition: Obj, previous: Obj | None) -> None:
        """The CRD controllers: names accepted and established (then served), or on deletion the
        instances removed and the cleanup finalizer taken off."""
        crd_res = crds_resource(self.registry)
        status = crds.accepted_status(definition, self._taken_names(definition), now_rfc3339())
        if status != definition.get("status"):
            definition = self._commit(crd_res, {**definition, "status": status,
                                                "metadata": dict(definition["metadata"])}, definition, sync=False)
        name = definition["metadata"]["name"]
        if definition["metadata"].get("deletionTimestamp"):
            served = self.registry.by_qualified(name)
            if served is not None:
                for obj in list(self.store.tables.get(name, {}).values()):
                    if not obj["metadata"].get("deletionTimestamp"):
                        self._delete_object(served, obj)
            self._finish_crd(name)
            return
        if not crds.established(definition):
            return
        served = crds.served_resource(definition)
        self.registry.install(served)
        if previous is not None and previous.get("spec") != definition.get("spec"):
            self._default_stored(served)

    def _default_stored(self, res: Resource) -> None:
        """Defaults a changed schema adds reach objects stored before it (the API server applies
        them whenever it reads)."""
        assert res.custom is not None
        schema = res.custom.versions.get(res.storage_version)
        if schema is None:
            return
        for obj in list(self.store.tables.get(res.qualified, {}).values()):
            defaulted = clone(obj)
            schema.schema.default(defaulted)
            if defaulted != obj:
                self.store.replace_quietly(res.qualified, defaulted)

    def _finish_crd(self, name: str) -> None:
        crd_res = crds_resource(self.registry)
        definition = self.store.lookup(crd_res.qualified, ("", name))
        if definition is None or not definition["metadata"].get("deletionTimestamp") or self.store.count(name):
            return
        finalizers = [f for f in definition["metadata"].get("finalizers") or [] if f != crds.CLEANUP_FINALIZER]
        if finalizers:
            if finalizers != definition["metadata"].get("finalizers"):
                self._commit(crd_res, {**definition, "metadata": {**definition["metadata"], "finalizers": finalizers}}, definition,
                             sync=False)
            return
        self._remove(crd_res, definition, last={**definition, "metadata": {**definition["metadata"], "finalizers": []}})

    def _taken_names(self, definition: Obj) -> dict[str, str]:
        group = definition["spec"]["group"]
        taken: dict[str, str] = {}
        for other in self.store.tables.get(crds_resource(self.registry).qualified, {}).values():
            if other["metadata"]["name"] != definition["metadata"]["name"] and other["spec"]["group"] == group:
                accepted = (other.get("status") or {}).get("acceptedNames") or {}
                for value in (accepted.get("plural"), accepted.get("singular"), accepted.get("kind"), accepted.get("listKind"),
                              *(accepted.get("shortNames") or [])):
                    if value:
                        taken[value.lower()] = other["metadata"]["name"]
        return taken

    # --- the Python control API --------------------------------------------------------------

    def apply_fixture(self, obj: Obj) -> Obj:
        """Create or replace an object as given, status, uid and creationTimestamp included (a
        test's or fixture's truth); unknown fields are refused."""
        res = self.registry.for_kind(obj.get("kind", ""), obj.get("apiVersion"))
        version = (obj.get("apiVersion") or "").rpartition("/")[2] or res.storage_version
        meta = obj.get("metadata") or {}
        namespace = meta.get("namespace", "default") if res.namespaced else None
        req = Request(fixture=True, validation="Strict")
        with self.store.cond:
            stored = self.store.lookup(res.qualified, self._key(res, namespace, meta.get("name", "")))
            if stored is None:
                return self._create(res, version, self._decode(res, version, namespace, obj, req), req)
            body = {**obj, "metadata": {**meta, "resourceVersion": None}}
            new = self._decode(res, version, namespace, body, req, meta.get("name"))
            return self._update(res, version, self.convert(res, stored, version), new, None, req)


def crds_resource(registry: Registry) -> Resource:
    found = registry.lookup(crds.CRD_GROUP, "v1", "customresourcedefinitions")
    assert found is not None
    return found


def _content(obj: Obj, status_apart: bool) -> Obj:
    """What metadata.generation tracks: everything but metadata (and status when it has its
    own subresource)."""
    return {k: v for k, v in obj.items() if k not in ("metadata", "apiVersion", "kind") and not (status_apart and k == "status")}


def _essence(obj: Obj) -> Obj:
    meta = {k: v for k, v in obj["metadata"].items() if k not in ("resourceVersion", "managedFields") and v is not None}
    return {**{k: v for k, v in obj.items() if k not in ("metadata", "apiVersion")}, "metadata": meta}
