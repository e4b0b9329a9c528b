"""portico-healthd in the lab: real backends stop and start while the client keeps connecting.

The static LB `web` (198.51.100.10) checks TCP every 200 ms with fall 2 / rise 2, so a stopped
backend must leave rotation within interval x fall + one interval = 600 ms.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import time
from typing import Any

import pytest
import testinfra
from lab_helpers import listener_slots

REPO = pathlib.Path(__file__).resolve().parents[3]
gw1 = testinfra.get_host("podman://portico-lab-gw1")
router = testinfra.get_host("podman://portico-lab-router")
NODES = {name: testinfra.get_host(f"podman://portico-lab-{name}") for name in ("node1", "node2", "node3")}
NODE_IPS = {"node1": "192.0.2.11", "node2": "192.0.2.12", "node3": "192.0.2.13"}
WEB = "198.51.100.10"
INTERVAL, FALL = 0.2, 2
BOUND = INTERVAL * FALL + INTERVAL
# podman exec and the nft transaction on a 2-core machine running the whole lab.
SLACK = 0.15


def status() -> dict[str, Any]:
    return json.loads(gw1.check_output("/usr/lib/portico/portico-healthd status --json"))


def backend_up(lb: str, address: str) -> bool:
    return next(b["up"] for b in status()["backends"] if b["lb"] == lb and b["address"] == address)


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for: {what}")


def announced(vip: str) -> bool:
    return f"{vip} dev lo" in gw1.run("ip route show table 201").stdout


def web_slots() -> dict[int, str]:
    """Slot -> backend address of the map web's tcp/80 listener hashes into."""
    slots = listener_slots("svc_web_tcp80")
    assert slots, "web's tcp/80 listener has no Maglev map on gw1"
    return slots


def stop_echo(node: str) -> float:
    """Stop the node's echo service; return the time it was gone (containers share the host clock)."""
    return float(NODES[node].check_output("systemctl stop portico-lab-echo && date +%s.%N"))


def start_echo(node: str) -> None:
    NODES[node].check_output("systemctl start portico-lab-echo")


def client(*args: str) -> subprocess.Popen:
    return subprocess.Popen(["podman", "exec", "portico-lab-client", "portico-lab-probe", *args, "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen) -> dict[str, Any]:
    out, err = proc.communicate(timeout=60)
    assert out, err
    return json.loads(out)


@pytest.fixture(scope="module", autouse=True)
def probe_on_router_and_client():
    """The router sits in the one source range the 'restricted' LB allows."""
    for container in ("portico-lab-router", "portico-lab-client"):
        subprocess.run(["podman", "cp", str(REPO / "lab/files/portico-lab-probe"),
                        f"{container}:/usr/local/bin/portico-lab-probe"], check=True)


@pytest.fixture(autouse=True)
def all_backends_healthy():
    for node in NODES:
        NODES[node].run("rm -f /run/portico-lab-echo-unhealthy; systemctl start portico-lab-echo")
    wait_for(lambda: all(b["up"] for b in status()["backends"]), 10, "every backend up")
    yield
    for node in NODES:
        NODES[node].run("rm -f /run/portico-lab-echo-unhealthy; systemctl start portico-lab-echo")
    wait_for(lambda: all(b["up"] for b in status()["backends"]), 10, "every backend up again")


def test_every_probe_kind_checks_the_lab_backends():
    state = status()
    kinds = {b["kind"] for b in state["backends"]}
    assert {"tcp", "udp", "http"} <= kinds, kinds
    assert all(vip["announced"] and vip["healthy"] == vip["total"] for vip in state["vips"].values()), state["vips"]


def test_stopped_backend_leaves_rotation_fast_and_no_request_fails_after(tmp_path):
    subprocess.run(["podman", "exec", "portico-lab-client", "rm", "-f", "/tmp/health-streams"], check=True)
    streams = client("--target", WEB, "--port", "80", "--streams", "30", "--stream", "6", "--ready-file", "/tmp/health-streams")
    wait_for(lambda: subprocess.run(["podman", "exec", "portico-lab-client", "test", "-s", "/tmp/health-streams"]).returncode == 0,
             10, "streams open")
    timeline = client("--target", WEB, "--port", "80", "--every", "10", "--duration", "3", "--timeout", "0.5")
    time.sleep(0.8)
    stopped = stop_echo("node1")
    wait_for(lambda: not backend_up("web", "192.0.2.11"), 3, "node1 marked down")
    applied = status()["loadbalancers"]["web"]["applied_at"]
    detection = applied - stopped
    print(json.dumps({"measurement": "health_detection", "ms": round(detection * 1000),
                      "bound_ms": round(BOUND * 1000), "ratio": round(detection / BOUND, 2)}))
    assert detection <= BOUND + SLACK, f"{detection:.3f}s > {BOUND:.3f}s"
    assert "192.0.2.11" not in web_slots().values()

    result = finish(timeline)
    late = [f for f in result["failures"] if f[0] > applied + 0.05]
    assert not late, f"requests failed after the table changed: {late}"
    assert result["ok"] > 100, result

    held = finish(streams)
    survivors = [r for r in held["results"] if r["backend"] in ("node2", "node3")]
    assert survivors and not any(r["reset"] or r["error"] for r in survivors), held
    assert held["opened"] == 30, held

    # Back after `rise` successes, and traffic reaches it again.
    restarted = time.time()
    start_echo("node1")
    wait_for(lambda: backend_up("web", "192.0.2.11"), 3, "node1 back")
    wait_for(lambda: "192.0.2.11" in web_slots().values(), 3, "node1 back in the table")
    returned = status()["loadbalancers"]["web"]["applied_at"] - restarted
    print(json.dumps({"measurement": "health_return", "ms": round(returned * 1000), "rise": 2}))
    again = json.loads(subprocess.run(["podman", "exec", "portico-lab-client", "portico-lab-probe", "--target", WEB,
                                       "--port", "80", "--count", "60", "--json"], capture_output=True, text=True).stdout)
    assert again["failed"] == 0 and "node1" in again["backends"], again


def test_http_503_on_every_node_withdraws_the_vip_and_one_recovery_restores_it():
    restricted = "198.51.100.11"  # http check of /healthz on 8082; only the uplink (router) may connect
    assert announced(restricted)
    for node in NODES:
        NODES[node].check_output("touch /run/portico-lab-echo-unhealthy")
    wait_for(lambda: not announced(restricted), 5, "VIP withdrawn")
    assert status()["vips"][restricted] == {"healthy": 0, "total": 3, "announced": False}
    assert announced(WEB), "a VIP with healthy backends must stay announced"
    down = json.loads(router.run(f"portico-lab-probe --target {restricted} --port 80 --count 5 --timeout 1 --json").stdout)
    assert down["ok"] == 0 and set(down["errors"]) == {"refused"}, down  # rejected at once, not a timeout
    NODES["node2"].check_output("rm -f /run/portico-lab-echo-unhealthy")
    wait_for(lambda: announced(restricted), 5, "VIP announced again")
    up = json.loads(router.check_output(f"portico-lab-probe --target {restricted} --port 80 --count 20 --json"))
    assert up["failed"] == 0 and set(up["backends"]) == {"node2"}, up


def test_kill_9_of_the_daemon_fails_no_request_and_it_converges_again():
    before_pid = gw1.check_output("systemctl show -p MainPID --value portico-healthd")
    stop_echo("node3")
    # Every check of node3 (TCP and UDP, both families) sees it gone before the slots become the reference.
    node3 = ("192.0.2.13", "2001:db8:192::13")
    wait_for(lambda: not any(b["up"] for b in status()["backends"] if b["address"] in node3)
             and not any(address in web_slots().values() for address in node3), 3, "node3 out of every check and slot map")
    slots = web_slots()
    timeline = client("--target", WEB, "--port", "80", "--every", "10", "--duration", "3", "--timeout", "0.5")
    time.sleep(0.5)
    gw1.check_output("systemctl kill -s KILL portico-healthd")
    result = finish(timeline)
    assert result["failed"] == 0 and result["ok"] > 100, result
    wait_for(lambda: gw1.run("/usr/lib/portico/portico-healthd status --json").rc == 0, 10, "daemon back")
    assert gw1.check_output("systemctl show -p MainPID --value portico-healthd") != before_pid
    assert not backend_up("web", "192.0.2.13"), "the restarted daemon forgot a dead backend"
    assert web_slots() == slots


def transitions_since_start() -> dict[tuple[str, str], float]:
    """(backend address, to) -> the restarted daemon's transitions of the web LB."""
    text = gw1.check_output("python3 -c \"import urllib.request as u; print(u.urlopen('http://127.0.0.1:9641/metrics').read().decode())\"")
    found: dict[tuple[str, str], float] = {}
    for line in text.splitlines():
        if line.startswith("portico_healthd_transitions_total{") and 'lb="web"' in line:
            labels = dict(part.split("=", 1) for part in line[line.index("{") + 1:line.index("}")].split(","))
            found[(labels["backend"].strip('"').rsplit(":", 1)[0], labels["to"].strip('"'))] = float(line.rsplit(" ", 1)[1])
    return found


def test_kill_9_while_a_backend_returns_keeps_the_table_and_flaps_nothing_on_restart():
    """Churn while the daemon is dead: node3 comes back. The table stays as it was (fail-static), no
    request fails, and the restarted daemon changes only node3 (up once it passed `rise` probes):
    the backends that stayed healthy see no transition."""
    stop_echo("node3")
    wait_for(lambda: not backend_up("web", "192.0.2.13") and "192.0.2.13" not in web_slots().values(), 3, "node3 out")
    without_node3 = web_slots()
    timeline = client("--target", WEB, "--port", "80", "--every", "10", "--duration", "4", "--timeout", "0.5")
    time.sleep(0.3)
    killed = time.time()
    gw1.check_output("systemctl kill -s KILL portico-healthd")
    start_echo("node3")
    assert web_slots() == without_node3, "the table changed while the daemon was dead"
    wait_for(lambda: gw1.run("/usr/lib/portico/portico-healthd status --json").rc == 0, 10, "daemon back")
    back = time.time() - killed
    wait_for(lambda: "192.0.2.13" in web_slots().values(), 5, "node3 back in the table")
    node3_in = time.time() - killed
    result = finish(timeline)
    flips = transitions_since_start()
    print(json.dumps({"measurement": "healthd_kill_under_churn", "daemon_back_s": round(back, 2),
                      "returned_backend_in_table_s": round(node3_in, 2), "requests": result["sent"],
                      "failed": result["failed"], "transitions_after_restart": {f"{a}>{t}": n for (a, t), n in flips.items()}}))
    assert result["failed"] == 0 and result["ok"] > 100, result
    assert {key: n for key, n in flips.items() if key[0] != "192.0.2.13"} == {}, flips
    assert flips.get(("192.0.2.13", "down"), 0) == 0, flips
