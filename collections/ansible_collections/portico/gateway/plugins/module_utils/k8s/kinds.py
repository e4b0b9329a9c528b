# -*- coding: utf-8 -*-
# Copyright: Portico developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The kinds of Kubernetes objects Portico serves, and every name that goes with each kind.

One place for them (as kube-proxy keeps its nftables names in one place): the API paths the
inventory source, the watcher and the write-back use, the cleanup finalizer Portico adds before
serving an object, the ``source`` of the LBs made from it (what the console and the reviewer's
view show), where its status keeps its addresses, and the key of each object
(``model.documents.object_key``: ``cluster/namespace/name`` for a Service,
``cluster/namespace/<Kind>/name`` for another kind).

A kind's behaviour lives with the kind: ``k8s.translate`` for Services, ``k8s.loadbalancers``
for Portico's LoadBalancer resource, ``k8s.gateway_api`` for the Gateway API's kinds;
``k8s.sources`` says which kinds a source serves.
Standard library only, like every module_util.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ansible_collections.portico.gateway.plugins.module_utils.model.documents import SERVICE_KIND, object_key


@dataclass(frozen=True)
class Kind:
    """One kind of object Portico serves, by its API names."""

    kind: str  # the API's kind: Service, LoadBalancer, Gateway
    group: str  # "" for the core group
    version: str
    plural: str
    finalizer: str  # added before the gateways serve an object, removed after they withdrew it ("": none)
    lb_source: str  # the LB model's ``source`` of the LBs made from its objects
    label: str  # how people call its objects (summaries, the console)
    status_ips_field: str  # where its status keeps the addresses Portico gave it

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def _prefix(self) -> str:
        return f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"

    def collection_path(self, namespace: str | None = None) -> str:
        """Where its objects are listed and watched: every namespace, or one (none: a
        cluster-scoped kind such as GatewayClass)."""
        if namespace:
            return f"{self._prefix()}/namespaces/{namespace}/{self.plural}"
        return f"{self._prefix()}/{self.plural}"

    def object_path(self, namespace: str, name: str, subresource: str = "") -> str:
        path = f"{self.collection_path(namespace)}/{name}"
        return f"{path}/{subresource}" if subresource else path

    def key(self, cluster: str, namespace: str, name: str) -> str:
        return object_key(cluster, namespace, name, self.kind)

    def involved_object(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """An Event's ``involvedObject`` for one of its objects."""
        meta = obj.get("metadata") or {}
        return {"kind": self.kind, "apiVersion": self.api_version, "namespace": meta.get("namespace"),
                "name": meta.get("name"), "uid": meta.get("uid"), "resourceVersion": meta.get("resourceVersion")}


SERVICE = Kind(
    kind=SERVICE_KIND, group="", version="v1", plural="services",
    # The cloud-provider service controller's own finalizer: a Service that carries it is not
    # removed before its load balancer is gone.
    finalizer="service.kubernetes.io/load-balancer-cleanup",
    lb_source="kubernetes", label="LoadBalancer Service", status_ips_field="status.loadBalancer.ingress",
)
LOADBALANCER = Kind(
    kind="LoadBalancer", group="portico.io", version="v1alpha1", plural="loadbalancers",
    finalizer="portico.io/load-balancer-cleanup",
    lb_source="loadbalancer-resource", label="LoadBalancer resource", status_ips_field="status.addresses",
)
GATEWAY_API_GROUP = "gateway.networking.k8s.io"
# The Gateway API kinds Portico reads and writes the status of. Only Gateways hold addresses and
# make LBs (their listeners'); a route's version is the one the cluster serves (v1, else v1alpha2:
# ``k8s.gateway_api``), so the version here is only the preferred one.
GATEWAY_CLASS = Kind(
    kind="GatewayClass", group=GATEWAY_API_GROUP, version="v1", plural="gatewayclasses", finalizer="",
    lb_source="gateway-api", label="GatewayClass", status_ips_field="",
)
GATEWAY = Kind(
    kind="Gateway", group=GATEWAY_API_GROUP, version="v1", plural="gateways", finalizer="portico.io/gateway-cleanup",
    lb_source="gateway-api", label="Gateway", status_ips_field="status.addresses",
)
TCPROUTE = Kind(
    kind="TCPRoute", group=GATEWAY_API_GROUP, version="v1", plural="tcproutes", finalizer="",
    lb_source="gateway-api", label="TCPRoute", status_ips_field="",
)
UDPROUTE = Kind(
    kind="UDPRoute", group=GATEWAY_API_GROUP, version="v1", plural="udproutes", finalizer="",
    lb_source="gateway-api", label="UDPRoute", status_ips_field="",
)
# Read only: lets a route refer to a Service of another namespace.
REFERENCE_GRANT = Kind(
    kind="ReferenceGrant", group=GATEWAY_API_GROUP, version="v1", plural="referencegrants", finalizer="",
    lb_source="gateway-api", label="ReferenceGrant", status_ips_field="",
)
GATEWAY_API_KINDS = (GATEWAY_CLASS, GATEWAY, TCPROUTE, UDPROUTE)
KINDS: Mapping[str, Kind] = {kind.kind: kind for kind in (SERVICE, LOADBALANCER, *GATEWAY_API_KINDS)}
# What a source's ``kinds`` option chooses from: ``Gateway`` stands for the whole Gateway API
# (GatewayClasses, Gateways and their TCPRoutes and UDPRoutes), which only make sense together.
SOURCE_KINDS = (SERVICE.kind, LOADBALANCER.kind, GATEWAY.kind)
# What the LB model's ``source`` of an LB means, for people (the reviewer's view, the console).
SOURCE_LABELS: Mapping[str, str] = {"static": "inventory", **{kind.lb_source: kind.label for kind in (SERVICE, LOADBALANCER, GATEWAY)}}


def kind_named(name: str | None) -> Kind:
    """The kind of an entry or status item (none named: a Service); ValueError for an unknown one."""
    kind = KINDS.get(name or SERVICE_KIND)
    if kind is None:
        raise ValueError(f"unknown kind {name!r} (known: {', '.join(KINDS)})")
    return kind
