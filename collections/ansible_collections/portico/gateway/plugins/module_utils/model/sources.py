# -*- coding: utf-8 -*-
# Copyright: Portico developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Merge the two sources of load balancers into one validated model.

Static LBs (inventory) are strict: any problem fails the run before a host is touched.
Kubernetes Services are lenient: a Service that cannot be served (bad annotation, no IP,
clash) is left out with its reasons, and every other Service goes on.
Static LBs win every clash, so a Service can never take over a configured VIP or listener.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Sequence

from ansible_collections.portico.gateway.plugins.module_utils.model.ipam import Pool, allocate
from ansible_collections.portico.gateway.plugins.module_utils.model.loadbalancer import LoadBalancer, parse_loadbalancers


@dataclass
class ServiceStatus:
    """What the write-back tells a Service: its addresses, or why it has none."""

    cluster: str
    namespace: str
    name: str
    uid: str
    ips: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def served(self) -> bool:
        return bool(self.ips) and not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "served": self.served}


@dataclass
class MergedModel:
    loadbalancers: list[LoadBalancer]
    static_problems: list[str]
    services: list[ServiceStatus]


def _service_lbs(statuses: Sequence[ServiceStatus], allocations: Sequence[Any]) -> dict[str, str]:
    """LB name -> Service key, for the Services that got addresses."""
    owner: dict[str, str] = {}
    for status, allocation in zip(statuses, allocations):
        if status.problems:
            continue
        for lb in allocation.loadbalancers:
            owner[lb["name"]] = f"{status.cluster}/{status.namespace}/{status.name}"
    return owner


def merge(static_raws: Any, k8s_services: Sequence[Mapping[str, Any]], pools: Mapping[str, Pool]) -> MergedModel:
    static = parse_loadbalancers(static_raws, pools)
    allocations = allocate(k8s_services, pools, reserved=[lb.vip for lb in static.loadbalancers])
    statuses = [
        ServiceStatus(cluster=a.cluster, namespace=a.namespace, name=a.name, uid=a.uid, ips=list(a.ips),
                      problems=list(a.problems), warnings=list(a.warnings))
        for a in allocations
    ]
    owner = _service_lbs(statuses, allocations)
    k8s_raws = [lb for status, a in zip(statuses, allocations) if not status.problems for lb in a.loadbalancers]
    services = parse_loadbalancers(k8s_raws, pools, existing=static.loadbalancers)
    by_key = {f"{s.cluster}/{s.namespace}/{s.name}": s for s in statuses}
    refused_services = set()
    for problem in services.problems:
        lb_name = problem.split(": ", 1)[0]
        key = owner.get(lb_name)
        if key is not None:
            by_key[key].problems.append(problem)
            refused_services.add(key)
    for key in refused_services:
        by_key[key].ips = []  # a Service is served whole (every family) or not at all
    served_lbs = {name for name, key in owner.items() if key not in refused_services}
    loadbalancers = static.loadbalancers + [lb for lb in services.loadbalancers if lb.name in served_lbs]
    return MergedModel(loadbalancers=loadbalancers, static_problems=static.problems, services=statuses)
