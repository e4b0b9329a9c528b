"""More faults of the VRRP pair, under the fault matrix's load (held TCP streams, a new TCP
connection and a UDP request every 20 ms through the web VIP):

- conntrackd killed (SIGKILL) on both gateways at once: it carries no traffic, so nothing of the
  traffic may notice; systemd restarts it, and replication works again (a flow opened after the
  restart is in the standby's kernel table);
- the master's uplink down, then up, as a pulled cable or a failed switch port does it (the
  link loses its carrier; its addresses and routes stay): the pair fails over (keepalived tracks
  the instance interface), then takes mastership back after the preempt delay; held streams
  survive both moves.
"""

from __future__ import annotations

import pathlib
import subprocess
import sys
import time

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[3] / "lab"))
import faultload

import labtools

WEB = "198.51.100.10"
VRRP_ADDRESSES = ["198.18.0.10/24", f"{WEB}/32", "192.0.2.1/24"]
ADVERT_S = 0.1  # keepalived_advert_int_ms
# A FAULT master stops advertising at once; the backup waits its master down interval.
MASTER_DOWN_S = 3 * ADVERT_S + (256 - 100) / 256 * ADVERT_S
VRRP_BOUND_S = MASTER_DOWN_S + ADVERT_S + 0.02
PREEMPT_DELAY_S = 10  # keepalived_preempt_delay_s
CONNECT_TIMEOUT_S = 1.0
MOVE_WINDOW_S = CONNECT_TIMEOUT_S
TARGET_GAP_MS = 500
STREAMS = 200
RESTART_BOUND_S = 5  # systemd's restart of conntrackd on a loaded 2-core machine


def holders(address: str) -> set[str]:
    return {gw for gw in ("gw1", "gw2") if f" {address} " in labtools.sh(gw, "ip -o address show", check=False)}


def active(gateway: str, unit: str) -> bool:
    return labtools.sh(gateway, f"systemctl is-active {unit}", check=False).strip() == "active"


def main_pid(gateway: str, unit: str) -> str:
    return labtools.sh(gateway, f"systemctl show -p MainPID --value {unit}").strip()


@pytest.fixture(autouse=True)
def gw1_master():
    for gw in ("gw1", "gw2"):
        set_link(host_peer(gw, "uplink"), "up")
        labtools.sh(gw, "systemctl start keepalived conntrackd")
    for address in VRRP_ADDRESSES:
        labtools.wait_for(lambda a=address: holders(a) == {"gw1"}, 60, f"gw1 alone holds {address}", every=0.2)


def host_peer(gateway: str, interface: str) -> str:
    """The host's end of a container interface's veth: taking it down is the container's carrier loss."""
    index = labtools.sh(gateway, f"cat /sys/class/net/{interface}/iflink").strip()
    for line in subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout.splitlines():
        number, name = line.split(": ")[:2]
        if number == index:
            return name.split("@")[0]
    raise AssertionError(f"no host interface with index {index}")


def set_link(name: str, state: str) -> float:
    at = time.time()
    subprocess.run(["ip", "link", "set", name, state], check=True)
    return at


def lost_per_move(traffic: dict, moves: list[float], origin: float) -> tuple[list[float], list[int]]:
    """Failed new connections away from every address move, and the count near each move."""
    failures = [at for at, _ in traffic["tcp"]["failures"]]
    lost = [round(at - origin, 3) for at in failures if all(abs(at - move) > MOVE_WINDOW_S for move in moves)]
    return lost, [sum(1 for at in failures if abs(at - move) <= MOVE_WINDOW_S) for move in moves]


def test_conntrackd_killed_on_both_gateways_costs_no_traffic_and_replication_resumes():
    before = {gw: main_pid(gw, "conntrackd") for gw in ("gw1", "gw2")}
    load = faultload.ConnectionLoad(WEB, seconds=8, streams=STREAMS, new_every_ms=20, udp_every_ms=20, udp_port=53,
                                    timeout_s=CONNECT_TIMEOUT_S).start()
    time.sleep(2)
    killed = time.time()
    for gw in ("gw1", "gw2"):
        labtools.sh(gw, "systemctl kill --kill-who=all --signal=SIGKILL conntrackd")
    for gw in ("gw1", "gw2"):
        labtools.wait_for(lambda g=gw: active(g, "conntrackd") and main_pid(g, "conntrackd") not in ("0", before[g]),
                          RESTART_BOUND_S, f"conntrackd running again on {gw}", every=0.1)
    restarted = time.time() - killed
    traffic = load.finish()
    summary = traffic["summary"]

    # Replication again: streams opened now are in gw2's kernel table, NATed like on gw1.
    streams = labtools.open_streams("client", WEB, 10, 6)
    replicated = labtools.wait_for(
        lambda: int(labtools.sh("gw2", f"conntrack -L -p tcp -d {WEB} --dport 80 --state ESTABLISHED 2>/dev/null | wc -l")) >= 10,
        5, "the new streams replicated to gw2")
    labtools.finish(streams)
    labtools.report("conntrackd_killed_on_both", restarted_s=round(restarted, 2), replicated_after=bool(replicated), **summary)
    assert summary["streams"]["opened"] == STREAMS and summary["streams"]["reset"] == 0, summary
    assert summary["tcp"]["failed"] == 0 and summary["udp"]["failed"] == 0, summary


def test_uplink_down_on_the_master_fails_over_and_its_return_hands_back_cleanly():
    seconds = PREEMPT_DELAY_S + 10
    watch = faultload.AddressWatch(["gw1", "gw2"], seconds=seconds + 4).start()
    load = faultload.ConnectionLoad(WEB, seconds=seconds, streams=STREAMS, new_every_ms=20, udp_every_ms=20, udp_port=53,
                                    timeout_s=CONNECT_TIMEOUT_S).start()
    cable = host_peer("gw1", "uplink")
    time.sleep(1)
    down = set_link(cable, "down")
    labtools.wait_for(lambda: holders(f"{WEB}/32") == {"gw2"}, 5, "gw2 holds the VIP", every=0.05)
    time.sleep(2)
    up = set_link(cable, "up")
    for address in VRRP_ADDRESSES:
        labtools.wait_for(lambda a=address: holders(a) == {"gw1"}, PREEMPT_DELAY_S + 10, f"gw1 master of {address} again", every=0.2)
    traffic = load.finish()
    watch.stop()

    moved = {a: watch.alone_from(a, "gw2", down) for a in VRRP_ADDRESSES}
    back = {a: watch.settled(a, "gw1", up) for a in VRRP_ADDRESSES}
    summary = traffic["summary"]
    labtools.report("vrrp_uplink_down_up",
                    gw2_alone_s={a: round(t - down, 3) if t else None for a, t in moved.items()},
                    gw1_back_after_up_s={a: round(t - up, 3) if t else None for a, t in back.items()},
                    failures_s=[round(at - down, 3) for at, _ in traffic["tcp"]["failures"]], **summary)
    for address in VRRP_ADDRESSES:
        assert moved[address] is not None and moved[address] - down <= VRRP_BOUND_S, (address, watch.events(address))
        assert back[address] is not None and back[address] - up >= PREEMPT_DELAY_S - 1, (address, watch.events(address))
    assert summary["streams"]["opened"] == STREAMS and summary["streams"]["reset"] == 0, summary
    moves = [min(t for t in moved.values() if t), min(t for t in back.values() if t)]
    lost, per_move = lost_per_move(traffic, moves, down)
    assert not lost and max(per_move) <= 1, (lost, per_move)
    gap_bound_ms = TARGET_GAP_MS + (CONNECT_TIMEOUT_S * 1000 if traffic["tcp"]["failures"] else 0)
    assert summary["tcp"]["max_gap_ms"] <= gap_bound_ms, summary
