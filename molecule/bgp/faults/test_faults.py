"""More faults of BGP active/active, under the fault matrix's load (held TCP streams, a new TCP
connection and a UDP request every 20 ms through the web VIP):

- `kill -9` of one FRR daemon (bgpd, zebra, bfdd) on gw1: watchfrr starts it again; the router
  moves gw1's share to the other gateways at most once and takes gw1 back at most once (no flap), and no held
  stream is reset (conntrackd holds every gateway's flows on the others);
- gw1's uplink loses its carrier, then gets it back: BFD takes gw1 out, BGP brings it back.

The router's next hops for the VIP are sampled throughout, so every change of the ECMP set shows.

Outside CI (molecule runs tests/ only): after test_bgp_ecmp.py's scale-out, gw3 is a third ECMP
path, three gateways on one conntrackd multicast group, the shape in which FTFW (the default)
drops a third of the replication and these kills reset 72-107 of 200 held streams. With
conntrackd_sync_mode notrack or auto (converged before the scale-out) they reset none, but
NOTRACK costs handshakes elsewhere (docs/reliability.md). On the bgp lab, with gw1 and gw2 only:
pytest -p no:cacheprovider -q molecule/bgp/faults/test_faults.py
"""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys
import threading
import time

import pytest

REPO = pathlib.Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "lab"))
import faultload  # noqa: E402

import labtools  # noqa: E402

WEB = "198.51.100.10"
NEXT_HOPS = {"gw1": "198.18.0.11", "gw2": "198.18.0.12", "gw3": "198.18.0.13"}
STREAMS = 200
# Streams that may fail to open (before any fault): a handshake through a gateway that is not the
# return path's races replication, and NOTRACK does not resend a lost update (docs/reliability.md,
# known limits; 1 of 1,000 opens in the proof). Every stream that opened must survive.
OPEN_SHORTFALL = 1
TARGET_GAP_MS = 1000
CONNECT_TIMEOUT_S = 1.0
# BFD: 100 ms x 3 (frr_bfd_*); the router's kernel route follows BIRD within a few ms.
BFD_BOUND_S = 0.3 + 0.2
# watchfrr's restart and a new BGP session. The router (lab/templates/bird.conf.j2, like many
# ToRs) waits after each session error before it takes the session again, 5 s doubling to 30 s
# while errors keep coming, and the tests here cause one each: 30 s, plus connect, open and the
# first update on a loaded 2-core machine.
RETURN_BOUND_S = 45
# watchfrr restarts a daemon at once, but not again within its minimum restart interval (60 s):
# a daemon that died twice in a minute comes back after that interval.
DAEMON_BACK_S = 60 + 10


class NextHopWatch:
    """The gateways in the router's route for a VIP, sampled until stopped: (epoch, gateways) at each change."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.changes: list[tuple[float, frozenset[str]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _gateways(self) -> frozenset[str]:
        shown = subprocess.run(["podman", "exec", "portico-lab-router", "ip", "-4", "route", "show", self.prefix],
                               capture_output=True, text=True, check=False).stdout
        hops = set(re.findall(r"via ([0-9.]+)", shown))
        return frozenset(gw for gw, address in NEXT_HOPS.items() if address in hops)

    def _run(self) -> None:
        while not self._stop.is_set():
            now, seen = time.time(), self._gateways()
            if not self.changes or self.changes[-1][1] != seen:
                self.changes.append((now, seen))

    def start(self) -> NextHopWatch:
        self._thread.start()
        labtools.wait_for(lambda: self.changes, 5, "first next-hop sample")
        return self

    def stop(self) -> list[tuple[float, frozenset[str]]]:
        self._stop.set()
        self._thread.join(timeout=5)
        return self.changes


def running_gateways() -> frozenset[str]:
    """The lab's gateways (gw3 once the scale-out test has started it): all of them should announce."""
    return frozenset(gw for gw in NEXT_HOPS if labtools.running(gw))


def all_announcing() -> bool:
    return NextHopWatch(WEB)._gateways() == running_gateways()


@pytest.fixture(scope="module", autouse=True)
def probe_on_client():
    labtools.install_probe("client")


def host_peer(gateway: str, interface: str) -> str:
    """The host's end of a container interface's veth: taking it down is the container's carrier loss."""
    index = labtools.sh(gateway, f"cat /sys/class/net/{interface}/iflink").strip()
    for line in subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout.splitlines():
        number, name = line.split(": ")[:2]
        if number == index:
            return name.split("@")[0]
    raise AssertionError(f"no host interface with index {index}")


@pytest.fixture(autouse=True)
def gw1_and_gw2_announcing():
    for gw in running_gateways():
        subprocess.run(["ip", "link", "set", host_peer(gw, "uplink"), "up"], check=True)
    labtools.wait_for(all_announcing, 60, "every gateway in the ECMP route", every=0.2)


def judge(name: str, fault_at: float, traffic: dict, changes: list[tuple[float, frozenset[str]]], **extra) -> dict:
    summary = traffic["summary"]
    timeline = [(round(at - fault_at, 3), sorted(gws)) for at, gws in changes]
    labtools.report(name, next_hops=timeline, failures_s=[round(at - fault_at, 3) for at, _ in traffic["tcp"]["failures"]],
                    udp_failures_s=[round(at - fault_at, 3) for at, _ in traffic["udp"]["failures"]], **extra, **summary)
    return summary


def frr_daemon_killed(daemon: str) -> None:
    seconds = 20
    everyone = running_gateways()
    watch = NextHopWatch(WEB).start()
    load = faultload.ConnectionLoad(WEB, seconds=seconds, streams=STREAMS, new_every_ms=20, udp_every_ms=20, udp_port=53,
                                    timeout_s=CONNECT_TIMEOUT_S).start()
    time.sleep(1)
    killed = float(labtools.sh("gw1", f"date +%s.%N; pkill -9 -x {daemon}"))
    labtools.wait_for(lambda: labtools.sh("gw1", f"pgrep -x {daemon}", check=False).strip(), DAEMON_BACK_S,
                      f"{daemon} running again", every=0.2)
    restarted = time.time() - killed
    traffic = load.finish()
    labtools.wait_for(lambda: watch.changes[-1][1] == everyone, RETURN_BOUND_S, "gw1 in the ECMP route", every=0.2)
    changes = watch.stop()
    summary = judge(f"frr_{daemon}_killed", killed, traffic, changes, restarted_s=round(restarted, 2))
    # No flap: gw1 leaves the route at most once and comes back at most once.
    assert len(changes) <= 3 and changes[-1][1] == everyone, changes
    assert summary["streams"]["opened"] >= STREAMS - OPEN_SHORTFALL and summary["streams"]["reset"] == 0, summary
    assert summary["tcp"]["max_gap_ms"] <= TARGET_GAP_MS + CONNECT_TIMEOUT_S * 1000, summary


# zebra first: FRR restarts every daemon with it, and the tests below are more than watchfrr's
# minimum restart interval later, so no daemon waits for a second restart.
def test_zebra_killed_on_gw1_comes_back_and_costs_no_held_connection():
    frr_daemon_killed("zebra")


def test_gw1_uplink_carrier_loss_takes_it_out_within_bfd_and_its_return_brings_it_back():
    seconds = 25
    cable = host_peer("gw1", "uplink")
    everyone = running_gateways()
    watch = NextHopWatch(WEB).start()
    load = faultload.ConnectionLoad(WEB, seconds=seconds, streams=STREAMS, new_every_ms=20, udp_every_ms=20, udp_port=53,
                                    timeout_s=CONNECT_TIMEOUT_S).start()
    time.sleep(1)
    down = time.time()
    subprocess.run(["ip", "link", "set", cable, "down"], check=True)
    labtools.wait_for(lambda: watch.changes[-1][1] == everyone - {"gw1"}, 5, "gw1 out of the ECMP route", every=0.01)
    out_s = watch.changes[-1][0] - down
    time.sleep(2)
    up = time.time()
    subprocess.run(["ip", "link", "set", cable, "up"], check=True)
    labtools.wait_for(lambda: watch.changes[-1][1] == everyone, RETURN_BOUND_S, "gw1 back", every=0.1)
    back_s = watch.changes[-1][0] - up
    traffic = load.finish()
    changes = watch.stop()
    summary = judge("bgp_uplink_down_up", down, traffic, changes, out_s=round(out_s, 3), back_after_up_s=round(back_s, 2))
    assert out_s <= BFD_BOUND_S, (out_s, changes)
    assert len(changes) == 3, changes
    assert summary["streams"]["opened"] >= STREAMS - OPEN_SHORTFALL and summary["streams"]["reset"] == 0, summary
    assert summary["tcp"]["max_gap_ms"] <= TARGET_GAP_MS + CONNECT_TIMEOUT_S * 1000, summary


def test_conntrackd_killed_on_every_gateway_costs_no_traffic():
    everyone = running_gateways()
    before = {gw: labtools.sh(gw, "systemctl show -p MainPID --value conntrackd").strip() for gw in everyone}
    watch = NextHopWatch(WEB).start()
    load = faultload.ConnectionLoad(WEB, seconds=8, streams=STREAMS, new_every_ms=20, udp_every_ms=20, udp_port=53,
                                    timeout_s=CONNECT_TIMEOUT_S).start()
    time.sleep(2)
    killed = time.time()
    for gw in everyone:
        labtools.sh(gw, "systemctl kill --kill-who=all --signal=SIGKILL conntrackd")
    for gw in everyone:
        labtools.wait_for(lambda g=gw: labtools.sh(g, "systemctl show -p MainPID --value conntrackd").strip() not in ("0", before[g]),
                          5, f"conntrackd running again on {gw}", every=0.1)
    restarted = time.time() - killed
    traffic = load.finish()
    changes = watch.stop()
    summary = judge("bgp_conntrackd_killed_on_every_gateway", killed, traffic, changes, restarted_s=round(restarted, 2))
    assert len(changes) == 1, changes  # the routes never moved
    assert summary["streams"]["opened"] >= STREAMS - OPEN_SHORTFALL and summary["streams"]["reset"] == 0, summary
    # UDP is reported, not asserted: 1 of 400 requests was lost in 1 of 3 runs while both daemons
    # restarted (docs/reliability.md, open entries); TCP lost none in any.
    assert summary["tcp"]["failed"] == 0, summary


@pytest.mark.parametrize("daemon", ["bfdd", "bgpd"])
def test_an_frr_daemon_killed_on_gw1_comes_back_and_costs_no_held_connection(daemon):
    frr_daemon_killed(daemon)
