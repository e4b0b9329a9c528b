#!/usr/bin/env python3
"""The gateway's table at a real cluster's size: render, load, memory and balance.

    sudo python3 bench/scale.py [--services 1000,5000,10000] [--nodes 10,50] [--baseline 100]
                                [--node-check kube_proxy|node_port] [--slots-per-backend 100]
                                [--local-backends all-nodes|endpoint-nodes]
                                [--collections DIR] [--no-deltas]
                                [--quick] [--json out.json]

For each size, a generated cluster (bench/lib/cluster_gen.py: every node a backend in nodeport
mode, 1-3 ports, a tenth externalTrafficPolicy Local and a tenth direct with 10 pods each) is
translated as the inventory does (k8s.translate), given VIPs from the benchmark pool and parsed
by the LB model; then it measures:

- render     ``dataplane.render.render_table`` (the nft module's render of a converge);
- load       ``nft -f`` of the script into a fresh network namespace: wall time and the peak
             RSS of nft (its maximum resident set size, from getrusage);
- tables     the Maglev maps in the script and their elements, and the imbalance of each map:
             max/mean slots per backend (the worst map, and the mean over maps);
- node down  (this tree's renderer only) the health checker's transaction for one node going
             down, written into the loaded table (every LB that has the node, so every table
             that has it once): render time and ``nft -f`` time;

``--local-backends endpoint-nodes`` is a what-if, not what the translator does: a Local Service
sent only to the nodes with its endpoints instead of every node with the others withheld by its
check. A one-Service change is not measured apart: without delta transactions a converge reloads the
whole table, so it costs the full load of its size.

Each size runs beside a baseline of --baseline Services on the same nodes, measured in the same
run, and the report gives the ratio to it. ``--collections`` measures another tree's renderer
(e.g. /work/main/collections) for before/after numbers: only what that tree has is measured.
Targets (10,000 Services x 50 nodes): full load <= 3 s, nft peak RSS <= 300 MiB. Noisy numbers
are never a failure; the exit status is non-zero only when a script does not load.
"""

from __future__ import annotations

import argparse
import importlib
import ipaddress
import json
import os
import pathlib
import re
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.lib.cluster_gen import POOLS, generate  # noqa: E402

NS = f"portico-scale-{os.getpid()}"
# Runs a command and prints its peak RSS (KiB) last on stderr. A small interpreter forks nft: a
# child forked from this benchmark would count the benchmark's own memory, resident until exec.
PEAK_RSS = ("import resource, subprocess, sys; code = subprocess.run(sys.argv[1:]).returncode; "
            "print('maxrss', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); sys.exit(code)")
TARGETS = {"load_s": 3.0, "nft_rss_mib": 300.0}
MAP_RE = re.compile(r"^\tmap (\S+) \{\n\t\ttypeof numgen inc mod 2 : ([^\n]*)\n(?:\t\telements = \{ (.*?) \}\n)?\t\}", re.M | re.S)


class BenchError(Exception):
    pass


def _modules(collections: pathlib.Path) -> dict[str, Any]:
    sys.path.insert(0, str(collections))
    base = "ansible_collections.portico.gateway.plugins.module_utils"
    names = {"render": "dataplane.render", "options": "dataplane.options", "translate": "k8s.translate",
             "model": "model.loadbalancer", "ipam": "model.ipam"}
    return {key: importlib.import_module(f"{base}.{name}") for key, name in names.items()}


def _endpoint_nodes(cluster: Any) -> dict[str, set[str]]:
    """namespace/name -> the InternalIPs of the nodes that host a ready endpoint of the Service."""
    address = {n["metadata"]["name"]: next(a["address"] for a in n["status"]["addresses"] if a["type"] == "InternalIP")
               for n in cluster.nodes}
    return {f"{s['metadata']['namespace']}/{s['metadata']['labels']['kubernetes.io/service-name']}":
            {address[e["nodeName"]] for e in s["endpoints"] if e.get("nodeName") in address}
            for s in cluster.endpoint_slices}


def loadbalancers(mods: dict[str, Any], services: int, nodes: int, node_check: str, local_backends: str) -> list[Any]:
    """The LB model of a generated cluster, as the inventory and lb_validate would make it."""
    cluster = generate(services, nodes)
    translate = mods["translate"]
    options = translate.TranslateOptions(cluster="bench", node_health_check=node_check)
    entries = translate.translate_cluster(cluster.services, cluster.endpoint_slices, cluster.nodes, options)
    hosting = _endpoint_nodes(cluster) if local_backends == "endpoint-nodes" else {}
    pool = ipaddress.ip_network(POOLS["bench"]["addresses"][0])
    raws = []
    for index, entry in enumerate(e for e in entries if e.get("loadbalancers")):
        key = f"{entry['namespace']}/{entry['name']}"
        for lb in entry["loadbalancers"]:
            raw = {**lb, "vip": str(pool.network_address + 1 + index), "pool": "bench"}
            if hosting and cluster.kinds.get(key) == "local":
                # What-if: a Local Service sent only to the nodes with its endpoints (the nodes its
                # healthCheckNodePort passes on), not to every node with the others withheld.
                raw["backends"] = [b for b in lb["backends"] if b["address"] in hosting.get(key, ())]
            raws.append(raw)
    model = mods["model"].parse_loadbalancers(raws, mods["ipam"].parse_pools(POOLS))
    if model.problems:
        raise BenchError(f"{len(model.problems)} model problems, first: {model.problems[0]}")
    return model.loadbalancers


def nft_load(script: str, ns: str, fresh: bool = True) -> tuple[float, float]:
    """(seconds, peak RSS MiB) of one ``nft -f`` in ``ns`` (a fresh namespace unless told)."""
    if fresh:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "add", ns], check=True)
    with tempfile.NamedTemporaryFile("w", suffix=".nft", delete=False) as handle:
        handle.write(script)
    try:
        start = time.perf_counter()
        result = subprocess.run([sys.executable, "-c", PEAK_RSS, "ip", "netns", "exec", ns, "nft", "-f", handle.name],
                                capture_output=True, text=True, check=False)
        elapsed = time.perf_counter() - start
        if result.returncode != 0:
            raise BenchError(f"nft -f failed: {result.stderr.strip()[:500]}")
        rss_kib = int(result.stderr.strip().splitlines()[-1].split()[-1])
        return elapsed, rss_kib / 1024.0
    finally:
        os.unlink(handle.name)


def maps_of(script: str) -> dict[str, Any]:
    """Maglev maps in a script: how many, their elements, and slots per backend (imbalance)."""
    counts, elements, worst, ratios = 0, 0, 1.0, []
    for match in MAP_RE.finditer(script):
        counts += 1
        items = match.group(3).split(",\n") if match.group(3) else []
        elements += len(items)
        per: dict[str, int] = {}
        for item in items:
            value = item.split(" : ", 1)[1].strip()
            per[value] = per.get(value, 0) + 1
        if per:
            ratio = max(per.values()) / statistics.mean(per.values())
            worst = max(worst, ratio)
            ratios.append(ratio)
    return {"maps": counts, "map_elements": elements, "imbalance_max": round(worst, 4),
            "imbalance_mean": round(statistics.mean(ratios), 4) if ratios else 1.0}


def node_down(mods: dict[str, Any], lbs: list[Any], options: Any) -> tuple[str, int]:
    """The health checker's transaction for the first node going down: every LB that has it."""
    render = mods["render"]
    if not hasattr(render, "backend_tables"):
        return "", 0
    node = sorted((b.address for lb in lbs for b in lb.backends), key=ipaddress.ip_address)[0]
    names = {lb.name for lb in lbs if any(b.address == node for b in lb.backends) and lb.health_check.type != "none"}
    services = [s for s in render.service_ports(lbs) if s.lb.name in names]
    return render.render_health_update(services, options, {name: {node} for name in names}), len(names)


def measure(mods: dict[str, Any], services: int, nodes: int, args: argparse.Namespace) -> dict[str, Any]:
    render, options = mods["render"], mods["options"].RenderOptions(slots_per_backend=args.slots_per_backend)
    lbs = loadbalancers(mods, services, nodes, args.node_check, args.local_backends)
    deltas = not args.no_deltas
    start = time.perf_counter()
    rendered = render.render_table(lbs, options)
    render_s = time.perf_counter() - start
    script = rendered.script
    row: dict[str, Any] = {"services": services, "nodes": nodes, "lbs": len(lbs), "render_s": round(render_s, 3),
                           "lines": script.count("\n"), "mib": round(len(script) / 2**20, 1), **maps_of(script)}
    row["load_s"], row["nft_rss_mib"] = (round(v, 3) if i == 0 else round(v, 1) for i, v in enumerate(nft_load(script, NS)))
    if deltas:
        update_start = time.perf_counter()
        update, touched = node_down(mods, lbs, options)
        if update:
            row["node_down_render_s"] = round(time.perf_counter() - update_start, 3)
            row["node_down_lbs"] = touched
            row["node_down_lines"] = update.count("\n")
            row["node_down_nft_s"] = round(nft_load(update, NS, fresh=False)[0], 3)
    subprocess.run(["ip", "netns", "del", NS], capture_output=True, check=False)
    return row


def fmt(row: dict[str, Any], base: dict[str, Any] | None) -> str:
    def ratio(key: str) -> str:
        if not base or not base.get(key) or key not in row:
            return ""
        return f" ({row[key] / base[key]:.1f}x)"
    text = (f"{row['services']:>6} svc x {row['nodes']:>3} nodes: {row['lbs']} LBs, {row['lines']} lines {row['mib']} MiB, "
            f"{row['maps']} maps / {row['map_elements']} slots; render {row['render_s']} s{ratio('render_s')}, "
            f"nft -f {row['load_s']} s{ratio('load_s')}, nft RSS {row['nft_rss_mib']} MiB{ratio('nft_rss_mib')}, "
            f"imbalance max {row['imbalance_max']} mean {row['imbalance_mean']}")
    if "node_down_nft_s" in row:
        text += (f"; one node down: {row['node_down_lbs']} LBs, {row['node_down_lines']} lines, render {row['node_down_render_s']} s, "
                 f"nft -f {row['node_down_nft_s']} s{ratio('node_down_nft_s')}")
    return text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--services", default="1000,5000,10000")
    parser.add_argument("--nodes", default="10,50")
    parser.add_argument("--baseline", type=int, default=100)
    parser.add_argument("--node-check", default="kube_proxy", choices=("kube_proxy", "node_port"))
    parser.add_argument("--collections", type=pathlib.Path, default=REPO / "collections")
    parser.add_argument("--slots-per-backend", type=int, default=100, help="the nft role's nftables_slots_per_backend")
    parser.add_argument("--local-backends", default="all-nodes", choices=("all-nodes", "endpoint-nodes"),
                        help="what-if: endpoint-nodes sends Local Services only to the nodes with their endpoints")
    parser.add_argument("--no-deltas", action="store_true", help="skip the node-down transaction")
    parser.add_argument("--quick", action="store_true", help="300 Services x 10 nodes (make test)")
    parser.add_argument("--json", type=pathlib.Path)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("needs root (network namespaces)", file=sys.stderr)
        return 2
    sizes = [int(n) for n in args.services.split(",")]
    node_counts = [int(n) for n in args.nodes.split(",")]
    if args.quick:
        sizes, node_counts = [300], [10]
    mods = _modules(args.collections.resolve())
    print(f"scale: renderer {args.collections}, node check {args.node_check}, {args.slots_per_backend} slots per backend, "
          f"Local backends {args.local_backends}, "
          f"baseline {args.baseline} Services; cpus={os.cpu_count()}")
    rows = []
    status = 0
    for nodes in node_counts:
        base = measure(mods, args.baseline, nodes, args)
        print("baseline " + fmt(base, None), flush=True)
        rows.append({**base, "baseline": True})
        for services in sizes:
            try:
                row = measure(mods, services, nodes, args)
            except (BenchError, subprocess.SubprocessError, MemoryError) as err:
                print(f"{services:>6} svc x {nodes:>3} nodes: FAILED: {err}", flush=True)
                status = 1
                continue
            print("         " + fmt(row, base), flush=True)
            row["ratios"] = {key: round(row[key] / base[key], 2) for key in ("render_s", "load_s", "nft_rss_mib") if base.get(key)}
            if services == 10000 and nodes == 50:
                row["targets_met"] = {key: row[key] <= limit for key, limit in TARGETS.items()}
                print(f"         targets (load <= {TARGETS['load_s']} s, nft RSS <= {TARGETS['nft_rss_mib']} MiB): "
                      f"{row['targets_met']}", flush=True)
            rows.append(row)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return status


if __name__ == "__main__":
    try:
        sys.exit(main())
    finally:
        subprocess.run(["ip", "netns", "del", NS], capture_output=True, check=False)
