"""Realistic Kubernetes clusters for the scale benchmarks, written the way the API returns them.

One generator for every benchmark that needs a cluster (``bench/controller_scale.py`` through the
API stand-in, ``bench/scale.py`` through the translator and the dataplane), so both measure the
same shapes:

- ``nodes`` Ready Nodes with an InternalIP in 198.18.0.0/17 and a pod CIDR in 198.19.0.0/16;
- ``services`` LoadBalancer Services of class ``portico.io/gateway`` in 20 namespaces, each
  with 1-3 ports (about one port in ten UDP, the rest TCP), every port with its own nodePort;
- a tenth ``externalTrafficPolicy: Local`` (with a ``healthCheckNodePort``) and a tenth direct
  (``allocateLoadBalancerNodePorts: false``), both with ``LOCAL_PODS`` pods on distinct nodes;
  the others (``Cluster``, nodeport mode: every node a backend) have 2 pods;
- one EndpointSlice per Service, every endpoint ready; ``metadata`` with uid,
  creationTimestamp (one second apart, in Service order) and resourceVersion, ``spec`` with
  the API server's defaults (clusterIP, ipFamilies, policies), ``status.loadBalancer: {}``.

Deterministic for a seed. Addresses come from the benchmark ranges only. Service VIPs come
from ``POOLS`` (198.18.128.0/17), which overlaps neither nodes nor pods. nodePorts are handed
out from 20000 upward, beyond the API's default range: start the stand-in with
``--service-node-port-range NODE_PORT_RANGE``.
"""

from __future__ import annotations

import ipaddress
import json
import pathlib
import random
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

Obj = dict[str, Any]

LOAD_BALANCER_CLASS = "portico.io/gateway"
NAMESPACES = tuple(f"team-{index:02d}" for index in range(20))
LOCAL_PODS = 10
CLUSTER_PODS = 2
NODE_PORT_FIRST = 20000
SERVICE_PORTS = (80, 443, 8443)
NODE_PORT_RANGE = "20000-60000"
POOLS: dict[str, Obj] = {"bench": {"addresses": ["198.18.128.0/17"]}}
_NODE_NET = ipaddress.IPv4Network("198.18.0.0/17")
_CLUSTER_IP_NET = ipaddress.IPv4Network("10.96.0.0/12")
_EPOCH = datetime(2025, 1, 6, 8, 0, 0, tzinfo=UTC)
_UID_NAMESPACE = uuid.UUID("6f1d7a52-4a55-4b0e-9a4e-2f3c5e1d0b00")


def _timestamp(seconds: int) -> str:
    return (_EPOCH + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _uid(kind: str, namespace: str, name: str) -> str:
    return str(uuid.uuid5(_UID_NAMESPACE, f"{kind}/{namespace}/{name}"))


def node_name(index: int) -> str:
    return f"node-{index:03d}"


def node_address(index: int) -> str:
    return str(_NODE_NET.network_address + 10 + index)


def pod_address(node: int, pod: int) -> str:
    return f"198.19.{node}.{10 + pod}"


@dataclass
class Cluster:
    """The objects of one generated cluster, by kind, plus what the generator decided."""

    namespaces: list[Obj] = field(default_factory=list)
    nodes: list[Obj] = field(default_factory=list)
    services: list[Obj] = field(default_factory=list)
    endpoint_slices: list[Obj] = field(default_factory=list)
    kinds: dict[str, str] = field(default_factory=dict)  # namespace/name -> cluster | local | direct

    def objects(self) -> list[Obj]:
        """Every object, in an order the API stand-in can load (namespaces first)."""
        return [*self.namespaces, *self.nodes, *self.services, *self.endpoint_slices]

    def write(self, path: str | pathlib.Path) -> pathlib.Path:
        """A ``kind: List`` JSON file (``python -m lab.k8s_stub --fixtures PATH``)."""
        target = pathlib.Path(path)
        target.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": self.objects()}), encoding="utf-8")
        return target


def _node(index: int) -> Obj:
    name = node_name(index)
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "uid": _uid("Node", "", name), "creationTimestamp": _timestamp(0),
                     "resourceVersion": str(100 + index),
                     "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux"}},
        "spec": {"podCIDR": f"198.19.{index}.0/24", "podCIDRs": [f"198.19.{index}.0/24"]},
        "status": {"addresses": [{"type": "InternalIP", "address": node_address(index)},
                                 {"type": "Hostname", "address": name}],
                   "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}]},
    }


class _NodePorts:
    def __init__(self) -> None:
        self.next = NODE_PORT_FIRST

    def take(self) -> int:
        port, self.next = self.next, self.next + 1
        return port


def _ports(rng: random.Random, node_ports: _NodePorts | None) -> list[Obj]:
    ports = []
    for index in range(rng.randint(1, 3)):
        protocol = "UDP" if rng.random() < 0.1 else "TCP"
        port: Obj = {"name": f"p{index}-{protocol.lower()}", "protocol": protocol, "port": SERVICE_PORTS[index],
                     "targetPort": 8080 + index}
        if node_ports is not None:
            port["nodePort"] = node_ports.take()
        ports.append(port)
    return ports


def _service(index: int, kind: str, rng: random.Random, node_ports: _NodePorts) -> Obj:
    namespace, name = NAMESPACES[index % len(NAMESPACES)], f"svc-{index:05d}"
    spec: Obj = {
        "type": "LoadBalancer", "loadBalancerClass": LOAD_BALANCER_CLASS, "selector": {"app": name},
        "ports": _ports(rng, None if kind == "direct" else node_ports),
        "clusterIP": str(_CLUSTER_IP_NET.network_address + 10 + index),
        "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack", "sessionAffinity": "None",
        "externalTrafficPolicy": "Local" if kind == "local" else "Cluster", "internalTrafficPolicy": "Cluster",
        "allocateLoadBalancerNodePorts": kind != "direct",
    }
    spec["clusterIPs"] = [spec["clusterIP"]]
    if kind == "local":
        spec["healthCheckNodePort"] = node_ports.take()
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": namespace, "uid": _uid("Service", namespace, name),
                     "creationTimestamp": _timestamp(60 + index), "resourceVersion": str(10000 + index),
                     "labels": {"app": name}},
        "spec": spec,
        "status": {"loadBalancer": {}},
    }


def _endpoint_slice(service: Obj, pods_on: list[int]) -> Obj:
    meta = service["metadata"]
    slice_name = f"{meta['name']}-{meta['uid'][:5]}"
    endpoints = [{
        "addresses": [pod_address(node, 0)], "nodeName": node_name(node),
        "conditions": {"ready": True, "serving": True, "terminating": False},
        "targetRef": {"kind": "Pod", "namespace": meta["namespace"], "name": f"{meta['name']}-{node:03d}"},
    } for node in pods_on]
    return {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
        "metadata": {"name": slice_name, "namespace": meta["namespace"], "uid": _uid("EndpointSlice", meta["namespace"], slice_name),
                     "creationTimestamp": meta["creationTimestamp"], "resourceVersion": str(int(meta["resourceVersion"]) + 1),
                     "labels": {"kubernetes.io/service-name": meta["name"],
                                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"}},
        "endpoints": endpoints,
        "ports": [{"name": port["name"], "protocol": port["protocol"], "port": port["targetPort"]}
                  for port in service["spec"]["ports"]],
    }


def service_kind(index: int) -> str:
    """A tenth Local, a tenth direct, the rest Cluster (spread through the list, not in blocks)."""
    return {1: "local", 2: "direct"}.get(index % 10, "cluster")


def generate(services: int, nodes: int, seed: int = 13) -> Cluster:
    """A cluster of ``services`` LoadBalancer Services on ``nodes`` Nodes (see the module doc)."""
    if nodes > 250:
        raise ValueError("at most 250 nodes (one /24 pod CIDR each in 198.19.0.0/16)")
    rng = random.Random(seed)
    node_ports = _NodePorts()
    cluster = Cluster(
        namespaces=[{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "uid": _uid("Namespace", "", ns),
                                                                           "creationTimestamp": _timestamp(0)}}
                    for ns in NAMESPACES],
        nodes=[_node(index) for index in range(nodes)],
    )
    for index in range(services):
        kind = service_kind(index)
        service = _service(index, kind, rng, node_ports)
        pods = rng.sample(range(nodes), min(nodes, LOCAL_PODS if kind != "cluster" else CLUSTER_PODS))
        cluster.services.append(service)
        cluster.endpoint_slices.append(_endpoint_slice(service, sorted(pods)))
        cluster.kinds[f"{service['metadata']['namespace']}/{service['metadata']['name']}"] = kind
    return cluster


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Write a generated cluster as a kind: List JSON file.")
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--nodes", type=int, default=50)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("output", type=pathlib.Path)
    args = parser.parse_args()
    generate(args.services, args.nodes, args.seed).write(args.output)
