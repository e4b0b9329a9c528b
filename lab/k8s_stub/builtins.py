"""Server-side defaults and allocations of the built-in kinds (what the API server sets, never
what a controller would): Service cluster IPs, node ports and health-check node ports,
EndpointSlice, Namespace, Event and Node defaults."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any

from . import errors
from .errors import ApiError

Obj = dict[str, Any]
Key = tuple[str, str]
NODE_PORT_RANGE = range(30000, 32768)
# The stand-in is a dual-stack cluster; the IPv4 range holds 32k Services (the scale tests use 10k).
SERVICE_CIDRS = {"IPv4": "198.18.128.0/17", "IPv6": "2001:db8:96::/112"}


def _refuse(name: str, field: str, value: Any, detail: str) -> ApiError:
    return errors.unprocessable("Service", "", name, [errors.invalid(field, value, detail)])


class Allocations:
    """Node ports and cluster IPs held by stored Services, each with a rotating cursor so
    allocation stays O(1) however many Services exist."""

    def __init__(self, node_ports: range = NODE_PORT_RANGE, cidrs: dict[str, str] | None = None) -> None:
        self.node_port_range = node_ports
        self.networks = {family: ipaddress.ip_network(cidr) for family, cidr in (cidrs or SERVICE_CIDRS).items()}
        self.ports: dict[int, Key] = {}
        self.ips: dict[str, Key] = {}
        self._next_port = 0
        self._next_ip = dict.fromkeys(self.networks, 10)  # the first addresses stay for the cluster's own

    def track(self, key: Key, old: Obj | None, new: Obj | None) -> None:
        """Follow a stored Service's change (old/new None: created/deleted)."""
        for port in _ports(old):
            if self.ports.get(port) == key:
                del self.ports[port]
        for ip in _ips(old):
            if self.ips.get(ip) == key:
                del self.ips[ip]
        self.ports.update((port, key) for port in _ports(new))
        self.ips.update((ip, key) for ip in _ips(new))

    def port_taken(self, port: int, key: Key, claimed: set[int]) -> bool:
        return port in claimed or self.ports.get(port, key) != key

    def free_port(self, key: Key, claimed: set[int]) -> int:
        span = len(self.node_port_range)
        for step in range(span):
            port = self.node_port_range[(self._next_port + step) % span]
            if not self.port_taken(port, key, claimed):
                self._next_port = (self._next_port + step + 1) % span
                return port
        raise ApiError(500, "InternalError", f"range {self.node_port_range.start}-{self.node_port_range.stop - 1} is full: "
                                             "no free node port left")

    def free_ip(self, family: str, key: Key) -> str:
        network = self.networks[family]
        size = min(network.num_addresses - 1, 1 << 20)
        for step in range(size):
            offset = 10 + (self._next_ip[family] - 10 + step) % (size - 10)
            address = str(network.network_address + offset)
            if self.ips.get(address, key) == key:
                self._next_ip[family] = offset + 1
                return address
        raise ApiError(500, "InternalError", f"no {family} cluster IP left in {network}")


def _ports(svc: Obj | None) -> list[int]:
    spec = (svc or {}).get("spec") or {}
    ports = [p["nodePort"] for p in spec.get("ports") or [] if isinstance(p, dict) and p.get("nodePort")]
    return ports + ([spec["healthCheckNodePort"]] if spec.get("healthCheckNodePort") else [])


def _ips(svc: Obj | None) -> list[str]:
    return [ip for ip in ((svc or {}).get("spec") or {}).get("clusterIPs") or [] if ip != "None"]


def default_service(alloc: Allocations, svc: Obj, old: Obj | None) -> None:
    spec, name = svc.setdefault("spec", {}), svc["metadata"]["name"]
    key = (svc["metadata"].get("namespace", ""), name)
    if old:
        _carry_allocations(name, spec, old.get("spec", {}))
    stype = spec.setdefault("type", "ClusterIP")
    spec.setdefault("sessionAffinity", "None")
    if stype != "ExternalName":
        spec.setdefault("internalTrafficPolicy", "Cluster")
        _default_cluster_ips(alloc, key, spec)
    for port in spec.get("ports") or []:
        port.setdefault("protocol", "TCP")
        port.setdefault("targetPort", port.get("port"))
    if stype in ("NodePort", "LoadBalancer"):
        spec.setdefault("externalTrafficPolicy", "Cluster")
        if stype == "LoadBalancer":
            spec.setdefault("allocateLoadBalancerNodePorts", True)
        claimed: set[int] = set()
        if stype == "NodePort" or spec["allocateLoadBalancerNodePorts"]:
            _allocate_node_ports(alloc, key, spec, claimed)
        if stype == "LoadBalancer" and spec["externalTrafficPolicy"] == "Local":
            spec["healthCheckNodePort"] = _node_port(alloc, key, "spec.healthCheckNodePort", spec.get("healthCheckNodePort"), claimed)
        else:  # released when the Service stops needing it
            spec.pop("healthCheckNodePort", None)
    status = svc.get("status")
    svc["status"] = status if isinstance(status, dict) else {}
    svc["status"].setdefault("loadBalancer", {})


def _carry_allocations(name: str, spec: Obj, old_spec: Obj) -> None:
    """An update that omits allocated values keeps them (like PUT of an edited manifest)."""
    if old_spec.get("clusterIPs"):
        given = spec.get("clusterIPs") or ([spec["clusterIP"]] if spec.get("clusterIP") else [])
        if given and given != old_spec["clusterIPs"][:len(given)]:
            raise _refuse(name, "spec.clusterIPs[0]", given[0], "may not change once set")
        spec.update(clusterIP=old_spec["clusterIP"], clusterIPs=old_spec["clusterIPs"])
        spec.setdefault("ipFamilies", old_spec.get("ipFamilies"))
        spec.setdefault("ipFamilyPolicy", old_spec.get("ipFamilyPolicy"))
    if spec.get("type", "ClusterIP") not in ("NodePort", "LoadBalancer"):
        return
    old_ports = {p.get("name", ""): p.get("nodePort") for p in old_spec.get("ports") or []}
    for port in spec.get("ports") or []:
        if not port.get("nodePort") and old_ports.get(port.get("name", "")):
            port["nodePort"] = old_ports[port.get("name", "")]
    if old_spec.get("healthCheckNodePort") and spec.get("externalTrafficPolicy") == "Local":
        spec.setdefault("healthCheckNodePort", old_spec["healthCheckNodePort"])


def _default_cluster_ips(alloc: Allocations, key: Key, spec: Obj) -> None:
    ips = list(spec.get("clusterIPs") or ([spec["clusterIP"]] if spec.get("clusterIP") else []))
    if ips == ["None"]:  # headless
        spec.update(clusterIP="None", clusterIPs=["None"])
    families = list(spec.get("ipFamilies") or [])
    if not families and ips and ips != ["None"]:
        families = ["IPv6" if ":" in ip else "IPv4" for ip in ips]
    policy = spec.setdefault("ipFamilyPolicy", "SingleStack")
    if not families:
        families = ["IPv4"]
    if policy != "SingleStack" and len(families) == 1:  # this stand-in is a dual-stack cluster
        families.append("IPv6" if families[0] == "IPv4" else "IPv4")
    if policy == "SingleStack" and len(families) > 1:
        raise _refuse(key[1], "spec.ipFamilyPolicy", "SingleStack", "must be RequireDualStack or PreferDualStack when multiple "
                                                                    "'ipFamilies' are specified")
    spec["ipFamilies"] = families
    if ips != ["None"]:
        for index, ip in enumerate(ips):
            if alloc.ips.get(ip, key) != key:
                raise _refuse(key[1], f"spec.clusterIPs[{index}]", ip, "failed to allocate IP: provided IP is already allocated")
        ips += [alloc.free_ip(family, key) for family in families[len(ips):]]
        spec.update(clusterIP=ips[0], clusterIPs=ips)


def _node_port(alloc: Allocations, key: Key, field: str, wanted: int | None, claimed: set[int]) -> int:
    if wanted:
        span = alloc.node_port_range
        if wanted not in span:
            raise _refuse(key[1], field, wanted, f"provided port is not in the valid range. The range of valid ports is "
                                                 f"{span.start}-{span.stop - 1}")
        if alloc.port_taken(wanted, key, claimed):
            raise _refuse(key[1], field, wanted, "provided port is already allocated")
        port = wanted
    else:
        port = alloc.free_port(key, claimed)
    claimed.add(port)
    return port


def _allocate_node_ports(alloc: Allocations, key: Key, spec: Obj, claimed: set[int]) -> None:
    by_number: dict[int, int] = {}  # the same port number over TCP and UDP shares one nodePort
    for index, port in enumerate(spec.get("ports") or []):
        shared = by_number.get(port.get("port"))
        if shared and port.get("nodePort") in (None, 0, shared):
            port["nodePort"] = shared
            continue
        port["nodePort"] = _node_port(alloc, key, f"spec.ports[{index}].nodePort", port.get("nodePort"), claimed)
        by_number[port.get("port")] = port["nodePort"]


def default_endpointslice(_alloc: Allocations, slice_: Obj, _old: Obj | None) -> None:
    if not slice_.get("addressType"):
        raise errors.unprocessable("EndpointSlice", "discovery.k8s.io", slice_["metadata"]["name"], [errors.required("addressType")])
    # Empty lists are stored and served as null, like the real API (endpoints: null when no pods).
    slice_["endpoints"] = slice_.get("endpoints") or None
    slice_["ports"] = slice_.get("ports") or None
    for port in slice_["ports"] or []:
        port.setdefault("name", "")
        port.setdefault("protocol", "TCP")


def default_namespace(_alloc: Allocations, ns: Obj, _old: Obj | None) -> None:
    ns["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = ns["metadata"]["name"]
    ns.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
    ns["status"] = ns.get("status") or {"phase": "Active"}


def default_event(_alloc: Allocations, event: Obj, _old: Obj | None) -> None:
    for field, empty in (("firstTimestamp", None), ("lastTimestamp", None), ("eventTime", None),
                         ("reportingComponent", ""), ("reportingInstance", ""), ("source", {})):
        event.setdefault(field, empty)
    involved = event.setdefault("involvedObject", {}).get("namespace")
    if event["eventTime"] is None and involved and involved != event["metadata"]["namespace"]:
        raise errors.unprocessable("Event", "", event["metadata"]["name"], [
            errors.invalid("involvedObject.namespace", involved, "does not match event.namespace")])


def default_node(_alloc: Allocations, node: Obj, _old: Obj | None) -> None:
    node.setdefault("spec", {})
    node["status"] = node.get("status") or {}


DEFAULTERS: dict[str, Callable[[Allocations, Obj, Obj | None], None]] = {
    "Service": default_service, "EndpointSlice": default_endpointslice, "Namespace": default_namespace,
    "Event": default_event, "Node": default_node,
}
