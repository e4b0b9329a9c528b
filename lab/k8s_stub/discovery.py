"""Discovery and OpenAPI documents, derived from the registry (built-ins and established CRDs):
the legacy per-group documents (/api, /apis, /apis/<group>[/<version>]) the Python client
reads, the aggregated discovery (apidiscovery.k8s.io/v2) kubectl 1.32 asks for first, and
OpenAPI v3 per group/version: every write operation declares `fieldValidation` and `dryRun`
so kubectl leaves validation to the server, and custom resources carry their schemas for
`kubectl explain`.
"""

from __future__ import annotations

import copy
import hashlib
import json
import threading
from typing import Any

from .resources import STATUS_VERBS, VERBS, Registry, Resource

Obj = dict[str, Any]
VERSION = {"major": "1", "minor": "32", "gitVersion": "v1.32.0", "gitCommit": "portico-stub", "gitTreeState": "clean",
           "buildDate": "2024-12-11T00:00:00Z", "goVersion": "go1.23.3", "compiler": "gc", "platform": "linux/amd64"}
AGGREGATED = "application/json;g=apidiscovery.k8s.io;v={version};as=APIGroupDiscoveryList"
META = "io.k8s.apimachinery.pkg.apis.meta.v1"
OBJECT_META: Obj = {
    "type": "object",
    "description": "Metadata every persisted object has: name, namespace, labels, annotations and what the server sets.",
    "properties": {
        "name": {"type": "string", "description": "Unique within a namespace (or the cluster, for cluster-scoped kinds)."},
        "generateName": {"type": "string", "description": "Prefix of a name the server generates when name is empty."},
        "namespace": {"type": "string", "description": "The namespace the object lives in."},
        "labels": {"type": "object", "additionalProperties": {"type": "string"},
                   "description": "Key/value pairs that selectors match."},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"},
                        "description": "Key/value pairs for tools; not selectable."},
        "uid": {"type": "string", "description": "Set by the server at creation; unique over time."},
        "resourceVersion": {"type": "string", "description": "Opaque version for optimistic concurrency and watches."},
        "generation": {"type": "integer", "format": "int64", "description": "Bumped by the server on spec changes."},
        "creationTimestamp": {"type": "string", "format": "date-time", "description": "When the server created the object."},
        "deletionTimestamp": {"type": "string", "format": "date-time",
                              "description": "Set when deletion was requested and finalizers still hold the object."},
        "finalizers": {"type": "array", "items": {"type": "string"}, "x-kubernetes-list-type": "set",
                       "description": "Keys of controllers that must finish before the object goes."},
        "ownerReferences": {"type": "array", "items": {"type": "object"}, "description": "Objects this one depends on."},
        "managedFields": {"type": "array", "items": {"type": "object"}, "description": "Which manager owns which fields."},
    },
}
LIST_META: Obj = {"type": "object", "description": "Metadata of a list: its resourceVersion and paging token.",
                  "properties": {"resourceVersion": {"type": "string"}, "continue": {"type": "string"},
                                 "remainingItemCount": {"type": "integer", "format": "int64"}}}


def _group_version(group: str, version: str) -> str:
    return f"{group}/{version}" if group else version


# --- legacy discovery ------------------------------------------------------------------------

def _resource_entries(res: Resource, version: str) -> list[Obj]:
    entry: Obj = {"name": res.plural, "singularName": res.singular, "namespaced": res.namespaced, "kind": res.kind,
                  "verbs": list(VERBS)}
    if res.short_names:
        entry["shortNames"] = list(res.short_names)
    if res.categories:
        entry["categories"] = list(res.categories)
    entries = [entry]
    if res.status_enabled(version):
        entries.append({"name": f"{res.plural}/status", "singularName": "", "namespaced": res.namespaced, "kind": res.kind,
                        "verbs": list(STATUS_VERBS)})
    return entries


def api_resource_list(registry: Registry, group: str, version: str) -> Obj:
    resources = [e for res in registry.in_group_version(group, version) for e in _resource_entries(res, version)]
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": _group_version(group, version), "resources": resources}


def api_group(group: str, versions: list[str]) -> Obj:
    listed = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
    return {"name": group, "versions": listed, "preferredVersion": listed[0]}


# --- aggregated discovery --------------------------------------------------------------------

def _aggregated_resource(res: Resource, version: str) -> Obj:
    kind = {"group": res.group, "version": version, "kind": res.kind}
    entry: Obj = {"resource": res.plural, "responseKind": kind, "scope": "Namespaced" if res.namespaced else "Cluster",
                  "singularResource": res.singular, "verbs": list(VERBS)}
    if res.short_names:
        entry["shortNames"] = list(res.short_names)
    if res.categories:
        entry["categories"] = list(res.categories)
    if res.status_enabled(version):
        entry["subresources"] = [{"subresource": "status", "responseKind": kind, "verbs": list(STATUS_VERBS)}]
    return entry


def aggregated(registry: Registry, core: bool, api_version: str) -> Obj:
    items = []
    for group, versions in registry.groups():
        if (group == "") != core:
            continue
        listed = [{"version": v, "resources": [_aggregated_resource(r, v) for r in registry.in_group_version(group, v)],
                   "freshness": "Current"} for v in versions]
        items.append({"metadata": {"name": group, "creationTimestamp": None}, "versions": listed})
    return {"kind": "APIGroupDiscoveryList", "apiVersion": api_version, "metadata": {}, "items": items}


# --- OpenAPI v3 ------------------------------------------------------------------------------

def _schema_name(res: Resource, version: str, suffix: str = "") -> str:
    reversed_group = ".".join(reversed(res.group.split("."))) if res.group else "io.k8s.api.core"
    return f"{reversed_group}.{version}.{res.kind}{suffix}"


def _param(name: str) -> Obj:
    return {"name": name, "in": "query", "schema": {"type": "string", "uniqueItems": True}}


def _operation(res: Resource, version: str, action: str, verb: str, writes: bool) -> Obj:
    params = [_param("pretty")]
    if writes:
        params += [_param("dryRun"), _param("fieldManager"), _param("fieldValidation")]
    if action == "patch":
        params.append({"name": "force", "in": "query", "schema": {"type": "boolean", "uniqueItems": True}})
    op: Obj = {"operationId": f"{verb}{res.kind}", "parameters": params, "responses": {"200": {"description": "OK"}},
               "x-kubernetes-action": action,
               "x-kubernetes-group-version-kind": {"group": res.group, "version": version, "kind": res.kind}}
    if action == "patch":
        # No strategic-merge body even for built-ins: kubectl would then compute apply patches
        # from these (schema-less) documents instead of its compiled-in types.
        media = ["application/json-patch+json", "application/merge-patch+json", "application/apply-patch+yaml"]
        op["requestBody"] = {"content": {m: {"schema": {"type": "object"}} for m in media}, "required": True}
    return op


def _paths(res: Resource, version: str) -> Obj:
    prefix = f"/apis/{res.group}/{version}" if res.group else f"/api/{version}"
    scoped = f"{prefix}/namespaces/{{namespace}}/{res.plural}" if res.namespaced else f"{prefix}/{res.plural}"
    item = f"{scoped}/{{name}}"
    paths = {
        scoped: {"get": _operation(res, version, "list", "list", False), "post": _operation(res, version, "post", "create", True),
                 "delete": _operation(res, version, "deletecollection", "deleteCollection", False)},
        item: {"get": _operation(res, version, "get", "read", False), "put": _operation(res, version, "put", "replace", True),
               "patch": _operation(res, version, "patch", "patch", True), "delete": _operation(res, version, "delete", "delete", False)},
    }
    if res.namespaced:
        paths[f"{prefix}/{res.plural}"] = {"get": _operation(res, version, "list", "listAllNamespaces", False)}
    if res.status_enabled(version):
        paths[f"{item}/status"] = {"get": _operation(res, version, "get", "readStatus", False),
                                   "put": _operation(res, version, "put", "replaceStatus", True),
                                   "patch": _operation(res, version, "patch", "patchStatus", True)}
    return paths


def _without_rules(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _without_rules(v) for k, v in node.items() if k != "x-kubernetes-validations"}
    if isinstance(node, list):
        return [_without_rules(v) for v in node]
    return node


def _kind_schema(res: Resource, version: str) -> Obj:
    gvk = [{"group": res.group, "version": version, "kind": res.kind}]
    if res.custom is None:
        return {"type": "object", "description": f"{res.kind} (schema not published by the stand-in).",
                "x-kubernetes-group-version-kind": gvk}
    schema = _without_rules(copy.deepcopy(res.custom.versions[version].schema.raw))
    props = schema.setdefault("properties", {})
    props["apiVersion"] = {"type": "string", "description": "The versioned schema of this representation of an object."}
    props["kind"] = {"type": "string", "description": "The REST resource this object represents."}
    props["metadata"] = {"allOf": [{"$ref": f"#/components/schemas/{META}.ObjectMeta"}],
                         "description": "Standard object's metadata."}
    schema["x-kubernetes-group-version-kind"] = gvk
    return schema


def openapi_document(registry: Registry, group: str, version: str) -> Obj:
    resources = registry.in_group_version(group, version)
    paths: Obj = {}
    schemas: Obj = {f"{META}.ObjectMeta": OBJECT_META, f"{META}.ListMeta": LIST_META}
    for res in resources:
        paths.update(_paths(res, version))
        schemas[_schema_name(res, version)] = _kind_schema(res, version)
        schemas[_schema_name(res, version, "List")] = {
            "type": "object", "required": ["items"],
            "properties": {"apiVersion": {"type": "string"}, "kind": {"type": "string"},
                           "items": {"type": "array", "items": {"$ref": f"#/components/schemas/{_schema_name(res, version)}"}},
                           "metadata": {"allOf": [{"$ref": f"#/components/schemas/{META}.ListMeta"}]}},
            "x-kubernetes-group-version-kind": [{"group": res.group, "version": version, "kind": res.list_kind}]}
    return {"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": VERSION["gitVersion"]}, "paths": paths,
            "components": {"schemas": schemas}}


def _doc_path(group: str, version: str) -> str:
    return f"apis/{group}/{version}" if group else f"api/{version}"


class Discovery:
    """The documents, rebuilt when the registry changes (a CRD established, updated or gone)."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._lock = threading.Lock()
        self._generation = -1
        self._documents: dict[str, Obj] = {}

    def _refresh(self) -> dict[str, Obj]:
        with self._lock:
            if self._generation != self.registry.generation:
                self._generation, self._documents = self.registry.generation, self._build()
            return self._documents

    def _build(self) -> dict[str, Obj]:
        groups = self.registry.groups()
        named = [api_group(g, versions) for g, versions in groups if g]
        docs: dict[str, Obj] = {"/version": VERSION, "/apis": {"kind": "APIGroupList", "apiVersion": "v1", "groups": named}}
        openapi_paths: Obj = {}
        for group, versions in groups:
            if group:
                docs[f"/apis/{group}"] = {"kind": "APIGroup", "apiVersion": "v1", **api_group(group, versions)}
            for version in versions:
                path = _doc_path(group, version)
                docs[f"/{path}"] = api_resource_list(self.registry, group, version)
                document = openapi_document(self.registry, group, version)
                digest = hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()[:32].upper()
                docs[f"/openapi/v3/{path}"] = document
                openapi_paths[path] = {"serverRelativeURL": f"/openapi/v3/{path}?hash={digest}"}
        docs["/openapi/v3"] = {"paths": openapi_paths}
        return docs

    def document(self, path: str) -> Obj | None:
        return self._refresh().get(path)

    def aggregated(self, core: bool, accept: str) -> tuple[Obj, str]:
        """(document, content type) for an aggregated discovery request."""
        version = "v2" if "v=v2;" in accept or accept.endswith("v=v2") else "v2beta1"
        return aggregated(self.registry, core, f"apidiscovery.k8s.io/{version}"), AGGREGATED.format(version=version)
