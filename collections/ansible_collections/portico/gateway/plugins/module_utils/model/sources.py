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

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from ansible_collections.portico.gateway.plugins.module_utils.model.ipam import Allocation, Pool, allocate
from ansible_collections.portico.gateway.plugins.module_utils.model.loadbalancer import (
    LoadBalancer,
    ModelResult,
    parse_loadbalancers,
)
from ansible_collections.portico.gateway.plugins.module_utils.model.problems import Problem


@dataclass
class ServiceStatus:
    """What the write-back tells a Service: its addresses, or why it has none."""

    cluster: str
    namespace: str
    name: str
    uid: str
    ips: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)

    @property
    def key(self) -> str:
        return f"{self.cluster}/{self.namespace}/{self.name}"

    @property
    def served(self) -> bool:
        return bool(self.ips) and not self.problems


@dataclass
class MergedModel:
    loadbalancers: list[LoadBalancer]
    static_problems: list[Problem]
    services: list[ServiceStatus]


def _status_of(allocation: Allocation) -> ServiceStatus:
    return ServiceStatus(cluster=allocation.cluster, namespace=allocation.namespace, name=allocation.name,
                         uid=allocation.uid, ips=list(allocation.ips), problems=list(allocation.problems),
                         warnings=list(allocation.warnings))


def _service_lbs(statuses: Sequence[ServiceStatus], allocations: Sequence[Allocation]) -> dict[str, ServiceStatus]:
    """LB name -> its Service, for the Services that got addresses."""
    owner: dict[str, ServiceStatus] = {}
    for status, allocation in zip(statuses, allocations):
        if status.problems:
            continue
        for lb in allocation.loadbalancers:
            owner[lb["name"]] = status
    return owner


def _refuse_services(result: ModelResult, owner: Mapping[str, ServiceStatus]) -> set[str]:
    """Give each Service the model's problems with its LBs; the keys of the Services refused."""
    refused = {owner[name].key for name in result.refused if name in owner}
    for problem in result.problems:
        status = owner.get(problem.subject)
        if status is not None and status.key in refused:
            status.problems.append(problem)
    for status in owner.values():
        if status.key in refused:
            status.ips = []  # a Service is served whole (every family) or not at all
    return refused


def merge(static_raws: Any, k8s_services: Sequence[Mapping[str, Any]], pools: Mapping[str, Pool]) -> MergedModel:
    static = parse_loadbalancers(static_raws, pools)
    allocations = allocate(k8s_services, pools, reserved=[lb.vip for lb in static.loadbalancers])
    statuses = [_status_of(allocation) for allocation in allocations]
    owner = _service_lbs(statuses, allocations)
    k8s_raws = [lb for status, a in zip(statuses, allocations) if not status.problems for lb in a.loadbalancers]
    services = parse_loadbalancers(k8s_raws, pools, existing=static.loadbalancers)
    refused = _refuse_services(services, owner)
    served = [lb for lb in services.loadbalancers if owner[lb.name].key not in refused]
    return MergedModel(loadbalancers=static.loadbalancers + served, static_problems=static.problems, services=statuses)
