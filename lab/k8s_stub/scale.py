"""How the API stand-in holds up at a real cluster's size, through the official client:

    python -m lab.k8s_stub.scale [--services 10000] [--nodes 50] [--patches 5000] [--threads 8]

Loads NODES Nodes, SERVICES LoadBalancer Services (1-3 ports; a tenth externalTrafficPolicy
Local, a tenth without node ports) and one EndpointSlice each (1-3 ready pods on any node) into
a stand-in started as `python -m lab.k8s_stub` (its own process, so client and server do not
share an interpreter), then measures: full and paged (limit=500) lists of Services and
EndpointSlices (client time, and server time: the raw response, no decoding), status patches
sequential and from THREADS threads, and the server's resident memory. Ratios compare each
against a baseline measured in the same run: reading one Service.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import pathlib
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from kubernetes import client, config

REPO = pathlib.Path(__file__).resolve().parents[2]
Obj = dict[str, Any]


def cluster(services: int, nodes: int, seed: int = 7) -> list[Obj]:
    rng = random.Random(seed)
    namespaces = [f"team-{i}" for i in range(20)]
    objects: list[Obj] = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}} for ns in namespaces]
    for n in range(nodes):
        objects.append({"apiVersion": "v1", "kind": "Node", "metadata": {"name": f"node{n}", "labels": {"kubernetes.io/os": "linux"}},
                        "spec": {"podCIDR": f"198.19.{n}.0/24", "podCIDRs": [f"198.19.{n}.0/24"]},
                        "status": {"addresses": [{"type": "InternalIP", "address": f"192.0.2.{n + 10}"}],
                                   "conditions": [{"type": "Ready", "status": "True"}]}})
    for s in range(services):
        ns, name = namespaces[s % len(namespaces)], f"svc-{s}"
        ports = [{"name": f"p{p}", "port": 80 + p, "targetPort": 8080 + p, "protocol": "TCP"} for p in range(rng.randint(1, 3))]
        spec: Obj = {"type": "LoadBalancer", "loadBalancerClass": "portico.io/gateway", "selector": {"app": name}, "ports": ports}
        if s % 10 == 1:
            spec["externalTrafficPolicy"] = "Local"
        if s % 10 == 2:
            spec["allocateLoadBalancerNodePorts"] = False
        objects.append({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns, "labels": {"app": name}},
                        "spec": spec})
        pods = [rng.randrange(nodes) for _ in range(rng.randint(1, 3))]
        objects.append({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
                        "metadata": {"name": f"{name}-abcde", "namespace": ns, "labels": {"kubernetes.io/service-name": name}},
                        "endpoints": [{"addresses": [f"198.19.{n}.{10 + i}"], "nodeName": f"node{n}",
                                       "conditions": {"ready": True, "serving": True, "terminating": False}}
                                      for i, n in enumerate(pods)],
                        "ports": [{"name": p["name"], "port": p["targetPort"], "protocol": "TCP"} for p in ports]})
    return objects


def timed(fn: Callable[[], Any], repeat: int = 3) -> float:
    """Best of `repeat` runs, in seconds (the machine is shared: the least disturbed run)."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def raw_get(port: int, path: str) -> bytes:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("GET", path, headers={"Accept": "application/json"})
    body = conn.getresponse().read()
    conn.close()
    return body


def rss_mib(pid: int) -> float:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start_server(fixtures: pathlib.Path, kubeconfig: pathlib.Path) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen([sys.executable, "-m", "lab.k8s_stub", "--port", "0", "--fixtures", str(fixtures),
                             "--kubeconfig", str(kubeconfig), "--service-node-port-range", "20000-60000", "--history", "10000"],
                            cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "listening on" not in line:
        proc.kill()
        raise SystemExit(f"stand-in did not start: {line!r}")
    return proc, int(line.rsplit(":", 1)[1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--services", type=int, default=10000)
    parser.add_argument("--nodes", type=int, default=50)
    parser.add_argument("--patches", type=int, default=5000)
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        fixtures, kubeconfig = pathlib.Path(tmp, "cluster.json"), pathlib.Path(tmp, "kubeconfig")
        fixtures.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": cluster(args.services, args.nodes)}))
        began = time.perf_counter()
        proc, port = start_server(fixtures, kubeconfig)
        load = time.perf_counter() - began
        try:
            return measure(args, port, proc.pid, kubeconfig, load)
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def measure(args: argparse.Namespace, port: int, pid: int, kubeconfig: pathlib.Path, load: float) -> int:
    api_client = config.new_client_from_config(str(kubeconfig))
    api_client.configuration.connection_pool_maxsize = args.threads + 2
    core, discovery = client.CoreV1Api(api_client), client.DiscoveryV1Api(api_client)
    services = core.list_service_for_all_namespaces().items
    baseline = timed(lambda: core.read_namespaced_service(services[0].metadata.name, services[0].metadata.namespace), 20)
    results: dict[str, float] = {"load (fixtures, s)": load, "server RSS after load (MiB)": rss_mib(pid),
                                 "baseline: read one Service (ms)": baseline * 1000}

    def paged(fetch: Callable[..., Any]) -> int:
        total, token = 0, None
        while True:
            page = fetch(limit=500, _continue=token)
            total += len(page.items)
            token = page.metadata._continue
            if not token:
                return total

    checks = [("list Services", core.list_service_for_all_namespaces, "/api/v1/services"),
              ("list EndpointSlices", discovery.list_endpoint_slice_for_all_namespaces, "/apis/discovery.k8s.io/v1/endpointslices"),
              ("list Services paged", lambda: paged(core.list_service_for_all_namespaces), None),
              ("list Nodes", core.list_node, "/api/v1/nodes")]
    for label, fetch, path in checks:
        results[f"{label}: client (s)"] = timed(fetch, 2)
        if path:
            results[f"{label}: server (s)"] = timed(lambda p=path: raw_get(port, p), 3)
    targets = [(s.metadata.namespace, s.metadata.name) for s in services]
    statuses = [{"status": {"loadBalancer": {"ingress": [{"ip": f"198.51.100.{i % 250}", "ipMode": "VIP"}]}}} for i in range(args.patches)]

    def patch(index: int) -> float:
        ns, name = targets[index % len(targets)]
        start = time.perf_counter()
        core.patch_namespaced_service_status(name, ns, statuses[index], _content_type="application/merge-patch+json")
        return time.perf_counter() - start

    start = time.perf_counter()
    sequential = [patch(i) for i in range(args.patches)]
    results["status patches sequential (s)"] = time.perf_counter() - start
    results["status patch p50 sequential (ms)"] = statistics.median(sequential) * 1000
    start = time.perf_counter()
    with ThreadPoolExecutor(args.threads) as pool:
        parallel = list(pool.map(patch, range(args.patches)))
    results[f"status patches {args.threads} threads (s)"] = time.perf_counter() - start
    results[f"status patch p50 {args.threads} threads (ms)"] = statistics.median(parallel) * 1000
    results["server RSS after the patches (MiB)"] = rss_mib(pid)  # the watch history holds 10000 events
    width = max(len(k) for k in results)
    print(f"{args.services} Services, {args.services} EndpointSlices, {args.nodes} Nodes; threads={threading.active_count()}; "
          f"cpus={os.cpu_count()}")
    for key, value in results.items():
        print(f"  {key:<{width}}  {value:10.3f}")
    read = results["baseline: read one Service (ms)"]
    ratios = {"ratio: status patch p50 / read one Service": results["status patch p50 sequential (ms)"] / read,
              "ratio: list all Services (server) / read one": results["list Services: server (s)"] * 1000 / read}
    for key, value in ratios.items():
        print(f"  {key:<{width}}  {value:10.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
