"""A weighted TCPRoute through the real kernel: the lab's canary route (90 to echo, 10 to
echo-local) translated by the inventory's Gateway API code, allocated with the IPAM, converged
into nftables by the nft module in a private netns, with real TCP backends on the pods' addresses.

1,000 new connections split about 90/10 over the two Services; after the route's weights change
to 50/50 (a converge, as a watcher-triggered sync does), the split follows, and the connections
held across the change keep their backend (conntrack keeps their NAT binding; Maglev moves only
new flows)."""

from __future__ import annotations

import copy
import json
import pathlib
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import REPO, Netns
from test_healthd import Lab

from ansible_collections.portico.gateway.plugins.module_utils.k8s.gateway_api import (
    GatewayApiObjects,
    gateway_api_entries,
)
from ansible_collections.portico.gateway.plugins.module_utils.k8s.translate import TranslateOptions
from ansible_collections.portico.gateway.plugins.module_utils.model.ipam import allocate, parse_pools
from lab.k8s_stub.apiserver import read_manifests

ECHO = ("198.19.1.10", "198.19.2.10", "198.19.3.10")
ECHO_LOCAL = ("198.19.1.11", "198.19.2.11")
CONNECTIONS = 1000
HELD = 200
LISTENER = "lab/default/Gateway/edge/tcp-echo"

# A backend that answers every line with its own address, on connections it keeps open.
SERVER = r"""
import socket, sys, threading
sock = socket.socket()
sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
sock.bind((sys.argv[1], 8080))
sock.listen(1024)
print("ready", flush=True)
def serve(conn):
    with conn:
        try:
            conn.sendall(sys.argv[1].encode() + b"\n")
            while conn.recv(64):
                conn.sendall(sys.argv[1].encode() + b"\n")
        except OSError:
            pass
while True:
    conn, _ = sock.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
"""

# Opens N connections to VIP:PORT and prints the backend of each; then, on a line on stdin, asks
# each again and prints what answered now (or the error).
HOLDER = r"""
import json, socket, sys
vip, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
conns, first = [], []
for _ in range(count):
    s = socket.create_connection((vip, port), timeout=2)
    first.append(s.makefile().readline().strip())
    conns.append(s)
print(json.dumps(first), flush=True)
sys.stdin.readline()
after = []
for s in conns:
    try:
        s.sendall(b"again\n")
        after.append(s.recv(64).decode().strip() or "closed")
    except OSError as err:
        after.append("error:" + type(err).__name__)
print(json.dumps(after), flush=True)
"""


def lab_objects() -> dict[str, list[dict[str, Any]]]:
    objects: dict[str, list[dict[str, Any]]] = {}
    for path in ("lab/k8s_stub/fixtures/lab", "lab/k8s_stub/fixtures/lab-gateway-api"):
        for obj in read_manifests(REPO / path):
            objects.setdefault(obj["kind"], []).append(obj)
    return objects


def canary_lb(weights: tuple[int, int]) -> dict[str, Any]:
    """The tcp-echo listener's LB, as the pipeline makes it, with the canary route's weights."""
    objects = copy.deepcopy(lab_objects())
    canary = next(r for r in objects["TCPRoute"] if r["metadata"]["name"] == "echo-canary")
    for ref, weight in zip(canary["spec"]["rules"][0]["backendRefs"], weights):
        ref["weight"] = weight
    entries = gateway_api_entries(GatewayApiObjects(
        gateway_classes=objects["GatewayClass"], gateways=objects["Gateway"], tcp_routes=objects["TCPRoute"],
        udp_routes=objects["UDPRoute"], services=objects["Service"], endpoint_slices=objects["EndpointSlice"],
        namespaces=objects["Namespace"], nodes=objects["Node"]), TranslateOptions(cluster="lab")).translation.entries
    allocations = allocate(entries, parse_pools({"public": {"addresses": ["198.51.100.0/25"]}}))
    return next(lb for allocation in allocations for lb in allocation.loadbalancers if lb["name"] == LISTENER)


@pytest.fixture
def lab(tmp_path: pathlib.Path) -> Iterator[Lab]:
    name = f"portico-gwapi-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    ns = Netns(name)
    lab = Lab(ns, tmp_path)
    try:
        ns.run("ip", "link", "set", "lo", "up")
        for address in (*ECHO, *ECHO_LOCAL):
            ns.run("ip", "addr", "add", f"{address}/32", "dev", "lo")
            proc = subprocess.Popen(["ip", "netns", "exec", name, "python3", "-c", SERVER, address], stdout=subprocess.PIPE, text=True)
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
            lab.servers[address] = proc
        yield lab
    finally:
        for proc in lab.servers.values():
            proc.kill()
        subprocess.run(["ip", "netns", "del", name], check=False)


def new_connections(ns: Netns, vip: str, port: int, count: int) -> list[str]:
    script = ("import socket, json, sys\nout = []\n"
              f"for _ in range({count}):\n"
              "    try:\n"
              f"        s = socket.create_connection(('{vip}', {port}), timeout=1)\n"
              "        out.append(s.makefile().readline().strip())\n"
              "        s.close()\n"
              "    except OSError as err:\n"
              "        out.append('error:' + type(err).__name__)\n"
              "print(json.dumps(out))\n")
    return json.loads(ns.run("python3", "-c", script).stdout)


def echo_share(answers: list[str]) -> float:
    return sum(answer in ECHO for answer in answers) / len(answers)


def test_a_90_10_route_splits_new_connections_and_a_weight_change_moves_no_held_one(lab: Lab):
    lb = canary_lb((90, 10))
    vip, port = lb["vip"], lb["ports"][0]["port"]
    lab.ns.run("ip", "addr", "add", f"{vip}/32", "dev", "lo")
    lab.converge([lb])
    answers = new_connections(lab.ns, vip, port, CONNECTIONS)
    assert set(answers) <= {*ECHO, *ECHO_LOCAL}, sorted(set(answers))
    share = echo_share(answers)
    print(f"\n90/10 route: {share:.1%} of {CONNECTIONS} new connections to echo, {1 - share:.1%} to echo-local")
    assert 0.87 <= share <= 0.93

    holder = subprocess.Popen(["ip", "netns", "exec", lab.ns.name, "python3", "-c", HOLDER, vip, str(port), str(HELD)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdin is not None
        before = json.loads(holder.stdout.readline())
        changed = lab.converge([canary_lb((50, 50))])
        assert changed["changed"] is True, changed
        holder.stdin.write("go\n")
        holder.stdin.flush()
        after = json.loads(holder.stdout.readline())
    finally:
        holder.kill()
    moved = sum(1 for old, new in zip(before, after) if old != new)
    print(f"weights 90/10 -> 50/50: {moved} of {HELD} held connections changed backend")
    assert len(after) == HELD and moved == 0, [(old, new) for old, new in zip(before, after) if old != new][:10]
    share = echo_share(new_connections(lab.ns, vip, port, CONNECTIONS))
    print(f"50/50 route: {share:.1%} of {CONNECTIONS} new connections to echo")
    assert 0.45 <= share <= 0.55
