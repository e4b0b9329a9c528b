"""What the stand-in serves: the built-in resources and those CustomResourceDefinitions add,
found by group/version/plural for URLs and by kind, plural or short name for the Python API."""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .crd import CustomResource

Obj = dict[str, Any]
VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
STATUS_VERBS = ("get", "patch", "update")


@dataclass(frozen=True)
class Resource:
    group: str
    kind: str
    plural: str
    versions: tuple[str, ...]  # served versions, the preferred (and for built-ins the only) first
    namespaced: bool
    short_names: tuple[str, ...] = ()
    has_status: bool = False  # built-ins: served with a /status subresource
    field_labels: tuple[str, ...] = ()  # fieldSelector labels besides metadata.name/namespace
    categories: tuple[str, ...] = ()
    generation: bool = True  # the API server sets and bumps metadata.generation
    custom: CustomResource | None = field(default=None, compare=False)

    @property
    def qualified(self) -> str:
        """`plural.group`: how errors name the resource, and the store's key for it."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def singular(self) -> str:
        return self.custom.singular if self.custom else self.kind.lower()

    @property
    def list_kind(self) -> str:
        return self.custom.list_kind if self.custom else f"{self.kind}List"

    @property
    def storage_version(self) -> str:
        return self.custom.storage if self.custom else self.versions[0]

    @property
    def group_version(self) -> str:
        return self.api_version(self.storage_version)

    def api_version(self, version: str) -> str:
        return f"{self.group}/{version}" if self.group else version

    def status_enabled(self, version: str) -> bool:
        return self.custom.status_enabled(version) if self.custom else self.has_status

    def names(self) -> tuple[str, ...]:
        return (self.kind.lower(), self.plural, self.singular, *self.short_names)


EVENT_FIELDS = tuple(f"involvedObject.{f}" for f in ("kind", "namespace", "name", "uid", "apiVersion", "resourceVersion", "fieldPath"))
CRD_GROUP = "apiextensions.k8s.io"
BUILTINS = (
    Resource("", "Namespace", "namespaces", ("v1",), False, ("ns",), True, ("status.phase",), generation=False),
    Resource("", "Node", "nodes", ("v1",), False, ("no",), True, ("spec.unschedulable",), generation=False),
    Resource("", "Service", "services", ("v1",), True, ("svc",), True, ("spec.clusterIP", "spec.type"), ("all",), generation=False),
    Resource("", "Event", "events", ("v1",), True, ("ev",), False, EVENT_FIELDS + ("reason", "reportingComponent", "source", "type"),
             generation=False),
    Resource("discovery.k8s.io", "EndpointSlice", "endpointslices", ("v1",), True),
    Resource(CRD_GROUP, "CustomResourceDefinition", "customresourcedefinitions", ("v1",), False, ("crd", "crds"), True,
             categories=("api-extensions",)),
)

_VERSION = re.compile(r"v(\d+)(?:(alpha|beta)(\d+))?")


def version_priority(version: str) -> tuple[int, int, int, str]:
    """Sort key for Kubernetes-aware version order: GA before beta before alpha, higher
    numbers first, anything else last alphabetically (sorted() ascending = preferred first)."""
    match = _VERSION.fullmatch(version)
    if not match:
        return (3, 0, 0, version)
    major, stage, minor = int(match.group(1)), match.group(2), int(match.group(3) or 0)
    return ({None: 0, "beta": 1, "alpha": 2}[stage], -major, -minor, "")


class Registry:
    """Resources by (group, plural), built-ins first; custom ones come and go with their CRDs."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_key: dict[tuple[str, str], Resource] = {(r.group, r.plural): r for r in BUILTINS}
        self.generation = 0  # bumped on every change: discovery and OpenAPI documents are cached per generation

    def all(self) -> list[Resource]:
        return list(self._by_key.values())

    def install(self, res: Resource) -> None:
        with self._lock:
            self._by_key[(res.group, res.plural)] = res
            self.generation += 1

    def remove(self, group: str, plural: str) -> None:
        with self._lock:
            if self._by_key.pop((group, plural), None) is not None:
                self.generation += 1

    def lookup(self, group: str, version: str, plural: str) -> Resource | None:
        res = self._by_key.get((group, plural))
        return res if res is not None and version in res.versions else None

    def by_qualified(self, qualified: str) -> Resource | None:
        plural, _, group = qualified.partition(".")
        return self._by_key.get((group, plural))

    def for_kind(self, kind: str, api_version: str | None = None) -> Resource:
        """The resource for a kind, plural or short name (or `plural.group`), as kubectl accepts
        them; with an apiVersion, the one of that group (its version must be served)."""
        wanted = kind.lower()
        group = api_version.rpartition("/")[0] if api_version else None
        for res in self._by_key.values():
            if group is not None and res.group != group:
                continue
            if wanted in res.names() or wanted == res.qualified:
                if api_version and api_version.rpartition("/")[2] not in res.versions:
                    break
                return res
        raise KeyError(f"unknown kind {kind!r}{f' in {api_version}' if api_version else ''}; "
                       f"known: {', '.join(sorted(r.kind for r in self._by_key.values()))}")

    def groups(self) -> list[tuple[str, list[str]]]:
        """(group, versions preferred first) for every group, core ("") first, as discovery lists them."""
        versions: dict[str, set[str]] = {}
        for res in self._by_key.values():
            versions.setdefault(res.group, set()).update(res.versions)
        order = sorted(versions, key=lambda g: (g != "", g not in {r.group for r in BUILTINS}, g))
        return [(g, sorted(versions[g], key=version_priority)) for g in order]

    def in_group_version(self, group: str, version: str) -> list[Resource]:
        return sorted((r for r in self._by_key.values() if r.group == group and version in r.versions), key=lambda r: r.plural)
