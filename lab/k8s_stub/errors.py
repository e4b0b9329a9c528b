"""API failures as the real server renders them: a core/v1 Status, and for validation a 422
whose `details.causes[]` name each field (apimachinery's field.Error, rendered the same way)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

Obj = dict[str, Any]
OMIT = object()  # a field error that shows no value (e.g. "Too many" with an unknown count)

# field.ErrorType -> the words it renders as
ERROR_WORDS = {
    "FieldValueNotFound": "Not found", "FieldValueRequired": "Required value", "FieldValueDuplicate": "Duplicate value",
    "FieldValueInvalid": "Invalid value", "FieldValueNotSupported": "Unsupported value", "FieldValueForbidden": "Forbidden",
    "FieldValueTooLong": "Too long", "FieldValueTooMany": "Too many", "InternalError": "Internal error",
    "FieldValueTypeInvalid": "Invalid value",
}
VALUELESS = ("FieldValueRequired", "FieldValueForbidden", "FieldValueTooLong", "InternalError")


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


def go_value(value: Any) -> str:
    """A bad value as Go's %v/%q/%#v prints it in field errors."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if value is None:
        return "null"
    if isinstance(value, dict):
        inner = ", ".join(f"{json.dumps(k)}:{go_value(v)}" for k, v in sorted(value.items()))
        return f"map[string]interface {{}}{{{inner}}}"
    if isinstance(value, list):
        return "[]interface {}{" + ", ".join(go_value(v) for v in value) + "}"
    return str(value)


@dataclass(frozen=True)
class FieldError:
    """One field.Error: its type (a CauseType such as FieldValueInvalid), the field path
    (`spec.listeners[0].port`), the bad value and a detail."""

    type: str
    field: str
    value: Any = OMIT
    detail: str = ""

    def body(self) -> str:
        words = ERROR_WORDS[self.type]
        text = words if self.type in VALUELESS or self.value is OMIT else f"{words}: {go_value(self.value)}"
        return f"{text}: {self.detail}" if self.detail else text

    def __str__(self) -> str:
        return f"{self.field}: {self.body()}"

    def cause(self) -> Obj:
        return {"reason": self.type, "message": self.body(), "field": self.field}


def required(field: str, detail: str = "") -> FieldError:
    return FieldError("FieldValueRequired", field, "", detail)


def invalid(field: str, value: Any, detail: str) -> FieldError:
    return FieldError("FieldValueInvalid", field, value, detail)


def forbidden(field: str, detail: str) -> FieldError:
    return FieldError("FieldValueForbidden", field, "", detail)


def duplicate(field: str, value: Any) -> FieldError:
    return FieldError("FieldValueDuplicate", field, value)


def not_supported(field: str, value: Any, supported: list[Any]) -> FieldError:
    names = [v if isinstance(v, str) else json.dumps(v) for v in supported]
    return FieldError("FieldValueNotSupported", field, value, "supported values: " + ", ".join(json.dumps(n) for n in names))


def too_long(field: str, value: Any, limit: int) -> FieldError:
    return FieldError("FieldValueTooLong", field, value, f"may not be more than {limit} bytes")


def too_many(field: str, actual: int, limit: int) -> FieldError:
    return FieldError("FieldValueTooMany", field, actual, f"must have at most {limit} items")


def type_invalid(field: str, value: Any, detail: str) -> FieldError:
    return FieldError("FieldValueTypeInvalid", field, value, detail)


def group_kind(kind: str, group: str) -> str:
    return f"{kind}.{group}" if group else kind


def unprocessable(kind: str, group: str, name: str, errors: list[FieldError]) -> ApiError:
    """422 Invalid, one cause per field error, the message listing them all (deduplicated)."""
    unique = list({str(e): e for e in errors}.values())
    listed = str(unique[0]) if len(unique) == 1 else "[" + ", ".join(str(e) for e in unique) + "]"
    details: Obj = {"name": name, **({"group": group} if group else {}), "kind": kind, "causes": [e.cause() for e in unique]}
    return ApiError(422, "Invalid", f'{group_kind(kind, group)} "{name}" is invalid: {listed}', details)


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def not_found_path() -> ApiError:
    return ApiError(404, "NotFound", "the server could not find the requested resource", {})


def method_not_allowed() -> ApiError:
    return ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource", {})


def unsupported_media(accepted: tuple[str, ...]) -> ApiError:
    return ApiError(415, "UnsupportedMediaType", "the body of the request was in an unknown format - accepted media types include: "
                    + ", ".join(accepted))
