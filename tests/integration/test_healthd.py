"""portico-healthd against the real kernel: nft tables, routes, TCP backends, in a private netns.

One namespace holds the VIP and three backend addresses on lo; the nft module converges the
table, the daemon (run with the distribution's python3, as on a gateway) probes the backends,
and the tests stop and start backends and the daemon itself.
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import time
import uuid
from typing import Any, Iterator

import pytest

from conftest import REPO, Netns, task_results

DAEMON = REPO / "roles/healthcheck/files/portico-healthd"
VIP = "198.51.100.10"
BACKENDS = ("192.0.2.11", "192.0.2.12", "192.0.2.13")
INTERVAL, FALL, RISE = 0.1, 2, 2
# A backend that stops answering leaves within interval x fall + one interval (phase), plus the apply.
DETECTION_BOUND = INTERVAL * FALL + INTERVAL + 0.25

SERVER = r"""
import socket, sys
sock = socket.socket()
sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
sock.bind((sys.argv[1], 8080))
sock.listen(128)
print("ready", flush=True)
while True:
    conn, _ = sock.accept()
    try:
        conn.sendall(sys.argv[1].encode() + b"\n")
    except OSError:
        pass  # health probes close with a reset
    finally:
        conn.close()
"""

LB = {"name": "web", "vip": VIP, "ports": [{"protocol": "tcp", "port": 80, "backend_port": 8080}],
      "backends": [{"address": a} for a in BACKENDS],
      "health_check": {"type": "tcp", "interval_ms": int(INTERVAL * 1000), "timeout_ms": 80, "fall": FALL, "rise": RISE}}


class Lab:
    def __init__(self, ns: Netns, tmp: pathlib.Path):
        self.ns, self.tmp = ns, tmp
        self.servers: dict[str, subprocess.Popen] = {}
        self.daemon: subprocess.Popen | None = None
        self.metrics_port = 19641
        self.state_dir = tmp / "nftables"
        self.run_dir = tmp / "run"
        self.hook_log = tmp / "hooks.log"
        self.config = tmp / "healthd.json"

    # backends ------------------------------------------------------------------
    def start_backend(self, address: str) -> None:
        proc = subprocess.Popen(["ip", "netns", "exec", self.ns.name, "python3", "-c", SERVER, address],
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        self.servers[address] = proc

    def stop_backend(self, address: str) -> float:
        proc = self.servers.pop(address)
        proc.kill()
        proc.wait()
        return time.time()

    # dataplane -----------------------------------------------------------------
    def converge(self, lbs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        task = {"portico.gateway.nft_loadbalancer": {
            "loadbalancers": lbs or [LB], "pools": {"public": {"addresses": ["198.51.100.0/24"]}},
            "state_dir": str(self.state_dir), "health_state_file": str(self.run_dir / "healthd/state.json"),
            "lock_file": str(self.run_dir / "dataplane.lock")}}
        results = task_results(self.ns.play([task], self.tmp))
        assert not results[0].get("failed"), results[0]
        return results[0]

    def slots(self) -> list[str]:
        """Slot -> backend address of the table web's first listener hashes into (shared or not)."""
        text = self.ns.run("nft", "list", "table", "inet", "portico").stdout
        chain = text.split("chain svc_web_", 1)[1].split("}", 1)[0]
        # nft lists a port added to the map's address as "map @name:port".
        name = chain.split("map @", 1)[1].split()[0].split(":")[0] if "map @" in chain else ""
        listing = json.loads(self.ns.run("nft", "-j", "list", "table", "inet", "portico").stdout)
        for item in listing["nftables"]:
            if name and "map" in item and item["map"]["name"] == name:
                elems = item["map"].get("elem", [])
                table = {e[0]: e[1]["concat"][0] if isinstance(e[1], dict) else e[1] for e in elems}
                return [table.get(i, "") for i in range(max(table, default=-1) + 1)] if table else []
        raise AssertionError("no slot map for web")

    def rejecting(self) -> bool:
        out = self.ns.run("nft", "-j", "list", "set", "inet", "portico", "no_backends4").stdout
        return any("elem" in item.get("set", {}) for item in json.loads(out)["nftables"])

    def announced(self) -> bool:
        return f"{VIP} dev lo" in self.ns.run("ip", "route", "show", "table", "201", check=False).stdout

    def connect(self) -> str:
        out = self.ns.run("python3", "-c", (
            "import socket,sys\n"
            "try:\n s=socket.create_connection(('%s',80),timeout=1); print(s.recv(64).decode().strip())\n"
            "except OSError as e: print('error:'+type(e).__name__)") % VIP, check=False).stdout.strip()
        return out

    def connect_many(self, count: int) -> list[str]:
        script = (
            "import socket,json\nout=[]\n"
            f"for i in range({count}):\n"
            " try:\n"
            f"  s=socket.create_connection(('{VIP}',80),timeout=1); out.append(s.recv(64).decode().strip()); s.close()\n"
            " except OSError as e: out.append('error:'+type(e).__name__)\n"
            "print(json.dumps(out))")
        return json.loads(self.ns.run("python3", "-c", script).stdout)

    # daemon --------------------------------------------------------------------
    def write_config(self, **overrides: Any) -> None:
        hooks = self.tmp / "hooks.d"
        hooks.mkdir(exist_ok=True)
        hook = hooks / "10-log"
        hook.write_text(f"#!/bin/sh\necho \"$1 $2\" >> {self.hook_log}\n")
        hook.chmod(0o755)
        config = {"dataplane_file": str(self.state_dir / "portico.dataplane.json"),
                  "state_file": str(self.run_dir / "healthd/state.json"),
                  "lock_file": str(self.run_dir / "dataplane.lock"), "hooks_dir": str(hooks),
                  "metrics_port": self.metrics_port, "announce_table": 201, **overrides}
        self.config.write_text(json.dumps(config))

    def start_daemon(self) -> None:
        env = {**os.environ, "PORTICO_PYTHONPATH": str(REPO / "collections")}
        log = open(self.tmp / "healthd.log", "a")  # noqa: SIM115 - closed with the process
        self.daemon = subprocess.Popen(["ip", "netns", "exec", self.ns.name, "/usr/bin/python3", str(DAEMON), "run",
                                        "--config", str(self.config)], env=env, stdout=log, stderr=log)
        wait_for(lambda: self.status(check=False) is not None, 10, "daemon answers /status")

    def kill_daemon(self, sig: int = signal.SIGKILL) -> None:
        assert self.daemon is not None
        self.daemon.send_signal(sig)
        self.daemon.wait(10)
        self.daemon = None

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        env = {**os.environ, "PORTICO_PYTHONPATH": str(REPO / "collections")}
        return subprocess.run(["ip", "netns", "exec", self.ns.name, "/usr/bin/python3", str(DAEMON), *args],
                              capture_output=True, text=True, env=env, check=check)

    def status(self, check: bool = True) -> dict[str, Any] | None:
        proc = self.cli("status", "--json", "--config", str(self.config), check=False)
        if proc.returncode != 0:
            assert not check, proc.stderr
            return None
        return json.loads(proc.stdout)

    def up(self) -> dict[str, bool]:
        status = self.status()
        assert status is not None
        return {b["address"]: b["up"] for b in status["backends"]}


def wait_for(predicate, timeout: float, what: str, step: float = 0.01) -> float:
    start = time.time()
    while time.time() - start < timeout:
        if predicate():
            return time.time()
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout}s waiting for: {what}")


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> Iterator[Lab]:
    name = f"portico-hd-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    ns = Netns(name)
    lab = Lab(ns, tmp_path_factory.mktemp("healthd"))
    try:
        ns.run("ip", "link", "set", "lo", "up")
        for address in (VIP, *BACKENDS):
            ns.run("ip", "addr", "add", f"{address}/32", "dev", "lo")
        for address in BACKENDS:
            lab.start_backend(address)
        lab.converge()
        lab.write_config()
        lab.start_daemon()
        wait_for(lambda: lab.announced(), 5, "VIP announced")
        yield lab
    finally:
        if lab.daemon is not None:
            lab.kill_daemon(signal.SIGTERM)
        for proc in lab.servers.values():
            proc.kill()
        subprocess.run(["ip", "netns", "del", name], check=False)


@pytest.fixture
def healthy(lab: Lab) -> Iterator[Lab]:
    """Every test starts and ends with all three backends up and in the table."""
    for address in BACKENDS:
        if address not in lab.servers:
            lab.start_backend(address)
    wait_for(lambda: all(lab.up().values()), 5, "all backends up")
    wait_for(lambda: set(lab.slots()) == set(BACKENDS), 5, "all backends in the table")
    yield lab
    for address in BACKENDS:
        if address not in lab.servers:
            lab.start_backend(address)
    wait_for(lambda: all(lab.up().values()), 5, "all backends up again")


def test_dead_backend_leaves_within_the_bound_and_others_keep_their_slots(healthy: Lab):
    before = healthy.slots()
    stopped = healthy.stop_backend("192.0.2.11")
    wait_for(lambda: "192.0.2.11" not in healthy.slots(), 3, "backend out of the table")
    # The daemon's own timestamp of the transaction: polling nft from here would add its own delay.
    applied = healthy.status()["loadbalancers"]["web"]["applied_at"]
    assert applied - stopped <= DETECTION_BOUND, f"took {applied - stopped:.3f}s, bound {DETECTION_BOUND:.3f}s"
    after = healthy.slots()
    assert len(after) == len(before)
    assert all(a == b for a, b in zip(after, before) if b != "192.0.2.11"), "a healthy backend's slot moved"
    replies = healthy.connect_many(30)
    assert all(r in ("192.0.2.12", "192.0.2.13") for r in replies), replies
    # It comes back after `rise` successes, into exactly its old slots.
    healthy.start_backend("192.0.2.11")
    wait_for(lambda: healthy.slots() == before, 3, "backend back in its old slots")
    status = healthy.status()
    assert status and status["loadbalancers"]["web"]["withheld"] == []


def test_all_backends_down_withdraws_the_vip_and_rejects(healthy: Lab):
    healthy.hook_log.write_text("")
    for address in BACKENDS:
        healthy.stop_backend(address)
    wait_for(lambda: not healthy.announced(), 3, "VIP route withdrawn")
    assert healthy.rejecting()
    assert healthy.connect() == "error:ConnectionRefusedError"  # reset by the gateway, not a timeout
    assert f"withdraw {VIP}" in healthy.hook_log.read_text()
    status = healthy.status()
    assert status and status["vips"][VIP] == {"healthy": 0, "total": 3, "announced": False}
    healthy.start_backend("192.0.2.12")
    wait_for(lambda: healthy.announced(), 3, "VIP announced again")
    assert not healthy.rejecting()
    assert f"announce {VIP}" in healthy.hook_log.read_text()
    assert set(healthy.connect_many(10)) == {"192.0.2.12"}


def test_converge_keeps_a_dead_backend_out_and_is_idempotent(healthy: Lab):
    healthy.stop_backend("192.0.2.13")
    wait_for(lambda: "192.0.2.13" not in healthy.slots(), 3, "backend out")
    result = healthy.converge()
    assert result["changed"] is False and result["drift"] is False, result
    # A real change rebuilds the table, still without the dead backend.
    changed = healthy.converge([{**LB, "source_ranges": ["203.0.113.0/24"]}])
    assert changed["changed"] is True and changed["withheld"] == {"web": ["192.0.2.13"]}
    assert "192.0.2.13" not in healthy.slots() and set(healthy.slots()) == {"192.0.2.11", "192.0.2.12"}
    assert healthy.converge([{**LB, "source_ranges": ["203.0.113.0/24"]}])["changed"] is False
    healthy.converge()


def test_kill_9_leaves_the_dataplane_and_restart_resumes(healthy: Lab):
    healthy.stop_backend("192.0.2.12")
    wait_for(lambda: "192.0.2.12" not in healthy.slots(), 3, "backend out")
    before = healthy.slots()
    healthy.kill_daemon(signal.SIGKILL)
    time.sleep(0.5)
    assert healthy.slots() == before and healthy.announced(), "the dataplane changed while the daemon was dead"
    assert healthy.status(check=False) is None  # the status command says the daemon is down
    offline = healthy.cli("status", "--config", str(healthy.config), check=False)
    assert offline.returncode == 3 and "NOT RUNNING" in offline.stdout and "DOWN" in offline.stdout
    healthy.start_daemon()
    assert healthy.up()["192.0.2.12"] is False  # restored, not re-learnt
    time.sleep(0.5)
    assert healthy.slots() == before


def test_reload_keeps_the_state_of_unchanged_backends(healthy: Lab):
    healthy.stop_backend("192.0.2.11")
    wait_for(lambda: healthy.up()["192.0.2.11"] is False, 3, "backend down")
    since = {b["address"]: b["since"] for b in healthy.status()["backends"]}
    assert healthy.daemon is not None
    # A new interval is a reload, not a reset: states and their timestamps stay.
    healthy.converge([{**LB, "health_check": {**LB["health_check"], "interval_ms": 150, "timeout_ms": 100}}])
    healthy.daemon.send_signal(signal.SIGHUP)
    wait_for(lambda: {b["interval"] for b in healthy.status()["backends"]} == {0.15}, 5, "new interval in effect")
    status = healthy.status()
    assert {b["address"]: b["since"] for b in status["backends"]} == since
    assert {b["address"]: b["up"] for b in status["backends"]}["192.0.2.11"] is False
    healthy.converge()


def test_a_changed_probe_does_not_bring_a_dead_backend_back(healthy: Lab):
    healthy.stop_backend("192.0.2.11")
    wait_for(lambda: "192.0.2.11" not in healthy.slots(), 3, "backend out")
    # Same backends, a different probe: its key changes, its verdict must not.
    healthy.converge([{**LB, "health_check": {**LB["health_check"], "port": 8080, "timeout_ms": 90}}])
    probe_changed = {**LB, "health_check": {**LB["health_check"], "type": "http", "port": 8080}}
    healthy.converge([probe_changed])
    wait_for(lambda: {b["kind"] for b in healthy.status()["backends"]} == {"http"}, 5, "new probe loaded")
    assert "192.0.2.11" not in healthy.slots(), "a dead backend came back when its probe changed"
    assert {b["address"]: b["up"] for b in healthy.status()["backends"]}["192.0.2.11"] is False
    healthy.converge()


def test_a_recreated_lb_does_not_inherit_withheld_backends(healthy: Lab):
    healthy.stop_backend("192.0.2.12")
    wait_for(lambda: "192.0.2.12" not in healthy.slots(), 3, "backend out")
    other = {**LB, "name": "other", "vip": "198.51.100.20"}
    healthy.converge([other])  # web disappears
    wait_for(lambda: "web" not in json.loads((healthy.run_dir / "healthd/state.json").read_text())["loadbalancers"],
             5, "state file forgets web")
    healthy.start_backend("192.0.2.12")
    time.sleep(0.5)
    result = healthy.converge()  # web is back: every backend is alive and must be served
    assert result["withheld"] == {}, result
    assert set(healthy.slots()) == set(BACKENDS)


def test_a_broken_hook_does_not_stop_table_updates(healthy: Lab):
    broken = healthy.tmp / "hooks.d" / "20-broken"
    broken.write_text("no shebang here\n")
    broken.chmod(0o755)
    try:
        for address in BACKENDS:
            healthy.stop_backend(address)
        wait_for(lambda: not healthy.announced(), 3, "VIP withdrawn despite the broken hook")
        healthy.start_backend("192.0.2.11")
        wait_for(lambda: set(healthy.slots()) == {"192.0.2.11"}, 3, "table updated after a hook failure")
    finally:
        broken.unlink()


def test_status_table_and_metrics(healthy: Lab):
    healthy.stop_backend("192.0.2.13")
    wait_for(lambda: healthy.up()["192.0.2.13"] is False, 3, "backend down")
    table = healthy.cli("status", "--config", str(healthy.config)).stdout
    assert "192.0.2.13:8080" in table and "DOWN" in table and "connection refused" in table
    assert f"{VIP}" in table and "2/3" in table
    script = f"import urllib.request;print(urllib.request.urlopen('http://127.0.0.1:{healthy.metrics_port}/metrics').read().decode())"
    metrics = healthy.ns.run("python3", "-c", script).stdout
    assert 'portico_healthd_backend_up{lb="web",backend="192.0.2.13:8080",vip="198.51.100.10"} 0' in metrics
    assert 'portico_healthd_backend_up{lb="web",backend="192.0.2.12:8080",vip="198.51.100.10"} 1' in metrics
    assert 'portico_healthd_vip_healthy_backends{vip="198.51.100.10"} 2' in metrics
    assert 'portico_healthd_transitions_total{lb="web",backend="192.0.2.13:8080",to="down"}' in metrics
    assert "portico_healthd_probe_duration_seconds_count" in metrics


@pytest.mark.parametrize("config, message", [
    ({"all_down": "drop"}, "all_down: 'drop' is not one of reject, keep_last"),
    ({"metrics_prot": 1}, "unknown setting(s) metrics_prot"),
    ({"announce_protocol": 300}, "announce_protocol: expected 1-255"),
])
def test_bad_configuration_is_refused_with_the_field(tmp_path: pathlib.Path, config: dict, message: str):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(config))
    env = {**os.environ, "PORTICO_PYTHONPATH": str(REPO / "collections")}
    proc = subprocess.run(["/usr/bin/python3", str(DAEMON), "check-config", str(path)], capture_output=True, text=True, env=env)
    assert proc.returncode == 1 and message in proc.stderr and str(path) in proc.stderr



def test_backends_removed_from_the_model_are_no_longer_checked(healthy: Lab):
    healthy.converge([{**LB, "backends": [{"address": a} for a in BACKENDS[:2]]}])
    wait_for(lambda: {b["address"] for b in healthy.status()["backends"]} == set(BACKENDS[:2]), 5, "checks follow the model")
    status = healthy.status()
    assert status["vips"][VIP] == {"healthy": 2, "total": 2, "announced": True}
    healthy.converge()
    wait_for(lambda: len(healthy.status()["backends"]) == 3, 5, "third backend checked again")


def test_keep_last_policy_keeps_the_last_healthy_set_but_still_withdraws(healthy: Lab):
    healthy.kill_daemon(signal.SIGTERM)
    healthy.write_config(all_down="keep_last")
    healthy.start_daemon()
    try:
        healthy.stop_backend("192.0.2.11")
        wait_for(lambda: "192.0.2.11" not in healthy.slots(), 3, "first backend out")
        last = healthy.slots()
        healthy.stop_backend("192.0.2.12")
        healthy.stop_backend("192.0.2.13")
        wait_for(lambda: not healthy.announced(), 3, "VIP withdrawn")
        time.sleep(0.3)
        # The last set that had a healthy backend stays (which one depends on the order they failed).
        kept = set(healthy.slots())
        assert kept and kept <= set(last) and not healthy.rejecting(), "keep_last must keep the last served set"
        assert set(healthy.status()["loadbalancers"]["web"]["served"]) == kept
    finally:
        healthy.kill_daemon(signal.SIGTERM)
        healthy.write_config()
        healthy.start_daemon()


def test_tampering_with_a_slot_map_is_drift_and_is_repaired(healthy: Lab):
    before = healthy.slots()
    slot_map = next(line.split()[1] for line in healthy.ns.run("nft", "list", "table", "inet", "portico").stdout.splitlines()
                    if line.strip().startswith("map backends_"))
    healthy.ns.run("nft", "flush", "map", "inet", "portico", slot_map)
    result = healthy.converge()
    assert result["changed"] is True and result["drift"] is True, result
    assert healthy.slots() == before
    assert healthy.converge()["changed"] is False
