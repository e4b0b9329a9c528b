"""CustomResourceDefinitions: the checks and defaults the API server applies to them, the
status its controllers set (NamesAccepted, Established, acceptedNames, storedVersions), and
the served resource a CRD turns into (versions, schemas, subresources, printer columns).

Conversion between served versions is the `None` strategy: the same object with another
apiVersion (and that version's defaults). Conversion webhooks are refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from . import errors
from .errors import FieldError
from .resources import CRD_GROUP, Resource, version_priority
from .schema import StructuralSchema, structural_errors
from .tables import json_path

Obj = dict[str, Any]
CLEANUP_FINALIZER = "customresourcecleanup.apiextensions.k8s.io"
NO_NAMES = {"plural": "", "kind": ""}  # acceptedNames before any are accepted (required fields, served empty)
DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
KIND = re.compile(r"[A-Za-z][A-Za-z0-9]*")
VERSION_NAME = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
COLUMN_TYPES = ("integer", "number", "string", "boolean", "date")
AGE_COLUMN = {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp",
              "description": "CreationTimestamp is a timestamp representing the server time when this object was created."}


@dataclass(frozen=True)
class PrinterColumn:
    name: str
    type: str
    format: str
    description: str
    priority: int
    json_path: str


@dataclass(frozen=True)
class CustomVersion:
    name: str
    schema: StructuralSchema
    status: bool
    columns: tuple[PrinterColumn, ...]
    deprecation: str | None  # the warning sent with every request to a deprecated version


@dataclass(frozen=True)
class CustomResource:
    crd_name: str
    singular: str
    list_kind: str
    storage: str
    versions: dict[str, CustomVersion]

    def status_enabled(self, version: str) -> bool:
        return version in self.versions and self.versions[version].status


def default_crd(crd: Obj) -> None:
    """The API server's defaults for a CustomResourceDefinition."""
    spec = crd.setdefault("spec", {})
    names = spec.setdefault("names", {})
    if isinstance(names.get("kind"), str):
        names.setdefault("singular", names["kind"].lower())
        names.setdefault("listKind", f"{names['kind']}List")
    spec.setdefault("conversion", {"strategy": "None"})
    status = crd.setdefault("status", {})
    storage = [v["name"] for v in spec.get("versions") or [] if isinstance(v, dict) and v.get("storage") and v.get("name")]
    if storage and "storedVersions" not in status:
        status["storedVersions"] = storage[:1]


def validate_crd(crd: Obj, old: Obj | None) -> list[FieldError]:
    """The main checks of the API server's CRD validation (names, scope, versions, schemas,
    printer columns, conversion)."""
    spec, name = crd.get("spec") or {}, crd["metadata"].get("name", "")
    names, group = spec.get("names") or {}, spec.get("group") or ""
    found: list[FieldError] = []
    if not group:
        found.append(errors.required("spec.group"))
    elif "." not in group or not DNS_SUBDOMAIN.fullmatch(group):
        found.append(errors.invalid("spec.group", group, "should be a domain with at least one dot"))
    plural = names.get("plural") or ""
    if name != f"{plural}.{group}":
        found.append(errors.invalid("metadata.name", name, 'must be spec.names.plural+"."+spec.group'))
    for key in ("plural", "singular"):
        if not names.get(key):
            found.append(errors.required(f"spec.names.{key}"))
        elif not DNS_LABEL.fullmatch(names[key]):
            found.append(errors.invalid(f"spec.names.{key}", names[key], "a lowercase RFC 1123 label must consist of lower case "
                                        "alphanumeric characters or '-', and must start and end with an alphanumeric character"))
    for key in ("kind", "listKind"):
        if not names.get(key):
            found.append(errors.required(f"spec.names.{key}"))
        elif not KIND.fullmatch(names[key]):
            found.append(errors.invalid(f"spec.names.{key}", names[key], "may have mixed case, but should otherwise match: ^[a-z][-a-z0-9]*$"))
    for index, short in enumerate(names.get("shortNames") or []):
        if not isinstance(short, str) or not DNS_LABEL.fullmatch(short):
            found.append(errors.invalid(f"spec.names.shortNames[{index}]", short, "must be a lowercase RFC 1123 label"))
    if spec.get("scope") not in ("Namespaced", "Cluster"):
        found.append(errors.not_supported("spec.scope", spec.get("scope", ""), ["Cluster", "Namespaced"]))
    found.extend(_validate_versions(spec.get("versions")))
    strategy = (spec.get("conversion") or {}).get("strategy")
    if strategy != "None":
        found.append(errors.not_supported("spec.conversion.strategy", strategy, ["None"])
                     if strategy != "Webhook" else errors.forbidden("spec.conversion.strategy",
                                                                    "conversion webhooks are not served by this stand-in"))
    if old is not None:
        if spec.get("scope") != (old.get("spec") or {}).get("scope"):
            found.append(errors.invalid("spec.scope", spec.get("scope"), "field is immutable"))
        stored = (old.get("status") or {}).get("storedVersions") or []
        served = {v.get("name") for v in spec.get("versions") or [] if isinstance(v, dict)}
        for version in stored:
            if version not in served:
                found.append(errors.invalid("status.storedVersions", stored, f"must appear in spec.versions: {version}"))
    return found


def _validate_versions(versions: Any) -> list[FieldError]:
    if not isinstance(versions, list) or not versions:
        return [errors.invalid("spec.versions", versions or [], "must have exactly one version marked as storage version")]
    found: list[FieldError] = []
    if sum(1 for v in versions if isinstance(v, dict) and v.get("storage")) != 1:
        found.append(errors.invalid("spec.versions", [v.get("name") for v in versions if isinstance(v, dict)],
                                    "must have exactly one version marked as storage version"))
    seen: set[str] = set()
    for index, version in enumerate(versions):
        at = f"spec.versions[{index}]"
        if not isinstance(version, dict):
            found.append(errors.invalid(at, version, "must be an object"))
            continue
        vname = version.get("name") or ""
        if not VERSION_NAME.fullmatch(vname):
            found.append(errors.invalid(f"{at}.name", vname, "must be a DNS-1035 label"))
        if vname in seen:
            found.append(errors.duplicate(f"{at}.name", vname))
        seen.add(vname)
        for key in ("served", "storage"):
            if not isinstance(version.get(key), bool):
                found.append(errors.required(f"{at}.{key}"))
        schema = (version.get("schema") or {}).get("openAPIV3Schema")
        if not isinstance(schema, dict):
            found.append(errors.required(f"{at}.schema.openAPIV3Schema", "schemas are required"))
        else:
            found.extend(structural_errors(schema, f"{at}.schema.openAPIV3Schema"))
        for cindex, column in enumerate(version.get("additionalPrinterColumns") or []):
            found.extend(_validate_column(column, f"{at}.additionalPrinterColumns[{cindex}]"))
    if not any(isinstance(v, dict) and v.get("served") for v in versions):
        found.append(errors.invalid("spec.versions", [v.get("name") for v in versions if isinstance(v, dict)],
                                    "must have at least one version served"))
    return found


def _validate_column(column: Any, at: str) -> list[FieldError]:
    if not isinstance(column, dict):
        return [errors.invalid(at, column, "must be an object")]
    found: list[FieldError] = []
    for key in ("name", "jsonPath"):
        if not column.get(key):
            found.append(errors.required(f"{at}.{key}"))
    if column.get("type") not in COLUMN_TYPES:
        found.append(errors.not_supported(f"{at}.type", column.get("type", ""), list(COLUMN_TYPES)))
    path = str(column.get("jsonPath") or "")
    try:
        json_path(path)
        simple = path.startswith(".")
    except ValueError:
        simple = False
    if path and not simple:
        found.append(errors.invalid(f"{at}.jsonPath", path, "must be a simple json path starting with a dot"))
    return found


def accepted_status(crd: Obj, taken: dict[str, str], now: str) -> Obj:
    """The status the CRD controllers give a CRD: names accepted unless another CRD of the group
    holds them (`taken`: name -> CRD), then established; stored versions accumulate."""
    spec, status = crd["spec"], dict(crd.get("status") or {})
    names = spec["names"]
    clash = [n for n in (names["plural"], names["singular"], *names.get("shortNames", []), names["kind"], names["listKind"])
             if taken.get(n.lower(), crd["metadata"]["name"]) != crd["metadata"]["name"]]
    old_conditions = {c.get("type"): c for c in status.get("conditions") or []}

    def condition(kind: str, ok: bool, reason: str, message: str) -> Obj:
        previous = old_conditions.get(kind) or {}
        value = "True" if ok else "False"
        since = previous.get("lastTransitionTime") if previous.get("status") == value else now
        return {"type": kind, "status": value, "lastTransitionTime": since or now, "reason": reason, "message": message}

    conditions = [condition("NamesAccepted", not clash, "NoConflicts" if not clash else "AlreadyInUse",
                            "no conflicts found" if not clash else f'"{clash[0]}" is already in use'),
                  condition("Established", not clash, "InitialNamesAccepted" if not clash else "NotAccepted",
                            "the initial names have been accepted" if not clash else "not all names are accepted")]
    if crd["metadata"].get("deletionTimestamp"):
        conditions.append(condition("Terminating", True, "InstanceDeletionInProgress", "CustomResource deletion is in progress"))
    accepted = {k: names[k] for k in ("plural", "singular", "shortNames", "kind", "listKind", "categories") if names.get(k)}
    storage = next(v["name"] for v in spec["versions"] if v.get("storage"))
    stored = list(status.get("storedVersions") or [])
    return {**status, "conditions": conditions, "acceptedNames": accepted if not clash else status.get("acceptedNames") or dict(NO_NAMES),
            "storedVersions": stored if storage in stored else [*stored, storage]}


def established(crd: Obj) -> bool:
    return any(c.get("type") == "Established" and c.get("status") == "True" for c in (crd.get("status") or {}).get("conditions") or [])


def served_resource(crd: Obj) -> Resource:
    """What an established CRD serves."""
    spec = crd["spec"]
    names = spec["names"]
    versions: dict[str, CustomVersion] = {}
    for version in spec["versions"]:
        if not version.get("served"):
            continue
        columns = tuple(PrinterColumn(c["name"], c["type"], c.get("format", ""), c.get("description", ""), int(c.get("priority", 0)),
                                      c["jsonPath"]) for c in version.get("additionalPrinterColumns") or [AGE_COLUMN])
        deprecation = None
        if version.get("deprecated"):
            deprecation = version.get("deprecationWarning") or f"{spec['group']}/{version['name']} {names['kind']} is deprecated"
        versions[version["name"]] = CustomVersion(version["name"], StructuralSchema(version["schema"]["openAPIV3Schema"]),
                                                  "status" in (version.get("subresources") or {}), columns, deprecation)
    storage = next(v["name"] for v in spec["versions"] if v.get("storage"))
    custom = CustomResource(crd["metadata"]["name"], names["singular"], names["listKind"], storage, versions)
    return Resource(spec["group"], names["kind"], names["plural"], tuple(sorted(versions, key=version_priority)),
                    spec["scope"] == "Namespaced", tuple(names.get("shortNames") or ()), False, (),
                    tuple(names.get("categories") or ()), True, custom)


def is_crd(res: Resource) -> bool:
    return res.group == CRD_GROUP and res.plural == "customresourcedefinitions"
