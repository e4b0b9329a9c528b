"""docs/loadbalancer-resource.md against what it documents: every LoadBalancer example goes
through the CRD's openAPIV3Schema as the API server applies it (the stand-in's structural schema:
pruning, defaults, OpenAPI keywords, CEL rules), the refused examples are refused on exactly the
fields the page says, the field tables name fields that exist (the CRD on one side, the inventory's
LB model on the other), and docs/rbac.yaml grants what the page says. A renamed CRD field, a
typo in the page or a dropped RBAC rule fails here."""

from __future__ import annotations

import copy
import ipaddress
import pathlib
import re
import sys
from dataclasses import dataclass
from typing import Any

import pytest
import yaml

from ansible_collections.portico.gateway.plugins.module_utils.model import loadbalancer as lb_model
from ansible_collections.portico.gateway.plugins.module_utils.model.ipam import parse_pools

REPO = pathlib.Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # for lab.k8s_stub, whatever directory pytest was started from
    sys.path.insert(0, str(REPO))

from lab.k8s_stub.schema import META_FIELDS, StructuralSchema, prune_metadata  # noqa: E402

DOC = REPO / "docs/loadbalancer-resource.md"
CRD = REPO / "crds/portico.io_loadbalancers.yaml"
SAMPLE = REPO / "crds/samples/legacy-app.yaml"
RBAC = REPO / "docs/rbac.yaml"
LAB_GROUP_VARS = REPO / "inventories/lab/group_vars/gateways.yml"
NETRIS_HEADING = "## From Netris Operator's `L4LB`"
INVENTORY_HEADING = "## 5. Compared with the inventory form"
# A fenced block, optionally preceded by the marker of an example the API server must refuse.
BLOCK = re.compile(r"(?:<!-- refused: (?P<refused>[^>]*?) -->\n)?^```(?P<lang>\w*)\n(?P<body>.*?)^```", re.M | re.S)
CODE_SPAN = re.compile(r"`([^`]+)`")
RESOURCE_PATH = re.compile(r"(metadata|spec|status)(\.[A-Za-z]+(\[\])?)+")


@dataclass(frozen=True)
class Example:
    obj: dict[str, Any]
    refused: tuple[str, ...]  # the fields the page says the API server names; empty: accepted
    line: int

    @property
    def label(self) -> str:
        return f"{self.obj['metadata']['name']}@{self.line}"


def _crd() -> dict[str, Any]:
    return yaml.safe_load(CRD.read_text())


def _version(crd: dict[str, Any], name: str) -> dict[str, Any]:
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == name and v["served"]]
    return version


def _openapi_schema() -> dict[str, Any]:
    return _version(_crd(), "v1alpha1")["schema"]["openAPIV3Schema"]


SCHEMA = StructuralSchema(_openapi_schema())


def _text() -> str:
    return DOC.read_text()


def _examples(text: str) -> list[Example]:
    found = []
    for match in BLOCK.finditer(text):
        if match["lang"] != "yaml":
            continue
        for doc in yaml.safe_load_all(match["body"]):
            if isinstance(doc, dict) and doc.get("kind") == "LoadBalancer":
                refused = tuple((match["refused"] or "").split())
                found.append(Example(doc, refused, text.count("\n", 0, match.start("body")) + 1))
    return found


def schema_errors(obj: dict[str, Any]) -> list[str]:
    """What the API server would refuse in a new object, field first: unknown fields (refused
    by kubectl's strict validation) and schema errors after defaulting."""
    group, _, version = str(obj.get("apiVersion", "")).partition("/")
    crd = _crd()
    if group != crd["spec"]["group"] or version not in [v["name"] for v in crd["spec"]["versions"] if v["served"]]:
        return [f"apiVersion: {obj.get('apiVersion')!r} is not served by {crd['metadata']['name']}"]
    subject = copy.deepcopy(obj)
    unknown = prune_metadata(subject) + SCHEMA.prune(subject)
    SCHEMA.default(subject)
    return [f"{path}: unknown field" for path in unknown] + [f"{error.field}: {error.body()}" for error in SCHEMA.validate(subject)]


def _error_fields(errors: list[str]) -> set[str]:
    return {error.split(": ", 1)[0] for error in errors}


def crd_has(path: str, schema: dict[str, Any] | None = None) -> bool:
    """Whether a documented path (``spec.backends[].adminState``) is a field of the CRD's schema."""
    node = schema or _openapi_schema()
    parts = path.split(".")
    if parts[0] == "metadata":
        return len(parts) == 2 and parts[1] in META_FIELDS
    for part in parts:
        name, is_list = part.removesuffix("[]"), part.endswith("[]")
        node = (node.get("properties") or {}).get(name)
        if node is None:
            return False
        if is_list:
            if node.get("type") != "array":
                return False
            node = node["items"]
    return True


MODEL_FIELDS = {
    "": lb_model.LB_FIELDS, "ports[]": lb_model.PORT_FIELDS, "backends[]": lb_model.BACKEND_FIELDS,
    "health_check": lb_model.HEALTH_CHECK_FIELDS,
}


def model_has(path: str) -> bool:
    """Whether a documented path (``health_check.interval_ms``) is a field of the inventory's LB."""
    parent, _, name = path.rpartition(".")
    if parent == "" and path in ("ports[]", "backends[]"):
        return path.removesuffix("[]") in lb_model.LB_FIELDS
    return parent in MODEL_FIELDS and name in MODEL_FIELDS[parent] and (not parent or parent.rstrip("[]") in lb_model.LB_FIELDS)


def _table(text: str, heading: str) -> list[list[str]]:
    """The body rows of the first table after a heading, as cells."""
    section = text.split(heading, 1)[1]
    lines = section.split("\n")
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows


def _spans(cell: str) -> list[str]:
    return CODE_SPAN.findall(cell)


# --- the examples ----------------------------------------------------------------------------

def test_the_page_has_the_examples_it_promises():
    examples = _examples(_text())
    names = {example.obj["metadata"]["name"] for example in examples}
    assert {"legacy-app", "legacy-app-typo", "legacy-app-v2", "legacy-app-pinned", "legacy-app-from-netris"} <= names
    assert any(example.refused for example in examples) and any(not example.refused for example in examples)


@pytest.mark.parametrize("example", [e for e in _examples(_text()) if not e.refused], ids=lambda e: e.label)
def test_an_accepted_example_passes_the_crd_schema(example: Example):
    assert schema_errors(example.obj) == [], f"{DOC.name} line {example.line}"


@pytest.mark.parametrize("example", [e for e in _examples(_text()) if e.refused], ids=lambda e: e.label)
def test_a_refused_example_is_refused_on_the_fields_the_page_names(example: Example):
    errors = schema_errors(example.obj)
    assert _error_fields(errors) == set(example.refused), f"{DOC.name} line {example.line}: {errors}"


def test_the_example_is_the_sample_in_crds():
    (documented,) = [e.obj for e in _examples(_text()) if e.obj["metadata"]["name"] == "legacy-app"]
    assert documented == yaml.safe_load(SAMPLE.read_text())


def test_the_inventory_example_is_a_valid_inventory_lb():
    """The inventory form of the example passes the LB model with the lab's pools."""
    blocks = [yaml.safe_load(m["body"]) for m in BLOCK.finditer(_text()) if m["lang"] == "yaml"]
    (entries,) = [b["portico_loadbalancers"] for b in blocks if isinstance(b, dict) and "portico_loadbalancers" in b]
    pools = parse_pools(yaml.safe_load(LAB_GROUP_VARS.read_text())["portico_pools"])
    for entry in entries:
        lb = lb_model.parse_loadbalancer(entry, pools)
        assert ipaddress.ip_address(str(lb.vip)).version == 4


def test_the_schema_check_finds_drift():
    """The checks above can fail: a renamed field, a bad value and a path that is not in the CRD."""
    sample = yaml.safe_load(SAMPLE.read_text())
    assert schema_errors(sample) == []
    renamed = copy.deepcopy(sample)
    renamed["spec"]["listeners"][0]["targetPort"] = renamed["spec"]["listeners"][0].pop("backendPort")
    assert schema_errors(renamed) == ["spec.listeners[0].targetPort: unknown field"]
    bad = copy.deepcopy(sample)
    bad["spec"]["healthCheck"]["timeoutMs"] = 500  # longer than intervalMs: a CEL rule
    assert _error_fields(schema_errors(bad)) == {"spec.healthCheck.timeoutMs"}
    assert not crd_has("spec.healthCheck.requestPath") and not crd_has("spec.backends.address")
    assert not model_has("health_check.intervalMs") and model_has("health_check.interval_ms")


# --- the field tables ------------------------------------------------------------------------

def test_every_portico_field_in_the_netris_table_is_in_the_crd():
    rows = _table(_text(), NETRIS_HEADING)
    assert len(rows) >= 10
    for netris, portico, _notes in rows:
        paths = [span for span in _spans(portico) if RESOURCE_PATH.fullmatch(span)]
        assert paths, f"Netris {netris}: no Portico field named"
        missing = [path for path in paths if not crd_has(path)]
        assert not missing, f"Netris {netris}: not in {CRD.name}: {missing}"


def test_every_field_in_the_inventory_table_exists_on_its_side():
    rows = _table(_text(), INVENTORY_HEADING)
    assert len(rows) >= 15
    resource_fields, inventory_fields = set(), set()
    for resource, inventory, _notes in rows:
        for path in _spans(resource):
            assert RESOURCE_PATH.fullmatch(path) and crd_has(path), f"{path}: not in {CRD.name}"
            resource_fields.add(path)
        for path in _spans(inventory):
            assert model_has(path), f"{path}: not a field of the inventory's LB definition"
            inventory_fields.add(path.split(".")[0].removesuffix("[]"))
    # Every top-level field on both sides is compared (source is set by Portico, not by people).
    spec = _openapi_schema()["properties"]["spec"]["properties"]
    assert {f"spec.{name}" for name in spec} <= {".".join(p.split(".")[:2]).removesuffix("[]") for p in resource_fields}
    assert set(lb_model.LB_FIELDS) - {"source"} <= inventory_fields


# --- RBAC ------------------------------------------------------------------------------------

def _rbac() -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(RBAC.read_text()) if doc]


def _verbs(role: dict[str, Any], group: str, resource: str) -> set[str]:
    return {verb for rule in role["rules"] if group in rule.get("apiGroups", []) and resource in rule.get("resources", [])
            for verb in rule["verbs"]}


def _object(kind: str, name: str) -> dict[str, Any]:
    (found,) = [doc for doc in _rbac() if doc["kind"] == kind and doc["metadata"]["name"] == name]
    return found


def test_rbac_gives_portico_what_it_needs_on_loadbalancers():
    gateway = _object("ClusterRole", "portico:gateway")
    assert {"get", "list", "watch", "patch"} <= _verbs(gateway, "portico.io", "loadbalancers")
    assert {"get", "patch", "update"} <= _verbs(gateway, "portico.io", "loadbalancers/status")
    assert {"get", "list", "watch", "patch"} <= _verbs(gateway, "", "services")  # unchanged


def test_rbac_editor_role_edits_loadbalancers_and_never_their_status():
    editor = _object("ClusterRole", "portico:loadbalancer-editor")
    assert {"create", "update", "delete", "get", "list", "watch"} <= _verbs(editor, "portico.io", "loadbalancers")
    granted = {resource for rule in editor["rules"] for resource in rule["resources"]}
    assert granted == {"loadbalancers"}, "the editor may not write status (or anything else)"
    bindings = [doc for doc in _rbac() if doc["kind"] == "RoleBinding" and doc["roleRef"]["name"] == editor["metadata"]["name"]]
    assert bindings and all(b["metadata"].get("namespace") and b["roleRef"]["kind"] == "ClusterRole" for b in bindings)
