"""portico-conntrack-reaper (role conntrackd, collection dataplane.conntrack_reaper) against the kernel's
conntrack table in private namespaces.

- TCP entries in TIME_WAIT or CLOSE go away at once: those userspace wrote (as conntrackd writes its
  peers' connections), IPv4 and IPv6, those already there when the reaper starts, and those of a real
  connection the kernel tracked. Open connections stay: ESTABLISHED entries, the real connection while
  it is open, UDP.
- Two gateways replicating with conntrackd (the role's own configuration): a connection closed on one
  leaves no replica on the other, so a client reusing its port there gets a connection of its own,
  with that gateway's source NAT. Without the reaper the replica (TIME_WAIT, written without the flag
  that lets the kernel reopen it) carries the new connection with the peer's NAT binding and it hangs.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator

import jinja2
import pytest
import yaml
from conftest import Netns

REPO = pathlib.Path(__file__).resolve().parents[2]
REAPER = REPO / "roles/conntrackd/files/portico-conntrack-reaper"
ROLE = REPO / "roles/conntrackd"
ENV = {**os.environ, "PORTICO_PYTHONPATH": str(REPO / "collections")}
# Any TCP connection through the namespace's loopback makes the kernel track it.
TRACKING_RULESET = """
table inet reaper_test {
    chain out {
        type filter hook output priority 0;
        ct state new accept
    }
}
"""
# A connection over loopback from SOURCE:PORT to 198.51.100.10:80: prints "open" once data went
# both ways, waits for a line on stdin, then closes it, the client first (its entry ends in
# TIME_WAIT); prints "closed". Fails if the connection does not open within a second.
CONNECTION = """
import socket, sys
source, port = sys.argv[1], int(sys.argv[2])
server = socket.create_server(("198.51.100.10", 80), reuse_port=True)
client = socket.socket()
client.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
client.bind((source, port))
client.settimeout(1)
client.connect(("198.51.100.10", 80))
accepted, peer = server.accept()
client.sendall(b"x"); accepted.recv(1); accepted.sendall(b"y"); client.recv(1)
print("open", peer[0], flush=True)
sys.stdin.readline()
client.close()
accepted.recv(1)
accepted.close()
print("closed", flush=True)
"""
CLIENT, VIP = "198.51.100.1", "198.51.100.10"


def entries(netns: Netns, *selector: str) -> list[str]:
    listing = netns.run("conntrack", "-L", *selector, check=False).stdout
    return [line for line in listing.splitlines() if line.strip()]


def insert(netns: Netns, *spec: str) -> None:
    netns.run("conntrack", "-I", "--timeout", "100", *spec)


def wait_until(predicate: Callable[[], object], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return bool(predicate())


def start_reaper(netns: Netns) -> subprocess.Popen:
    proc = subprocess.Popen(["ip", "netns", "exec", netns.name, "python3", str(REAPER), "--report-every", "0"],
                            stderr=subprocess.PIPE, text=True, env=ENV)
    assert proc.stderr is not None
    line = proc.stderr.readline()
    assert "listening" in line, line + proc.stderr.read()
    return proc


def stop(proc: subprocess.Popen) -> str:
    proc.terminate()
    _, stderr = proc.communicate(timeout=10)
    return stderr or ""


@pytest.fixture
def reaper(netns: Netns) -> Iterator[subprocess.Popen]:
    proc = start_reaper(netns)
    try:
        yield proc
    finally:
        stop(proc)


def tcp(source: str, destination: str, port: int, state: str) -> list[str]:
    return ["-p", "tcp", "-s", source, "-d", destination, "--sport", str(port), "--dport", "80",
            "--state", state, "-u", "SEEN_REPLY,ASSURED"]


def with_port(port: int) -> Callable[[str], bool]:
    return lambda line: f"sport={port} " in line


def test_replicated_closed_tcp_entries_are_deleted_others_stay(netns: Netns, reaper: subprocess.Popen):
    insert(netns, *tcp(CLIENT, VIP, 1000, "TIME_WAIT"))
    insert(netns, *tcp(CLIENT, VIP, 1001, "CLOSE"))
    insert(netns, *tcp("2001:db8::1", "2001:db8::10", 1002, "TIME_WAIT"))
    insert(netns, *tcp(CLIENT, VIP, 2000, "ESTABLISHED"))
    insert(netns, "-p", "udp", "-s", CLIENT, "-d", VIP, "--sport", "2001", "--dport", "53")

    assert wait_until(lambda: not any(with_port(port)(line) for line in entries(netns) for port in (1000, 1001, 1002)),
                      5), entries(netns)
    kept = entries(netns)
    assert any("sport=2000 " in line and "ESTABLISHED" in line for line in kept), kept
    assert any(line.startswith("udp") and "sport=2001 " in line for line in kept), kept


def test_closed_entries_already_there_go_when_the_reaper_starts(netns: Netns):
    insert(netns, *tcp(CLIENT, VIP, 1000, "TIME_WAIT"))
    insert(netns, *tcp(CLIENT, VIP, 2000, "ESTABLISHED"))
    proc = start_reaper(netns)
    try:
        # The sweep runs before "listening" is logged.
        kept = entries(netns)
        assert not any(with_port(1000)(line) for line in kept) and any(with_port(2000)(line) for line in kept), kept
    finally:
        log = stop(proc)
    assert "deleted 1 entries" in log and "1 sweeps" in log, log


def test_a_real_connection_stays_while_open_and_goes_when_closed(netns: Netns, reaper: subprocess.Popen,
                                                                 tmp_path: pathlib.Path):
    (tmp_path / "tracking.nft").write_text(TRACKING_RULESET)
    netns.run("nft", "-f", str(tmp_path / "tracking.nft"))
    netns.run("ip", "addr", "add", f"{CLIENT}/32", "dev", "lo")
    netns.run("ip", "addr", "add", f"{VIP}/32", "dev", "lo")
    connection = open_connection(netns, 40001)
    mine = lambda: [line for line in entries(netns, "-p", "tcp") if with_port(40001)(line)]  # noqa: E731
    try:
        assert any("ESTABLISHED" in line for line in mine()), entries(netns)
        time.sleep(1)  # longer than the closed entries above took to go
        assert any("ESTABLISHED" in line for line in mine()), entries(netns)
    finally:
        assert "closed" in connection.communicate("close\n", timeout=10)[0]
    assert wait_until(lambda: not mine(), 5), mine()


def open_connection(netns: Netns, port: int) -> subprocess.Popen:
    """The CONNECTION script from CLIENT:port, once it is open (fails the test if it does not open)."""
    proc = subprocess.Popen(["ip", "netns", "exec", netns.name, "python3", "-c", CONNECTION, CLIENT, str(port)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("open"):
        proc.kill()
        pytest.fail(f"connection from port {port} did not open: {proc.communicate()[1]}")
    return proc


# --- Two gateways replicating with conntrackd --------------------------------------------------

SYNC_NET = "198.18.0"
# Each gateway source-NATs the connection to its own return address, as in bgp mode.
GATEWAY_RULESET = """
table inet reaper_test {
    chain out {
        type filter hook output priority 0;
        ct state new accept
    }
    chain post {
        type nat hook postrouting priority srcnat;
        ip daddr 198.51.100.10 tcp dport 80 snat ip to %s
    }
}
"""


def conntrackd_conf(tmp: pathlib.Path, name: str, local: str, peer: str, interface: str) -> pathlib.Path:
    """The role's conntrackd.conf for this gateway (unicast to its one peer), with its own lock and socket."""
    defaults = yaml.safe_load((ROLE / "defaults/main.yml").read_text())
    template = jinja2.Environment(loader=jinja2.FileSystemLoader(ROLE / "templates"), undefined=jinja2.StrictUndefined)
    text = template.get_template("conntrackd.conf.j2").render(
        # conntrackd_mode: what vars/main.yml works out for a pair over udp.
        **{**defaults, "ansible_managed": "test", "conntrackd_transport": "udp", "conntrackd_mode": "ftfw", "conntrackd_local_address": local,
           "conntrackd_peers": [peer], "conntrackd_interface": interface,
           "conntrackd_lock_file": str(tmp / f"{name}.lock"), "conntrackd_socket_path": str(tmp / f"{name}.ctl")})
    path = tmp / f"{name}.conf"
    path.write_text(text.replace("Syslog on", f"Syslog off\n    LogFile {tmp / name}.log").replace("LogFile off\n", ""))
    return path


@pytest.fixture
def gateway_pair(tmp_path: pathlib.Path) -> Iterator[tuple[Netns, Netns]]:
    """Two namespaces replicating their conntrack tables with conntrackd over a veth pair; each has
    the client's and the VIP's address on its loopback and source-NATs to its own return address."""
    if not shutil.which("conntrackd"):
        pytest.fail("conntrackd is not installed (.ci/install-deps)")
    names = [f"portico-it-{uuid.uuid4().hex[:8]}" for _ in range(2)]
    pair = (Netns(names[0]), Netns(names[1]))
    daemons: list[subprocess.Popen] = []
    for name in names:
        subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "link", "add", "sync", "netns", names[0], "type", "veth", "peer", "name", "sync",
                        "netns", names[1]], check=True)
        for index, gateway in enumerate(pair):
            gateway.run("ip", "link", "set", "lo", "up")
            for address in (CLIENT, VIP, f"198.51.100.2{index + 1}"):
                gateway.run("ip", "addr", "add", f"{address}/32", "dev", "lo")
            gateway.run("ip", "addr", "add", f"{SYNC_NET}.{index + 1}/24", "dev", "sync")
            gateway.run("ip", "link", "set", "sync", "up")
            (tmp_path / f"gw{index}.nft").write_text(GATEWAY_RULESET % f"198.51.100.2{index + 1}")
            gateway.run("nft", "-f", str(tmp_path / f"gw{index}.nft"))
            conf = conntrackd_conf(tmp_path, f"gw{index}", f"{SYNC_NET}.{index + 1}", f"{SYNC_NET}.{2 - index}", "sync")
            daemons.append(subprocess.Popen(["ip", "netns", "exec", gateway.name, "conntrackd", "-C", str(conf)],
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for index, gateway in enumerate(pair):
            control = str(tmp_path / f"gw{index}.conf")
            assert wait_until(lambda g=gateway, c=control: g.run("conntrackd", "-C", c, "-s", check=False).returncode == 0,
                              10), f"conntrackd did not start in gw{index}"
        yield pair
    finally:
        for daemon in daemons:
            daemon.terminate()
            daemon.wait(timeout=10)
        for name in names:
            subprocess.run(["ip", "netns", "delete", name], check=False)


def check_script(tmp: pathlib.Path) -> pathlib.Path:
    """The role's configuration check (the template's validate: on the gateway)."""
    template = jinja2.Environment(loader=jinja2.FileSystemLoader(ROLE / "templates"), undefined=jinja2.StrictUndefined)
    path = tmp / "conntrackd-check-config"
    path.write_text(template.get_template("conntrackd-check-config.j2").render(ansible_managed="test"))
    path.chmod(0o755)
    return path


def test_the_config_check_passes_a_live_daemons_changed_file_and_refuses_a_broken_one(gateway_pair, tmp_path):
    """The file names the running daemon's socket: the check must parse it, not ask that daemon for
    its statistics (their "Error send" counters once failed every change to a live gateway)."""
    gw1, _ = gateway_pair
    live = tmp_path / "gw0.conf"
    changed = tmp_path / "changed.conf"
    changed.write_text(live.read_text().replace("Mode FTFW", "Mode NOTRACK"))
    check = check_script(tmp_path)
    assert gw1.run("conntrackd", "-C", str(live), "-s", "network", check=False).returncode == 0  # the daemon answers there
    passed = gw1.run(str(check), str(changed), check=False)
    assert passed.returncode == 0, passed.stderr
    broken = tmp_path / "broken.conf"
    broken.write_text(live.read_text().replace(f"IPv4_address {SYNC_NET}.1", "IPv4_address 192.0.2.300"))
    refused = gw1.run(str(check), str(broken), check=False)
    assert refused.returncode == 1, refused


def replica(gateway: Netns, port: int) -> list[str]:
    return [line for line in entries(gateway, "-p", "tcp") if with_port(port)(line)]


def test_a_port_closed_on_one_gateway_opens_a_new_connection_on_the_other(gateway_pair):
    gw1, gw2 = gateway_pair
    reapers = [start_reaper(gateway) for gateway in gateway_pair]
    try:
        connection = open_connection(gw1, 40001)
        # gw2 holds the replica with gw1's source NAT: it could carry this flow if it moved.
        assert wait_until(lambda: any("ESTABLISHED" in line and "dst=198.51.100.21" in line
                                      for line in replica(gw2, 40001)), 5), entries(gw2)
        assert "closed" in connection.communicate("close\n", timeout=10)[0]
        # The close reached gw2: its replica is gone (without the reaper: in TIME_WAIT, for 2 minutes).
        assert wait_until(lambda: all("TIME_WAIT" in line for line in replica(gw2, 40001)), 5), entries(gw2)
        # The client's port now arrives at gw2 (ECMP moved it): a connection of its own, NATed by gw2.
        # Without the reaper gw2 passes the SYN on the replica, with gw1's NAT, and it never opens.
        again = open_connection(gw2, 40001)
        assert any("ESTABLISHED" in line and "dst=198.51.100.22" in line for line in replica(gw2, 40001)), entries(gw2)
        assert "closed" in again.communicate("close\n", timeout=10)[0]
    finally:
        for proc in reapers:
            stop(proc)
