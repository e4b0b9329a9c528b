# Copyright: Portico developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""k8s_services.py: an ansible-rulebook event source plugin for Portico's on-demand reconcile.

Watches Services, EndpointSlices and Nodes and puts one debounced event per trigger on the
queue. The watching, filtering and debouncing live in the collection's module_utils
(k8s/watch.py), and the inventory source is read by k8s/sources.py, both shared with
bin/portico-watch and the inventory plugin.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import pathlib
import sys
import threading
from typing import Any

try:
    from ansible_collections.portico.gateway.plugins.module_utils.k8s import sources as k8s_sources
    from ansible_collections.portico.gateway.plugins.module_utils.k8s import watch as k8s_watch
except ImportError:
    # ansible-rulebook runs this file with runpy, outside Ansible's collection loader: import
    # the module_utils from the collection tree this file is part of.
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[7]))
    from ansible_collections.portico.gateway.plugins.module_utils.k8s import sources as k8s_sources
    from ansible_collections.portico.gateway.plugins.module_utils.k8s import watch as k8s_watch

DOCUMENTATION = r"""
---
short_description: Debounced events when the Kubernetes Services Portico serves change.
description:
  - An ansible-rulebook event source plugin. It lists and watches Services, EndpointSlices
    (C(discovery.k8s.io/v1)) and Nodes of the clusters of a C(portico.gateway.k8s_services)
    inventory source and puts an event on the queue when something Portico serves changed.
  - Only changes Portico acts on count - Services of type LoadBalancer with Portico's
    C(loadBalancerClass) (and ones that stop being that or are deleted), the EndpointSlices of
    those Services, Node readiness, exclusion label, InternalIPs and pod CIDRs. Status-only
    writes (Portico's own C(status.loadBalancer) write-back) and other no-op updates are dropped.
  - Changes are collected and sent as one event once no change came for O(quiet_ms), at most
    O(max_wait_ms) after the first. An event with C(full=true) is sent at start (unless
    O(initial_full=false)) and every O(resync_s) seconds as a safety net.
  - "Event: C({portico: {changed: [keys], reason: str, full: bool, reasons: {key: [str]}, trigger: int}}).
    A key is C(cluster/namespace/service), or C(cluster//node) for a Node (every nodeport
    Service of that cluster). Namespaces and names are checked against the API's naming rules,
    so keys are plain text that templating cannot act on."
  - ansible-rulebook runs the actions of a ruleset one after the other, so runs never overlap;
    retry failed runs with the C(retries) and C(delay) of C(run_playbook).
options:
  inventory_source:
    description:
      - A C(portico.gateway.k8s_services) inventory source file; its C(clusters), connection
        options, C(namespaces), C(exclude_namespaces), C(load_balancer_class),
        C(serve_default_class), C(serve_without_endpoints), C(backend_mode) and C(node_health_check) are used, read as
        the inventory plugin reads them (its C(PORTICO_K8S_*) environment variables included).
        Options given here override the file's.
    type: path
  kubeconfig:
    description: Path to a kubeconfig file (for a single cluster without O(clusters)).
    type: path
  context:
    description: The kubeconfig context.
    type: str
  host:
    description: API server URL, instead of a kubeconfig.
    type: str
  api_key:
    description: Bearer token, with O(host).
    type: str
  validate_certs:
    description: Verify the API server's certificate, with O(host).
    type: bool
    default: true
  ca_cert:
    description: CA bundle for the API server's certificate, with O(host).
    type: path
  cluster_name:
    description: Name of the single cluster in keys; defaults to the context as in the inventory plugin.
    type: str
  clusters:
    description: Several clusters, each with a C(name) and connection options (as in the inventory plugin).
    type: list
    elements: dict
  namespaces:
    description: Only these namespaces (all when empty).
    type: list
    elements: str
  exclude_namespaces:
    description: Namespaces never served.
    type: list
    elements: str
  load_balancer_class:
    description: The C(spec.loadBalancerClass) Portico answers to.
    type: str
    default: portico.io/gateway
  serve_default_class:
    description: Also LoadBalancer Services without a C(loadBalancerClass).
    type: bool
    default: false
  serve_without_endpoints:
    description: Send a nodeport Service without a ready endpoint to the nodes anyway (as in the inventory plugin).
    type: bool
    default: false
  node_health_check:
    description: How the nodes of a nodeport Service with externalTrafficPolicy Cluster are checked (as in the inventory plugin).
    type: str
    choices: [node_port, kube_proxy]
    default: node_port
  backend_mode:
    description: How gateways reach a Service without a C(portico.io/backend-mode) annotation (as in the inventory plugin).
    type: str
    choices: [nodeport, direct]
    default: nodeport
  quiet_ms:
    description: Send once no change came for this many milliseconds.
    type: int
    default: 300
  max_wait_ms:
    description: Send at the latest this many milliseconds after the first pending change.
    type: int
    default: 2000
  resync_s:
    description: Send a full event at least this often, in seconds (0 - never).
    type: int
    default: 300
  initial_full:
    description: Send a full event at start (changes made while nothing watched).
    type: bool
    default: true
requirements:
  - kubernetes (the official Python client)
  - PyYAML, with O(inventory_source)
"""

EXAMPLES = r"""
- name: Reconcile Portico on Kubernetes changes
  hosts: all
  sources:
    - portico.gateway.k8s_services:
        inventory_source: inventories/lab/k8s_services.yml
        quiet_ms: 300
        max_wait_ms: 2000
  rules:
    - name: Apply what changed
      condition: event.portico is defined
      action:
        run_playbook:
          name: playbooks/sync.yml
"""


def _truthy(value: Any) -> bool:
    # Rulebook variables may arrive as strings.
    return str(value).strip().lower() in ("1", "true", "yes", "on") if isinstance(value, str) else bool(value)


def clusters_of(args: dict[str, Any]) -> list[k8s_sources.ClusterConfig]:
    """The inventory source file's clusters, its options overridden by the plugin's arguments."""
    given: dict[str, Any] = {}
    path = ""
    if args.get("inventory_source"):
        path = str(pathlib.Path(str(args["inventory_source"])).expanduser())
        given = k8s_sources.read_source_file(path)
    given.update({key: value for key, value in args.items() if key in k8s_sources.SOURCE_OPTIONS and value is not None})
    return k8s_sources.parse_source(k8s_sources.resolve_options(given, subject=path), path)


def settings(args: dict[str, Any]) -> k8s_watch.DebounceSettings:
    return k8s_watch.DebounceSettings(
        quiet=float(args.get("quiet_ms", 300)) / 1000,
        max_wait=float(args.get("max_wait_ms", 2000)) / 1000,
        resync=float(args.get("resync_s", 300)),
    )


def _settle(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)


async def main(queue: asyncio.Queue[Any], args: dict[str, Any]) -> None:
    """Watch the clusters and put one event per debounced trigger on the queue until cancelled."""
    loop = asyncio.get_running_loop()
    clusters = clusters_of(args)
    stopped = threading.Event()

    def deliver(batch: k8s_watch.Batch) -> k8s_watch.Outcome:
        # Called in the watcher's thread: hand the event to the loop and wait until queued.
        future = asyncio.run_coroutine_threadsafe(queue.put(k8s_watch.eda_event(batch)), loop)
        while not stopped.is_set():
            try:
                future.result(timeout=1.0)
                return k8s_watch.Outcome(True, "queued")
            except concurrent.futures.TimeoutError:
                continue  # a bounded queue is full: rulebook back pressure
        future.cancel()
        return k8s_watch.Outcome(False, "stopped")

    reconciler = k8s_watch.Reconciler(clusters, deliver, settings(args), initial_full=_truthy(args.get("initial_full", True)))
    done: asyncio.Future[None] = loop.create_future()

    def work() -> None:
        error: BaseException | None = None
        try:
            reconciler.run_forever()
        except BaseException as err:  # pylint: disable=broad-except  # reported through the future
            error = err
        try:
            loop.call_soon_threadsafe(_settle, done, error)
        except RuntimeError:
            pass  # the loop is already closed: nobody waits any more

    thread = threading.Thread(target=work, name="portico-k8s-watch", daemon=True)
    thread.start()
    try:
        await done  # the watcher's own error, if it fails to start (e.g. no kubeconfig)
    finally:
        stopped.set()
        reconciler.stop()


if __name__ == "__main__":
    # Try it by hand: python k8s_services.py '{"kubeconfig": "/run/portico-lab/kubeconfig"}'
    import json

    class MockQueue(asyncio.Queue[Any]):
        """Prints the events."""

        async def put(self, item: Any) -> None:
            print(json.dumps(item), flush=True)  # noqa: T201

    asyncio.run(main(MockQueue(), json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}))
