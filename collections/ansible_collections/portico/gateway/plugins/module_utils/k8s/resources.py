# -*- coding: utf-8 -*-
# Copyright: Portico developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The kinds a source serves besides Services, each with its scope and its translation.

Services read other objects for their backends (EndpointSlices, Nodes; ``k8s.translate``), so
the inventory plugin and the watcher handle them on their own. A kind registered here reads
only its own objects, and everything else is generic: the inventory plugin lists its objects
(``Kind.collection_path``) and ``translate`` makes their entries; the watcher lists and watches
them and fingerprints the ones ``scope`` serves or must release; the entries then share the
allocation, the model and the write-back with the Services' (``model.sources``,
``k8s.writeback``). A further kind plugs in with its names in ``k8s.kinds``, its translation,
and one line here. The Gateway API's kinds read Services too (a route's backends), so the
inventory plugin and the watcher handle them on their own as well (``k8s.gateway_api``); only
their status writers are found here.

Standard library only, like every module_util.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ansible_collections.portico.gateway.plugins.module_utils.k8s.gateway_api_status import GATEWAY_API_WRITERS
from ansible_collections.portico.gateway.plugins.module_utils.k8s.kinds import LOADBALANCER, SERVICE, Kind, kind_named
from ansible_collections.portico.gateway.plugins.module_utils.k8s.loadbalancers import (
    scope_of_loadbalancer,
    translate_loadbalancers,
)
from ansible_collections.portico.gateway.plugins.module_utils.k8s.resource_status import LOADBALANCER_WRITER
from ansible_collections.portico.gateway.plugins.module_utils.k8s.translate import Scope, TranslateOptions, Translation
from ansible_collections.portico.gateway.plugins.module_utils.k8s.writeback import SERVICE_WRITER, StatusWriter


@dataclass(frozen=True)
class ResourceKind:
    """A kind whose objects translate on their own."""

    kind: Kind
    scope: Callable[[Mapping[str, Any], TranslateOptions], Scope]
    translate: Callable[[Iterable[Mapping[str, Any]], TranslateOptions], Translation]
    writer: StatusWriter
    # Its status shows what the gateways' health checkers see: the write-back needs their reports.
    reports_health: bool = False


RESOURCE_KINDS: Mapping[str, ResourceKind] = {
    LOADBALANCER.kind: ResourceKind(LOADBALANCER, scope_of_loadbalancer, translate_loadbalancers, LOADBALANCER_WRITER,
                                    reports_health=True),
}


def resource_kinds(options: TranslateOptions) -> list[ResourceKind]:
    """The kinds besides Services that a cluster's source serves, in a fixed order."""
    return [RESOURCE_KINDS[name] for name in options.kinds if name in RESOURCE_KINDS]


def writer_for(kind: str | None) -> StatusWriter:
    """The status writer of a status item's kind (a Service's when it names none); ValueError for
    a kind Portico does not know."""
    known = kind_named(kind)
    if known is SERVICE:
        return SERVICE_WRITER
    if known.kind in GATEWAY_API_WRITERS:
        return GATEWAY_API_WRITERS[known.kind]
    return RESOURCE_KINDS[known.kind].writer


def kind_of(kind: str | None, details: Mapping[str, Any]) -> Kind:
    """A status item's kind at the version its object was read at (a Gateway API route is
    served at v1 or only at v1alpha2, as the cluster's Gateway API release has it)."""
    known = kind_named(kind)
    version = details.get("version")
    if isinstance(version, str) and version and version != known.version:
        return dataclasses.replace(known, version=version)
    return known


def reports_health(kind: str | None) -> bool:
    """Whether objects of the kind show the gateways' health in their status."""
    resource = RESOURCE_KINDS.get(kind or SERVICE.kind)
    return resource is not None and resource.reports_health
