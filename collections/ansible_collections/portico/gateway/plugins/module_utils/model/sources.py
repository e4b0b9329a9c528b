# -*- coding: utf-8 -*-
# Copyright: Portico developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Merge the two sources of load balancers into one validated model.

Static LBs (inventory) are strict: any problem fails the run before a host is touched.
Kubernetes objects (Services, Portico's LoadBalancer resources: entries of every kind) are
lenient: one that cannot be served (bad annotation or field, no IP, clash) is left out with its
reasons, and every other one goes on. Static LBs win every clash, so a Kubernetes object can
never take over a configured VIP or listener.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ansible_collections.portico.gateway.plugins.module_utils.model.documents import (
    SERVICE_KIND,
    SERVICES_FORMAT,
    decode,
    entry_key,
    object_key,
)
from ansible_collections.portico.gateway.plugins.module_utils.model.ipam import Allocation, Pool, allocate
from ansible_collections.portico.gateway.plugins.module_utils.model.loadbalancer import (
    LoadBalancer,
    ModelResult,
    parse_loadbalancers,
)
from ansible_collections.portico.gateway.plugins.module_utils.model.problems import FieldSources, Problem


@dataclass
class ServiceStatus:
    """What the write-back tells a Service (or an object of another ``kind``): its addresses, or
    why it has none.

    ``release``: the object is no longer Portico's to serve (being deleted, or out of scope);
    ``ips`` are then the addresses held for it until the gateways withdrew them, and the
    write-back clears its status and finalizer only after a converge that reached every gateway.
    ``loadbalancers``: the names of its LBs in the model (what the gateways report health for);
    ``details``: what its kind's status writer needs besides (the entry's ``status_details``).
    """

    cluster: str
    namespace: str
    name: str
    uid: str
    ips: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    release: bool = False
    release_reason: str = ""
    claimed: bool = False  # carried the cleanup finalizer and Portico's mark when it was read
    kind: str = SERVICE_KIND
    loadbalancers: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return object_key(self.cluster, self.namespace, self.name, self.kind)

    @property
    def served(self) -> bool:
        return bool(self.ips) and not self.problems and not self.release


@dataclass
class MergedModel:
    loadbalancers: list[LoadBalancer]
    static_problems: list[Problem]
    services: list[ServiceStatus]


def _status_of(allocation: Allocation, entry: Mapping[str, Any]) -> ServiceStatus:
    details = entry.get("status_details")
    return ServiceStatus(cluster=allocation.cluster, namespace=allocation.namespace, name=allocation.name,
                         uid=allocation.uid, ips=list(allocation.ips), problems=list(allocation.problems),
                         warnings=list(allocation.warnings), release=allocation.release,
                         release_reason=str(entry.get("release_reason") or ""), claimed=entry.get("claimed") is True,
                         kind=allocation.kind, details=dict(details) if isinstance(details, Mapping) else {})


def _service_lbs(statuses: Sequence[ServiceStatus], allocations: Sequence[Allocation]) -> dict[str, ServiceStatus]:
    """LB name -> its Service, for the Services that got addresses."""
    owner: dict[str, ServiceStatus] = {}
    for status, allocation in zip(statuses, allocations):
        if status.problems or status.release:
            continue
        for lb in allocation.loadbalancers:
            owner[lb["name"]] = status
            status.loadbalancers.append(str(lb["name"]))
    return owner


def _refuse_services(result: ModelResult, owner: Mapping[str, ServiceStatus], sources: Mapping[str, FieldSources]) -> set[str]:
    """Give each Service the model's problems with its LBs, on the Service's own fields (where the
    translation recorded which field set the value); the keys of the Services refused."""
    refused = {owner[name].key for name in result.refused if name in owner}
    for problem in result.problems:
        status = owner.get(problem.subject)
        if status is not None and status.key in refused:
            located = sources[status.key].locate(problem) if status.key in sources else problem
            if located not in status.problems:
                status.problems.append(located)
    for status in owner.values():
        if status.key in refused:
            status.ips = []  # a Service is served whole (every family) or not at all
            status.loadbalancers = []
    return refused


def _field_sources(entries: Sequence[Mapping[str, Any]]) -> dict[str, FieldSources]:
    sources = {}
    for entry in entries:
        key = entry_key(entry)
        fields = entry.get("field_sources")
        if isinstance(fields, Mapping) and fields:
            sources[key] = FieldSources(subject=key, fields=fields)
    return sources


def read_services(value: Any) -> tuple[list[Mapping[str, Any]], Mapping[str, Any]]:
    """The entries and backend sets of ``portico_k8s_services`` (a document or a plain list)."""
    document = decode(value, SERVICES_FORMAT, "portico_k8s_services")
    return document["services"], document["backend_sets"]


def merge(
    static_raws: Any, k8s_services: Any, pools: Mapping[str, Pool], backend_sets: Mapping[str, Any] | None = None,
) -> MergedModel:
    """Static LBs first (strict), then Service entries: allocation, then the model (lenient).

    ``k8s_services`` is a list of entries (with ``backend_sets`` for the backend set references
    in their LBs) or a services document (``model.documents``), whose backend sets then apply.
    """
    if not isinstance(k8s_services, list):
        k8s_services, backend_sets = read_services(k8s_services)  # DocumentError names the variable
    static = parse_loadbalancers(static_raws, pools)
    allocations = allocate(k8s_services, pools, reserved=[lb.vip for lb in static.loadbalancers])
    statuses = [_status_of(allocation, entry) for allocation, entry in zip(allocations, k8s_services)]
    owner = _service_lbs(statuses, allocations)
    k8s_raws = [lb for status, a in zip(statuses, allocations) if not status.problems and not status.release for lb in a.loadbalancers]
    services = parse_loadbalancers(k8s_raws, pools, existing=static.loadbalancers, backend_sets=backend_sets)
    refused = _refuse_services(services, owner, _field_sources(k8s_services))
    served = [lb for lb in services.loadbalancers if owner[lb.name].key not in refused]
    return MergedModel(loadbalancers=static.loadbalancers + served, static_problems=static.problems, services=statuses)
