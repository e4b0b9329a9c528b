"""PATCH bodies: JSON merge patch (RFC 7386), JSON patch (RFC 6902) and the strategic merge
patch of built-in types. Server-side apply lives in fieldmanager."""

from __future__ import annotations

import copy
import json
from typing import Any

from .errors import ApiError, bad_request, unsupported_media

Obj = dict[str, Any]
JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
APPLY_PATCH_CBOR = "application/apply-patch+cbor"


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: objects merge recursively, null deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.copy(target) if isinstance(target, dict) else {}
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
    result = copy.copy(target) if isinstance(target, dict) else {}
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
    result = json.loads(json.dumps(doc))
    for op in ops:
        try:
            _json_patch_op(result, op)
        except (KeyError, IndexError, ValueError, TypeError) as err:
            raise ApiError(422, "Invalid", f"the server rejected our request: json patch {op.get('op')} "
                                           f"operation does not apply: {op.get('path')}: {err!r}") from None
    return result


def patch_media(content_type: str, strategic: bool) -> str:
    """The patch type of a request; custom resources have no strategic merge patch (415 there,
    as on the real server)."""
    media = content_type.split(";")[0].strip().lower()
    accepted = (JSON_PATCH, MERGE_PATCH, *((STRATEGIC_PATCH,) if strategic else ()), APPLY_PATCH)
    if media not in accepted:
        raise unsupported_media(accepted)
    return media


def apply_patch(obj: Obj, patch: Any, media: str) -> Obj:
    """The object after a JSON, merge or strategic merge patch (never server-side apply)."""
    if media == JSON_PATCH:
        if not isinstance(patch, list):
            raise bad_request("json patch must be a list of operations")
        return json_patch(obj, patch)
    if not isinstance(patch, dict):
        raise bad_request("merge patch must be a JSON object")
    return merge_patch(obj, patch) if media == MERGE_PATCH else strategic_merge(obj, patch, (obj["kind"],))
