# -*- coding: utf-8 -*-
# Copyright: Portico developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: k8s_services
short_description: Kubernetes LoadBalancer Services, Portico LoadBalancer resources and Gateways as service entries on the gateway group
description:
  - Lists Services, EndpointSlices (C(discovery.k8s.io/v1)), Nodes and Portico's LoadBalancer
    resources (C(loadbalancers.portico.io), the CRD in the repository's C(crds/)) of one or more
    Kubernetes clusters with the official C(kubernetes) client and publishes the objects Portico
    serves as the variable C(portico_k8s_services) of the gateway group (O(gateway_group)), the cluster
    Nodes as C(portico_k8s_nodes), and how to reach each cluster again (kubeconfig, context,
    host and the class it serves; never a token) as C(portico_k8s_clusters), for the status write-back.
  - Each entry names its C(kind) (C(Service) or C(LoadBalancer)); both kinds go through the same
    allocation (pools, sharing, stable addresses, contests by age), model and write-back. A cluster
    without the LoadBalancer CRD simply has no LoadBalancer resources.
  - The Gateway API (C(gateway.networking.k8s.io)) - GatewayClasses of the controller
    C(portico.io/gateway-controller), their Gateways with TCP and UDP listeners, and the TCPRoutes and
    UDPRoutes attached to them (read at C(v1) where the cluster serves it, else at C(v1alpha2)), with
    ReferenceGrants for backendRefs across namespaces. A served Gateway is an entry of kind C(Gateway),
    allocated with the Services (the same pools, requested addresses from C(spec.addresses) and contests
    by age); each listener with a route is one LB on the Gateway's address, with the route's Services'
    ready endpoints as backends and its backendRef weights as Maglev weights. GatewayClasses and routes get
    status-only entries (their conditions). Gateways of other classes are left alone. A cluster without
    the Gateway API CRDs simply has no Gateways.
  - C(portico_k8s_services) is a JSON document, a string (C(portico_k8s_services | from_json)
    shows it) with C(services), one entry per Service, and C(backend_sets), each distinct backend
    list once (every nodeport LB of a cluster shares one). As a string it costs Ansible nothing
    at thousands of Services; as a structured variable Ansible would copy and tag every node of it.
  - Each entry carries one LB model definition per IP family, without C(vip); addresses are
    allocated later from C(portico_pools) by the playbooks (C(portico.gateway) IPAM), because an
    inventory plugin cannot reliably see group variables.
  - Services Portico must give up get an entry too (C(release), no LBs), for a Service it served that
    is being deleted (C(deletionTimestamp), held by the C(service.kubernetes.io/load-balancer-cleanup)
    finalizer), or that left its scope (type or class changed, namespace no longer selected) while
    it still carries Portico's C(portico.io/served-by) annotation. Their addresses stay held until
    the write-back released them, after a converge that reached every gateway.
  - Prints one line per cluster with how many objects of each kind are served, and how many were
    skipped and why (another class, no class while O(serve_default_class) is false, namespace not
    selected, being deleted).
  - Adds no hosts. Gateways come from the static inventory; list this source after it. If the
    gateway group does not exist it is created empty.
  - A Service that cannot be served is kept with its C(problems) listed; it never breaks the
    inventory. Each problem and warning is data, C({subject, field, message}) (the Service, its
    field or annotation, what is wrong); C(portico.gateway.lb_validate) turns them into text.
  - A cluster that cannot be listed publishes C(portico_k8s_error) (one line naming the cluster and
    what failed) instead of C(portico_k8s_services), so that a partial view never withdraws the VIPs
    of objects that still exist; C(playbooks/validate.yml) stops the run with that line. Plays that
    do not need the clusters (status, drain) run on quietly.
  - Values read from the API (annotations included) are data and are never templated.
  - The configuration file name must end with C(k8s_services.yml) or C(k8s_services.yaml).
author:
  - Portico developers (@portico)
extends_documentation_fragment:
  - portico.gateway.k8s_auth
  - ansible.builtin.constructed
  - ansible.builtin.inventory_cache
options:
  plugin:
    description: The name of this plugin, to mark the file as its configuration.
    required: true
    type: str
    choices: [portico.gateway.k8s_services]
  kubeconfig:
    env:
      - name: PORTICO_K8S_KUBECONFIG
  context:
    env:
      - name: PORTICO_K8S_CONTEXT
  host:
    env:
      - name: PORTICO_K8S_HOST
  api_key:
    env:
      - name: PORTICO_K8S_API_KEY
  validate_certs:
    env:
      - name: PORTICO_K8S_VALIDATE_CERTS
  ca_cert:
    env:
      - name: PORTICO_K8S_CA_CERT
  cluster_name:
    description:
      - Name of the single cluster described by the top-level connection options, used when
        O(clusters) is not set. It prefixes every LB name (C(<cluster>/<namespace>/<service>)) and
        seeds address allocation, so keep it stable.
      - Defaults to O(context), else the kubeconfig's current context, else C(default).
    type: str
    env:
      - name: PORTICO_K8S_CLUSTER
  clusters:
    description:
      - Several clusters in one source. Each item has a C(name) (letters, digits, C(.), C(_), C(-))
        and any of the connection options C(kubeconfig), C(context), C(host), C(api_key),
        C(validate_certs), C(ca_cert); options an item leaves out come from the top level.
    type: list
    elements: dict
    default: []
  namespaces:
    description: Only these namespaces (all when empty).
    type: list
    elements: str
    default: []
    env:
      - name: PORTICO_K8S_NAMESPACES
  exclude_namespaces:
    description: Namespaces never served.
    type: list
    elements: str
    default: []
    env:
      - name: PORTICO_K8S_EXCLUDE_NAMESPACES
  load_balancer_class:
    description: The C(spec.loadBalancerClass) Portico answers to.
    type: str
    default: portico.io/gateway
    env:
      - name: PORTICO_K8S_LOAD_BALANCER_CLASS
  serve_default_class:
    description: Also serve LoadBalancer Services that set no C(loadBalancerClass).
    type: bool
    default: false
    env:
      - name: PORTICO_K8S_SERVE_DEFAULT_CLASS
  serve_without_endpoints:
    description:
      - A Service without a ready endpoint always keeps (or gets) its address, as cloud load
        balancers and MetalLB do; its LB has no backends, so the gateways refuse connections to it
        and announce nothing until a pod is ready, and it gets the same address back.
      - When true, a nodeport-mode Service without a ready endpoint Portico can see is sent to the
        nodes anyway, and their health checks and kube-proxy decide (for endpoints Portico cannot
        list). Direct mode has nothing to send to either way.
    type: bool
    default: false
    env:
      - name: PORTICO_K8S_SERVE_WITHOUT_ENDPOINTS
  backend_mode:
    description:
      - How gateways reach a Service, unless its C(portico.io/backend-mode) annotation says otherwise.
      - C(nodeport) sends to Ready Nodes' InternalIP and the nodePort; C(direct) sends to ready pod
        endpoints (the gateways route pod CIDRs to nodes). Services with
        C(allocateLoadBalancerNodePorts=false) always use C(direct).
    type: str
    choices: [nodeport, direct]
    default: nodeport
    env:
      - name: PORTICO_K8S_BACKEND_MODE
  node_health_check:
    description:
      - How the gateways check the nodes of a nodeport Service with C(externalTrafficPolicy=Cluster)
        (C(Local) ones always use their C(healthCheckNodePort)), unless its C(portico.io/health-check-*)
        annotations say otherwise.
      - C(node_port) connects to the Service's own first TCP nodePort (one check per Service and node;
        none for UDP-only Services). C(kube_proxy) asks kube-proxy's node health, HTTP
        C(:10256/healthz) (KEP-3836, as cloud load balancers do) - one check per node, the same for
        every Service, which fails while the node is being drained or deleted.
    type: str
    choices: [node_port, kube_proxy]
    default: node_port
    env:
      - name: PORTICO_K8S_NODE_HEALTH_CHECK
  gateway_group:
    description: The inventory group that receives the variables; compose and groups apply to its hosts.
    type: str
    default: gateways
    env:
      - name: PORTICO_GATEWAY_GROUP
  request_timeout:
    description: Seconds to wait for each API request.
    type: float
    default: 30
    env:
      - name: PORTICO_K8S_REQUEST_TIMEOUT
  page_size:
    description: Items per list request (the API's C(limit)/C(continue) paging).
    type: int
    default: 500
  state_dir:
    description:
      - A directory where the source keeps what it read last (each served Service's entry and a
        digest of what its translation read), so that a focused run (O(changed), not O(full))
        translates only the Services that changed and reuses the others' entries. The Services
        are still listed every run (their status, finalizers and deletion are always current),
        their EndpointSlices only for the Services translated again. C(bin/portico-watch) sets it
        to its state directory. Unset, every run reads and translates everything.
    type: path
    env:
      - name: PORTICO_K8S_STATE_DIR
  kinds:
    description:
      - The kinds of objects served - C(Service) (LoadBalancer Services), C(LoadBalancer)
        (Portico's C(loadbalancers.portico.io) resources) and C(Gateway) (the Gateway API -
        GatewayClasses, Gateways, TCPRoutes and UDPRoutes).
    type: list
    elements: str
    choices: [Service, LoadBalancer, Gateway]
    default: [Service, LoadBalancer, Gateway]
    env:
      - name: PORTICO_K8S_KINDS
  changed:
    description:
      - The keys (C(cluster/namespace/name), C(cluster/namespace/LoadBalancer/name) for a LoadBalancer
        resource) of the objects that changed since the last run, as a JSON list, as C(bin/portico-watch)
        and the EDA rulebook pass them. A Node key (C(cluster//node)) or a Gateway API object's
        (C(cluster//Kind/namespace/name)) makes the run a full one.
    type: str
    env:
      - name: PORTICO_CHANGED
  full:
    description: Read everything, whatever O(changed) says (the watcher's full runs set C(PORTICO_FULL=1)).
    type: bool
    default: true
    env:
      - name: PORTICO_FULL
"""

EXAMPLES = r"""
# inventories/prod/k8s_services.yml
plugin: portico.gateway.k8s_services
clusters:
  - {name: prod-a, kubeconfig: ~/.kube/prod-a.yaml}
  - {name: prod-b, kubeconfig: ~/.kube/prod-b.yaml, context: portico}
exclude_namespaces: [kube-system]
cache: true
cache_plugin: ansible.builtin.jsonfile
cache_connection: /var/cache/portico/inventory
keyed_groups:
  - key: (portico_k8s_services | from_json).services | map(attribute='cluster') | unique
    prefix: serves
"""

import dataclasses
import hashlib
import json
from typing import Any

from ansible.errors import AnsibleParserError
from ansible.plugins.inventory import BaseInventoryPlugin, Cacheable, Constructable
from ansible.utils.vars import combine_vars

from ansible_collections.portico.gateway.plugins.module_utils.k8s.client import ApiError, K8sConfigError, api_client, list_items
from ansible_collections.portico.gateway.plugins.module_utils.k8s.gateway_api import (
    ROUTE_VERSIONS,
    GatewayApiEntries,
    GatewayApiObjects,
    gateway_api_entries,
)
from ansible_collections.portico.gateway.plugins.module_utils.k8s.kinds import (
    GATEWAY,
    GATEWAY_CLASS,
    REFERENCE_GRANT,
    SERVICE,
    TCPROUTE,
    UDPROUTE,
    Kind,
)
from ansible_collections.portico.gateway.plugins.module_utils.k8s.resources import resource_kinds
from ansible_collections.portico.gateway.plugins.module_utils.k8s.sources import (
    SOURCE_OPTIONS,
    ClusterConfig,
    SourceError,
    parse_source,
)
from ansible_collections.portico.gateway.plugins.module_utils.k8s.snapshot import (
    ClusterSnapshot,
    Snapshot,
    focus_of,
    load,
    nodes_digest,
    save,
    snapshot_path,
)
from ansible_collections.portico.gateway.plugins.module_utils.k8s.translate import (
    SERVICE_NAME_LABEL,
    SKIP_REASONS,
    TranslateOptions,
    Translation,
    node_entries,
    scope_of,
    service_digest,
    translate_services,
)
from ansible_collections.portico.gateway.plugins.module_utils.model.documents import (
    SERVICES_FORMAT,
    BackendSetPacker,
    encode,
    entry_key,
    set_id,
)

SERVICES_VAR = "portico_k8s_services"
NODES_VAR = "portico_k8s_nodes"
# How to reach each cluster again for the status write-back (never the bearer token).
CLUSTERS_VAR = "portico_k8s_clusters"
# Set instead of SERVICES_VAR when a cluster cannot be read: one line, what validate.yml stops with.
ERROR_VAR = "portico_k8s_error"
# Cached data of another format (entries as a list, not a document) is fetched again.
_CACHE_FORMAT = 4
HTTP_NOT_FOUND = 404
# ReferenceGrant is v1 in recent Gateway API releases, v1beta1 in older ones.
REFERENCE_GRANT_VERSIONS = ("v1", "v1beta1")


class _Unreadable(Exception):
    """A cluster that cannot be read; the message names it and what failed."""


# A focused run that must translate more Services than this lists their EndpointSlices at once.
_SLICES_ONE_BY_ONE = 50


class InventoryModule(BaseInventoryPlugin, Constructable, Cacheable):
    NAME = "portico.gateway.k8s_services"

    def verify_file(self, path: str) -> bool:
        return super().verify_file(path) and path.endswith(("k8s_services.yml", "k8s_services.yaml"))

    def parse(self, inventory: Any, loader: Any, path: str, cache: bool = True) -> None:
        super().parse(inventory, loader, path, cache)
        self._read_config_data(path)
        clusters = self._clusters()
        data = self._cached_or_fetched(path, cache, clusters)
        self._populate(data, clusters)

    # --- configuration -----------------------------------------------------------

    def _clusters(self) -> list[ClusterConfig]:
        """The source's clusters, read by the parser the watcher uses too."""
        try:
            return parse_source({name: self.get_option(name) for name in SOURCE_OPTIONS})
        except SourceError as err:
            raise AnsibleParserError(str(err)) from None

    def _fingerprint(self, clusters: list[ClusterConfig]) -> str:
        """Cached data is only reused for the same clusters and translation options."""
        options = [dataclasses.asdict(c.options) for c in clusters]
        auth = [(c.name, c.auth.kubeconfig, c.auth.context, c.auth.host) for c in clusters]
        text = json.dumps([_CACHE_FORMAT, options, auth], sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()

    # --- data --------------------------------------------------------------------

    def _cached_or_fetched(self, path: str, cache: bool, clusters: list[ClusterConfig]) -> dict[str, Any]:
        use_cache = bool(self.get_option("cache"))
        key = self.get_cache_key(path)
        fingerprint = self._fingerprint(clusters)
        if use_cache and cache:
            try:
                cached = self._cache[key]
            except KeyError:
                cached = None
            if isinstance(cached, dict) and cached.get("fingerprint") == fingerprint:
                return cached
        try:
            data = {"fingerprint": fingerprint, **self._fetch(clusters, path, fingerprint)}
        except _Unreadable as err:
            return {"error": str(err)}  # never cached: the next run asks the cluster again
        if use_cache:
            self._cache[key] = data
        return data

    def _fetch(self, clusters: list[ClusterConfig], path: str, fingerprint: str) -> dict[str, Any]:
        state_dir = self.get_option("state_dir")
        store = snapshot_path(state_dir, path) if state_dir else None
        focus = focus_of(self.get_option("changed"), bool(self.get_option("full")))
        prior = load(store, fingerprint) if store and focus is not None else None
        fresh = Snapshot(fingerprint)
        packer = BackendSetPacker()
        services: list[dict[str, Any]] = []
        nodes: list[dict[str, Any]] = []
        for cluster in clusters:
            result, node_list, digest = self._read_cluster(cluster, prior.clusters.get(cluster.name) if prior else None, focus)
            others = self._read_resources(cluster)
            gateway_api = self._read_gateway_api(cluster, node_list)
            self._summary(cluster.name, [(SERVICE, result), *others], _gateway_api_summary(cluster, gateway_api))
            if gateway_api is not None:
                others.append((GATEWAY, gateway_api.translation))
            kept = ClusterSnapshot(digest)
            for entry in result.entries:
                entry["loadbalancers"] = packer.pack_loadbalancers(entry["loadbalancers"])
                key = entry_key(entry)
                if key in result.digests:
                    kept.entries[key] = (result.digests[key], entry)
            fresh.clusters[cluster.name] = kept
            services.extend(result.entries)
            services.extend(entry for _kind, translation in others if translation for entry in translation.entries)
            nodes.extend(node_entries(node_list, cluster.name))
        services.sort(key=lambda entry: (entry["cluster"], entry["namespace"], entry["name"], entry.get("kind") or ""))
        known = {**(prior.backend_sets if prior else {}), **packer.sets}
        referenced = {set_id(lb.get("backends")) for entry in services for lb in entry["loadbalancers"]}
        fresh.backend_sets = {ident: known[ident] for ident in sorted(referenced - {None}) if ident in known}
        if store:
            save(store, fresh)
        # Text: plain data that carries no template trust, and one value for Ansible to hold.
        document = encode(SERVICES_FORMAT, services, fresh.backend_sets)
        return {"services": document, "nodes": json.loads(json.dumps(nodes))}

    def _summary(self, cluster: str, results: list[tuple[Kind, Translation | None]], extra: list[str]) -> None:
        """One line per cluster: per kind, what is served, released and skipped, and why."""
        parts = []
        for kind, result in results:
            if kind.kind not in self._kinds:
                continue
            if result is None:
                parts.append(f"no {kind.plural}.{kind.group} in the API (CRD not installed)")
                continue
            releasing = sum(1 for entry in result.entries if entry.get("release"))
            parts.append(f"{len(result.entries) - releasing} {kind.label}s to serve")
            if releasing:
                parts.append(f"{releasing} to release")
            if result.skipped:
                parts.append("skipped " + ", ".join(f"{count} {SKIP_REASONS[reason]}" for reason, count in sorted(result.skipped.items())))
            if result.translated < len(result.digests):
                parts.append(f"{result.translated} translated, {len(result.digests) - result.translated} reused")
        parts.extend(extra)
        self.display.display(f"k8s_services: cluster {cluster}: {'; '.join(parts)}", stderr=True)

    def _read_resources(self, cluster: ClusterConfig) -> list[tuple[Kind, Translation | None]]:
        """The entries of the kinds besides Services (``k8s.resources``), each translated whole;
        None for a kind the API does not serve (its CRD is not installed: it has no objects)."""
        results: list[tuple[Kind, Translation | None]] = []
        for resource in resource_kinds(cluster.options):
            try:
                objects = self._list(api_client(cluster.auth), cluster.options, resource.kind.collection_path(),
                                     resource.kind.collection_path("{}"))
            except K8sConfigError as err:
                raise _Unreadable(_cluster_error(cluster, err)) from None
            except ApiError as err:
                if err.status == HTTP_NOT_FOUND:
                    results.append((resource.kind, None))
                    continue
                raise _Unreadable(_cluster_error(cluster, err, f"listing {resource.kind.label}s failed")) from None
            results.append((resource.kind, resource.translate(objects, cluster.options)))
        return results

    def _list_versions(self, client: Any, options: TranslateOptions, kind: Kind, versions: tuple[str, ...],
                       namespaced: bool = True) -> tuple[str | None, list[dict[str, Any]]]:
        """A kind's objects at the first of ``versions`` the API serves, and that version; (None, [])
        when it serves none (its CRD is not installed)."""
        for version in versions:
            served = dataclasses.replace(kind, version=version)
            try:
                if namespaced:
                    return version, self._list(client, options, served.collection_path(), served.collection_path("{}"))
                page, timeout = self.get_option("page_size"), self.get_option("request_timeout")
                return version, list_items(client, served.collection_path(), page_size=page, timeout=timeout)[0]
            except ApiError as err:
                if err.status != HTTP_NOT_FOUND:
                    raise
        return None, []

    def _read_gateway_api(self, cluster: ClusterConfig, nodes: list[dict[str, Any]]) -> GatewayApiEntries | None:
        """The entries of the Gateway API objects (``k8s.gateway_api``); None when the cluster does
        not serve the Gateway API (no GatewayClass CRD) or the source does not serve it. A route
        kind is read at v1 where the cluster serves it, else at v1alpha2."""
        if GATEWAY.kind not in cluster.options.kinds:
            return None
        options = cluster.options
        page, timeout = self.get_option("page_size"), self.get_option("request_timeout")
        try:
            client = api_client(cluster.auth)
            version, classes = self._list_versions(client, options, GATEWAY_CLASS, (GATEWAY_CLASS.version,), namespaced=False)
            if version is None:
                return None
            _version, gateways = self._list_versions(client, options, GATEWAY, (GATEWAY.version,))
            tcp_version, tcp_routes = self._list_versions(client, options, TCPROUTE, ROUTE_VERSIONS)
            udp_version, udp_routes = self._list_versions(client, options, UDPROUTE, ROUTE_VERSIONS)
            _version, grants = self._list_versions(client, options, REFERENCE_GRANT, REFERENCE_GRANT_VERSIONS)
            services: list[dict[str, Any]] = []
            slices: list[dict[str, Any]] = []
            namespaces: list[dict[str, Any]] = []
            if gateways and (tcp_routes or udp_routes):
                services = self._list(client, options, "/api/v1/services", "/api/v1/namespaces/{}/services")
                slices = self._list(client, options, "/apis/discovery.k8s.io/v1/endpointslices",
                                    "/apis/discovery.k8s.io/v1/namespaces/{}/endpointslices", labelSelector=SERVICE_NAME_LABEL)
                namespaces = list_items(client, "/api/v1/namespaces", page_size=page, timeout=timeout)[0]
            if not nodes and gateways:
                nodes = list_items(client, "/api/v1/nodes", page_size=page, timeout=timeout)[0]
        except K8sConfigError as err:
            raise _Unreadable(_cluster_error(cluster, err)) from None
        except ApiError as err:
            raise _Unreadable(_cluster_error(cluster, err, "listing the Gateway API objects failed")) from None
        objects = GatewayApiObjects(gateway_classes=classes, gateways=gateways, tcp_routes=tcp_routes, udp_routes=udp_routes,
                                    reference_grants=grants, services=services, endpoint_slices=slices, namespaces=namespaces,
                                    nodes=nodes)
        versions = {TCPROUTE.kind: tcp_version or ROUTE_VERSIONS[0], UDPROUTE.kind: udp_version or ROUTE_VERSIONS[0]}
        return gateway_api_entries(objects, options, versions)

    @property
    def _kinds(self) -> tuple[str, ...]:
        return tuple(self.get_option("kinds") or ())

    def _read_cluster(self, cluster: ClusterConfig, prior: ClusterSnapshot | None,
                      focus: frozenset[str] | None) -> tuple[Translation, list[dict[str, Any]], str]:
        """One cluster's Service entries: everything translated, or, on a focused run with a snapshot
        taken with the same Nodes, only what changed. Raw JSON lists (the API's own shape), paged."""
        page, timeout = self.get_option("page_size"), self.get_option("request_timeout")
        if SERVICE.kind not in cluster.options.kinds:
            return Translation(entries=[], digests={}, skipped={}), [], ""
        try:
            client = api_client(cluster.auth)
            services = self._list(client, cluster.options, "/api/v1/services", "/api/v1/namespaces/{}/services")
            node_list = list_items(client, "/api/v1/nodes", page_size=page, timeout=timeout)[0]
            digest = nodes_digest(node_entries(node_list, cluster.name))
            if prior is None or focus is None or prior.nodes_digest != digest:
                slices = self._list(client, cluster.options, "/apis/discovery.k8s.io/v1/endpointslices",
                                    "/apis/discovery.k8s.io/v1/namespaces/{}/endpointslices", labelSelector=SERVICE_NAME_LABEL)
                return translate_services(services, slices, node_list, cluster.options), node_list, digest
            changed = {key for key in focus if key.startswith(f"{cluster.name}/")}
            todo = _to_translate(services, cluster.options, prior, changed)
            if len(todo) > _SLICES_ONE_BY_ONE:
                slices = self._list(client, cluster.options, "/apis/discovery.k8s.io/v1/endpointslices",
                                    "/apis/discovery.k8s.io/v1/namespaces/{}/endpointslices", labelSelector=SERVICE_NAME_LABEL)
            else:
                slices = [s for namespace, name in sorted(todo) for s in list_items(
                    client, f"/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices", page_size=page, timeout=timeout,
                    labelSelector=f"{SERVICE_NAME_LABEL}={name}")[0]]
        except K8sConfigError as err:
            raise _Unreadable(_cluster_error(cluster, err)) from None
        except ApiError as err:
            raise _Unreadable(_cluster_error(cluster, err, "listing Services, EndpointSlices and Nodes failed")) from None
        return translate_services(services, slices, node_list, cluster.options, prior.entries, changed), node_list, digest

    def _list(self, client: Any, options: TranslateOptions, everywhere: str, per_namespace: str, **query: Any) -> list[dict[str, Any]]:
        """Every object of a kind, in the selected namespaces when the source names some (namespace
        and class filtering proper belong to the translation: one place)."""
        page, timeout = self.get_option("page_size"), self.get_option("request_timeout")
        if not options.namespaces:
            return list_items(client, everywhere, page_size=page, timeout=timeout, **query)[0]
        return [item for namespace in options.namespaces
                for item in list_items(client, per_namespace.format(namespace), page_size=page, timeout=timeout, **query)[0]]

    # --- inventory ---------------------------------------------------------------

    def _populate(self, data: dict[str, Any], clusters: list[ClusterConfig]) -> None:
        group = self.inventory.add_group(self.get_option("gateway_group"))
        if data.get("error"):
            self.inventory.set_variable(group, ERROR_VAR, data["error"])
        else:
            self.inventory.set_variable(group, SERVICES_VAR, data.get("services") or encode(SERVICES_FORMAT, []))
            self.inventory.set_variable(group, NODES_VAR, data.get("nodes") or [])
        self.inventory.set_variable(group, CLUSTERS_VAR, _connections(clusters))
        self._construct(group)

    def _construct(self, group: str) -> None:
        """compose / groups / keyed_groups on the gateway hosts (never adds hosts)."""
        strict = self.get_option("strict")
        group_vars = self.inventory.groups[group].get_vars()
        for host in self.inventory.groups[group].get_hosts():
            variables = combine_vars(group_vars, host.get_vars())
            self._set_composite_vars(self.get_option("compose"), variables, host.name, strict=strict)
            self._add_host_to_composed_groups(self.get_option("groups"), variables, host.name, strict=strict)
            self._add_host_to_keyed_groups(self.get_option("keyed_groups"), variables, host.name, strict=strict)


def _cluster_error(cluster: ClusterConfig, err: Exception, doing: str = "") -> str:
    """The one line a run stops with when a cluster cannot be read: which cluster, how it is
    reached, what failed."""
    how = cluster.auth.host or f"kubeconfig {cluster.auth.kubeconfig or '~/.kube/config'}"
    if cluster.auth.context:
        how += f", context {cluster.auth.context}"
    what = str(err) if isinstance(err, K8sConfigError) or getattr(err, "status", 0) == 0 else f"{doing}: {err}"
    return f"Kubernetes cluster {cluster.name} ({how}): {what}"


def _gateway_api_summary(cluster: ClusterConfig, result: GatewayApiEntries | None) -> list[str]:
    if GATEWAY.kind not in cluster.options.kinds:
        return []
    if result is None:
        return [f"no {GATEWAY_CLASS.plural}.{GATEWAY_CLASS.group} in the API (Gateway API CRDs not installed)"]
    releasing = sum(1 for entry in result.translation.entries if entry.get("release"))
    parts = [f"{result.gateways} Gateways to serve, {result.routes} routes attached"]
    if releasing:
        parts.append(f"{releasing} Gateways to release")
    if result.skipped_gateways:
        parts.append(f"skipped {result.skipped_gateways} Gateways of other classes or namespaces")
    return parts


def _to_translate(services: list[dict[str, Any]], options: TranslateOptions, prior: ClusterSnapshot,
                  changed: set[str]) -> set[tuple[str, str]]:
    """(namespace, name) of the served Services a focused run translates again: named as changed,
    new, or changed in what translation reads (a change the watcher may have missed)."""
    todo = set()
    for service in services:
        meta = service.get("metadata") or {}
        namespace, name = str(meta.get("namespace", "")), str(meta.get("name", ""))
        key = f"{options.cluster}/{namespace}/{name}"
        if scope_of(service, options).action != "serve":
            continue
        earlier = prior.entries.get(key)
        if key in changed or earlier is None or earlier[0] != service_digest(service):
            todo.add((namespace, name))
    return todo


def _connections(clusters: list[ClusterConfig]) -> dict[str, dict[str, Any]]:
    """How the status write-back reaches each cluster again (never the bearer token), and the
    class it marks the Services it claims with."""
    return {
        cluster.name: {"kubeconfig": cluster.auth.kubeconfig, "context": cluster.auth.context, "host": cluster.auth.host,
                       "load_balancer_class": cluster.options.load_balancer_class}
        for cluster in clusters
    }
