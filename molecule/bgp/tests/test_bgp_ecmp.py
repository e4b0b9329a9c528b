"""BGP active/active under real traffic: ECMP at the lab router (BIRD 2), BFD failover, VIP
withdrawal, scale-out to a third gateway and drain, each measured with the lab client.

Targets: longest gap <= 1 s when gw1 dies (BFD 100 ms x 3); 50 long-lived connections
survive; a third gateway adds a third ECMP path without resets; a VIP with no healthy backend
leaves the router within detection + BGP update time; drain moves traffic with zero resets, and no
new connection fails through drain and restore (one every 20 ms, and 50 opened straight after).
"""

from __future__ import annotations

import pathlib
import re
import sys
import time

import pytest

REPO = pathlib.Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "lab"))
import faultload  # noqa: E402

import labtools  # noqa: E402

WEB, WEB6, RESTRICTED = "198.51.100.10", "2001:db8:100::10", "198.51.100.11"
NEXT_HOPS = {"gw1": "198.18.0.11", "gw2": "198.18.0.12", "gw3": "198.18.0.13"}
TARGET_GAP_MS = 1000
STREAMS = 50
INVENTORY = ["inventories/lab-bgp"]
# Health check of `restricted`: http, default interval 200 ms, fall 3 (lb_model defaults).
WITHDRAW_DETECTION_BOUND_S = 0.2 * 3 + 0.2
# New connections through a drain and a restore: the load covers both playbook runs (20-50 s
# together on the lab machine) and at least RESTORED_COVER_S after the restore.
DRAIN_CYCLE_LOAD_S = 90
RESTORED_COVER_S = 10


def next_hops(prefix: str) -> set[str]:
    """The router's kernel next hops for a VIP (BIRD merged the equal BGP paths)."""
    family = "-6" if ":" in prefix else "-4"
    shown = labtools.sh("router", f"ip {family} route show {prefix}", check=False)
    return set(re.findall(r"via ([0-9a-f:.]+)", shown))


def gateways_for(prefix: str) -> set[str]:
    hops = next_hops(prefix)
    return {gw for gw, v4 in NEXT_HOPS.items() if v4 in hops or v4.replace("198.18.0.", "2001:db8:198::") in hops}


@pytest.fixture(scope="module", autouse=True)
def probe_everywhere():
    labtools.install_probe("client", "router")


@pytest.fixture
def client_reuses_ports_quickly():
    """The client takes a source port again seconds after closing it (tcp_tw_reuse, 2,000 ports),
    as a busy proxy or a NAT pool does. A default Linux client comes back to a port only after a
    minute or more, and only a long run would show what a reused tuple finds on the gateway that
    ECMP now sends it to (the replica of its previous connection, closed on another gateway)."""
    saved = labtools.sh("client", "sysctl -n net.ipv4.tcp_tw_reuse net.ipv4.ip_local_port_range").split()
    labtools.sh("client", "sysctl -q -w net.ipv4.tcp_tw_reuse=1 net.ipv4.ip_local_port_range='40000 41999'")
    try:
        yield
    finally:
        labtools.sh("client", f"sysctl -q -w net.ipv4.tcp_tw_reuse={saved[0]} "
                              f"net.ipv4.ip_local_port_range='{saved[1]} {saved[2]}'")


@pytest.fixture(autouse=True)
def gw1_and_gw2_announcing():
    for gw in ("gw1", "gw2"):
        if not labtools.running(gw):
            labtools.start_gateway(gw)
    labtools.wait_for(lambda: {"gw1", "gw2"} <= gateways_for(WEB), 60, "gw1 and gw2 in the ECMP route", every=0.2)
    labtools.wait_for(lambda: {"gw1", "gw2"} <= gateways_for(WEB6), 30, "gw1 and gw2 in the IPv6 ECMP route", every=0.2)


def test_router_installs_one_path_per_gateway_and_traffic_flows():
    assert gateways_for(WEB) == {"gw1", "gw2"}
    assert gateways_for(WEB6) == {"gw1", "gw2"}
    for target in (WEB, WEB6):
        result = labtools.request("client", target, count=60)
        assert result["failed"] == 0 and len(result["backends"]) == 3, (target, result)
    # Nothing outside the VIP pool is announced (pod routes, lab routes, the return addresses).
    learned = labtools.sh("router", "ip -4 route show proto bird")
    assert all(line.startswith("198.51.100.") for line in learned.splitlines() if line and not line.startswith("\t")), learned


def test_bfd_failover_gap_and_held_connections():
    streams = labtools.open_streams("client", WEB, STREAMS, 12)
    timeline = labtools.probe("client", "--target", WEB, "--port", "80", "--every", "10", "--duration", "6",
                              "--timeout", "0.3")
    time.sleep(1.5)
    killed = labtools.kill_gateway("gw1")
    labtools.wait_for(lambda: gateways_for(WEB) == {"gw2"}, 5, "gw1 leaves the ECMP route", every=0.01)
    gone = time.time() - killed
    result = labtools.finish(timeline)
    held = labtools.finish(streams)
    labtools.report("bgp_failover", max_gap_ms=result["max_gap_ms"], failed=len(result["failures"]), ok=result["ok"],
                    nexthop_gone_s=round(gone, 3), streams=held["opened"], resets=held["reset"])
    assert result["max_gap_ms"] <= TARGET_GAP_MS, result
    assert held["opened"] == STREAMS, held
    assert held["reset"] == 0, [r for r in held["results"] if r["reset"] or r["error"]]


def test_gw1_returns_without_a_longer_gap():
    labtools.kill_gateway("gw1")
    labtools.wait_for(lambda: gateways_for(WEB) == {"gw2"}, 5, "gw1 out")
    streams = labtools.open_streams("client", WEB, STREAMS, 40)
    timeline = labtools.probe("client", "--target", WEB, "--port", "80", "--every", "10", "--duration", "35",
                              "--timeout", "0.3")
    labtools.start_gateway("gw1")
    labtools.wait_for(lambda: "gw1" in gateways_for(WEB), 30, "gw1 back in the ECMP route", every=0.1)
    result = labtools.finish(timeline)
    held = labtools.finish(streams)
    labtools.report("bgp_return", max_gap_ms=result["max_gap_ms"], failed=len(result["failures"]),
                    streams=held["opened"], resets=held["reset"])
    assert result["max_gap_ms"] <= TARGET_GAP_MS, result
    assert held["reset"] == 0, [r for r in held["results"] if r["reset"] or r["error"]]


def test_vip_without_healthy_backend_leaves_the_router():
    assert gateways_for(RESTRICTED) == {"gw1", "gw2"}
    marked = float(labtools.sh("node1", "touch /run/portico-lab-echo-unhealthy; date +%s.%N"))
    labtools.sh("node2", "touch /run/portico-lab-echo-unhealthy")
    marked = max(marked, float(labtools.sh("node3", "touch /run/portico-lab-echo-unhealthy; date +%s.%N")))
    try:
        labtools.wait_for(lambda: not next_hops(RESTRICTED), 10, "restricted VIP withdrawn at the router", every=0.01)
        gone = time.time() - marked
        labtools.report("bgp_withdraw", seconds=round(gone, 3), detection_bound_s=WITHDRAW_DETECTION_BOUND_S)
        # Detection (interval x fall + interval) plus the BGP update; FRR's own timers add ~0.1 s.
        assert gone <= WITHDRAW_DETECTION_BOUND_S + 1.0, gone
        assert gateways_for(WEB) == {"gw1", "gw2"}  # the other VIPs stay
    finally:
        for node in ("node1", "node2", "node3"):
            labtools.sh(node, "rm -f /run/portico-lab-echo-unhealthy")
    labtools.wait_for(lambda: gateways_for(RESTRICTED) == {"gw1", "gw2"}, 15, "restricted VIP announced again")


def test_drain_and_restore_keep_every_connection(client_reuses_ports_quickly):
    """50 streams held across drain and restore, a new connection every 20 ms throughout, and 50
    new streams opened straight after the restore: no reset, no failed connection."""
    load = faultload.ConnectionLoad(WEB, seconds=DRAIN_CYCLE_LOAD_S, streams=STREAMS, new_every_ms=20).start()
    drained = labtools.playbook(INVENTORY, "playbooks/drain.yml", "-e", "portico_drain_hosts=gw1")
    assert drained.returncode == 0, drained.stdout[-3000:] + drained.stderr[-2000:]
    assert gateways_for(WEB) == {"gw2"} and gateways_for(WEB6) == {"gw2"}
    restored = labtools.playbook(INVENTORY, "playbooks/drain.yml", "-e", "portico_drain_hosts=gw1",
                                 "-e", "portico_drain_action=restore")
    assert restored.returncode == 0, restored.stdout[-3000:] + restored.stderr[-2000:]
    labtools.wait_for(lambda: gateways_for(WEB) == {"gw1", "gw2"}, 15, "gw1 back after restore", every=0.05)
    back = time.time()
    # No SYN retransmission allowed (1 s): a stream that needs one counts as not opened.
    fresh = labtools.finish(labtools.probe("client", "--target", WEB, "--port", "80", "--streams", str(STREAMS),
                                           "--stream", "2", "--timeout", "1"))
    traffic = load.finish()
    covered = traffic["tcp"]["start"] + DRAIN_CYCLE_LOAD_S - back
    labtools.report("bgp_drain", streams=traffic["summary"]["streams"], new_connections=traffic["summary"]["tcp"],
                    opened_after_restore=fresh["opened"], load_after_restore_s=round(covered, 1))
    assert covered >= RESTORED_COVER_S, f"the drain cycle took too long for the load: {covered:.1f} s after restore"
    assert traffic["summary"]["streams"]["opened"] == STREAMS and traffic["summary"]["streams"]["reset"] == 0, \
        [r for r in traffic["streams"]["results"] if r["reset"] or r["error"]]
    assert traffic["summary"]["tcp"]["failed"] == 0, traffic["tcp"]["failures"]
    assert fresh["opened"] == STREAMS, [r for r in fresh["results"] if r["error"]]


def test_third_gateway_adds_a_path_without_resets():
    # Held across the lab start of gw3 and a converge of all three gateways (~1-2 min).
    streams = labtools.open_streams("client", WEB, STREAMS, 200)
    up = labtools.lab_up("-e", "portico_lab_ha_mode=bgp", "-e", '{"portico_lab_gateway_names": ["gw1", "gw2", "gw3"]}')
    assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-2000:]
    converge = labtools.playbook([*INVENTORY, "inventories/lab-bgp-gw3.yml"], "playbooks/site.yml")
    assert converge.returncode == 0, converge.stdout[-4000:] + converge.stderr[-2000:]
    labtools.wait_for(lambda: gateways_for(WEB) == {"gw1", "gw2", "gw3"}, 30, "three ECMP paths", every=0.2)
    labtools.wait_for(lambda: gateways_for(WEB6) == {"gw1", "gw2", "gw3"}, 30, "three IPv6 ECMP paths", every=0.2)
    # Flows now also hash to gw3; it carries them with the NAT state conntrackd gave it.
    result = labtools.request("client", WEB, count=90)
    assert result["failed"] == 0, result
    held = labtools.finish(streams, timeout=300)
    labtools.report("bgp_scale_out", paths=len(gateways_for(WEB)), streams=held["opened"], resets=held["reset"])
    assert held["opened"] == STREAMS and held["reset"] == 0, [r for r in held["results"] if r["reset"] or r["error"]]
