"""CEL validation rules of custom resource schemas (`x-kubernetes-validations`), evaluated with
cel-python the way the API server evaluates them with cel-go: `self` is the value at the
rule's node, `oldSelf` the correlated old value on updates (transition rules only run then),
object properties are reached by their escaped names (`self.__namespace__`), integers are
int and numbers double.

A rule cel-python cannot parse (optional syntax `.?field`) or that calls a Kubernetes library
function not provided below (quantity, url, ip/cidr objects, ...) is not enforced; the
stand-in says so once on stderr instead of refusing objects the real server would accept.
"""

from __future__ import annotations

import functools
import ipaddress
import sys
from collections.abc import Callable
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import celpy
from celpy import celtypes

from . import errors
from .errors import FieldError

Obj = dict[str, Any]
CEL_KEYWORDS = {"true", "false", "null", "in", "as", "break", "const", "continue", "else", "for", "function", "if",
                "import", "let", "loop", "package", "namespace", "return", "var", "void", "while"}
_WARNED: set[str] = set()


@functools.cache
def _environment() -> celpy.Environment:
    """Built on first use: building CEL's parser costs a third of a second."""
    return celpy.Environment()


def _program(text: str) -> Any:
    env = _environment()
    return env.program(env.compile(text), functions=FUNCTIONS)


def escape(name: str) -> str:
    """A property name as CEL expressions write it (the API server's escaping rules)."""
    if name in CEL_KEYWORDS:
        return f"__{name}__"
    return name.replace("__", "__underscores__").replace(".", "__dot__").replace("-", "__dash__").replace("/", "__slash__")


def to_cel(value: Any, schema: Obj) -> Any:
    """A JSON value as a CEL value, typed by its schema node."""
    if isinstance(value, dict):
        props, extra = schema.get("properties"), schema.get("additionalProperties")
        if props:
            return celtypes.MapType({celtypes.StringType(escape(k)): to_cel(v, props.get(k) or {}) for k, v in value.items()})
        sub = extra if isinstance(extra, dict) else {}
        return celtypes.MapType({celtypes.StringType(k): to_cel(v, sub) for k, v in value.items()})
    if isinstance(value, list):
        return celtypes.ListType([to_cel(item, schema.get("items") or {}) for item in value])
    if isinstance(value, bool):
        return celtypes.BoolType(value)
    if isinstance(value, int):
        return celtypes.DoubleType(value) if schema.get("type") == "number" else celtypes.IntType(value)
    if isinstance(value, float):
        return celtypes.DoubleType(value)
    if isinstance(value, str):
        return celtypes.StringType(value)
    return value


# A few functions of the Kubernetes CEL libraries (strings, lists, ip/cidr checks).
def _is_sorted(items: celtypes.ListType) -> celtypes.BoolType:
    return celtypes.BoolType(all(a <= b for a, b in pairwise(items)))


def _is_ip(text: celtypes.StringType) -> celtypes.BoolType:
    try:
        ipaddress.ip_address(str(text))
        return celtypes.BoolType("%" not in text)
    except ValueError:
        return celtypes.BoolType(False)


def _is_cidr(text: celtypes.StringType) -> celtypes.BoolType:
    try:
        ipaddress.ip_network(str(text), strict=False)
        return celtypes.BoolType("/" in text)
    except ValueError:
        return celtypes.BoolType(False)


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "lowerAscii": lambda s: celtypes.StringType(str(s).lower()),
    "upperAscii": lambda s: celtypes.StringType(str(s).upper()),
    "trim": lambda s: celtypes.StringType(str(s).strip()),
    "split": lambda s, sep: celtypes.ListType([celtypes.StringType(p) for p in str(s).split(str(sep))]),
    "join": lambda items, sep="": celtypes.StringType(str(sep).join(str(i) for i in items)),
    "indexOf": lambda s, sub: celtypes.IntType(list(s).index(sub) if isinstance(s, list) and sub in s else str(s).find(str(sub))),
    "lastIndexOf": lambda s, sub: celtypes.IntType(str(s).rfind(str(sub))),
    "replace": lambda s, old, new: celtypes.StringType(str(s).replace(str(old), str(new))),
    "substring": lambda s, start, end=None: celtypes.StringType(str(s)[int(start):None if end is None else int(end)]),
    "isSorted": _is_sorted,
    "sum": lambda items: sum(items[1:], items[0]) if items else celtypes.IntType(0),
    "min": min,
    "max": max,
    "isIP": _is_ip,
    "isCIDR": _is_cidr,
}


def _warn_once(rule: str, why: str) -> None:
    if rule not in _WARNED:
        _WARNED.add(rule)
        print(f"k8s-stub: CEL rule not enforced ({why}): {rule}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Rule:
    """One x-kubernetes-validations entry, compiled (program None: not enforced)."""

    rule: str
    message: str
    message_expression: str
    field_path: str
    reason: str
    transition: bool  # refers to oldSelf: runs only on updates with a correlated old value
    program: Any
    message_program: Any

    @classmethod
    def compile(cls, spec: Obj) -> Rule:
        text = str(spec.get("rule", ""))
        program = message_program = None
        try:
            program = _program(text)
        except celpy.CELParseError as err:
            _warn_once(text, f"cel-python cannot parse it: {str(err).splitlines()[0]}")
        if spec.get("messageExpression"):
            try:
                message_program = _program(spec["messageExpression"])
            except celpy.CELParseError:
                message_program = None
        return cls(text, str(spec.get("message") or ""), str(spec.get("messageExpression") or ""),
                   str(spec.get("fieldPath") or ""), str(spec.get("reason") or "FieldValueInvalid"),
                   "oldSelf" in text, program, message_program)

    def check(self, path: str, type_name: str, value: Any, old: Any, has_old: bool) -> FieldError | None:
        """The error this rule reports for a value (None: it holds, or cannot be checked)."""
        if self.program is None or (self.transition and not has_old):
            return None
        activation = {"self": value, **({"oldSelf": old} if has_old else {})}
        try:
            result = self.program.evaluate(activation)
        except celpy.CELEvalError as err:
            if len(err.args) > 1 and err.args[1] is KeyError and "undeclared reference" in str(err.args[0]):
                _warn_once(self.rule, f"function {err.args[2][0] if len(err.args) > 2 and err.args[2] else '?'} not available")
                return None
            return errors.invalid(path, type_name, f"{err.args[0]} evaluating rule: {self.rule}")
        if result is True or (isinstance(result, celtypes.BoolType) and bool(result)):
            return None
        return self._failure(path, type_name, activation)

    def _failure(self, path: str, type_name: str, activation: Obj) -> FieldError:
        message = self.message or f"failed rule: {self.rule}"
        if self.message_program is not None:
            try:
                text = self.message_program.evaluate(activation)
                if isinstance(text, str) and text.strip():
                    message = str(text)
            except celpy.CELEvalError:
                pass
        where = path + self.field_path if path else self.field_path.lstrip(".")
        if self.reason == "FieldValueForbidden":
            return errors.forbidden(where, message)
        if self.reason == "FieldValueRequired":
            return errors.required(where, message)
        if self.reason == "FieldValueDuplicate":
            return FieldError("FieldValueDuplicate", where, type_name, message)
        return errors.invalid(where, type_name, message)
