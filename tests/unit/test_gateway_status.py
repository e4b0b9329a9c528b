"""Gateway status: what a gateway does per VIP and which problems fail a post-check."""

from __future__ import annotations

import re
from typing import Any

from ansible_collections.portico.gateway.plugins.module_utils.status.gateway import (
    evaluate,
    parse_bgp_summary,
    status_table,
    tcp_endpoints,
)

HEALTHD = {"daemon_running": True, "vips": {
    "203.0.113.10": {"healthy": 3, "total": 3, "announced": True},
    "2001:db8:113::10": {"healthy": 0, "total": 2, "announced": False},
}}


def _bgp(**overrides: Any) -> dict[str, Any]:
    args: dict[str, Any] = dict(mode="bgp", healthd=HEALTHD, bgp_peers={"198.18.0.1": "Established"},
                                advertised={"198.18.0.1": ["203.0.113.10/32"]}, held=[],
                                answers=[("203.0.113.10", 80, True)], drained=False)
    args.update(overrides)
    return evaluate(**args)


def test_sane_bgp_gateway_has_no_problem() -> None:
    status = _bgp()
    assert status["problems"] == []
    assert status["vips"]["203.0.113.10"]["announced"] and status["vips"]["203.0.113.10"]["peers"] == ["198.18.0.1"]
    assert not status["vips"]["2001:db8:113::10"]["announced"]


def test_session_down_is_a_problem() -> None:
    status = _bgp(bgp_peers={"198.18.0.1": "Active"}, advertised={})
    assert any("198.18.0.1" in p and "Active" in p for p in status["problems"])


def test_served_but_not_advertised_is_a_problem_unless_drained() -> None:
    assert any("not advertised" in p for p in _bgp(advertised={"198.18.0.1": []})["problems"])
    assert _bgp(advertised={"198.18.0.1": []}, drained=True)["problems"] == []


def test_vip_that_does_not_answer_is_a_problem_only_with_healthy_backends() -> None:
    assert any("203.0.113.10:80/tcp does not answer" in p for p in _bgp(answers=[("203.0.113.10", 80, False)])["problems"])
    assert _bgp(answers=[("2001:db8:113::10", 80, False)])["problems"] == []


def test_health_checker_down_or_missing_is_a_problem() -> None:
    assert any("not running" in p for p in _bgp(healthd={**HEALTHD, "daemon_running": False})["problems"])
    assert any("no state" in p for p in _bgp(healthd=None)["problems"])


def test_withdrawn_vip_with_healthy_backends_is_a_problem() -> None:
    healthd = {"daemon_running": True, "vips": {"203.0.113.10": {"healthy": 2, "total": 3, "announced": False}}}
    assert any("withdrew" in p for p in _bgp(healthd=healthd)["problems"])


def test_vrrp_announces_what_the_gateway_holds() -> None:
    master = evaluate(mode="vrrp", healthd=HEALTHD, bgp_peers=None, advertised=None, held=["203.0.113.10"],
                      answers=[], drained=False)
    backup = evaluate(mode="vrrp", healthd=HEALTHD, bgp_peers=None, advertised=None, held=[], answers=[], drained=False)
    assert master["vips"]["203.0.113.10"]["announced"] and not backup["vips"]["203.0.113.10"]["announced"]
    assert master["problems"] == backup["problems"] == []


def test_bgp_summary_merges_address_families() -> None:
    summary = {"ipv4Unicast": {"peers": {"198.18.0.1": {"state": "Established"}}},
               "ipv6Unicast": {"peers": {"2001:db8:198::1": {"state": "Connect"}}}}
    assert parse_bgp_summary(summary) == {"198.18.0.1": "Established", "2001:db8:198::1": "Connect"}


def test_tcp_endpoints_skip_udp_restricted_and_empty_lbs() -> None:
    model = [
        {"vip": "203.0.113.10", "ports": [{"protocol": "tcp", "port": 80}, {"protocol": "udp", "port": 53}],
         "backends": [{"address": "192.0.2.11"}], "source_ranges": []},
        {"vip": "203.0.113.10", "ports": [{"protocol": "tcp", "port": 80}], "backends": [{"address": "192.0.2.12"}]},
        {"vip": "203.0.113.11", "ports": [{"protocol": "tcp", "port": 443}], "backends": [{"address": "192.0.2.11"}],
         "source_ranges": ["198.51.100.0/24"]},
        {"vip": "203.0.113.12", "ports": [{"protocol": "tcp", "port": 22}], "backends": []},
    ]
    assert tcp_endpoints(model) == [{"address": "203.0.113.10", "port": 80}]


def test_status_table_lists_announcers_and_health_per_gateway() -> None:
    lines = status_table({"gw1": _bgp(), "gw2": _bgp(bgp_peers={"198.18.0.1": "Idle"}, advertised={})})
    row = next(line for line in lines if line.startswith("203.0.113.10"))
    assert re.fullmatch(r"203\.0\.113\.10\s+gw1\s+gw1 3/3, gw2 3/3", row), row
    assert any(line.startswith("PROBLEM gw2: BGP peer 198.18.0.1") for line in lines)


def test_status_table_marks_a_drained_gateway() -> None:
    lines = status_table({"gw1": _bgp(drained=True), "gw2": _bgp()})
    row = next(line for line in lines if line.startswith("203.0.113.10"))
    assert "gw1 (drained), gw2" in row, row


def test_a_change_that_leaves_a_healthy_vip_without_backends_is_a_problem() -> None:
    healthd = {"daemon_running": True, "vips": {"203.0.113.10": {"healthy": 0, "total": 3, "announced": False}}}
    status = _bgp(healthd=healthd, advertised={"198.18.0.1": []}, expect_vips=["203.0.113.10"],
                  expect_healthy=["203.0.113.10"])
    assert any("had healthy backends before this change, now 0/3" in p for p in status["problems"])
    # Already all down before the change: not this change's fault.
    assert _bgp(healthd=healthd, advertised={"198.18.0.1": []}, expect_vips=["203.0.113.10"])["problems"] == []


def test_vip_the_health_checker_does_not_know_yet_is_a_problem() -> None:
    status = _bgp(expect_vips=["203.0.113.10", "203.0.113.20"])
    assert status["problems"] == ["VIP 203.0.113.20: not known to the health checker (new configuration not loaded)"]
