"""Field ownership (`metadata.managedFields`) and server-side apply.

Every write records which manager set which fields: an update (PUT/PATCH/POST) takes the
fields it changed from their previous owners; an apply (`application/apply-patch+yaml`)
co-owns the fields of its configuration, fails with 409 Conflict when another manager owns
one of them with a different value (unless `force=true`, which takes them over), merges its
configuration into the object, and removes the fields it applied before and no longer
applies, unless someone else owns them too. Lists merge as their schema says:
`x-kubernetes-list-type` map (by keys), set, or atomic (replaced whole, the default).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .errors import ApiError

Obj = dict[str, Any]
Path = tuple[str, ...]
# ("atomic" | "set" | "map", map keys, defaults of key fields: an item without one is keyed by it)
ListKind = tuple[str, tuple[str, ...], tuple[tuple[str, Any], ...]]
ListTypes = Callable[[tuple[str, ...]], ListKind]  # by field names from the root, "[]" for list items
ITEM = "<item>"  # the value of a keyed list item's own path
TRACKED_META = ("labels", "annotations", "finalizers", "ownerReferences")
ATOMIC: ListKind = ("atomic", (), ())

# Lists of built-in kinds that are not atomic (listType/listMapKeys in the Go types).
BUILTIN_LISTS: dict[tuple[str, ...], ListKind] = {
    ("metadata", "finalizers"): ("set", (), ()), ("metadata", "ownerReferences"): ("map", ("uid",), ()),
    ("spec", "ports"): ("map", ("port", "protocol"), (("protocol", "TCP"),)), ("status", "conditions"): ("map", ("type",), ()),
}


def builtin_lists(names: tuple[str, ...]) -> ListKind:
    return BUILTIN_LISTS.get(names, ATOMIC)


def schema_lists(schema: Obj) -> ListTypes:
    """List kinds from a structural schema (metadata lists as for every object)."""
    cache: dict[tuple[str, ...], ListKind] = {}

    def lookup(names: tuple[str, ...]) -> ListKind:
        if names[:1] == ("metadata",):
            return builtin_lists(names)
        if names not in cache:
            node: Any = schema
            for name in names:
                if not isinstance(node, dict):
                    break
                if name == "[]":
                    node = node.get("items")
                else:
                    props = node.get("properties") or {}
                    node = props.get(name) if name in props else node.get("additionalProperties")
            kind = node.get("x-kubernetes-list-type", "atomic") if isinstance(node, dict) else "atomic"
            if kind != "map":
                cache[names] = (kind, (), ())
            else:
                keys = tuple(node.get("x-kubernetes-list-map-keys") or ())
                props = (node.get("items") or {}).get("properties") or {}
                cache[names] = (kind, keys, tuple((k, props[k]["default"]) for k in keys if "default" in props.get(k, {})))
        return cache[names]
    return lookup


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def _item_key(item: Obj, keys: tuple[str, ...], defaults: tuple[tuple[str, Any], ...] = ()) -> str:
    return "k:" + _compact({**dict(defaults), **{k: item[k] for k in keys if k in item}})


def flatten(obj: Obj, lists: ListTypes) -> dict[Path, Any]:
    """The owned-field paths of an object and their values (leaves, set values, map items)."""
    out: dict[Path, Any] = {}
    for key, value in obj.items():
        if key in ("apiVersion", "kind"):
            continue
        if key == "metadata":
            for meta_key in TRACKED_META:
                if isinstance(value, dict) and value.get(meta_key) is not None:
                    _walk(value[meta_key], ("f:metadata", f"f:{meta_key}"), ("metadata", meta_key), lists, out)
        elif value is not None:
            _walk(value, (f"f:{key}",), (key,), lists, out)
    return out


def _walk(value: Any, path: Path, names: tuple[str, ...], lists: ListTypes, out: dict[Path, Any]) -> None:
    if isinstance(value, dict) and value:
        for key, child in value.items():
            _walk(child, (*path, f"f:{key}"), (*names, key), lists, out)
        return
    if isinstance(value, list) and value:
        kind, keys, defaults = lists(names)
        if kind == "map" and all(isinstance(item, dict) for item in value):
            for item in value:
                ident = _item_key(item, keys, defaults)
                out[(*path, ident)] = ITEM
                for key, child in item.items():
                    _walk(child, (*path, ident, f"f:{key}"), (*names, "[]", key), lists, out)
            return
        if kind == "set":
            for item in value:
                out[(*path, "v:" + _compact(item))] = item
            return
    out[path] = value


# --- managedFields <-> sets of paths -------------------------------------------------------

@dataclass
class Entry:
    manager: str
    operation: str  # Apply | Update
    subresource: str
    api_version: str
    time: str
    paths: set[Path] = field(default_factory=set)

    def same(self, manager: str, operation: str, subresource: str) -> bool:
        return (self.manager, self.operation, self.subresource) == (manager, operation, subresource)

    def render(self) -> Obj:
        out: Obj = {"manager": self.manager, "operation": self.operation, "apiVersion": self.api_version, "time": self.time,
                    "fieldsType": "FieldsV1", "fieldsV1": to_fields_v1(self.paths)}
        if self.subresource:
            out["subresource"] = self.subresource
        return out


def to_fields_v1(paths: Iterable[Path]) -> Obj:
    root: Obj = {}
    members = set(paths)
    for path in sorted(members):
        node = root
        for element in path:
            node = node.setdefault(element, {})
    for path in members:
        node = root
        for element in path:
            node = node[element]
        if node:
            node["."] = {}
    return root


def from_fields_v1(tree: Obj, prefix: Path = ()) -> set[Path]:
    out: set[Path] = set()
    for key, child in tree.items():
        if key == ".":
            out.add(prefix)
        elif isinstance(child, dict) and child:
            out |= from_fields_v1(child, (*prefix, key))
        else:
            out.add((*prefix, key))
    return out


def entries_of(obj: Obj | None) -> list[Entry]:
    found = []
    for raw in ((obj or {}).get("metadata") or {}).get("managedFields") or []:
        if isinstance(raw, dict) and raw.get("manager") is not None:
            found.append(Entry(raw["manager"], raw.get("operation", "Update"), raw.get("subresource", ""),
                               raw.get("apiVersion", ""), raw.get("time", ""), from_fields_v1(raw.get("fieldsV1") or {})))
    return found


def render_entries(entries: list[Entry]) -> list[Obj]:
    return [e.render() for e in entries if e.paths]


# --- updates -------------------------------------------------------------------------------

def record_update(old: Obj | None, new: Obj, manager: str, subresource: str, api_version: str, now: str,
                  lists: ListTypes) -> list[Obj]:
    """managedFields after an update by `manager`: it owns what it changed, nobody owns what
    it removed."""
    entries = entries_of(old)
    before, after = flatten(old, lists) if old else {}, flatten(new, lists)
    changed = {p for p, v in after.items() if before.get(p, _Missing) != v}
    removed = set(before) - set(after)
    if not changed and not removed:
        return render_entries(entries)
    for entry in entries:
        if not entry.same(manager, "Update", subresource):
            entry.paths -= changed | removed
    mine = _entry(entries, manager, "Update", subresource, api_version, now)
    mine.paths = (mine.paths | changed) - removed
    mine.time, mine.api_version = now, api_version
    return render_entries(entries)


class _Missing:
    pass


def _entry(entries: list[Entry], manager: str, operation: str, subresource: str, api_version: str, now: str) -> Entry:
    for entry in entries:
        if entry.same(manager, operation, subresource):
            return entry
    entries.append(Entry(manager, operation, subresource, api_version, now))
    return entries[-1]


# --- server-side apply ---------------------------------------------------------------------

def show_path(path: Path) -> str:
    text = ""
    for element in path:
        kind, _, rest = element.partition(":")
        if kind == "f":
            text += f".{rest}"
        elif kind == "k":
            text += "[" + ",".join(f"{k}={json.dumps(v)}" for k, v in json.loads(rest).items()) + "]"
        else:
            text += f"[={rest}]"
    return text


def conflict_error(conflicts: list[tuple[Entry, Path]]) -> ApiError:
    causes = [{"reason": "FieldManagerConflict", "message": f'conflict with "{e.manager}" using {e.api_version}', "field": show_path(p)}
              for e, p in conflicts]
    if len(conflicts) == 1:
        message = f"Apply failed with 1 conflict: {causes[0]['message']}: {causes[0]['field']}"
    else:
        message = f"Apply failed with {len(conflicts)} conflicts: " + "\n".join(f"{c['message']}: {c['field']}" for c in causes)
    return ApiError(409, "Conflict", message, {"causes": causes})


def server_side_apply(current: Obj | None, applied: Obj, manager: str, subresource: str, force: bool, api_version: str,
                      now: str, lists: ListTypes) -> tuple[Obj, list[Obj]]:
    """(the object after applying `applied` as `manager`, its managedFields)."""
    entries = entries_of(current)
    now_flat, wanted = flatten(current, lists) if current else {}, flatten(applied, lists)
    if current and not entries and now_flat:  # objects nobody managed yet get one owner for what they hold
        entries.append(Entry("before-first-apply", "Update", "", api_version, now, set(now_flat)))
    conflicts = [(entry, path) for entry in entries if not entry.same(manager, "Apply", subresource)
                 for path in sorted(entry.paths & set(wanted))
                 if wanted[path] is not ITEM and now_flat.get(path, _Missing) != wanted[path]]
    if conflicts and not force:
        raise conflict_error(conflicts)
    for entry, path in conflicts:
        entry.paths.discard(path)
    merged = merge(current or {}, applied, (), lists)
    mine = _entry(entries, manager, "Apply", subresource, api_version, now)
    others = set().union(*(e.paths for e in entries if e is not mine))
    remove_paths(merged, mine.paths - set(wanted) - others)
    mine.paths, mine.time, mine.api_version = set(wanted), now, api_version
    return merged, render_entries(entries)


def merge(current: Any, applied: Any, names: tuple[str, ...], lists: ListTypes) -> Any:
    """An applied configuration merged into the current value."""
    if isinstance(applied, dict) and isinstance(current, dict):
        out = dict(current)
        for key, value in applied.items():
            if value is None:
                out.pop(key, None)
            else:
                out[key] = merge(current.get(key), value, (*names, key), lists)
        return out
    if isinstance(applied, list) and isinstance(current, list):
        kind, keys, defaults = lists(names)
        if kind == "map":
            out_list = list(current)
            index = {_item_key(item, keys, defaults): i for i, item in enumerate(out_list) if isinstance(item, dict)}
            for item in applied:
                at = index.get(_item_key(item, keys, defaults)) if isinstance(item, dict) else None
                if at is None:
                    out_list.append(copy.deepcopy(item))
                else:
                    out_list[at] = merge(out_list[at], item, (*names, "[]"), lists)
            return out_list
        if kind == "set":
            return list(current) + [copy.deepcopy(v) for v in applied if v not in current]
    return copy.deepcopy(applied)


def remove_paths(obj: Obj, paths: set[Path]) -> None:
    """Remove fields, set values and list items; maps and lists they leave empty go too."""
    for path in sorted(paths, key=len):  # a list item before its fields: its key fields find it
        trail: list[tuple[Any, Any]] = []
        node: Any = obj
        for element in path:
            key = _locate(node, element)
            if key is None:
                break
            trail.append((node, key))
            node = node[key]
        else:
            parent, key = trail.pop()
            del parent[key]
            while trail and trail[-1][0] is not obj and parent in ({}, []):  # parent emptied by the removal
                parent, key = trail.pop()
                del parent[key]


def _locate(node: Any, element: str) -> Any:
    kind, _, rest = element.partition(":")
    if kind == "f" and isinstance(node, dict) and rest in node:
        return rest
    if isinstance(node, list):
        wanted = json.loads(rest)
        for index, item in enumerate(node):
            if (kind == "k" and isinstance(item, dict) and all(item.get(k) == v for k, v in wanted.items())) or \
                    (kind == "v" and item == wanted):
                return index
    return None
