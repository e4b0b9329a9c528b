"""Structural schemas of custom resources (a CRD version's `openAPIV3Schema`), applied as the
API server applies them: unknown fields pruned, non-nullable nulls dropped, `default:`s set,
then validation (OpenAPI keywords through the `jsonschema` library, the Kubernetes extensions
`x-kubernetes-int-or-string`, `x-kubernetes-list-type`/`list-map-keys`, the common `format`s,
and CEL `x-kubernetes-validations`), with errors named and worded like the API server's.
On updates, errors about values the update did not change are dropped (validation
ratcheting, on by default since 1.30).
"""

from __future__ import annotations

import base64
import binascii
import copy
import datetime
import ipaddress
import json
import re
from collections.abc import Iterator
from typing import Any

import jsonschema
from jsonschema.exceptions import ValidationError

from . import errors
from .cel import Rule, to_cel
from .errors import FieldError

Obj = dict[str, Any]
META_FIELDS = frozenset(("name", "generateName", "namespace", "selfLink", "uid", "resourceVersion", "generation",
                         "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "labels", "annotations",
                         "ownerReferences", "finalizers", "managedFields"))
TYPES = ("object", "array", "string", "integer", "number", "boolean")
_MISSING = object()


# --- formats (the subset of kube-openapi's strfmt registry that matters) ---------------------

FORMATS = jsonschema.FormatChecker(formats=())
DNS_LABEL = re.compile(r"[a-z0-9A-Z]([-a-z0-9A-Z]{0,61}[a-z0-9A-Z])?")
UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
MAC = re.compile(r"([0-9A-Fa-f]{2}[:-]){5}([0-9A-Fa-f]{2})|([0-9A-Fa-f]{2}[:-]){7}([0-9A-Fa-f]{2})|([0-9A-Fa-f]{4}\.){2}[0-9A-Fa-f]{4}")
DATE_TIME = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")
DURATION = re.compile(r"[-+]?((\d+(\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h|d|w))+|0")
EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")


def _format(name: str, *aliases: str) -> Any:
    def register(check: Any) -> Any:
        for each in (name, *aliases):
            FORMATS.checks(each, raises=(ValueError, binascii.Error))(lambda v, c=check: not isinstance(v, str) or c(v))
        return check
    return register


@_format("ipv4")
def _ipv4(value: str) -> bool:
    return bool(ipaddress.IPv4Address(value))


@_format("ipv6")
def _ipv6(value: str) -> bool:
    return bool(ipaddress.IPv6Address(value))


@_format("cidr")
def _cidr(value: str) -> bool:
    return "/" in value and bool(ipaddress.ip_network(value, strict=False))


@_format("hostname")
def _hostname(value: str) -> bool:
    return 0 < len(value) <= 253 and all(DNS_LABEL.fullmatch(label) for label in value.rstrip(".").split("."))


@_format("uuid", "uuid3", "uuid4", "uuid5")
def _uuid(value: str) -> bool:
    return bool(UUID.fullmatch(value))


@_format("mac")
def _mac(value: str) -> bool:
    return bool(MAC.fullmatch(value))


@_format("date")
def _date(value: str) -> bool:
    return bool(re.fullmatch(r"\d{4}-\d{2}-\d{2}", value)) and bool(datetime.date.fromisoformat(value))


@_format("date-time", "datetime")
def _date_time(value: str) -> bool:
    return bool(DATE_TIME.fullmatch(value)) and bool(datetime.datetime.fromisoformat(value.upper().replace("Z", "+00:00")))


@_format("duration")
def _duration(value: str) -> bool:
    return bool(DURATION.fullmatch(value))


@_format("byte")
def _byte(value: str) -> bool:
    return base64.b64decode(value, validate=True) is not None


@_format("email")
def _email(value: str) -> bool:
    return bool(EMAIL.fullmatch(value))


# --- the Kubernetes extensions as jsonschema keywords ---------------------------------------

def _list_type(validator: Any, list_type: str, instance: Any, schema: Obj) -> Iterator[ValidationError]:
    if not isinstance(instance, list) or list_type not in ("set", "map"):
        return
    keys = schema.get("x-kubernetes-list-map-keys") or []
    seen: set[str] = set()
    for index, item in enumerate(instance):
        if list_type == "map" and not isinstance(item, dict):
            continue
        identity = {k: item.get(k) for k in keys} if list_type == "map" else item
        marker = json.dumps(identity, sort_keys=True)
        if marker in seen:
            yield ValidationError("duplicate", path=[index], instance=identity)
        seen.add(marker)


def _int_or_string(validator: Any, enabled: bool, instance: Any, schema: Obj) -> Iterator[ValidationError]:
    fits = isinstance(instance, str) or (isinstance(instance, int) and not isinstance(instance, bool))
    if enabled and not fits and not (instance is None and schema.get("nullable")):
        yield ValidationError("int-or-string")


Validator = jsonschema.validators.extend(jsonschema.Draft4Validator, {
    "x-kubernetes-list-type": _list_type, "x-kubernetes-int-or-string": _int_or_string})

_KEYWORDS = ("format", "enum", "pattern", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minLength",
             "maxLength", "minItems", "maxItems", "minProperties", "maxProperties", "multipleOf", "required",
             "uniqueItems", "x-kubernetes-list-type", "x-kubernetes-list-map-keys", "x-kubernetes-int-or-string")


def to_json_schema(node: Obj) -> Obj:
    """An OpenAPI v3 schema node as a draft-4 JSON schema (nullable as a "null" type)."""
    out: Obj = {k: node[k] for k in _KEYWORDS if k in node}
    if "type" in node:
        out["type"] = [node["type"], "null"] if node.get("nullable") else node["type"]
    if node.get("nullable") and "enum" in node:
        out["enum"] = [*node["enum"], None]
    if node.get("x-kubernetes-int-or-string"):
        out["nullable"] = bool(node.get("nullable"))
    if isinstance(node.get("properties"), dict):
        out["properties"] = {k: to_json_schema(v) for k, v in node["properties"].items()}
    if isinstance(node.get("additionalProperties"), dict):
        out["additionalProperties"] = to_json_schema(node["additionalProperties"])
    if isinstance(node.get("items"), dict):
        out["items"] = to_json_schema(node["items"])
    for key in ("allOf", "anyOf", "oneOf"):
        if isinstance(node.get(key), list):
            out[key] = [to_json_schema(s) for s in node[key]]
    if isinstance(node.get("not"), dict):
        out["not"] = to_json_schema(node["not"])
    return out


# --- paths -----------------------------------------------------------------------------------

def field_path(parts: Any) -> str:
    """`spec.listeners[0].port` from ("spec", "listeners", 0, "port")."""
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _child(path: str, key: Any) -> str:
    return field_path([path, key]) if path else field_path([key])


def value_at(obj: Any, parts: Any) -> Any:
    for part in parts:
        in_dict = isinstance(obj, dict) and isinstance(part, str) and part in obj
        if in_dict or (isinstance(obj, list) and isinstance(part, int) and 0 <= part < len(obj)):
            obj = obj[part]
        else:
            return _MISSING
    return obj


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    return {float: "number", str: "string", dict: "object", list: "array"}.get(type(value), "object")


def _shown(value: Any) -> Any:
    return json_type(value) if isinstance(value, (dict, list)) else value


# --- jsonschema errors as the API server words them -----------------------------------------

def _bound(error: ValidationError, path: str, kind: str) -> FieldError:
    schema = error.schema if isinstance(error.schema, dict) else {}
    exclusive = bool(schema.get(f"exclusive{kind.capitalize()}"))
    relation = ("less than" if kind == "maximum" else "greater than") + ("" if exclusive else " or equal to")
    return errors.invalid(path, error.instance, f"{path} in body should be {relation} {errors.go_value(error.validator_value)}")


def render(error: ValidationError) -> list[FieldError]:
    """One jsonschema error as the API server's field errors."""
    parts, value, keyword = list(error.absolute_path), error.instance, error.validator
    path = field_path(parts)
    body = path or "body"
    if keyword == "required":
        return [errors.required(_child(path, name)) for name in error.validator_value
                if isinstance(value, dict) and name not in value]
    if keyword in ("type", "x-kubernetes-int-or-string"):
        wanted = error.validator_value if keyword == "type" else ["integer", "string"]
        wanted = [t for t in (wanted if isinstance(wanted, list) else [wanted]) if t != "null"]
        return [errors.type_invalid(path, json_type(value), f'{body} in body must be of type {",".join(wanted)}: "{json_type(value)}"')]
    if keyword == "enum":
        return [errors.not_supported(path, _shown(value), [v for v in error.validator_value if v is not None])]
    if keyword in ("maximum", "minimum"):
        return [_bound(error, path, keyword)]
    if keyword == "maxLength":
        return [errors.too_long(path, value, error.validator_value)]
    if keyword in ("maxItems", "maxProperties"):
        return [errors.too_many(path, len(value), error.validator_value)]
    if keyword == "x-kubernetes-list-type":
        return [errors.duplicate(path, value)]
    detail = {
        "minLength": f"should be at least {error.validator_value} chars long",
        "minItems": f"should have at least {error.validator_value} items",
        "minProperties": f"should have at least {error.validator_value} properties",
        "pattern": f"should match '{error.validator_value}'",
        "format": f"must be of type {error.validator_value}: {json.dumps(value)}",
        "multipleOf": f"should be a multiple of {errors.go_value(error.validator_value)}",
        "oneOf": "must validate one and only one schema (oneOf)",
        "anyOf": "must validate at least one schema (anyOf)",
        "not": "must not validate the schema (not)",
        "uniqueItems": "shouldn't contain duplicates",
    }.get(str(keyword))
    shown = len(value) if keyword in ("minItems", "minProperties") else _shown(value)
    return [errors.invalid(path, shown, f"{body} in body {detail}" if detail else error.message)]


def _unchanged(new: Obj, old: Obj, error: ValidationError) -> bool:
    parts = list(error.absolute_path)
    if error.validator == "required":  # ratchets when the missing fields were missing before too
        return all(value_at(new, [*parts, n]) == value_at(old, [*parts, n]) for n in error.validator_value)
    return value_at(new, parts) == value_at(old, parts) is not _MISSING


# --- the schema ------------------------------------------------------------------------------

class StructuralSchema:
    """One CRD version's openAPIV3Schema, compiled once."""

    def __init__(self, schema: Obj) -> None:
        self.raw = schema
        self.validator = Validator(to_json_schema(schema), format_checker=FORMATS)
        self.rules: dict[int, list[Rule]] = {}
        self._compile_rules(schema)

    def _compile_rules(self, node: Obj) -> None:
        if node.get("x-kubernetes-validations"):
            self.rules[id(node)] = [Rule.compile(r) for r in node["x-kubernetes-validations"] if isinstance(r, dict)]
        for sub in _children(node):
            self._compile_rules(sub)

    # pruning and defaulting (in place)

    def prune(self, obj: Obj) -> list[str]:
        """Drop unknown fields (and nulls of non-nullable ones); the unknown fields' paths."""
        unknown: list[str] = []
        _prune(obj, self.raw, "", unknown, embedded=True)
        return unknown

    def default(self, obj: Obj) -> None:
        _default(obj, self.raw)

    # validation

    def validate(self, obj: Obj, old: Obj | None = None) -> list[FieldError]:
        """Field errors of an object; with the old object, only those about what changed."""
        subject, before = _validated_view(obj), _validated_view(old) if old is not None else None
        found: list[FieldError] = []
        for error in self.validator.iter_errors(subject):
            if before is not None and _unchanged(subject, before, error):
                continue
            found.extend(render(error))
        if self.rules:
            self._check_rules(subject, before, before is not None, self.raw, [], found)
        return found

    def _check_rules(self, value: Any, old: Any, has_old: bool, node: Obj, parts: list[Any], found: list[FieldError]) -> None:
        if value is None:
            return
        rules = self.rules.get(id(node))
        if rules and not (has_old and value == old and not any(r.transition for r in rules)):
            path, type_name = field_path(parts), node.get("type", "object")
            cel_value, cel_old = to_cel(value, node), to_cel(old, node) if has_old else None
            for rule in rules:
                if error := rule.check(path, type_name, cel_value, cel_old, has_old and old is not None):
                    found.append(error)
        for key, sub, child, old_child, has_old_child in _correlated(value, old, has_old, node):
            self._check_rules(child, old_child, has_old_child, sub, [*parts, key], found)


def _validated_view(obj: Obj) -> Obj:
    """What the schema sees: metadata only as name and generateName, as on the API server."""
    view = dict(obj)
    meta = obj.get("metadata")
    if isinstance(meta, dict):
        view["metadata"] = {k: meta[k] for k in ("name", "generateName") if k in meta}
    return view


def _children(node: Obj) -> Iterator[Obj]:
    for sub in (node.get("properties") or {}).values():
        if isinstance(sub, dict):
            yield sub
    for key in ("additionalProperties", "items", "not"):
        if isinstance(node.get(key), dict):
            yield node[key]
    for key in ("allOf", "anyOf", "oneOf"):
        yield from (s for s in node.get(key) or [] if isinstance(s, dict))


def _correlated(value: Any, old: Any, has_old: bool, node: Obj) -> Iterator[tuple[Any, Obj, Any, Any, bool]]:
    """(key, schema, value, old value, has old value) for each child of a value; list items
    correlate with old ones only in list-type map lists (by their keys), as on the API server."""
    if isinstance(value, dict):
        props, extra = node.get("properties") or {}, node.get("additionalProperties")
        for key, child in value.items():
            sub = props.get(key) if key in props else extra if isinstance(extra, dict) else None
            if sub is not None:
                in_old = has_old and isinstance(old, dict) and key in old
                yield key, sub, child, old[key] if in_old else None, in_old
    elif isinstance(value, list) and isinstance(node.get("items"), dict):
        keys = node.get("x-kubernetes-list-map-keys") or []
        previous = {}
        if has_old and isinstance(old, list) and node.get("x-kubernetes-list-type") == "map":
            previous = {json.dumps([i.get(k) for k in keys]): i for i in old if isinstance(i, dict)}
        for index, item in enumerate(value):
            marker = json.dumps([item.get(k) for k in keys]) if isinstance(item, dict) else None
            yield index, node["items"], item, previous.get(marker), marker in previous


def _prune(value: Any, node: Obj, path: str, unknown: list[str], embedded: bool = False) -> None:
    if isinstance(value, dict):
        props, extra = node.get("properties") or {}, node.get("additionalProperties")
        keep_unknown = node.get("x-kubernetes-preserve-unknown-fields") or extra is True
        for key in list(value):
            if embedded and key in ("apiVersion", "kind"):
                continue
            if embedded and key == "metadata" and isinstance(value[key], dict):
                _prune_metadata(value[key], _child(path, key), unknown)
                continue
            sub = props.get(key) if key in props else extra if isinstance(extra, dict) else None
            if sub is None:
                if not keep_unknown:
                    del value[key]
                    unknown.append(_child(path, key))
            elif value[key] is None and not sub.get("nullable") and key in props:
                del value[key]
            else:
                _prune(value[key], sub, _child(path, key), unknown, bool(sub.get("x-kubernetes-embedded-resource")))
    elif isinstance(value, list) and isinstance(node.get("items"), dict):
        sub = node["items"]
        for index, item in enumerate(value):
            _prune(item, sub, f"{path}[{index}]", unknown, bool(sub.get("x-kubernetes-embedded-resource")))


def _prune_metadata(meta: Obj, path: str, unknown: list[str]) -> None:
    for key in [k for k in meta if k not in META_FIELDS]:
        del meta[key]
        unknown.append(_child(path, key))


def prune_metadata(obj: Obj) -> list[str]:
    """Unknown metadata fields of any object, dropped (typed decoding does that for built-ins)."""
    unknown: list[str] = []
    if isinstance(obj.get("metadata"), dict):
        _prune_metadata(obj["metadata"], "metadata", unknown)
    return unknown


def _default(value: Any, node: Obj) -> None:
    if isinstance(value, dict):
        props, extra = node.get("properties") or {}, node.get("additionalProperties")
        for key, sub in props.items():
            if key not in value and isinstance(sub, dict) and "default" in sub:
                value[key] = copy.deepcopy(sub["default"])
        for key, child in value.items():
            sub = props.get(key) if key in props else extra if isinstance(extra, dict) else None
            if sub is not None and key != "metadata":
                _default(child, sub)
    elif isinstance(value, list) and isinstance(node.get("items"), dict):
        for item in value:
            _default(item, node["items"])


# --- is a schema structural? (what the API server checks when a CRD is written) -------------

def structural_errors(node: Obj, path: str, root: bool = True) -> list[FieldError]:
    """The main structural-schema rules; the rest of the API server's CRD schema checks are not
    repeated here."""
    found: list[FieldError] = []
    typed = node.get("type")
    special = node.get("x-kubernetes-int-or-string") or node.get("x-kubernetes-preserve-unknown-fields")
    if root and typed != "object":
        found.append(errors.invalid(f"{path}.type", typed or "", 'must be object at the root'))
    if typed is not None and typed not in TYPES:
        found.append(errors.not_supported(f"{path}.type", typed, list(TYPES)))
    if typed is None and not special and (node.get("properties") or node.get("items") or node.get("additionalProperties")):
        found.append(errors.required(f"{path}.type", "must not be empty for specified object fields"))
    if typed == "array" and not isinstance(node.get("items"), dict):
        found.append(errors.required(f"{path}.items", "must be specified"))
    if node.get("properties") and node.get("additionalProperties") not in (None, False):
        found.append(errors.forbidden(f"{path}.additionalProperties", "additionalProperties and properties are mutual exclusive"))
    list_type = node.get("x-kubernetes-list-type")
    if list_type is not None and list_type not in ("atomic", "set", "map"):
        found.append(errors.not_supported(f"{path}.x-kubernetes-list-type", list_type, ["atomic", "set", "map"]))
    if list_type == "map" and not node.get("x-kubernetes-list-map-keys"):
        found.append(errors.required(f"{path}.x-kubernetes-list-map-keys", "must not be empty if x-kubernetes-list-type is map"))
    if "default" in node and not root:
        problems = [str(e) for e in Validator(to_json_schema(node), format_checker=FORMATS).iter_errors(node["default"])]
        if problems:
            found.append(errors.invalid(f"{path}.default", _shown(node["default"]), "; ".join(problems)))
    for key, sub in (node.get("properties") or {}).items():
        if isinstance(sub, dict):
            found.extend(structural_errors(sub, f"{path}.properties[{key}]", False))
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            found.extend(structural_errors(node[key], f"{path}.{key}", False))
    return found
