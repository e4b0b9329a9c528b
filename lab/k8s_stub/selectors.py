"""Label and field selectors, with the real API's syntax and its refusals."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from .errors import bad_request

Obj = dict[str, Any]
LabelTest = Callable[[dict[str, str]], bool]
SET_TERM = re.compile(r"\s*([\w./-]+)\s+(in|notin)\s+\(([^)]*)\)\s*")
ALWAYS: Callable[[Any], bool] = lambda _: True  # noqa: E731


def _label_term(term: str) -> LabelTest:
    if match := SET_TERM.fullmatch(term):
        key, op, values = match.group(1), match.group(2), {v.strip() for v in match.group(3).split(",")}
        return (lambda lb: lb.get(key) in values) if op == "in" else (lambda lb: lb.get(key) not in values)
    for op in ("!=", "==", "="):
        if op in term:
            key, value = (part.strip() for part in term.split(op, 1))
            if op == "!=":
                return lambda lb, k=key, v=value: lb.get(k) != v
            return lambda lb, k=key, v=value: lb.get(k) == v
    key = term.strip()
    if not re.fullmatch(r"!?[\w./-]+", key):
        raise bad_request(f"unable to parse requirement: invalid label key {key!r}")
    return (lambda lb: key[1:] not in lb) if key.startswith("!") else (lambda lb: key in lb)


def label_selector(text: str | None) -> LabelTest:
    """Equality (=, ==, !=), existence (k, !k) and set (in, notin) terms, ANDed by commas."""
    terms = [_label_term(t) for t in re.split(r",(?![^(]*\))", text or "") if t.strip()]
    if not terms:
        return ALWAYS
    return lambda labels: all(test(labels) for test in terms)


def field_value(obj: Obj, path: str) -> str:
    value: Any = obj
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def field_selector(supported: tuple[str, ...], text: str | None) -> Callable[[Obj], bool]:
    """Like the real API: only metadata.name/namespace and the resource's own field labels,
    with =, == and !=."""
    tests: list[Callable[[Obj], bool]] = []
    for term in filter(None, (t.strip() for t in (text or "").split(","))):
        match = re.fullmatch(r"([\w.]+)\s*(!=|==|=)\s*(.*)", term)
        if not match:
            raise bad_request(f"invalid selector: '{text}'; can't understand '{term}'")
        label, op, value = match.groups()
        if label not in ("metadata.name", "metadata.namespace", *supported):
            raise bad_request(f'field label not supported: {label}')
        path = "source.component" if label == "source" else label
        tests.append(lambda o, p=path, v=value, neg=op == "!=": (field_value(o, p) == v) != neg)
    if not tests:
        return ALWAYS
    return lambda obj: all(test(obj) for test in tests)


def matcher(supported: tuple[str, ...], labels: str | None, fields: str | None) -> Callable[[Obj], bool] | None:
    """One predicate for both selectors; None when neither selects anything (all match)."""
    by_label, by_field = label_selector(labels), field_selector(supported, fields)
    if by_label is ALWAYS and by_field is ALWAYS:
        return None
    return lambda obj: by_label(obj["metadata"].get("labels") or {}) and by_field(obj)
