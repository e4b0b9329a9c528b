"""Server-side printing (meta.k8s.io/v1 Table), which kubectl asks for on `get`.

kubectl has no client-side printers for built-in kinds any more: without these tables it
shows only NAME and AGE. Columns follow the real API server's printers; custom resources get
theirs from the CRD's `additionalPrinterColumns` (JSONPath cells, typed), or Name and Age.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .crd import PrinterColumn

Obj = dict[str, Any]
Cell = Callable[[Obj], Any]


def _since(stamp: str | None) -> str:
    """Go's duration.HumanDuration, as the real printers use for ages."""
    if not stamp:
        return "<unknown>"
    then = datetime.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)
    seconds = max(0, int((datetime.now(UTC) - then).total_seconds()))
    minutes, hours, days = seconds // 60, seconds // 3600, seconds // 86400
    if seconds < 120:
        return f"{seconds}s"
    if minutes < 10:
        return f"{minutes}m{seconds % 60}s" if seconds % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 192:
        return f"{days}d{hours % 24}h" if hours % 24 else f"{days}d"
    return f"{days}d" if days < 730 else f"{days // 365}y"


def _age(obj: Obj) -> str:
    return _since(obj["metadata"].get("creationTimestamp"))


def _service_external_ip(svc: Obj) -> str:
    spec = svc.get("spec", {})
    ips = list(spec.get("externalIPs") or [])
    if spec.get("type") == "LoadBalancer":
        ips += [i.get("ip") or i.get("hostname") for i in (svc.get("status", {}).get("loadBalancer", {}).get("ingress") or [])]
        return ",".join(ips) if ips else "<pending>"
    if spec.get("type") == "ExternalName":
        return spec.get("externalName", "")
    return ",".join(ips) if ips else "<none>"


def _service_ports(svc: Obj) -> str:
    ports = [f"{p['port']}:{p['nodePort']}/{p.get('protocol', 'TCP')}" if p.get("nodePort") else f"{p['port']}/{p.get('protocol', 'TCP')}"
             for p in svc.get("spec", {}).get("ports") or []]
    return ",".join(ports) or "<none>"


def _selector(svc: Obj) -> str:
    selector = svc.get("spec", {}).get("selector") or {}
    return ",".join(f"{k}={v}" for k, v in sorted(selector.items())) or "<none>"


def _node_status(node: Obj) -> str:
    ready = next((c for c in node.get("status", {}).get("conditions") or [] if c.get("type") == "Ready"), None)
    state = "Ready" if ready and ready.get("status") == "True" else "NotReady" if ready else "Unknown"
    return state + (",SchedulingDisabled" if node.get("spec", {}).get("unschedulable") else "")


def _node_roles(node: Obj) -> str:
    prefix = "node-role.kubernetes.io/"
    roles = sorted(k[len(prefix):] for k in node["metadata"].get("labels") or {} if k.startswith(prefix))
    return ",".join(roles) or "<none>"


def _node_address(kind: str) -> Cell:
    return lambda node: next((a["address"] for a in node.get("status", {}).get("addresses") or [] if a.get("type") == kind), "<none>")


def _node_info(field: str) -> Cell:
    return lambda node: node.get("status", {}).get("nodeInfo", {}).get(field, "")


def _slice_ports(es: Obj) -> str:
    ports = [str(p.get("port")) for p in es.get("ports") or [] if p.get("port") is not None]
    return ",".join(ports) or "<unset>"


def _slice_endpoints(es: Obj) -> str:
    addresses = [a for e in es.get("endpoints") or [] for a in e.get("addresses") or []]
    if not addresses:
        return "<unset>"
    return ",".join(addresses[:3]) + (f" + {len(addresses) - 3} more..." if len(addresses) > 3 else "")


def _event_last_seen(event: Obj) -> str:
    return _since(event.get("lastTimestamp") or event.get("eventTime") or event["metadata"].get("creationTimestamp"))


def _event_object(event: Obj) -> str:
    involved = event.get("involvedObject", {})
    return f"{involved.get('kind', '').lower()}/{involved.get('name', '')}"


def _event_source(event: Obj) -> str:
    source = event.get("source") or {}
    text = ", ".join(filter(None, (source.get("component"), source.get("host"))))
    return text or event.get("reportingComponent") or ""


def _name(obj: Obj) -> str:
    return obj["metadata"]["name"]


def _created_at(obj: Obj) -> str:
    return obj["metadata"].get("creationTimestamp") or ""


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    priority: int  # 1: only with -o wide
    cell: Cell
    format: str = ""
    description: str = ""

    def definition(self) -> Obj:
        fmt = self.format or ("name" if self.name == "Name" else "")
        return {"name": self.name, "type": self.type, "format": fmt, "description": self.description or self.name,
                "priority": self.priority}


def _columns(*spec: tuple[str, str, int, Cell]) -> list[Column]:
    return [Column(*entry) for entry in spec]


COLUMNS: dict[str, list[Column]] = {
    "Service": _columns(("Name", "string", 0, _name), ("Type", "string", 0, lambda s: s.get("spec", {}).get("type", "")),
                        ("Cluster-IP", "string", 0, lambda s: s.get("spec", {}).get("clusterIP", "<none>")),
                        ("External-IP", "string", 0, _service_external_ip), ("Port(s)", "string", 0, _service_ports),
                        ("Age", "string", 0, _age), ("Selector", "string", 1, _selector)),
    "Node": _columns(("Name", "string", 0, _name), ("Status", "string", 0, _node_status), ("Roles", "string", 0, _node_roles),
                     ("Age", "string", 0, _age), ("Version", "string", 0, _node_info("kubeletVersion")),
                     ("Internal-IP", "string", 1, _node_address("InternalIP")), ("External-IP", "string", 1, _node_address("ExternalIP")),
                     ("OS-Image", "string", 1, _node_info("osImage")), ("Kernel-Version", "string", 1, _node_info("kernelVersion")),
                     ("Container-Runtime", "string", 1, _node_info("containerRuntimeVersion"))),
    "Namespace": _columns(("Name", "string", 0, _name), ("Status", "string", 0, lambda n: n.get("status", {}).get("phase", "")),
                          ("Age", "string", 0, _age)),
    "EndpointSlice": _columns(("Name", "string", 0, _name), ("AddressType", "string", 0, lambda e: e.get("addressType", "")),
                              ("Ports", "string", 0, _slice_ports), ("Endpoints", "string", 0, _slice_endpoints), ("Age", "string", 0, _age)),
    "Event": _columns(("Last Seen", "string", 0, _event_last_seen), ("Type", "string", 0, lambda e: e.get("type", "")),
                      ("Reason", "string", 0, lambda e: e.get("reason", "")), ("Object", "string", 0, _event_object),
                      ("Subobject", "string", 1, lambda e: e.get("involvedObject", {}).get("fieldPath", "")),
                      ("Source", "string", 1, _event_source), ("Message", "string", 0, lambda e: e.get("message", "")),
                      ("First Seen", "string", 1, lambda e: _since(e.get("firstTimestamp"))),
                      ("Count", "integer", 1, lambda e: e.get("count") or 1), ("Name", "string", 1, _name)),
    "CustomResourceDefinition": _columns(("Name", "string", 0, _name), ("Created At", "date", 0, _created_at)),
}
DEFAULT_COLUMNS = _columns(("Name", "string", 0, _name), ("Age", "string", 0, _age))


# --- JSONPath of printer columns (the subset CRDs use) ---------------------------------------

_STEP = re.compile(r"""\.(?P<field>[^.\[\]]+)|\[(?P<quoted>'[^']*'|"[^"]*")\]|\[(?P<index>\*|-?\d+)\]"""
                   r"""|\[\?\(@\.(?P<left>[^=!)\s]+)\s*(?:(?P<op>==|!=)\s*(?P<right>'[^']*'|"[^"]*"|[^)\s]+))?\s*\)\]""")


def json_path(path: str) -> Callable[[Any], list[Any]]:
    """Values a JSONPath such as `.status.conditions[?(@.type=="Ready")].status` selects."""
    text = path.strip()
    if text.startswith("{") and text.endswith("}"):
        text = text[1:-1]
    steps, at = [], 0
    while at < len(text):
        match = _STEP.match(text, at)
        if not match:
            raise ValueError(f"unsupported JSONPath {path!r} at {text[at:]!r}")
        steps.append(match)
        at = match.end()

    def select(doc: Any) -> list[Any]:
        values = [doc]
        for step in steps:
            values = [found for value in values for found in _apply(step, value)]
        return values
    return select


def _literal(text: str) -> Any:
    if text[:1] in "'\"":
        return text[1:-1]
    try:
        return json.loads(text)
    except ValueError:
        return text


def _apply(step: re.Match[str], value: Any) -> list[Any]:
    name = step.group("field") or (step.group("quoted") or "")[1:-1]
    if name:
        return [value[name]] if isinstance(value, dict) and name in value else []
    if not isinstance(value, list):
        return []
    if step.group("index") == "*":
        return list(value)
    if step.group("index") is not None:
        index = int(step.group("index"))
        return [value[index]] if -len(value) <= index < len(value) else []
    left, op = step.group("left"), step.group("op")
    picked = []
    for item in value:
        current: Any = item
        for part in left.split("."):
            current = current.get(part) if isinstance(current, dict) else None
        wanted = current is not None if op is None else (current == _literal(step.group("right"))) == (op == "==")
        if wanted:
            picked.append(item)
    return picked


def _typed_cell(kind: str, select: Callable[[Any], list[Any]]) -> Cell:
    def cell(obj: Obj) -> Any:
        values = select(obj)
        if not values:
            return None
        value = values[0]
        if kind == "date":
            return _since(value) if isinstance(value, str) else None
        if kind == "integer":
            return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
        if kind == "number":
            return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None
        if kind == "boolean":
            return value if isinstance(value, bool) else None
        return " ".join(v if isinstance(v, str) else json.dumps(v) for v in values)
    return cell


def printer_columns(columns: tuple[PrinterColumn, ...]) -> list[Column]:
    """Name, then a CRD version's additionalPrinterColumns."""
    return [Column("Name", "string", 0, _name, "name", "Name must be unique within a namespace."),
            *(Column(c.name, c.type, c.priority, _typed_cell(c.type, json_path(c.json_path)), c.format, c.description)
              for c in columns)]


def _row_object(obj: Obj, include: str) -> Obj | None:
    if include == "None":
        return None
    if include == "Object":
        return obj
    return {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj["metadata"]}


def to_table(columns: list[Column], items: list[Obj], include_object: str, list_meta: Obj) -> Obj:
    rows = [{"cells": [column.cell(obj) for column in columns], "object": _row_object(obj, include_object)} for obj in items]
    return {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": list_meta,
            "columnDefinitions": [column.definition() for column in columns], "rows": rows}
