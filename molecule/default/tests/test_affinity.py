"""Client-IP session affinity in the lab: kubectl -> sync -> gw1's nftables -> real clients.

A Portico LoadBalancer with sessionAffinity clientIP in front of node1 and node2; many lab
clients (addresses of the client container's own subnet, each a source of its own) connect once.
node3 is added with one sync: within the timeout every client keeps its backend; after it,
clients get the plain Maglev choice of the three, and some move (to node3 among others).
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
import testinfra
import yaml
from lab_helpers import kubectl, sync

NAMESPACE = "default"
NAME = "affinity-proof"
NODE_IPS = {"node1": "192.0.2.11", "node2": "192.0.2.12", "node3": "192.0.2.13"}
# Addresses of the client container's own subnet, local to it through one route (AnyIP): the
# router reaches them on the edge network like the client's own address.
CLIENT_RANGE = "203.0.113.128/26"
CLIENTS = tuple(f"203.0.113.{i}" for i in range(128, 192))
# Long enough for a sync and a round of connections in between: the test asserts it was.
TIMEOUT_S = 20
gw1 = testinfra.get_host("podman://portico-lab-gw1")

CONNECT = r"""
import json, socket, sys
out = {}
for client in sys.argv[3:]:
    sock = socket.socket()
    sock.settimeout(2)
    try:
        sock.bind((client, 0))
        sock.connect((sys.argv[1], int(sys.argv[2])))
        out[client] = json.loads(sock.makefile("rb").readline())["backend"]
    except (OSError, ValueError) as err:
        out[client] = "error:" + type(err).__name__
    finally:
        sock.close()
print(json.dumps(out))
"""


def manifest(nodes: tuple[str, ...]) -> dict[str, Any]:
    return {"apiVersion": "portico.io/v1alpha1", "kind": "LoadBalancer",
            "metadata": {"name": NAME, "namespace": NAMESPACE},
            "spec": {"listeners": [{"name": "http", "protocol": "tcp", "port": 80, "backendPort": 8080}],
                     "backends": [{"address": NODE_IPS[node], "name": node} for node in nodes],
                     "sessionAffinity": "clientIP", "sessionAffinityTimeoutSeconds": TIMEOUT_S,
                     "healthCheck": {"type": "tcp", "intervalMs": 200, "timeoutMs": 150, "rise": 2, "fall": 2}}}


def apply(obj: dict[str, Any], directory: pathlib.Path) -> None:
    path = directory / f"{NAME}.yaml"
    path.write_text(yaml.safe_dump(obj))
    kubectl("apply", "-f", str(path))


def remove(force: bool = False) -> None:
    kubectl("delete", "plb", "-n", NAMESPACE, NAME, "--ignore-not-found", "--wait=false")
    if force:
        patched = kubectl("patch", "plb", "-n", NAMESPACE, NAME, "--type=merge", "-p", '{"metadata":{"finalizers":null}}',
                          check=False)
        assert patched.returncode == 0 or "NotFound" in patched.stderr, patched.stderr


def client_shell(*cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["podman", "exec", "portico-lab-client", *cmd], capture_output=True, text=True, check=check)


def connect_all(vip: str) -> dict[str, str]:
    """One new connection from each client address: client -> the node that answered."""
    run = client_shell("python3", "-c", CONNECT, vip, "80", *CLIENTS)
    return json.loads(run.stdout)


def remembered_on_gw1() -> set[str]:
    """Every client gw1's affinity sets hold."""
    listing = json.loads(gw1.check_output("nft -j list sets table inet portico"))
    return {elem["elem"]["val"] if isinstance(elem, dict) else elem
            for item in listing["nftables"] if item.get("set", {}).get("name", "").startswith("affm_")
            for elem in item["set"].get("elem", [])}


@pytest.fixture
def clients() -> Iterator[None]:
    client_shell("ip", "route", "replace", "local", CLIENT_RANGE, "dev", "lo")
    yield
    client_shell("ip", "route", "del", "local", CLIENT_RANGE, "dev", "lo", check=False)


@pytest.fixture
def vip(tmp_path: pathlib.Path, clients: None) -> Iterator[str]:
    remove(force=True)  # leftovers of an interrupted run
    apply(manifest(("node1", "node2")), tmp_path)
    try:
        sync()
        obj = json.loads(kubectl("get", "plb", "-n", NAMESPACE, NAME, "-o", "json").stdout)
        yield obj["status"]["addresses"][0]
    finally:
        remove()
        try:
            sync()
        finally:
            remove(force=True)


def test_a_client_keeps_its_backend_across_a_backend_add_within_the_timeout_and_moves_after(vip: str, tmp_path: pathlib.Path):
    first = connect_all(vip)
    assert set(first.values()) == {"node1", "node2"}, first
    started = time.monotonic()
    apply(manifest(("node1", "node2", "node3")), tmp_path)
    sync()
    assert remembered_on_gw1() >= set(CLIENTS), "the rebuilt table did not keep the remembered clients"
    kept = connect_all(vip)
    elapsed = time.monotonic() - started
    assert elapsed < TIMEOUT_S - 5, f"sync and connections took {elapsed:.0f}s: longer than the affinity timeout allows"
    assert kept == first, {c: (first[c], kept[c]) for c in CLIENTS if kept[c] != first[c]}

    # The timeout counts from each client's last new connection (the ones just made).
    time.sleep(TIMEOUT_S + 2)
    after = connect_all(vip)
    moved = {c: after[c] for c in CLIENTS if after[c] != first[c]}
    assert moved, "no client's Maglev choice changed with a third backend: the test proves nothing"
    assert set(after.values()) <= set(NODE_IPS) and "node3" in moved.values(), after
