"""Client-IP session affinity with its timeout, against the real kernel in a private netns.

Real nft tables converged by the nft module, real TCP backends that answer with their own
address, real clients bound to their own source addresses (an AnyIP route for 203.0.113.0/24),
and, for the health tests, the real health checker. A client keeps its backend for the timeout
after its last new connection, also when the backend set changes; after it, the client gets the
plain Maglev choice again; a backend the health checker withholds forgets its clients.
"""

from __future__ import annotations

import json
import pathlib
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import Netns, task_results
from test_healthd import Lab, wait_for

from ansible_collections.portico.gateway.plugins.module_utils.dataplane.options import RenderOptions
from ansible_collections.portico.gateway.plugins.module_utils.dataplane.render import (
    remembered_clients_script,
    render_table,
    service_ports,
)
from ansible_collections.portico.gateway.plugins.module_utils.model.ipam import parse_pools
from ansible_collections.portico.gateway.plugins.module_utils.model.loadbalancer import parse_loadbalancers

VIP = "198.51.100.10"
BACKENDS = ("192.0.2.11", "192.0.2.12", "192.0.2.13")
ADDED = "192.0.2.14"
CLIENTS = tuple(f"203.0.113.{i}" for i in range(1, 81))
SHORT_TIMEOUT_S = 2


def affinity_lb(backends: tuple[str, ...], timeout_s: int, **extra: Any) -> dict[str, Any]:
    return {"name": "web", "vip": VIP, "ports": [{"protocol": "tcp", "port": 80, "backend_port": 8080}],
            "backends": [{"address": a} for a in backends], "session_affinity": "client_ip",
            "session_affinity_timeout_s": timeout_s, **extra}


def connect_from(ns: Netns, clients: tuple[str, ...]) -> dict[str, str]:
    """One new connection from each client address: client -> the backend that answered."""
    script = (
        "import json, socket, sys\nout = {}\n"
        "for client in sys.argv[1:]:\n"
        "    s = socket.socket()\n"
        "    s.settimeout(1)\n"
        "    try:\n"
        "        s.bind((client, 0))\n"
        f"        s.connect(('{VIP}', 80))\n"
        "        out[client] = s.recv(64).decode().strip()\n"
        "    except OSError as err:\n"
        "        out[client] = 'error:' + type(err).__name__\n"
        "    finally:\n"
        "        s.close()\n"
        "print(json.dumps(out))\n")
    return json.loads(ns.run("python3", "-c", script, *clients).stdout)


def remembered(ns: Netns) -> dict[str, set[str]]:
    """Affinity set name -> the client addresses it holds, as the kernel lists them."""
    listing = json.loads(ns.run("nft", "-j", "list", "sets", "table", "inet", "portico").stdout)
    sets = {}
    for item in listing["nftables"]:
        body = item.get("set", {})
        if body.get("name", "").startswith("affm_"):
            sets[body["name"]] = {e["elem"]["val"] if isinstance(e, dict) else e for e in body.get("elem", [])}
    return sets


def member_set_of(sets: dict[str, set[str]], backend: str) -> str:
    """The affinity set of a backend (the name carries its address in hex)."""
    hexed = "".join(f"{int(part):02x}" for part in backend.split("."))
    names = [name for name in sets if f"_{hexed}_" in name]
    assert len(names) == 1, f"affinity sets of {backend}: {names} (of {sorted(sets)})"
    return names[0]


@pytest.fixture
def lab(tmp_path: pathlib.Path) -> Iterator[Lab]:
    name = f"portico-aff-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    ns = Netns(name)
    lab = Lab(ns, tmp_path)
    try:
        ns.run("ip", "link", "set", "lo", "up")
        for address in (VIP, *BACKENDS, ADDED):
            ns.run("ip", "addr", "add", f"{address}/32", "dev", "lo")
        # Every client address is local: sockets bind any of them without an address each.
        ns.run("ip", "route", "add", "local", "203.0.113.0/24", "dev", "lo")
        for address in (*BACKENDS, ADDED):
            lab.start_backend(address)
        yield lab
    finally:
        if lab.daemon is not None:
            lab.kill_daemon(signal.SIGTERM)
        for proc in lab.servers.values():
            proc.kill()
        subprocess.run(["ip", "netns", "del", name], check=False)


def test_a_client_keeps_its_backend_across_a_backend_add_and_moves_after_the_timeout(lab: Lab):
    lab.converge([affinity_lb(BACKENDS, SHORT_TIMEOUT_S)])
    first = connect_from(lab.ns, CLIENTS)
    assert set(first.values()) == set(BACKENDS), first
    before = remembered(lab.ns)

    added = lab.converge([affinity_lb((*BACKENDS, ADDED), SHORT_TIMEOUT_S)])
    assert added["changed"] is True and added["drift"] is False, added
    # The table was replaced: its sets were refilled in the same transaction.
    refilled = remembered(lab.ns)
    kept = connect_from(lab.ns, CLIENTS)
    assert kept == first, {c: (first[c], kept[c]) for c in CLIENTS if kept[c] != first[c]}
    assert before[member_set_of(before, "192.0.2.11")] == {c for c, b in first.items() if b == "192.0.2.11"}
    assert {name: clients for name, clients in refilled.items() if clients} == before

    # The kernel's elements are neither drift nor a change, in check and diff mode too.
    again = lab.converge([affinity_lb((*BACKENDS, ADDED), SHORT_TIMEOUT_S)])
    assert again["changed"] is False and again["drift"] is False, again
    task = {"portico.gateway.nft_loadbalancer": {
        "loadbalancers": [affinity_lb((*BACKENDS, ADDED), SHORT_TIMEOUT_S)],
        "pools": {"public": {"addresses": ["198.51.100.0/24"]}}, "state_dir": str(lab.state_dir),
        "health_state_file": str(lab.run_dir / "healthd/state.json"), "lock_file": str(lab.run_dir / "dataplane.lock")}}
    checked = task_results(lab.ns.play([task], lab.tmp, "--check", "--diff"))[0]
    assert checked["changed"] is False and checked["drift"] is False, checked

    # The timeout counts from the last new connection (the ones just made): after it, every
    # client gets the plain Maglev choice of the four backends, and some of them move.
    time.sleep(SHORT_TIMEOUT_S + 0.5)
    after = connect_from(lab.ns, CLIENTS)
    moved = {c for c in CLIENTS if after[c] != first[c]}
    assert moved, "no client's Maglev choice changed with a fourth backend: the test proves nothing"
    assert {after[c] for c in moved} <= {*BACKENDS, ADDED} and ADDED in {after[c] for c in moved}, after


def test_the_timeout_counts_from_the_last_new_connection(lab: Lab):
    # Longer than SHORT_TIMEOUT_S: the converge between the first connections and the first
    # re-arm takes up to 2 s on a loaded machine, and must not outlast the timeout it re-arms.
    timeout_s = 6
    lab.converge([affinity_lb(BACKENDS, timeout_s)])
    first = connect_from(lab.ns, CLIENTS)
    lab.converge([affinity_lb((*BACKENDS, ADDED), timeout_s)])
    # New connections within the timeout re-arm it each time: well past one timeout from the
    # first connection, clients still have their backend.
    for _round in range(3):
        time.sleep(timeout_s / 2)
        assert connect_from(lab.ns, CLIENTS) == first


def test_a_withheld_backend_forgets_its_clients_and_they_stay_where_they_went(lab: Lab):
    check = {"type": "tcp", "interval_ms": 100, "timeout_ms": 80, "fall": 2, "rise": 2}
    lb = affinity_lb(BACKENDS, 300, health_check=check)
    lab.converge([lb])
    lab.write_config()
    lab.start_daemon()
    wait_for(lambda: all(lab.up().values()), 5, "all backends up")
    first = connect_from(lab.ns, CLIENTS)
    dead = "192.0.2.11"
    on_dead = {c for c, b in first.items() if b == dead}
    sets = remembered(lab.ns)
    assert on_dead and sets[member_set_of(sets, dead)] == on_dead

    lab.stop_backend(dead)
    wait_for(lambda: lab.status()["loadbalancers"]["web"]["withheld"] == [dead], 3, "backend withheld")
    sets = remembered(lab.ns)
    assert sets[member_set_of(sets, dead)] == set()
    # A converge under this health state changes nothing: the verdict slots are the health checker's.
    assert lab.converge([lb])["changed"] is False
    second = connect_from(lab.ns, CLIENTS)
    assert all(second[c] in BACKENDS and second[c] != dead for c in on_dead), second
    assert all(second[c] == first[c] for c in CLIENTS if c not in on_dead), "a healthy backend's client moved"

    # Back in rotation: the clients that moved keep their new backend until their timeout.
    lab.start_backend(dead)
    wait_for(lambda: lab.status()["loadbalancers"]["web"]["withheld"] == [], 3, "backend served again")
    assert connect_from(lab.ns, CLIENTS) == second
    # New clients reach it again through Maglev.
    fresh = connect_from(lab.ns, tuple(f"203.0.113.{i}" for i in range(101, 161)))
    assert dead in fresh.values()
    assert lab.converge([lb])["changed"] is False


def test_affinity_renders_pass_the_kernel_check(netns: Netns, tmp_path: pathlib.Path):
    """IPv6, SNAT, one backend, a withheld backend and carried clients: every shape nft -c must accept."""
    pools = parse_pools({"public": {"addresses": ["198.51.100.0/24", "2001:db8:100::/64"]}})
    v6 = {"name": "v6", "vip": "2001:db8:100::10", "ports": [{"protocol": "tcp", "port": 443, "backend_port": 8443}],
          "backends": ["2001:db8:192::11", {"address": "2001:db8:192::12", "port": 9443}],
          "session_affinity": "client_ip", "session_affinity_timeout_s": 86400, "preserve_source_ip": False}
    one = {**affinity_lb(("192.0.2.11",), 30), "name": "one", "vip": "198.51.100.11"}
    model = parse_loadbalancers([v6, one, affinity_lb(BACKENDS, 10)], pools)
    assert not model.problems
    options = RenderOptions(snat_source6="2001:db8:192::21")
    rendered = render_table(model.loadbalancers, options, {"web": {"192.0.2.12"}})
    web = next(s for s in service_ports(model.loadbalancers) if s.lb.name == "web")
    v6_service = next(s for s in service_ports(model.loadbalancers) if s.lb.name == "v6")
    carried = remembered_clients_script(model.loadbalancers, options, {"web": {"192.0.2.12"}}, {
        web.member_set("192.0.2.11", 8080): [("203.0.113.7", 5)],
        v6_service.member_set("2001:db8:192::12", 9443): [("2001:db8:203::7", 80000)]})
    assert carried.count("add element") == 2
    for script in (rendered.intent_script, rendered.script + carried):
        path = tmp_path / "affinity.nft"
        path.write_text(script)
        checked = netns.run("nft", "-c", "-f", str(path), check=False)
        assert checked.returncode == 0, checked.stderr
