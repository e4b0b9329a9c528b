"""The traffic table's layout, its delta updates and the exposition of its counters; the HA readings.

The table's behaviour with real packets is tested in the lab (molecule/default/tests/test_metrics.py);
here: what is counted under which name, that a model change is a delta keeping the counters that
stay, and that the series carry bounded labels.
"""

from __future__ import annotations

import json
import re

import pytest

from ansible_collections.portico.gateway.plugins.module_utils.dataplane import objects, traffic
from ansible_collections.portico.gateway.plugins.module_utils.health import ha_metrics
from ansible_collections.portico.gateway.plugins.module_utils.health.traffic import traffic_text
from ansible_collections.portico.gateway.plugins.module_utils.model.ipam import parse_pools
from ansible_collections.portico.gateway.plugins.module_utils.model.loadbalancer import parse_loadbalancers

POOLS = parse_pools({"p": {"addresses": ["198.51.100.0/24", "2001:db8:100::/64"]}})
NODES = ["192.0.2.11", "192.0.2.12", "192.0.2.13"]


def lbs(*raws):
    model = parse_loadbalancers(list(raws), POOLS)
    assert not model.problems, model.problems
    return model.loadbalancers


def lb(name, vip, ports=((("tcp", 80, 8080)),), backends=NODES):
    return {"name": name, "vip": vip, "backends": list(backends),
            "ports": [{"protocol": p, "port": port, "backend_port": b} for p, port, b in ports]}


def listing(script_layout: traffic.TrafficLayout, values: dict[str, tuple[int, int]] | None = None) -> traffic.LiveTraffic:
    """What `nft -j list table` prints for a table created from the layout (the JSON nft 1.0.6 writes)."""
    items = [{"metainfo": {"version": "1.0.6"}}, {"table": {"family": "inet", "name": objects.TRAFFIC_TABLE}}]
    for name in script_layout.counters():
        packets, octets = (values or {}).get(name, (0, 0))
        items.append({"counter": {"family": "inet", "name": name, "table": objects.TRAFFIC_TABLE, "packets": packets,
                                  "bytes": octets}})
    for name, elements in script_layout.elements().items():
        elem = [[{"concat": list(key)} if len(key) > 1 else key[0], counter] for key, counter in elements.items()]
        items.append({"map": {"family": "inet", "name": name, "table": objects.TRAFFIC_TABLE, "map": "counter", "elem": elem}})
    for chain in traffic.CHAINS:
        items.append({"chain": {"family": "inet", "name": chain, "table": objects.TRAFFIC_TABLE}})
        for rule in traffic.chain_rules(chain, script_layout.families()):
            comment = re.search(r'comment "([^"]*)"$', rule)
            assert comment, rule
            items.append({"rule": {"family": "inet", "table": objects.TRAFFIC_TABLE, "chain": chain, "comment": comment[1]}})
    return traffic.LiveTraffic.from_json(json.dumps({"nftables": items}))


def test_backend_counters_count_only_connections_a_load_balancer_dnated():
    layout = traffic.layout_of(lbs(lb("web", "198.51.100.10")))
    assert all(rule.startswith("ct status dnat counter ") for rule in traffic.chain_rules(objects.TRAFFIC_BACKEND_CHAIN, (4, 6)))
    # A table written before the condition existed (its rules say only the family) is rewritten, counters kept.
    older = listing(layout)
    older.rules[objects.TRAFFIC_BACKEND_CHAIN] = {"ipv4"}
    delta = traffic.delta_script(layout, older)
    assert f"flush chain inet portico_traffic {objects.TRAFFIC_BACKEND_CHAIN}" in delta
    assert "ct status dnat counter name ip daddr map" in delta and "delete counter" not in delta


def test_three_counters_per_listener_and_one_per_backend_address_shared_by_every_lb():
    # 200 nodeport Services on the same three nodes: backend counters do not multiply by Services.
    services = [lb(f"svc-{i}", f"198.51.100.{i}", ports=(("tcp", 80, 30000 + i), ("udp", 53, 31000 + i)))
                for i in range(1, 201)]
    layout = traffic.layout_of(lbs(*services))
    kinds = [kind for kind, _ in layout.counters().values()]
    assert kinds.count(objects.TRAFFIC_BACKEND_KIND) == 3
    assert len(layout.listeners) == 400
    assert len(kinds) == 400 * 3 + 3


def test_the_table_counts_only_and_keys_listeners_by_vip_protocol_port():
    layout = traffic.layout_of(lbs(lb("web", "198.51.100.10", ports=(("tcp", 80, 8080), ("udp", 53, 5353))),
                                   lb("web6", "2001:db8:100::10", backends=["2001:db8:192::11"])))
    script = traffic.table_script(layout)
    rules = "\n".join(line for line in script.splitlines() if not line.startswith("#"))
    assert "drop" not in rules and "reject" not in rules and "dnat" not in rules.replace("ct status dnat", "")
    assert "policy accept" in script
    marks = layout.marks()
    udp53 = marks[("198.51.100.10", "udp", 53)]
    assert f"198.51.100.10 . udp . 53 : {udp53}" in script
    assert f'{udp53} : "new_c633640a_udp53"' in script
    assert f'{udp53} . original : "in_c633640a_udp53"' in script and f'{udp53} . reply : "out_c633640a_udp53"' in script
    assert '2001:db8:192::11 : "backend_20010db8019200000000000000000011"' in script
    # New connections: a mark lookup per family and one counter by mark; backends: a lookup per
    # family; every later packet: one lookup, whatever the family.
    assert script.count("ct mark set") == 2 and script.count("counter name") == 4
    assert "counter name ct mark . ct direction map @flows" in script
    # Only a family the model has is looked up: no cost for IPv6 packets on an IPv4-only gateway.
    assert "ip6" not in traffic.table_script(traffic.layout_of(lbs(lb("web", "198.51.100.10"))))


def test_marks_are_the_same_for_the_same_listener_whatever_else_the_table_holds():
    # A peer gateway (conntrackd replicates the mark) or a restarted daemon must count a flow under
    # the listener that marked it, so a listener's mark may not depend on the others.
    alone = traffic.layout_of(lbs(lb("web", "198.51.100.10"))).marks()
    crowded = traffic.layout_of(lbs(*(lb(f"svc-{i}", f"198.51.100.{i}") for i in range(1, 200)))).marks()
    assert alone[("198.51.100.10", "tcp", 80)] == crowded[("198.51.100.10", "tcp", 80)]
    assert len(set(crowded.values())) == len(crowded) and all(0 < mark <= 0x7FFFFFFF for mark in crowded.values())


def test_a_mark_collision_takes_the_next_free_value_in_listener_order():
    first, second = traffic.Listener("a", "198.51.100.1", "tcp", 80), traffic.Listener("b", "198.51.100.2", "tcp", 80)
    preferred = traffic.listener_marks([first])[first.key]
    original = traffic._preferred_mark
    try:
        traffic._preferred_mark = lambda key: preferred
        marks = traffic.listener_marks([first, second])
    finally:
        traffic._preferred_mark = original
    assert marks == {first.key: preferred, second.key: preferred + 1 if preferred < 0x7FFFFFFF else 1}


def test_an_unchanged_model_needs_no_transaction_and_a_change_is_a_delta_keeping_counters():
    before = traffic.layout_of(lbs(lb("web", "198.51.100.10", ports=(("tcp", 80, 8080), ("udp", 53, 5353)))))
    live = listing(before, {"in_c633640a_tcp80": (100, 6000)})
    assert traffic.sync_script(before, live) == ""
    after = traffic.layout_of(lbs(lb("web", "198.51.100.10", backends=["192.0.2.11", "192.0.2.14"])))
    delta = traffic.sync_script(after, live)
    assert not delta.startswith("#"), "a change must not recreate the table (counters would restart)"
    lines = delta.splitlines()
    assert "add counter inet portico_traffic backend_c000020e" in lines
    assert "delete counter inet portico_traffic in_c633640a_udp53" in lines
    assert not any("in_c633640a_tcp80" in line for line in lines), "the kept listener's counter is left alone"
    # Elements naming a counter go before it is deleted.
    first_delete = next(i for i, line in enumerate(lines) if line.startswith("delete counter"))
    assert all(not line.startswith("delete element") for line in lines[first_delete:])


def test_a_family_coming_or_going_rewrites_the_rules_and_keeps_the_counters():
    v4 = lb("web", "198.51.100.10")
    live = listing(traffic.layout_of(lbs(v4)), {"in_c633640a_tcp80": (5, 300)})
    both = traffic.layout_of(lbs(v4, lb("web6", "2001:db8:100::10", backends=["2001:db8:192::11"])))
    delta = traffic.sync_script(both, live).splitlines()
    assert "flush chain inet portico_traffic count_new" in delta
    assert ('add rule inet portico_traffic count_new ct mark set ip6 daddr . meta l4proto . th dport map @mark6 '
            'comment "ipv6 mark"') in delta
    assert not any(line.startswith("delete counter") for line in delta)
    assert traffic.sync_script(both, listing(both)) == ""


def test_a_missing_or_foreign_table_is_created_whole():
    layout = traffic.layout_of(lbs(lb("web", "198.51.100.10")))
    assert traffic.sync_script(layout, None).startswith("# Generated")
    foreign = traffic.LiveTraffic(structure=frozenset({("chain", "something_else")}))
    assert "delete table inet portico_traffic" in traffic.sync_script(layout, foreign)


def test_a_listener_moved_to_another_counter_is_replaced():
    layout = traffic.layout_of(lbs(lb("web", "198.51.100.10")))
    live = listing(layout)
    mark = layout.marks()[("198.51.100.10", "tcp", 80)]
    live.elements["flows"][(mark, "original")] = "someone_elses"
    live.elements["mark4"][("198.51.100.10", "tcp", 80)] = str(mark + 1)
    delta = traffic.delta_script(layout, live)
    assert f"delete element inet portico_traffic flows {{ {mark} . original }}" in delta
    assert f'add element inet portico_traffic flows {{ {mark} . original : "in_c633640a_tcp80" }}' in delta
    assert f"add element inet portico_traffic mark4 {{ 198.51.100.10 . tcp . 80 : {mark} }}" in delta


def test_exposition_names_and_labels():
    layout = traffic.layout_of(lbs(lb("web", "198.51.100.10")))
    values = {"new_c633640a_tcp80": (100, 6000), "in_c633640a_tcp80": (700, 42000), "out_c633640a_tcp80": (500, 90000),
              "backend_c000020b": (40, 2400)}
    text = traffic_text(layout, values, {"198.51.100.10": (3, 180)})
    assert 'portico_lb_new_connections_total{lb="web",vip="198.51.100.10",protocol="tcp",port="80"} 100' in text
    assert 'portico_lb_packets_total{lb="web",vip="198.51.100.10",protocol="tcp",port="80",direction="in"} 700' in text
    assert 'portico_lb_bytes_total{lb="web",vip="198.51.100.10",protocol="tcp",port="80",direction="out"} 90000' in text
    assert 'portico_backend_new_connections_total{backend="192.0.2.11"} 40' in text
    assert 'portico_vip_dropped_packets_total{vip="198.51.100.10"} 3' in text
    # Counters not in the table yet (a sync still running) are left out, not reported as 0.
    assert 'backend="192.0.2.12"' not in text
    assert "# TYPE portico_lb_bytes_total counter" in text


def test_bgp_summary_of_every_family_and_vrf():
    summary = {"ipv4Unicast": {"peers": {"198.18.0.1": {"state": "Established"}, "198.18.0.2": {"state": "Active"}}},
               "ipv6Unicast": {"peers": {"2001:db8:198::1": {"state": "Connect"}}}}
    assert ha_metrics.bgp_peers(summary) == {"198.18.0.1": "Established", "198.18.0.2": "Active", "2001:db8:198::1": "Connect"}
    assert ha_metrics.bgp_peers({"default": summary})["198.18.0.2"] == "Active"
    assert ha_metrics.bgp_peers([]) == {}


def test_vrrp_states_from_the_notify_files_and_stop_without_keepalived(tmp_path):
    (tmp_path / "vi_uplink").write_text("MASTER 110\n")
    (tmp_path / "vi_backend").write_text("BACKUP 100\n")
    assert ha_metrics.read_vrrp(str(tmp_path), running=True) == {"vi_backend": "backup", "vi_uplink": "master"}
    assert ha_metrics.read_vrrp(str(tmp_path), running=False) == {"vi_backend": "stop", "vi_uplink": "stop"}
    assert ha_metrics.read_vrrp(str(tmp_path / "missing")) == {}


@pytest.mark.parametrize("conntrack, expected", [((900, 1000), ["portico_conntrack_entries 900", "portico_conntrack_entries_max 1000"]),
                                                 (None, [])])
def test_ha_exposition(conntrack, expected):
    reading = ha_metrics.HaReading(bgp={"198.18.0.1": "Established", "198.18.0.2": "Idle"}, vrrp={"vi_uplink": "master"},
                                   conntrack=conntrack, taken=1.0)
    lines = ha_metrics.ha_text(reading).splitlines()
    assert 'portico_bgp_session_up{peer="198.18.0.1"} 1' in lines
    assert 'portico_bgp_session_up{peer="198.18.0.2"} 0' in lines
    assert 'portico_vrrp_state{vrrp_instance="vi_uplink",state="master"} 1' in lines
    assert 'portico_vrrp_state{vrrp_instance="vi_uplink",state="backup"} 0' in lines
    for line in expected:
        assert line in lines
    if conntrack is None:
        assert not [line for line in lines if line.startswith("portico_conntrack_entries ")]


def test_conntrack_reading(tmp_path):
    (tmp_path / "nf_conntrack_count").write_text("12\n")
    (tmp_path / "nf_conntrack_max").write_text("262144\n")
    assert ha_metrics.read_conntrack(str(tmp_path)) == (12, 262144)
    assert ha_metrics.read_conntrack(str(tmp_path / "none")) is None
