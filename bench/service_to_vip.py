#!/usr/bin/env python3
"""Seconds from a Kubernetes change to the gateway acting on it, with bin/portico-watch running.

Needs the lab (`make lab`): the Kubernetes API stand-in, gw1 and the lab client. Per trial:
  service   create a LoadBalancer Service (+ its EndpointSlice) asking for a VIP, then time until
            the lab client gets an answer through that VIP;
  scale     add a pod to a direct-mode Service's EndpointSlice (a deployment scaled up), then
            time until the pod is in gw1's backend table;
  loadbalancer (with --loadbalancer) `kubectl apply -f` a LoadBalancer resource (portico.io,
            backends node1 and node2) asking for a VIP, then time until the lab client gets an
            answer through that VIP: the same path as `service`, from the command a user runs.
Baseline, measured in the same run: one full converge (`ansible-playbook playbooks/site.yml`),
the least a pipeline or timer-only setup needs to pick the same change up. Prints p50/p99 and
the ratio p50 / baseline; exits non-zero only when a trial never completes.

    python3 bench/service_to_vip.py [--trials 7] [--timeout 60] [--loadbalancer] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

from kubernetes import client, config

REPO = pathlib.Path(__file__).resolve().parents[1]
KUBECONFIG = "/run/portico-lab/kubeconfig"
PREFIX = "portico-lab-"
NAMESPACE = "default"
# DESIGN.md lab plan: the public pool 198.51.100.0/25; .60-.99 are free in the lab inventory.
VIP_BASE = 60
SCALE_VIP = "198.51.100.99"
LB_VIP_BASE = 80  # LoadBalancer resources take .80 on, after the Services' .60 on
LB_BACKENDS = ["192.0.2.11", "192.0.2.12"]
LB_KIND = "LoadBalancer"
POD_ADDRESSES = ["198.19.1.10", "198.19.2.10", "198.19.3.10"]


def env() -> dict[str, str]:
    return {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "PYTHONPATH": str(REPO / "collections"),
            "CONTAINERS_CONF": str(REPO / "lab/containers.conf"), "ANSIBLE_NOCOLOR": "1"}


def exec_in(container: str, script: str, timeout: float) -> str:
    proc = subprocess.run(["podman", "exec", PREFIX + container, "sh", "-c", script], capture_output=True, text=True,
                          check=False, timeout=timeout + 10)
    return proc.stdout.strip()


def wait_until_answers(vip: str, timeout: float) -> float | None:
    """Epoch of the client's first successful TCP exchange through the VIP (polled every 50 ms)."""
    script = ("import socket,time,sys\n"
              f"end=time.time()+{timeout}\n"
              "while time.time()<end:\n"
              " try:\n"
              f"  s=socket.create_connection(('{vip}',80),timeout=0.2); s.sendall(b'hi\\n')\n"
              "  if s.recv(64): print(time.time()); sys.exit(0)\n"
              " except OSError: pass\n"
              " time.sleep(0.05)\n")
    out = exec_in("client", f"python3 -c \"{script}\"", timeout)
    return float(out) if out else None


def wait_until_in_table(address: str, timeout: float, present: bool = True) -> float | None:
    """Epoch at which ``address`` is in (or, with present=False, gone from) gw1's table."""
    negate = "" if present else "! "
    script = (f"end=$(( $(date +%s) + {int(timeout)} )); "
              f"while [ $(date +%s) -lt $end ]; do if {negate}nft list table inet portico | grep -qw '{address}'; then "
              "date +%s.%N; exit 0; fi; sleep 0.05; done")
    out = exec_in("gw1", script, timeout)
    return float(out) if out else None


def service(name: str, vip: str, node_port: int, direct: bool) -> dict[str, Any]:
    annotations = {"portico.io/loadBalancerIPs": vip}
    if direct:
        annotations["portico.io/backend-mode"] = "direct"
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": NAMESPACE, "labels": {"app": "echo", "portico-bench": "1"},
                         "annotations": annotations},
            "spec": {"type": "LoadBalancer", "loadBalancerClass": "portico.io/gateway", "selector": {"app": "echo"},
                     "ports": [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080,
                                "nodePort": node_port}]}}


def endpoint_slice(name: str, pods: list[str]) -> dict[str, Any]:
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
            "metadata": {"name": f"{name}-bench", "namespace": NAMESPACE,
                         "labels": {"kubernetes.io/service-name": name, "portico-bench": "1",
                                    "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"}},
            "endpoints": [{"addresses": [pod], "conditions": {"ready": True, "serving": True, "terminating": False},
                           "nodeName": f"node{pod.split('.')[2]}"} for pod in pods],
            "ports": [{"name": "http", "protocol": "TCP", "port": 8080}]}


def loadbalancer(name: str, vip: str) -> dict[str, Any]:
    return {"apiVersion": "portico.io/v1alpha1", "kind": LB_KIND,
            "metadata": {"name": name, "namespace": NAMESPACE, "labels": {"portico-bench": "1"}},
            "spec": {"addresses": [{"family": "IPv4", "ip": vip}],
                     "listeners": [{"name": "http", "protocol": "tcp", "port": 80, "backendPort": 8080}],
                     "backends": [{"address": address} for address in LB_BACKENDS]}}


def kubectl(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["kubectl", "--kubeconfig", KUBECONFIG, *args], input=stdin, capture_output=True, text=True, check=True)


def delete_loadbalancers(force: bool) -> None:
    """Delete the bench's LoadBalancer resources. Each one Portico served stays, held by its cleanup
    finalizer, until a run withdraws its VIP; ``force`` takes the finalizers off (leftovers of an
    interrupted run, before the full converge that withdraws whatever is left of them)."""
    kubectl("delete", "loadbalancers.portico.io", "-n", NAMESPACE, "-l", "portico-bench=1", "--ignore-not-found", "--wait=false")
    if force:
        names = kubectl("get", "loadbalancers.portico.io", "-n", NAMESPACE, "-l", "portico-bench=1", "-o", "name").stdout.split()
        for name in names:
            kubectl("patch", "-n", NAMESPACE, name, "--type=merge", "-p", '{"metadata":{"finalizers":null}}')


def cleanup(core: client.CoreV1Api, discovery: client.DiscoveryV1Api) -> None:
    for svc in core.list_namespaced_service(NAMESPACE, label_selector="portico-bench=1").items:
        core.delete_namespaced_service(svc.metadata.name, NAMESPACE)
    for eps in discovery.list_namespaced_endpoint_slice(NAMESPACE, label_selector="portico-bench=1").items:
        discovery.delete_namespaced_endpoint_slice(eps.metadata.name, NAMESPACE)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def start_watcher(log_path: pathlib.Path) -> subprocess.Popen:
    log = open(log_path, "w", encoding="utf-8")  # noqa: SIM115 - lives as long as the watcher
    proc = subprocess.Popen([sys.executable, str(REPO / "bin/portico-watch"), "-i", "inventories/lab"], cwd=REPO,
                            env=env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline:  # the initial full run must be over before trials start
        if "trigger 1 attempt" in log_path.read_text():
            return proc
        time.sleep(0.5)
    raise SystemExit("portico-watch did not finish its first run in 300 s: see " + str(log_path))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=7)
    parser.add_argument("--timeout", type=float, default=60)
    parser.add_argument("--json", type=pathlib.Path)
    parser.add_argument("--loadbalancer", action="store_true",
                        help="also time `kubectl apply -f` of a LoadBalancer resource until its VIP answers")
    args = parser.parse_args()
    if args.loadbalancer and args.trials > 99 - LB_VIP_BASE:
        parser.error(f"--loadbalancer takes at most {99 - LB_VIP_BASE} trials (VIPs .{LB_VIP_BASE}-.98)")
    config.load_kube_config(KUBECONFIG)
    core, discovery = client.CoreV1Api(), client.DiscoveryV1Api()
    cleanup(core, discovery)
    if args.loadbalancer:
        delete_loadbalancers(force=True)

    started = time.time()
    full = subprocess.run(["ansible-playbook", "-i", "inventories/lab", "playbooks/site.yml"], cwd=REPO, env=env(),
                          capture_output=True, text=True, check=False)
    baseline = time.time() - started
    if full.returncode != 0:
        print(full.stdout[-3000:], file=sys.stderr)
        return 1

    log_path = pathlib.Path("/tmp/portico-bench-watch.log")
    watcher = start_watcher(log_path)
    created: list[float] = []
    scaled: list[float] = []
    applied: list[float] = []
    manifests = pathlib.Path(tempfile.mkdtemp(prefix="portico-bench-lb-"))
    try:
        for trial in range(args.trials):
            name, vip = f"bench-{trial}", f"198.51.100.{VIP_BASE + trial}"
            t0 = time.time()
            discovery.create_namespaced_endpoint_slice(NAMESPACE, endpoint_slice(name, POD_ADDRESSES[:2]))
            core.create_namespaced_service(NAMESPACE, service(name, vip, 31000 + trial, direct=False))
            answered = wait_until_answers(vip, args.timeout)
            if answered is None:
                raise SystemExit(f"trial {trial}: {vip} never answered within {args.timeout}s")
            created.append(answered - t0)
            print(f"service trial {trial}: {vip} answered after {created[-1]:.2f}s", flush=True)
            wait_for_run_done(log_path, f"lab/{NAMESPACE}/{name}", args.timeout)

        discovery.create_namespaced_endpoint_slice(NAMESPACE, endpoint_slice("bench-scale", POD_ADDRESSES[:1]))
        core.create_namespaced_service(NAMESPACE, service("bench-scale", SCALE_VIP, 31099, direct=True))
        if wait_until_in_table(POD_ADDRESSES[0], args.timeout) is None:
            raise SystemExit("bench-scale: first pod never reached gw1's table")
        wait_for_run_done(log_path, f"lab/{NAMESPACE}/bench-scale", args.timeout)
        for trial in range(args.trials):
            pods = POD_ADDRESSES[:2] if trial % 2 == 0 else POD_ADDRESSES[:1]  # scale 1 -> 2 -> 1 ...
            runs_before = done_runs(log_path)
            t0 = time.time()
            discovery.patch_namespaced_endpoint_slice("bench-scale-bench", NAMESPACE,
                                                      {"endpoints": endpoint_slice("bench-scale", pods)["endpoints"]})
            if len(pods) == 2:
                seen = wait_until_in_table(POD_ADDRESSES[1], args.timeout)
            else:
                seen = wait_until_in_table(POD_ADDRESSES[1], args.timeout, present=False)
            if seen is None:
                raise SystemExit(f"scale trial {trial}: gw1's table never followed")
            scaled.append(seen - t0)
            print(f"scale trial {trial}: {len(pods)} pod(s) in gw1's table after {scaled[-1]:.2f}s", flush=True)
            wait_for_run_done(log_path, "runs", args.timeout, after=runs_before)

        for trial in range(args.trials if args.loadbalancer else 0):
            name, vip = f"bench-lb-{trial}", f"198.51.100.{LB_VIP_BASE + trial}"
            manifest = manifests / f"{name}.json"
            manifest.write_text(json.dumps(loadbalancer(name, vip)))
            t0 = time.time()
            kubectl("apply", "-f", str(manifest))
            answered = wait_until_answers(vip, args.timeout)
            if answered is None:
                raise SystemExit(f"loadbalancer trial {trial}: {vip} never answered within {args.timeout}s")
            applied.append(answered - t0)
            print(f"loadbalancer trial {trial}: {vip} answered after {applied[-1]:.2f}s", flush=True)
            wait_for_run_done(log_path, f"lab/{NAMESPACE}/{LB_KIND}/{name}", args.timeout)
    finally:
        cleanup(core, discovery)
        if args.loadbalancer:
            runs_before = done_runs(log_path)
            delete_loadbalancers(force=False)
            wait_for_run_done(log_path, "runs", args.timeout, after=runs_before)  # the run that releases them
            delete_loadbalancers(force=True)  # whatever that run did not release
        shutil.rmtree(manifests, ignore_errors=True)
        time.sleep(3)
        os.killpg(watcher.pid, signal.SIGTERM)
        watcher.wait(timeout=120)

    result = {"baseline_full_converge_s": round(baseline, 2),
              "service_p50_s": round(statistics.median(created), 2), "service_p99_s": round(percentile(created, 0.99), 2),
              "scale_p50_s": round(statistics.median(scaled), 2), "scale_p99_s": round(percentile(scaled, 0.99), 2),
              "trials": args.trials}
    result["service_p50_vs_full_converge"] = round(result["service_p50_s"] / baseline, 3)
    result["scale_p50_vs_full_converge"] = round(result["scale_p50_s"] / baseline, 3)
    if applied:
        result["loadbalancer_p50_s"] = round(statistics.median(applied), 2)
        result["loadbalancer_p99_s"] = round(percentile(applied, 0.99), 2)
        result["loadbalancer_p50_vs_full_converge"] = round(result["loadbalancer_p50_s"] / baseline, 3)
        print(f"to the VIP answering, p50/p99: Service {result['service_p50_s']}/{result['service_p99_s']} s, "
              f"LoadBalancer (kubectl apply) {result['loadbalancer_p50_s']}/{result['loadbalancer_p99_s']} s; "
              f"full converge {result['baseline_full_converge_s']} s", flush=True)
    print(json.dumps(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


def done_runs(log_path: pathlib.Path) -> int:
    return sum(1 for line in log_path.read_text().splitlines() if " -> ok" in line)


def wait_for_run_done(log_path: pathlib.Path, key: str, timeout: float, after: int | None = None) -> None:
    """Trials are independent: start the next one when the watcher's run for this one is over."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        lines = [line for line in log_path.read_text().splitlines() if " -> ok" in line]
        if (after is not None and len(lines) > after) or (after is None and any(key in line for line in lines)):
            time.sleep(0.5)
            return
        time.sleep(0.2)


if __name__ == "__main__":
    sys.exit(main())
