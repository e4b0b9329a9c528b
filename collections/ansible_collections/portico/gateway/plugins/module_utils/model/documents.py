# -*- coding: utf-8 -*-
# Copyright: Portico developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The controller's large data as JSON documents: one owner of their formats.

Ansible copies, tags and checks every node of a structured variable, fact or module argument:
at thousands of Services that costs minutes (5,000 Services with every node a backend are about
900,000 nodes). A document is one JSON string instead: Ansible passes it as a single value, and
only the code that needs the data decodes it. Three documents cross Ansible:

- ``SERVICES_FORMAT``: the k8s_services inventory plugin's ``portico_k8s_services`` (one entry
  per Kubernetes object Portico serves: a Service, see ``k8s.translate``, or another ``kind``,
  see ``k8s.kinds``), read by ``lb_validate``;
- ``LB_MODEL_FORMAT``: ``lb_validate``'s ``portico_lb_model`` (the valid LB definitions), read by
  the dataplane module, the config checks and the roles' filters;
- ``STATUS_FORMAT``: ``lb_validate``'s ``portico_k8s_status`` (what each object is told), read
  by the status write-back.

Backend sets: most LBs from one cluster send to the same backends (every node, in nodeport mode).
A document lists each distinct backend list once under ``backend_sets`` (id: a digest of its
content, so the same backends get the same id in every run) and an LB's ``backends`` is then
``{"set": <id>}``. ``model.loadbalancer`` parses each set once and LBs share the result.

Standard library only: this file also runs on gateways inside modules.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ansible_collections.portico.gateway.plugins.module_utils.model.problems import Problem

SERVICES_FORMAT = "portico.io/k8s-services/v1"
LB_MODEL_FORMAT = "portico.io/lb-model/v1"
STATUS_FORMAT = "portico.io/k8s-status/v1"
# The list each format carries (a plain list of that is read as a document without backend sets).
ITEMS = {SERVICES_FORMAT: "services", LB_MODEL_FORMAT: "loadbalancers", STATUS_FORMAT: "services"}
SET_KEY = "set"
# The kind of an entry that names none: entries of the services document were all Services before
# other kinds of Kubernetes objects (Portico's LoadBalancer resource) became sources too.
SERVICE_KIND = "Service"


class DocumentError(ValueError):
    """A value that is not the expected document; ``problem`` says which and why."""

    def __init__(self, problem: Problem):
        super().__init__(problem.render())
        self.problem = problem


def encode(format_name: str, items: Sequence[Any], backend_sets: Mapping[str, Any] | None = None) -> str:
    """The document as compact JSON text (keys in a fixed order: the same data, the same text)."""
    document: dict[str, Any] = {"format": format_name}
    if backend_sets:
        document["backend_sets"] = dict(sorted(backend_sets.items()))
    if format_name == LB_MODEL_FORMAT:
        # One LB per line (JSON all the same): the dataplane module finds what changed since its last
        # run by comparing lines, without decoding the thousands that did not (dataplane.records).
        head = json.dumps(document, separators=(",", ":"))[:-1]
        lines = ",\n".join(json.dumps(item, separators=(",", ":")) for item in items)
        return f'{head},"{ITEMS[format_name]}":[\n{lines}\n]}}'
    document[ITEMS[format_name]] = list(items)
    return json.dumps(document, separators=(",", ":"))


def decode(value: Any, format_name: str, subject: str = "") -> dict[str, Any]:
    """A document from its JSON text, a decoded document, a plain list of items or nothing.

    Returns ``{"format", "backend_sets", <items>}`` with every key present. ``subject`` names
    the value in problems (the variable it came from).
    """
    items_key = ITEMS[format_name]
    if value is None or value == "":
        return {"format": format_name, "backend_sets": {}, items_key: []}
    if isinstance(value, (str, bytes)):
        try:
            value = json.loads(value)
        except ValueError as err:
            raise DocumentError(Problem(subject, "", f"is not a JSON document ({err})")) from None
    if isinstance(value, list):
        return {"format": format_name, "backend_sets": {}, items_key: value}
    if not isinstance(value, Mapping):
        raise DocumentError(Problem(subject, "", f"expected a {format_name} document, got {type(value).__name__}"))
    if value.get("format") != format_name:
        raise DocumentError(Problem(subject, "format", f"expected {format_name!r}, got {value.get('format')!r}"))
    items = value.get(items_key)
    sets = value.get("backend_sets") or {}
    if not isinstance(items, list) or not isinstance(sets, Mapping):
        raise DocumentError(Problem(subject, items_key, f"expected a list and backend_sets a mapping, got {type(items).__name__}"))
    return {"format": format_name, "backend_sets": sets, items_key: items}


def object_key(cluster: str, namespace: str, name: str, kind: str = SERVICE_KIND) -> str:
    """The one spelling of a source object's key: its entries, allocations, statuses, LB names and
    the watcher's changed keys all use it. A Service is ``cluster/namespace/name``; another kind is
    ``cluster/namespace/<Kind>/name`` (a kind is capitalised and no namespace or Service name is,
    so no key of one kind can be a key, or a second family's LB name, of another)."""
    if kind == SERVICE_KIND:
        return f"{cluster}/{namespace}/{name}"
    return f"{cluster}/{namespace}/{kind}/{name}"


def entry_key(entry: Mapping[str, Any]) -> str:
    """The key of an entry of the services or status document (``object_key`` of its identity)."""
    return object_key(str(entry.get("cluster", "")), str(entry.get("namespace", "")), str(entry.get("name", "")),
                      str(entry.get("kind") or SERVICE_KIND))


def set_id(raw_backends: Any) -> str | None:
    """The id of a backend set reference (``{"set": id}``), None for anything else."""
    if isinstance(raw_backends, Mapping) and set(raw_backends) == {SET_KEY} and isinstance(raw_backends[SET_KEY], str):
        return raw_backends[SET_KEY]
    return None


def content_id(backends: Any) -> str:
    """The id of a backend list: a digest of its content."""
    text = json.dumps(backends, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


class BackendSetPacker:
    """Collects distinct backend lists and hands out references to them.

    Lists are recognised by content; the same list object (nodeport LBs of one cluster share
    one) is digested only once.
    """

    def __init__(self) -> None:
        self.sets: dict[str, Any] = {}
        self._by_object: dict[int, tuple[Any, str]] = {}

    def ref(self, backends: Any) -> dict[str, str]:
        known = self._by_object.get(id(backends))
        if known is not None and known[0] is backends:
            return {SET_KEY: known[1]}
        plain = [dict(b) if isinstance(b, Mapping) else b for b in backends]
        ident = content_id(plain)
        self.sets.setdefault(ident, plain)
        self._by_object[id(backends)] = (backends, ident)  # holding the object keeps its id unique
        return {SET_KEY: ident}

    def pack_loadbalancers(self, lbs: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """LB dicts with their backend lists replaced by references (other values shared, not copied)."""
        packed = []
        for lb in lbs:
            backends = lb.get("backends")
            if isinstance(backends, (list, tuple)) and backends:
                packed.append({**lb, "backends": self.ref(backends)})
            else:
                packed.append(dict(lb))
        return packed


def resolve_backends(raw_backends: Any, backend_sets: Mapping[str, Any]) -> Any:
    """The backend list a reference points to (anything else as it is; an unknown id as None)."""
    ident = set_id(raw_backends)
    if ident is None:
        return raw_backends
    return backend_sets.get(ident)


def expanded_loadbalancers(value: Any, subject: str = "portico_lb_model") -> list[dict[str, Any]]:
    """Plain LB dicts of an LB model document, every backend list spelled out (for readers that
    walk definitions: filters, reports)."""
    document = decode(value, LB_MODEL_FORMAT, subject)
    sets = document["backend_sets"]
    result = []
    for lb in document["loadbalancers"]:
        if isinstance(lb, Mapping) and set_id(lb.get("backends")) is not None:
            lb = {**lb, "backends": resolve_backends(lb["backends"], sets)}
        result.append(lb)
    return result


def loadbalancer_items(value: Any, subject: str = "portico_lb_model") -> list[Any]:
    """The LB definitions of an LB model document as they are (backend set references kept):
    for readers of names, VIPs and ports only."""
    return decode(value, LB_MODEL_FORMAT, subject)["loadbalancers"]
