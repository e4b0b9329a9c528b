"""Health state: checks from the model, rise/fall, what to withhold, and the nft side of it."""

from __future__ import annotations

import json

import pytest

from ansible_collections.portico.gateway.plugins.module_utils.dataplane.nft import TableListing
from ansible_collections.portico.gateway.plugins.module_utils.dataplane.options import RenderOptions
from ansible_collections.portico.gateway.plugins.module_utils.dataplane.records import read_withheld
from ansible_collections.portico.gateway.plugins.module_utils.dataplane.render import (
    health_elements,
    render_health_update,
    render_table,
    service_ports,
    slot_table,
)
from ansible_collections.portico.gateway.plugins.module_utils.health.state import (
    BackendHealth,
    announced_vips,
    checks_for,
    vip_health,
    withheld_for,
)
from ansible_collections.portico.gateway.plugins.module_utils.model.ipam import parse_pools
from ansible_collections.portico.gateway.plugins.module_utils.model.loadbalancer import parse_loadbalancer

POOLS = parse_pools({"public": {"addresses": ["198.51.100.0/24", "2001:db8:100::/64"]}})
NODES = [{"address": "192.0.2.11"}, {"address": "192.0.2.12"}, {"address": "192.0.2.13"}]


def lb(name="web", vip="198.51.100.10", backends=None, **extra):
    raw = {"name": name, "vip": vip, "ports": [{"protocol": "tcp", "port": 80, "backend_port": 8080},
                                               {"protocol": "udp", "port": 53, "backend_port": 5353}],
           "backends": NODES if backends is None else backends, **extra}
    return parse_loadbalancer(raw, POOLS)


def test_rise_and_fall_need_consecutive_results():
    health = BackendHealth()
    assert health.up
    assert not health.observe(False, rise=2, fall=3)
    assert not health.observe(True, rise=2, fall=3)  # a success resets the failure count
    assert not health.observe(False, rise=2, fall=3)
    assert not health.observe(False, rise=2, fall=3)
    assert health.observe(False, rise=2, fall=3, detail="connection refused", now=123.0)
    assert not health.up and health.since == 123.0 and health.transitions == 1
    assert not health.observe(True, rise=2, fall=3)
    assert health.observe(True, rise=2, fall=3)
    assert health.up and health.transitions == 2


def test_state_round_trips_through_the_state_file_format():
    health = BackendHealth(up=False, since=5.0, detail="HTTP 500", latency=0.002, transitions=3)
    again = BackendHealth.from_dict(json.loads(json.dumps(health.to_dict())))
    assert (again.up, again.since, again.detail, again.transitions) == (False, 5.0, "HTTP 500", 3)


def test_checks_use_the_first_listener_port_unless_one_is_configured():
    checks = checks_for(lb())
    assert [(c.address, c.target.port, c.target.kind) for c in checks] == [
        ("192.0.2.11", 8080, "tcp"), ("192.0.2.12", 8080, "tcp"), ("192.0.2.13", 8080, "tcp")]
    http = checks_for(lb(health_check={"type": "http", "port": 32000, "path": "/healthz", "interval_ms": 200,
                                       "timeout_ms": 100, "fall": 2}))
    assert {(c.target.port, c.target.path, c.interval, c.fall, c.target.timeout) for c in http} == {(32000, "/healthz", 0.2, 2, 0.1)}
    assert checks_for(lb(health_check={"type": "none"})) == []


def test_check_keys_change_with_the_probe_but_not_with_timing():
    base = {c.address: c.key for c in checks_for(lb())}
    slower = {c.address: c.key for c in checks_for(lb(health_check={"interval_ms": 1000, "timeout_ms": 500}))}
    other_port = {c.address: c.key for c in checks_for(lb(health_check={"port": 9000}))}
    assert base == slower  # a new interval must not reset the state of a backend
    assert all(base[a] != other_port[a] for a in base)


def test_reject_policy_withholds_everything_when_all_are_down():
    web = lb()
    down = {"192.0.2.11": False, "192.0.2.12": False, "192.0.2.13": False}
    assert withheld_for(web, down, {"192.0.2.12"}, "reject") == ({"192.0.2.11", "192.0.2.12", "192.0.2.13"}, set())


def test_keep_last_policy_keeps_the_last_served_set():
    web = lb()
    down = {"192.0.2.11": False, "192.0.2.12": False, "192.0.2.13": False}
    assert withheld_for(web, down, {"192.0.2.12", "192.0.2.13"}, "keep_last") == ({"192.0.2.11"}, {"192.0.2.12", "192.0.2.13"})
    # Nothing remembered (fresh start): fail open to every backend.
    assert withheld_for(web, down, set(), "keep_last") == (set(), {"192.0.2.11", "192.0.2.12", "192.0.2.13"})


def test_unchecked_backends_count_as_up():
    assert withheld_for(lb(), {"192.0.2.11": False}, set(), "reject") == ({"192.0.2.11"}, {"192.0.2.12", "192.0.2.13"})


def test_a_vip_is_withdrawn_only_when_every_lb_on_it_has_no_healthy_backend():
    web = lb()
    other = lb(name="other", backends=[{"address": "192.0.2.14"}], ports=[{"protocol": "tcp", "port": 443, "backend_port": 8443}])
    up = {("web", "192.0.2.11"): False, ("web", "192.0.2.12"): False, ("web", "192.0.2.13"): False}
    health = vip_health([web, other], up)
    assert health == {"198.51.100.10": {"healthy": 1, "total": 4}}
    assert announced_vips(health, withdraw=True) == {"198.51.100.10"}
    up[("other", "192.0.2.14")] = False
    health = vip_health([web, other], up)
    assert announced_vips(health, withdraw=True) == set()
    assert announced_vips(health, withdraw=False) == {"198.51.100.10"}


def test_read_withheld_ignores_missing_foreign_and_stale_entries(tmp_path):
    web = lb()
    path = tmp_path / "state.json"
    assert read_withheld(str(path), [web]) == {}
    path.write_text("not json")
    assert read_withheld(str(path), [web]) == {}
    path.write_text(json.dumps({"version": 99, "loadbalancers": {"web": {"withheld": ["192.0.2.11"]}}}))
    assert read_withheld(str(path), [web]) == {}
    path.write_text(json.dumps({"version": 1, "loadbalancers": {
        "web": {"withheld": ["192.0.2.11", "192.0.2.99"]}, "gone": {"withheld": ["192.0.2.12"]}}}))
    assert read_withheld(str(path), [web]) == {"web": {"192.0.2.11"}}
    # An LB whose checks were switched off serves everything.
    assert read_withheld(str(path), [lb(health_check={"type": "none"})]) == {}


def test_health_update_rewrites_only_the_given_listeners():
    options = RenderOptions()
    web, other = lb(), lb(name="other", vip="198.51.100.11", backends=NODES[:2])
    services = [s for s in service_ports([web, other]) if s.lb.name == "web"]
    script = render_health_update(services, options, {"web": {"192.0.2.11"}})
    others = service_ports([other])
    assert "198.51.100.11" not in script and others[0].slot_map not in script
    tcp = services[0]
    # Both listeners of web have every backend on one port each: one table of addresses serves both.
    assert tcp.table is not None and tcp.slot_map == services[1].slot_map and script.count("flush map") == 1
    full, repaired = slot_table(tcp, options), slot_table(tcp, options, tcp.healthy_keys({"192.0.2.11"}))
    assert "192.0.2.11 . 8080" not in repaired
    # Slots of backends that stay healthy keep their owner.
    assert all(after == before for before, after in zip(full, repaired) if before != "192.0.2.11 . 8080")
    assert f"flush map inet portico {tcp.slot_map}" in script
    # Still serving: the listener is taken out of the reject set (add then delete always works).
    assert "add element inet portico no_backends4 { 198.51.100.10 . tcp . 80 }" in script
    assert "delete element inet portico no_backends4 { 198.51.100.10 . tcp . 80 }" in script


def test_health_update_rejects_when_nothing_is_left():
    options = RenderOptions()
    services = service_ports([lb()])
    script = render_health_update(services, options, {"web": {"192.0.2.11", "192.0.2.12", "192.0.2.13"}})
    assert "delete element" not in script
    assert "add element inet portico no_backends4 { 198.51.100.10 . udp . 53 }" in script
    assert not any(line.startswith(("add element inet portico slots_", "add element inet portico backends_")) for line in script.splitlines())


def test_ruleset_digest_ignores_health_but_script_carries_it():
    web = lb()
    healthy = render_table([web], RenderOptions())
    healthy_script, healthy_digest = healthy.script, healthy.digest
    withheld = render_table([web], RenderOptions(), {"web": {"192.0.2.11"}})
    script, digest = withheld.script, withheld.digest
    assert digest == healthy_digest and script != healthy_script
    assert ": 192.0.2.11," in healthy_script and ": 192.0.2.11" not in script
    all_down_digest = render_table([web], RenderOptions(), {"web": {"192.0.2.11", "192.0.2.12", "192.0.2.13"}}).digest
    assert all_down_digest == healthy_digest
    # The intent (what a boot restores) serves every backend whatever the health state.
    assert withheld.intent_script == healthy_script


def _listing(*items: dict) -> TableListing:
    """A table as ``nft -j list table`` prints it."""
    meta = {"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}}
    return TableListing.from_json(json.dumps({"nftables": [meta, {"table": {"family": "inet", "name": "portico", "handle": 7}},
                                                           *items]}))


@pytest.mark.parametrize("elements", [
    [[0, {"concat": ["192.0.2.11", 8080]}]],
    [[0, {"concat": ["192.0.2.11", 8080]}], [1, {"concat": ["192.0.2.12", 8080]}], [2, {"concat": ["192.0.2.13", 8080]}]],
])
def test_drift_comparison_ignores_only_health_owned_elements(elements):
    def listing(slot_elements, vip_elements, handle=11):
        slots = {"family": "inet", "name": "slots_web_tcp80", "table": "portico", "handle": handle,
                 "type": ["ipv4_addr", "inet_service"], "map": "numgen"}
        vips = {"family": "inet", "name": "vips4", "table": "portico", "type": "ipv4_addr", "handle": handle + 2}
        no_backends = {"family": "inet", "name": "no_backends4", "table": "portico", "handle": handle + 1,
                       "type": ["ipv4_addr", "inet_proto", "inet_service"]}
        return _listing({"map": {**slots, **({"elem": slot_elements} if slot_elements else {})}}, {"set": no_backends},
                        {"set": {**vips, **({"elem": vip_elements} if vip_elements else {})}})
    vips = ["198.51.100.10"]
    assert listing(elements, vips).structure() == listing([], vips).structure()
    assert listing(elements, vips).structure() != listing(elements, []).structure()
    # Kernel handles and counter values are not the table's content either.
    assert listing(elements, vips, handle=40).structure() == listing(elements, vips).structure()
    counter = {"family": "inet", "name": "drop_c633640a", "table": "portico", "handle": 3, "packets": 0, "bytes": 0}
    assert _listing({"counter": counter}).structure() == _listing({"counter": {**counter, "packets": 9, "bytes": 640}}).structure()


def test_udp_only_lbs_are_not_tcp_checked_by_default():
    dns = lb(name="dns", ports=[{"protocol": "udp", "port": 53, "backend_port": 5353}])
    assert dns.health_check.type == "none" and checks_for(dns) == []
    udp = lb(name="dns", ports=[{"protocol": "udp", "port": 53, "backend_port": 5353}], health_check={"type": "udp"})
    assert {c.target.port for c in checks_for(udp)} == {5353}


def test_a_check_without_a_listener_of_its_protocol_needs_a_port():
    from ansible_collections.portico.gateway.plugins.module_utils.model.loadbalancer import LBValidationError
    with pytest.raises(LBValidationError) as err:
        lb(name="dns", ports=[{"protocol": "udp", "port": 53, "backend_port": 5353}], health_check={"type": "http"})
    assert [str(p) for p in err.value.problems] == ["dns: health_check.port: is required: a http check needs a tcp listener or an explicit port"]
    ok = lb(name="dns", ports=[{"protocol": "udp", "port": 53, "backend_port": 5353}], health_check={"type": "http", "port": 8082})
    assert {c.target.port for c in checks_for(ok)} == {8082}


def test_udp_check_of_a_mixed_lb_uses_the_udp_listener():
    assert {c.target.port for c in checks_for(lb(health_check={"type": "udp"}))} == {5353}


def test_health_owned_elements_read_the_same_from_the_render_and_a_listing():
    elements = health_elements([lb()], RenderOptions(), {"web": {"192.0.2.11"}})
    tcp = service_ports([lb()])[0].slot_map
    assert set(elements) == {tcp, "no_backends4"} and elements["no_backends4"] == frozenset()
    assert len(elements[tcp]) > 100 and not any("192.0.2.11" in e for e in elements[tcp])
    assert (0, "192.0.2.12") in elements[tcp] or (0, "192.0.2.13") in elements[tcp]
    listing = _listing({"set": {"family": "inet", "name": "no_backends4", "table": "portico", "handle": 9,
                                "type": ["ipv4_addr", "inet_proto", "inet_service"],
                                "elem": [{"concat": ["198.51.100.10", "tcp", 80]}, {"concat": ["198.51.100.10", "udp", 53]}]}})
    assert listing.health_elements() == {"no_backends4": frozenset({("198.51.100.10", "tcp", 80), ("198.51.100.10", "udp", 53)})}
    # The render's own slot map elements, listed back, compare equal (IPv6 in nft's spelling too).
    slots = [[slot, address] for slot, address in sorted(elements[tcp])]
    listed = _listing({"map": {"family": "inet", "name": tcp, "table": "portico", "handle": 4, "elem": slots}})
    assert listed.health_elements() == {tcp: elements[tcp]}
    # Backends with ports of their own: a table of address . port.
    direct = lb(backends=[{"address": "192.0.2.11", "port": 8081}, {"address": "192.0.2.12", "port": 8082}])
    name = service_ports([direct])[0].slot_map
    pairs = health_elements([direct], RenderOptions())[name]
    assert {element[1:] for element in pairs} == {("192.0.2.11", 8081), ("192.0.2.12", 8082)}
    slots = [[slot, {"concat": [address, port]}] for slot, address, port in sorted(pairs)]
    listed = _listing({"map": {"family": "inet", "name": name, "table": "portico", "handle": 4, "elem": slots}})
    assert listed.health_elements() == {name: pairs}
    v6 = _listing({"set": {"family": "inet", "name": "no_backends6", "table": "portico", "handle": 5,
                           "elem": [{"concat": ["2001:db8:100:0::10", "tcp", 80]}]}})
    assert v6.health_elements() == {"no_backends6": frozenset({("2001:db8:100::10", "tcp", 80)})}


def test_schedule_is_absolute_and_skips_missed_ticks():
    from ansible_collections.portico.gateway.plugins.module_utils.health.scheduler import first_due, next_due
    first = first_due("web|192.0.2.11", 0.2, 100.0)
    assert 100.0 <= first < 100.2 and first == first_due("web|192.0.2.11", 0.2, 100.0)
    assert next_due(10.0, 0.2, 10.05) == pytest.approx(10.2)  # on time: exactly one interval later
    assert next_due(10.0, 0.2, 10.5) == pytest.approx(10.6)  # late: the missed ticks are skipped, not bunched
