"""VRRP pair (gw1 master, gw2 backup) under real traffic: failover gap, held connections, return.

Targets: longest gap for a client probing every 10 ms <= 0.5 s when gw1 dies; long-lived
TCP connections through the VIP survive (conntrackd); gw1 coming back causes no longer gap.
"""

from __future__ import annotations

import sys
import time
import pathlib

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[3] / "lab"))
import labtools  # noqa: E402

WEB, WEB6, SNAT = "198.51.100.10", "2001:db8:100::10", "198.51.100.12"
TARGET_GAP_MS = 500
STREAMS = 50


def master_of(address: str) -> str:
    holders = [gw for gw in ("gw1", "gw2") if address in labtools.sh(gw, "ip -o addr show", check=False)]
    return ",".join(holders)


@pytest.fixture(scope="module", autouse=True)
def probe_everywhere():
    labtools.install_probe("client", "router")


@pytest.fixture(autouse=True)
def both_gateways_running():
    for gw in ("gw1", "gw2"):
        if not labtools.running(gw):
            labtools.start_gateway(gw)
    labtools.wait_for(lambda: master_of("198.18.0.10/") == "gw1", 60, "gw1 master of the VIPs", every=0.2)
    labtools.wait_for(lambda: master_of("192.0.2.1/") == "gw1", 10, "gw1 holds the gateway address", every=0.2)


def test_pair_state_vips_and_gateway_address_move_together():
    assert master_of(f"{WEB}/32") == "gw1"
    assert master_of(f"{WEB6}/128") == "gw1"
    assert master_of("192.0.2.1/") == "gw1"
    for target in (WEB, WEB6, SNAT):
        result = labtools.request("client", target)
        assert result["failed"] == 0 and len(result["backends"]) == 3, (target, result)


def test_standby_holds_the_masters_connections():
    """conntrackd (external cache disabled) puts gw1's NAT entries straight into gw2's kernel table."""
    streams = labtools.open_streams("client", SNAT, 10, 8)

    def synced() -> int:
        listing = labtools.sh("gw2", f"conntrack -L -d {SNAT} -p tcp --state ESTABLISHED 2>/dev/null", check=False)
        return len(listing.splitlines())

    labtools.wait_for(lambda: synced() >= 10, 10, "gw1's connections synced to gw2")
    entries = synced()
    assert entries >= 10, entries
    labtools.finish(streams)


@pytest.mark.parametrize("target", [WEB, SNAT], ids=["client-address-kept", "snat"])
def test_master_dies_gap_and_held_connections(target):
    streams = labtools.open_streams("client", target, STREAMS, 10)
    timeline = labtools.probe("client", "--target", target, "--port", "80", "--every", "10", "--duration", "6",
                              "--timeout", "0.3")
    time.sleep(1.5)
    killed = labtools.kill_gateway("gw1")
    labtools.wait_for(lambda: master_of("198.18.0.10/") == "gw2", 5, "gw2 takes over")
    took_over = time.time() - killed
    result = labtools.finish(timeline)
    held = labtools.finish(streams)
    labtools.report("vrrp_failover", target=target, max_gap_ms=result["max_gap_ms"], failed=len(result["failures"]),
                    ok=result["ok"], takeover_s=round(took_over, 3), streams=held["opened"], resets=held["reset"])
    assert result["max_gap_ms"] <= TARGET_GAP_MS, result
    assert held["opened"] == STREAMS, held
    assert held["reset"] == 0, [r for r in held["results"] if r["reset"] or r["error"]]


def test_master_returns_without_a_longer_gap():
    labtools.kill_gateway("gw1")
    labtools.wait_for(lambda: master_of("198.18.0.10/") == "gw2", 5, "gw2 takes over")
    streams = labtools.open_streams("client", SNAT, STREAMS, 40)
    timeline = labtools.probe("client", "--target", WEB, "--port", "80", "--every", "10", "--duration", "35",
                              "--timeout", "0.3")
    labtools.start_gateway("gw1")
    # gw1 waits keepalived_preempt_delay_s before taking the VIPs back (conntrackd resync first).
    labtools.wait_for(lambda: master_of("198.18.0.10/") == "gw1", 30, "gw1 master again", every=0.1)
    result = labtools.finish(timeline)
    held = labtools.finish(streams)
    labtools.report("vrrp_return", max_gap_ms=result["max_gap_ms"], failed=len(result["failures"]),
                    streams=held["opened"], resets=held["reset"])
    assert result["max_gap_ms"] <= TARGET_GAP_MS, result
    assert held["reset"] == 0, [r for r in held["results"] if r["reset"] or r["error"]]
