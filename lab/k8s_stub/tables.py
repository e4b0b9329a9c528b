"""Server-side printing (meta.k8s.io/v1 Table), which kubectl asks for on `get`.

kubectl has no client-side printers for built-in kinds any more: without these tables it
shows only NAME and AGE. Columns follow the real API server's printers.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Callable

Obj = dict[str, Any]
Cell = Callable[[Obj], Any]


def _since(stamp: str | None) -> str:
    """Go's duration.HumanDuration, as the real printers use for ages."""
    if not stamp:
        return "<unknown>"
    then = datetime.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc)
    seconds = max(0, int((datetime.now(timezone.utc) - then).total_seconds()))
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


# (header, type, priority: 1 = only with -o wide, cell)
COLUMNS: dict[str, list[tuple[str, str, int, Cell]]] = {
    "Service": [("Name", "string", 0, _name), ("Type", "string", 0, lambda s: s.get("spec", {}).get("type", "")),
                ("Cluster-IP", "string", 0, lambda s: s.get("spec", {}).get("clusterIP", "<none>")),
                ("External-IP", "string", 0, _service_external_ip), ("Port(s)", "string", 0, _service_ports),
                ("Age", "string", 0, _age), ("Selector", "string", 1, _selector)],
    "Node": [("Name", "string", 0, _name), ("Status", "string", 0, _node_status), ("Roles", "string", 0, _node_roles),
             ("Age", "string", 0, _age), ("Version", "string", 0, _node_info("kubeletVersion")),
             ("Internal-IP", "string", 1, _node_address("InternalIP")), ("External-IP", "string", 1, _node_address("ExternalIP")),
             ("OS-Image", "string", 1, _node_info("osImage")), ("Kernel-Version", "string", 1, _node_info("kernelVersion")),
             ("Container-Runtime", "string", 1, _node_info("containerRuntimeVersion"))],
    "Namespace": [("Name", "string", 0, _name), ("Status", "string", 0, lambda n: n.get("status", {}).get("phase", "")),
                  ("Age", "string", 0, _age)],
    "EndpointSlice": [("Name", "string", 0, _name), ("AddressType", "string", 0, lambda e: e.get("addressType", "")),
                      ("Ports", "string", 0, _slice_ports), ("Endpoints", "string", 0, _slice_endpoints), ("Age", "string", 0, _age)],
    "Event": [("Last Seen", "string", 0, _event_last_seen), ("Type", "string", 0, lambda e: e.get("type", "")),
              ("Reason", "string", 0, lambda e: e.get("reason", "")), ("Object", "string", 0, _event_object),
              ("Subobject", "string", 1, lambda e: e.get("involvedObject", {}).get("fieldPath", "")),
              ("Source", "string", 1, _event_source), ("Message", "string", 0, lambda e: e.get("message", "")),
              ("First Seen", "string", 1, lambda e: _since(e.get("firstTimestamp"))),
              ("Count", "integer", 1, lambda e: e.get("count") or 1), ("Name", "string", 1, _name)],
}


def _row_object(obj: Obj, include: str) -> Obj | None:
    if include == "None":
        return None
    if include == "Object":
        return obj
    return {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj["metadata"]}


def to_table(kind: str, items: list[Obj], include_object: str, resource_version: str) -> Obj:
    columns = COLUMNS.get(kind, [("Name", "string", 0, _name), ("Age", "string", 0, _age)])
    definitions = [{"name": header, "type": kind_, "format": "name" if header == "Name" else "", "description": header, "priority": priority}
                   for header, kind_, priority, _ in columns]
    rows = [{"cells": [cell(obj) for *_, cell in columns], "object": _row_object(obj, include_object)} for obj in items]
    return {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": resource_version},
            "columnDefinitions": definitions, "rows": rows}
