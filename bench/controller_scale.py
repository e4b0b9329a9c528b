#!/usr/bin/env python3
"""The controller at a real cluster's size, through the Kubernetes API stand-in:

    python3 bench/controller_scale.py [--services 5000] [--nodes 50] [--baseline 100] [--trials 3]
                                      [--no-watch] [--quick] [--json out.json]

For a generated cluster (bench/lib/cluster_gen.py: every node a backend in nodeport mode, 1-3
ports, a tenth Local and a tenth direct with 10 pods) served by the API stand-in in its own
process, and two gateways in a static inventory, it measures the wall time of:

- inventory       `ansible-inventory --list` with the k8s_services source (best of two);
- validate        `playbooks/validate.yml` (lb_validate once per play; the rendered-config
                  checkers off, as in sync.yml: they check the dataplane, not the controller);
- write-back      `k8s_claim.yml` + `k8s_status.yml` around a converge stand-in, the first time
                  (every Service claimed, given its address and an Event) and again (nothing to
                  write): the two batched module calls;
- watcher path    (root only) one gateway in a network namespace converged with sync.yml, then
                  bin/portico-watch running: from changing one Service (it asks for another
                  address) to its new VIP in the gateway's nftables table, and from creating one
                  (which is claimed first) to its VIP there (medians of --trials).

Each size runs beside a baseline cluster of --baseline Services measured in the same run, and
the report prints the ratio and the target of each number (the scale targets at 5,000 Services: inventory
<= 5 s, validate <= 10 s, first write-back <= 60 s, no-op write-back <= 10 s, watcher path <= 5 s).
Noisy numbers are never a failure; the exit status is non-zero only when a step fails.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pathlib
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import yaml

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "collections"))

# pylint: disable=wrong-import-position  # needs the paths above
from ansible_collections.portico.gateway.plugins.module_utils.dataplane.objects import vip_set  # noqa: E402
from ansible_collections.portico.gateway.plugins.module_utils.k8s.client import K8sAuth, api_client, request  # noqa: E402
from bench.lib.cluster_gen import NODE_PORT_RANGE, POOLS, generate  # noqa: E402

BIN = pathlib.Path(sys.executable).parent
PLAYBOOKS = REPO / "playbooks"
TARGETS = {"inventory_s": 5.0, "validate_s": 10.0, "writeback_first_s": 60.0, "writeback_noop_s": 10.0, "watch_path_s": 5.0}
LABELS = {
    "inventory_s": "inventory (ansible-inventory --list)",
    "validate_s": "validate (validate.yml)",
    "lb_validate_task_s": "  of which lb_validate, once",
    "writeback_first_s": "first full write-back (claim + publish)",
    "writeback_noop_s": "no-op write-back",
    "first_sync_s": "first sync.yml on one gateway (full table load)",
    "watch_path_s": "watcher path: one changed Service to its VIP in the table",
    "watch_new_s": "watcher path: one new Service to its VIP in the table",
}
WATCH_VIP_BASE = "198.18.255."  # the last addresses of cluster_gen's pool: free in any generated cluster


class BenchError(RuntimeError):
    pass


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def environment(**extra: str) -> dict[str, str]:
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "PYTHONPATH": str(REPO / "collections"),
           "ANSIBLE_NOCOLOR": "1", "ANSIBLE_LOCALHOST_WARNING": "false", **extra}
    for name in ("PORTICO_CHANGED", "PORTICO_CHANGED_FILE"):
        env.pop(name, None)
    return env


class Netns:
    """A network namespace with only lo up: the gateway's nftables table lives here."""

    def __init__(self) -> None:
        self.name = f"pb-ctl-{os.getpid()}"

    def __enter__(self) -> Netns:
        subprocess.run(["ip", "netns", "add", self.name], check=True)
        subprocess.run(["ip", "netns", "exec", self.name, "ip", "link", "set", "lo", "up"], check=True)
        return self

    def __exit__(self, *_exc: object) -> None:
        subprocess.run(["ip", "netns", "delete", self.name], check=False)

    def prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.name]


class StandIn:
    """The API stand-in in its own process (client and server must not share an interpreter)."""

    def __init__(self, fixtures: pathlib.Path, kubeconfig: pathlib.Path, prefix: list[str]):
        self.proc = subprocess.Popen(
            [*prefix, sys.executable, "-m", "lab.k8s_stub", "--port", "0", "--fixtures", str(fixtures), "--kubeconfig",
             str(kubeconfig), "--service-node-port-range", NODE_PORT_RANGE, "--history", "100000"],
            cwd=REPO, stdout=subprocess.PIPE, text=True, start_new_session=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if "listening on" not in line:
            self.stop()
            raise BenchError(f"the API stand-in did not start: {line!r}")
        self.url = line.rsplit(" ", 1)[1].strip()

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)


def write_inventory(directory: pathlib.Path, kubeconfig: pathlib.Path, gateways: list[str], state: pathlib.Path) -> pathlib.Path:
    """gateways (local connections) + the pools + a k8s_services source; state paths kept in ``state``."""
    (directory / "group_vars").mkdir(parents=True, exist_ok=True)
    host = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
    (directory / "hosts.yml").write_text(yaml.safe_dump({"all": {"children": {"gateways": {"hosts": dict.fromkeys(gateways, host)}}}}))
    (directory / "group_vars" / "gateways.yml").write_text(yaml.safe_dump({
        "portico_pools": POOLS, "portico_loadbalancers": [], "portico_k8s_required": True,
        "nftables_state_dir": str(state / "nftables"), "nftables_health_state_file": str(state / "healthd/state.json"),
        "nftables_lock_file": str(state / "dataplane.lock"), "gateway_base_state_dir": str(state / "gateway"),
    }))
    (directory / "bench.k8s_services.yml").write_text(yaml.safe_dump({
        "plugin": "portico.gateway.k8s_services", "clusters": [{"name": "bench", "kubeconfig": str(kubeconfig)}]}))
    return directory


def run(cmd: list[str], prefix: list[str], env: dict[str, str], what: str) -> tuple[float, subprocess.CompletedProcess[str]]:
    started = time.perf_counter()
    proc = subprocess.run([*prefix, *cmd], capture_output=True, text=True, cwd=REPO, env=env, check=False)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise BenchError(f"{what} failed (rc={proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}")
    return elapsed, proc


def task_seconds(output: str, names: tuple[str, ...]) -> float:
    """Summed wall time of the named tasks in ansible.posix.json output (each counted once)."""
    total = 0.0
    for play in json.loads(output)["plays"]:
        for task in play["tasks"]:
            if task["task"]["name"] in names:
                duration = task["task"]["duration"]
                stamps = [datetime.fromisoformat(duration[key].replace("Z", "+00:00")) for key in ("start", "end")]
                total += (stamps[1] - stamps[0]).total_seconds()
    return total


def status_flow(directory: pathlib.Path) -> pathlib.Path:
    """validate + claim + a converge stand-in (every gateway converged) + publish."""
    path = directory / "writeback.yml"
    path.write_text(yaml.safe_dump([
        {"import_playbook": str(PLAYBOOKS / "validate.yml"), "vars": {"portico_validate_configs": False}},
        {"import_playbook": str(PLAYBOOKS / "k8s_claim.yml")},
        {"name": "Converge (stand-in)", "hosts": "gateways", "gather_facts": False,
         "tasks": [{"ansible.builtin.set_fact": {"portico_converged": True}}]},
        {"import_playbook": str(PLAYBOOKS / "k8s_status.yml")},
    ]))
    return path


WRITEBACK_TASKS = ("Write to the Services of each cluster (claim)", "Write to the Services of each cluster (publish)")


def measure_controller(services: int, nodes: int, tmp: pathlib.Path, prefix: list[str]) -> dict[str, float]:
    tmp.mkdir(parents=True, exist_ok=True)
    cluster = generate(services, nodes)
    fixtures = cluster.write(tmp / "cluster.json")
    stand_in = StandIn(fixtures, tmp / "kubeconfig", prefix)
    try:
        inventory = write_inventory(tmp / "inventory", tmp / "kubeconfig", ["gw1", "gw2"], tmp / "state")
        env = environment()
        result: dict[str, float] = {}
        listing = [str(BIN / "ansible-inventory"), "-i", str(inventory), "--list"]
        result["inventory_s"] = min(run(listing, prefix, env, "ansible-inventory")[0] for _ in range(2))
        log(f"{services} Services: inventory {result['inventory_s']:.2f} s")
        validate = [str(BIN / "ansible-playbook"), "-i", str(inventory), str(PLAYBOOKS / "validate.yml"),
                    "-e", "portico_validate_configs=false"]
        json_env = environment(ANSIBLE_STDOUT_CALLBACK="ansible.posix.json")
        result["validate_s"], proc = run(validate, prefix, json_env, "validate.yml")
        result["lb_validate_task_s"] = task_seconds(proc.stdout, ("Validate the LB model and allocate Service VIPs (on the controller)",))
        log(f"{services} Services: validate {result['validate_s']:.2f} s")
        flow = [str(BIN / "ansible-playbook"), "-i", str(inventory), str(status_flow(tmp))]
        _elapsed, first = run(flow, prefix, json_env, "first write-back")
        result["writeback_first_s"] = task_seconds(first.stdout, WRITEBACK_TASKS)
        _elapsed, again = run(flow, prefix, json_env, "no-op write-back")
        result["writeback_noop_s"] = task_seconds(again.stdout, WRITEBACK_TASKS)
        log(f"{services} Services: write-back first {result['writeback_first_s']:.2f} s, no-op {result['writeback_noop_s']:.2f} s")
        return result
    finally:
        stand_in.stop()


def new_service(index: int, vip: str) -> tuple[dict[str, Any], dict[str, Any]]:
    name = f"bench-watch-{index}"
    service = {"apiVersion": "v1", "kind": "Service",
               "metadata": {"name": name, "namespace": "team-00", "annotations": {"portico.io/loadBalancerIPs": vip}},
               "spec": {"type": "LoadBalancer", "loadBalancerClass": "portico.io/gateway", "selector": {"app": name},
                        "ports": [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080, "nodePort": 59000 + index}]}}
    endpoint_slice = {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
                      "metadata": {"name": f"{name}-x1", "namespace": "team-00", "labels": {"kubernetes.io/service-name": name}},
                      "endpoints": [{"addresses": ["198.19.0.99"], "conditions": {"ready": True}, "nodeName": "node-000"}],
                      "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]}
    return service, endpoint_slice


@contextlib.contextmanager
def watcher(inventory: pathlib.Path, prefix: list[str], log_path: pathlib.Path) -> Iterator[list[str]]:
    """bin/portico-watch running sync.yml for the inventory; yields its log lines as they come."""
    lines: list[str] = []
    proc = subprocess.Popen([*prefix, sys.executable, str(REPO / "bin/portico-watch"), "-i", str(inventory), "--no-initial-run",
                             "--resync-s", "0"], cwd=REPO, env=environment(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    assert proc.stderr is not None
    stderr = proc.stderr

    def follow() -> None:
        with log_path.open("w", encoding="utf-8") as out:
            for line in stderr:
                lines.append(line)
                out.write(line)

    reader = threading.Thread(target=follow, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 60
        while not any("watching from resourceVersion" in line and "EndpointSlices" in line for line in lines):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise BenchError(f"portico-watch did not start:\n{''.join(lines)[-2000:]}")
            time.sleep(0.1)
        yield lines
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=60)


def time_to_table(lines: list[str], vip: str, change: Callable[[], Any]) -> float:
    """Seconds from making the change to ``vip`` in the table; then waits for the watcher's run
    to finish, so the next trial starts from a quiet watcher."""
    done_before = sum(" -> ok" in line or "FAILED" in line for line in lines)
    started = time.perf_counter()
    change()
    deadline = started + 180
    while not vip_in_table(vip):
        if time.perf_counter() > deadline:
            raise BenchError(f"{vip} never reached the table:\n{''.join(lines)[-3000:]}")
        time.sleep(0.05)
    elapsed = time.perf_counter() - started
    while sum(" -> ok" in line or "FAILED" in line for line in lines) <= done_before and time.perf_counter() < deadline:
        time.sleep(0.2)
    return elapsed


def vip_in_table(vip: str) -> bool:
    listed = subprocess.run(["nft", "list", "set", "inet", "portico", vip_set(4)], capture_output=True, text=True, check=False)
    return vip in listed.stdout.replace(",", " ").split()


def measure_watch(services: int, nodes: int, tmp: pathlib.Path, trials: int) -> dict[str, float]:
    """Inside the gateway's network namespace (the stand-in, Ansible, the watcher and this
    process all in it, so everything talks over that namespace's loopback)."""
    prefix: list[str] = []
    subprocess.run(["nft", "delete", "table", "inet", "portico"], capture_output=True, check=False)
    cluster = generate(services, nodes)
    stand_in = StandIn(cluster.write(tmp / "cluster.json"), tmp / "kubeconfig", prefix)
    try:
        inventory = write_inventory(tmp / "inventory", tmp / "kubeconfig", ["gw1"], tmp / "state")
        sync = [str(BIN / "ansible-playbook"), "-i", str(inventory), str(PLAYBOOKS / "sync.yml")]
        first, _proc = run(sync, prefix, environment(PORTICO_FULL="1"), "first sync.yml")
        log(f"{services} Services: first sync {first:.2f} s")
        changes: list[float] = []
        creations: list[float] = []
        client = api_client(K8sAuth(kubeconfig=str(tmp / "kubeconfig")))
        with watcher(inventory, prefix, tmp / "portico-watch.log") as lines:
            for trial in range(trials):
                vip = f"{WATCH_VIP_BASE}{100 + trial}"
                moved = {"metadata": {"annotations": {"portico.io/loadBalancerIPs": vip}}}
                changes.append(time_to_table(lines, vip, lambda body=moved: request(
                    client, "PATCH", "/api/v1/namespaces/team-00/services/svc-00000", body=body,
                    content_type="application/merge-patch+json")))
                log(f"{services} Services: changed Service, trial {trial}: {changes[-1]:.2f} s")
                vip = f"{WATCH_VIP_BASE}{200 + trial}"
                service, endpoint_slice = new_service(trial, vip)
                creations.append(time_to_table(lines, vip, lambda s=service, e=endpoint_slice: (
                    request(client, "POST", "/api/v1/namespaces/team-00/services", body=s),
                    request(client, "POST", "/apis/discovery.k8s.io/v1/namespaces/team-00/endpointslices", body=e))))
                log(f"{services} Services: new Service, trial {trial}: {creations[-1]:.2f} s")
        return {"first_sync_s": first, "watch_path_s": statistics.median(changes), "watch_new_s": statistics.median(creations)}
    finally:
        stand_in.stop()
        subprocess.run(["nft", "delete", "table", "inet", "portico"], capture_output=True, check=False)


def measure(services: int, nodes: int, trials: int, watch: bool) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="portico-ctl-") as tmp:
        result = measure_controller(services, nodes, pathlib.Path(tmp, "controller"), [])
    if watch:
        with Netns() as netns:
            proc = subprocess.run([*netns.prefix(), sys.executable, __file__, "--inside-netns", "--services", str(services),
                                   "--nodes", str(nodes), "--trials", str(trials)], stdout=subprocess.PIPE, text=True, check=False)
        if proc.returncode != 0:
            raise BenchError(f"the watcher path failed ({services} Services)")
        result.update(json.loads(proc.stdout))
    return result


def report(services: int, nodes: int, baseline: int, results: dict[int, dict[str, float]]) -> None:
    print(f"controller scale: {services} and {baseline} Services on {nodes} nodes (cluster_gen), 2 gateways; cpus={os.cpu_count()}")
    print(f"  {'':58} {baseline:>9} {services:>9}  {'ratio':>6}  target")
    for key, label in LABELS.items():
        if key not in results[services]:
            continue
        small, big = results[baseline].get(key, float("nan")), results[services][key]
        target = TARGETS.get(key)  # set for 5,000 Services: smaller runs only show the number
        verdict = "" if target is None or services < 5000 else f"<= {target:g} s {'ok' if big <= target else 'MISSED'}"
        print(f"  {label:58} {small:8.2f}s {big:8.2f}s  {big / small if small else float('nan'):6.1f}  {verdict}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--services", type=int, default=5000)
    parser.add_argument("--nodes", type=int, default=50)
    parser.add_argument("--baseline", type=int, default=100)
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--no-watch", action="store_true", help="skip the watcher path (it needs root for a network namespace)")
    parser.add_argument("--quick", action="store_true", help="smoke test: 300 and 30 Services on 10 nodes, no watcher path")
    parser.add_argument("--json", type=pathlib.Path, help="also write the numbers here")
    parser.add_argument("--inside-netns", action="store_true", help=argparse.SUPPRESS)  # the watcher path, run in the namespace
    args = parser.parse_args(argv)
    if args.inside_netns:
        try:
            with tempfile.TemporaryDirectory(prefix="portico-ctl-") as tmp:
                print(json.dumps(measure_watch(args.services, args.nodes, pathlib.Path(tmp), args.trials)))
        except BenchError as err:
            print(f"controller_scale: {err}", file=sys.stderr)
            return 1
        return 0
    if args.quick:
        args.services, args.baseline, args.nodes, args.no_watch = 300, 30, 10, True
    watch = not args.no_watch and os.geteuid() == 0
    if not args.no_watch and not watch:
        log("not root: the watcher path (a gateway in a network namespace) is skipped")
    try:
        results = {size: measure(size, args.nodes, args.trials, watch) for size in (args.baseline, args.services)}
    except BenchError as err:
        print(f"controller_scale: {err}", file=sys.stderr)
        return 1
    report(args.services, args.nodes, args.baseline, results)
    if args.json:
        args.json.write_text(json.dumps({str(size): values for size, values in results.items()}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
