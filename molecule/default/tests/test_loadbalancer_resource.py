"""Portico's LoadBalancer resource in the lab: kubectl -> sync -> gateway -> traffic -> status.

A LoadBalancer (loadbalancers.portico.io, short name plb) in front of two lab nodes, no Service,
no pods: what `kubectl apply -f` asks for is what the client's connections get, and what
`kubectl get plb` says is what the gateway does. Each change takes exactly one sync (the fast
path the watcher runs); nothing here waits for things to settle.
"""

from __future__ import annotations

import ipaddress
import json
import pathlib
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from lab_helpers import client, kubectl, probe, start_echo, stop_echo, sync, vip_in_gateway_table

NAMESPACE = "default"
NAME = "proof"
DOOMED = "proof-doomed"
FINALIZER = "portico.io/load-balancer-cleanup"
NODE_IPS = {"node1": "192.0.2.11", "node2": "192.0.2.12"}
# The IPv4 part of the lab's pool `public` (inventories/lab/group_vars/gateways.yml).
PUBLIC_V4 = (ipaddress.ip_address("198.51.100.0"), ipaddress.ip_address("198.51.100.239"))

# Held by the lab client: one TCP connection in the echo backend's stream mode (a line every
# 100 ms), read all along by a thread. It prints the backend it reached, waits for a line on
# stdin, then sends data over the connection, reads on for a second and prints what it saw:
# lines that came after the data was sent, how the reading ended (if it did) and the bytes the
# backend has not acknowledged (SIOCOUTQ).
HELD_CONNECTION = r"""
import fcntl, json, socket, struct, sys, termios, threading, time
sock = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
reader = sock.makefile("rb")
backend = json.loads(reader.readline())["backend"]
sock.sendall(b"stream\n")
seen, ended = [], []
def read():
    try:
        for line in reader:
            seen.append((time.monotonic(), json.loads(line)["backend"]))
        ended.append("eof")
    except OSError as err:
        ended.append(type(err).__name__)
threading.Thread(target=read, daemon=True).start()
print(json.dumps({"backend": backend}), flush=True)
sys.stdin.readline()
sent_at = time.monotonic()
sock.sendall(b"sent after the sync\n")
time.sleep(1.0)
unacked = struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, struct.pack("i", 0)))[0]
after = [name for at, name in seen if at > sent_at]
print(json.dumps({"backend": backend, "lines": len(seen), "after": len(after), "after_from": sorted(set(after)),
                  "ended": ended, "unacked": unacked}), flush=True)
"""


def manifest(name: str = NAME, state: str = "active", drain: tuple[str, ...] = ()) -> dict[str, Any]:
    """The LoadBalancer as a user writes it: port 80 to the echo backends' 8080 on node1 and node2."""
    return {"apiVersion": "portico.io/v1alpha1", "kind": "LoadBalancer",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {"state": state,
                     "listeners": [{"name": "http", "protocol": "tcp", "port": 80, "backendPort": 8080}],
                     "backends": [{"address": ip, "name": node, "adminState": "drain" if node in drain else "active"}
                                  for node, ip in NODE_IPS.items()],
                     "healthCheck": {"type": "tcp", "intervalMs": 200, "timeoutMs": 150, "rise": 2, "fall": 2}}}


def apply(obj: dict[str, Any], directory: pathlib.Path) -> None:
    path = directory / f"{obj['metadata']['name']}.yaml"
    path.write_text(yaml.safe_dump(obj))
    kubectl("apply", "-f", str(path))


def read(name: str = NAME) -> dict[str, Any]:
    return json.loads(kubectl("get", "plb", "-n", NAMESPACE, name, "-o", "json").stdout)


def conditions(obj: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in obj.get("status", {}).get("conditions") or []}


def health(obj: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """Backend name -> (adminState, health) as the status shows it."""
    return {b["name"]: (b.get("adminState", ""), b["health"]) for b in obj["status"].get("backends") or []}


def remove(name: str, force: bool = False) -> None:
    """Delete a test LoadBalancer. One Portico served stays, held by its cleanup finalizer, until a
    sync withdraws its address; ``force`` takes the finalizer off at once, as an administrator would
    for the leftovers of an interrupted run."""
    kubectl("delete", "plb", "-n", NAMESPACE, name, "--ignore-not-found", "--wait=false")
    if force:
        patched = kubectl("patch", "plb", "-n", NAMESPACE, name, "--type=merge", "-p", '{"metadata":{"finalizers":null}}',
                          check=False)
        assert patched.returncode == 0 or "NotFound" in patched.stderr, patched.stderr


def gone(name: str) -> bool:
    shown = kubectl("get", "plb", "-n", NAMESPACE, name, check=False)
    assert shown.returncode == 0 or "NotFound" in shown.stderr, shown.stderr
    return shown.returncode != 0


@pytest.fixture(scope="module")
def manifests(tmp_path_factory) -> pathlib.Path:
    return tmp_path_factory.mktemp("plb")


@pytest.fixture(scope="module")
def applied(manifests):
    """The LoadBalancer `proof`, applied with kubectl and served after one sync; at the end of the
    module it is deleted and a sync withdraws it and releases its finalizer."""
    for name in (NAME, DOOMED):
        remove(name, force=True)  # leftovers of an interrupted run
    apply(manifest(), manifests)
    try:
        sync()
    except AssertionError:
        remove(NAME, force=True)  # the module's teardown does not run after a failed setup
        raise
    yield read()
    for node in NODE_IPS:
        start_echo(node)
    for name in (NAME, DOOMED):
        remove(name)
    try:
        sync()
    finally:
        lingering = [name for name in (NAME, DOOMED) if not gone(name)]
        for name in lingering:
            remove(name, force=True)  # so that no other test meets them
    assert not lingering, f"still there after the sync that should release them: {lingering}"


@pytest.fixture
def proof(applied, manifests) -> Iterator[str]:
    """The address of `proof`; afterwards both echo backends run and `proof` is back to its first
    spec (one more sync only when a test left it changed)."""
    yield applied["status"]["addresses"][0]
    for node in NODE_IPS:
        start_echo(node)  # a no-op when it runs
    spec = read()["spec"]
    if spec["state"] != "active" or any(b["adminState"] != "active" for b in spec["backends"]):
        apply(manifest(), manifests)
        sync()


def test_an_applied_loadbalancer_answers_after_one_sync_and_says_so(applied, proof):
    obj = applied
    assert obj["status"]["addresses"] == [proof], obj["status"]
    assert PUBLIC_V4[0] <= ipaddress.ip_address(proof) <= PUBLIC_V4[1], proof
    assert obj["status"]["state"] == "active" and obj["status"]["healthy"] == "2/2", obj["status"]
    assert obj["status"]["observedGeneration"] == obj["metadata"]["generation"]
    assert conditions(obj) == {"Accepted": ("True", "Accepted"), "Programmed": ("True", "Programmed")}, obj["status"]
    assert health(obj) == {"node1": ("active", "Healthy"), "node2": ("active", "Healthy")}
    assert FINALIZER in obj["metadata"]["finalizers"]
    assert vip_in_gateway_table(proof)

    result = probe(client, "tcp", proof, 80)
    assert result["ok"] == 30 and set(result["backends"]) == set(NODE_IPS), result
    assert result["clients"] == ["203.0.113.10"], result  # the backends see the client

    header, *rows = kubectl("get", "plb", "-n", NAMESPACE, NAME).stdout.splitlines()
    assert header.split() == ["NAME", "ADDRESSES", "STATE", "HEALTHY", "AGE"], header
    assert len(rows) == 1 and rows[0].split()[:4] == [NAME, f'["{proof}"]', "active", "2/2"], rows


def test_a_stopped_backend_shows_in_status_after_a_sync_and_its_return_too(proof):
    stop_echo("node1")
    sync()
    obj = read()
    assert obj["status"]["healthy"] == "1/2", obj["status"]
    assert health(obj) == {"node1": ("active", "Unhealthy"), "node2": ("active", "Healthy")}, obj["status"]["backends"]
    assert obj["status"]["backends"][0]["message"].startswith("gw1: "), obj["status"]["backends"][0]
    assert conditions(obj)["Programmed"] == ("True", "Programmed")  # node2 still serves: still announced
    result = probe(client, "tcp", proof, 80)
    assert result["ok"] == 30 and set(result["backends"]) == {"node2"}, result

    start_echo("node1")
    sync()
    obj = read()
    assert obj["status"]["healthy"] == "2/2", obj["status"]
    assert health(obj) == {"node1": ("active", "Healthy"), "node2": ("active", "Healthy")}, obj["status"]["backends"]
    result = probe(client, "tcp", proof, 80)
    assert result["ok"] == 30 and set(result["backends"]) == set(NODE_IPS), result


def test_disabled_keeps_the_address_and_serves_nothing_until_active_again(proof, manifests):
    apply(manifest(state="disabled"), manifests)
    sync()
    obj = read()
    assert obj["status"]["state"] == "disabled" and obj["status"]["addresses"] == [proof], obj["status"]
    assert conditions(obj) == {"Accepted": ("True", "Accepted"), "Programmed": ("False", "Disabled")}, obj["status"]
    assert obj["status"]["healthy"] == "-"
    refused = probe(client, "tcp", proof, 80, count=5, timeout=0.5)
    assert refused["ok"] == 0 and set(refused["errors"]) == {"refused"}, refused  # refused at once, not timing out

    apply(manifest(), manifests)
    sync()
    obj = read()
    assert obj["status"]["state"] == "active" and obj["status"]["addresses"] == [proof], obj["status"]
    assert conditions(obj) == {"Accepted": ("True", "Accepted"), "Programmed": ("True", "Programmed")}, obj["status"]
    result = probe(client, "tcp", proof, 80)
    assert result["ok"] == 30 and set(result["backends"]) == set(NODE_IPS), result


def test_a_drained_backend_keeps_its_connection_and_gets_no_new_one(proof, manifests):
    held = subprocess.Popen(["podman", "exec", "-i", "portico-lab-client", "python3", "-c", HELD_CONNECTION, proof, "80"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        opened = held.stdout.readline()
        assert opened, held.stderr.read() if held.poll() is not None else "no answer from the held connection"
        drained = json.loads(opened)["backend"]
        assert drained in NODE_IPS, opened
        (other,) = set(NODE_IPS) - {drained}

        apply(manifest(drain=(drained,)), manifests)
        sync()
        out, err = held.communicate("send\n", timeout=30)
    finally:
        if held.poll() is None:
            held.kill()
            held.wait()
    kept = json.loads(out.splitlines()[-1]) if out.strip() else {}
    assert kept, err
    # Still the same backend, still delivering, and it took the data sent after the sync.
    assert kept["ended"] == [] and kept["after"] >= 5 and kept["after_from"] == [drained], kept
    assert kept["unacked"] == 0, kept

    result = probe(client, "tcp", proof, 80, count=50)
    assert result["ok"] == 50 and set(result["backends"]) == {other}, result

    obj = read()
    assert obj["status"]["healthy"] == "1/1", obj["status"]  # only backends taking new connections count
    assert health(obj) == {drained: ("drain", "Unchecked"), other: ("active", "Healthy")}, obj["status"]["backends"]
    assert conditions(obj)["Programmed"] == ("True", "Programmed")


def test_a_deleted_loadbalancer_is_withdrawn_before_its_finalizer_goes(applied, manifests):
    remove(DOOMED, force=True)
    apply(manifest(DOOMED), manifests)
    sync()
    obj = read(DOOMED)
    (address,) = obj["status"]["addresses"]
    assert FINALIZER in obj["metadata"]["finalizers"]
    assert vip_in_gateway_table(address) and probe(client, "tcp", address, 80, count=5)["ok"] == 5

    kubectl("delete", "plb", "-n", NAMESPACE, DOOMED, "--wait=false")
    held = read(DOOMED)
    assert held["metadata"].get("deletionTimestamp"), held["metadata"]
    # A converge that did not reach every gateway: the address leaves gw1's table, but the
    # finalizer and the status stay, so the address is not handed out yet.
    sync("-e", json.dumps({"portico_converged": False}))
    assert not vip_in_gateway_table(address)
    assert probe(client, "tcp", address, 80, count=3, timeout=0.5)["ok"] == 0
    held = read(DOOMED)
    assert FINALIZER in held["metadata"]["finalizers"] and held["status"]["addresses"] == [address], held

    sync()
    assert gone(DOOMED)
    events = json.loads(kubectl("get", "events", "-n", NAMESPACE, "-o", "json").stdout)["items"]
    released = [e["message"] for e in events if e["involvedObject"].get("uid") == obj["metadata"]["uid"] and e["reason"] == "Released"]
    assert released == [f"Portico no longer serves this LoadBalancer (being deleted); {address} withdrawn from every gateway"], released
    # The other LoadBalancer did not move.
    assert vip_in_gateway_table(applied["status"]["addresses"][0])
