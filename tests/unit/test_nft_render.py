"""Golden tests of the rendered ruleset (text only: tests/integration/test_nft_golden.py has the
kernel check every golden file with ``nft -c``).

Regenerate after an intended change: PORTICO_UPDATE_GOLDEN=1 pytest tests/unit/test_nft_render.py
"""

from __future__ import annotations

import os
import pathlib

import pytest
import yaml

from ansible_collections.portico.gateway.plugins.module_utils.dataplane import objects
from ansible_collections.portico.gateway.plugins.module_utils.dataplane.options import EgressSnat, RenderOptions
from ansible_collections.portico.gateway.plugins.module_utils.dataplane.render import (
    describe,
    grouped_withheld,
    render_table,
    service_ports,
    slot_table,
)
from ansible_collections.portico.gateway.plugins.module_utils.model.ipam import parse_pools
from ansible_collections.portico.gateway.plugins.module_utils.model.loadbalancer import parse_loadbalancers

REPO = pathlib.Path(__file__).resolve().parents[2]
GOLDEN = REPO / "tests" / "golden"


def lab_case() -> tuple[list, RenderOptions]:
    data = yaml.safe_load((REPO / "inventories/lab/group_vars/gateways.yml").read_text())
    model = parse_loadbalancers(data["portico_loadbalancers"], parse_pools(data["portico_pools"]))
    assert not model.problems
    egress = tuple(EgressSnat(**rule) for rule in data["nftables_egress_snat"])
    return model.loadbalancers, RenderOptions(egress_snat=egress)


def edge_case() -> tuple[list, RenderOptions]:
    data = yaml.safe_load((GOLDEN / "edge_cases.yml").read_text())
    model = parse_loadbalancers(data["loadbalancers"], parse_pools(data["pools"]))
    assert not model.problems
    opts = data["options"]
    egress = tuple(EgressSnat(**rule) for rule in opts["egress_snat"])
    return model.loadbalancers, RenderOptions(egress_snat=egress, allow_icmp=opts["allow_icmp"])


def lab_snat_all_case() -> tuple[list, RenderOptions]:
    """Active/active (BGP) gateways: every LB SNATs to the gateway's own VRRP-held return address."""
    lbs, options = lab_case()
    return lbs, RenderOptions(egress_snat=options.egress_snat, snat_all=True,
                              snat_source4="192.0.2.21", snat_source6="2001:db8:192::21")


CASES = {"lab": lab_case, "edge_cases": edge_case, "lab_snat_all": lab_snat_all_case}


@pytest.mark.parametrize("case", sorted(CASES))
def test_rendered_ruleset_matches_golden(case):
    lbs, options = CASES[case]()
    script = render_table(lbs, options).script
    golden = GOLDEN / f"{case}.nft"
    if os.environ.get("PORTICO_UPDATE_GOLDEN"):
        golden.write_text(script)
    assert script == golden.read_text()


def test_every_golden_file_has_a_case():
    # tests/integration/test_nft_golden.py checks each golden file with the kernel: all must be renders.
    assert {path.stem for path in GOLDEN.glob("*.nft")} == set(CASES)


def test_render_is_independent_of_input_order():
    lbs, options = lab_case()
    assert render_table(lbs, options) == render_table(list(reversed(lbs)), options)


def test_rendering_only_touches_portico_table():
    lbs, options = lab_case()
    script = render_table(lbs, RenderOptions(table="lbtest")).script
    tables = {line.rstrip(" {").split()[-1] for line in script.splitlines() if line.startswith(("table ", "delete table "))}
    assert tables == {"lbtest"}
    assert "flush ruleset" not in script


def test_health_state_rewrites_only_the_dead_backends_slots():
    lbs, options = lab_case()
    web = next(s for s in service_ports(lbs) if s.lb.name == "web" and s.port.port == 80)
    before = slot_table(web, options)
    after = slot_table(web, options, healthy=web.healthy_keys({"192.0.2.12"}))
    changed = [slot for slot in range(len(before)) if before[slot] != after[slot]]
    assert changed and all(before[slot] == "192.0.2.12 . 8080" for slot in changed)


def test_describe_shows_the_spread():
    lbs, options = lab_case()
    view = describe(lbs, options)
    assert "web 198.51.100.10:80/tcp" in view
    assert "192.0.2.11:8080 weight 1: 13" in view  # 401 slots over 3 backends: 133 or 134
    assert "client source ip: snat to egress address" in view


def _postrouting(script: str) -> list[str]:
    chain = script.split("chain nat_postrouting {", 1)[1].split("}", 1)[0]
    return [line.strip() for line in chain.splitlines() if line.strip()]


def test_snat_all_marks_every_lb_and_uses_the_gateway_return_address():
    """Active/active: every LB SNATs to the VRRP-held per-gateway address (symmetric return path)."""
    lbs, options = lab_case()
    plain = render_table(lbs, options).script
    preserving = [lb for lb in lbs if lb.preserve_source_ip]
    assert preserving, "the lab must have LBs that keep the client address"
    chain_of = {s.lb.name: s.chain for s in service_ports(lbs)}
    marked = "meta mark set meta mark | 0x00020000"
    web_chain = plain.split(f"chain {chain_of['web']} {{", 1)[1].split("}", 1)[0]
    assert marked not in web_chain

    _lbs, active = lab_snat_all_case()
    script = render_table(lbs, active).script
    for lb in preserving:
        chain = script.split(f"chain {chain_of[lb.name]} {{", 1)[1].split("}", 1)[0]
        assert marked in chain, lb.name
    rules = _postrouting(script)
    assert "meta mark & 0x00020000 == 0x00020000 meta nfproto ipv4 snat ip to 192.0.2.21" in rules
    assert "meta mark & 0x00020000 == 0x00020000 meta nfproto ipv6 snat ip6 to 2001:db8:192::21" in rules
    # The explicit source comes before the masquerade fallback.
    assert rules.index("meta mark & 0x00020000 == 0x00020000 meta nfproto ipv4 snat ip to 192.0.2.21") < \
        rules.index("meta mark & 0x00020000 == 0x00020000 masquerade")
    assert "snat to 192.0.2.21" in describe(lbs, active)
    # The kernel accepts it: this is the lab_snat_all golden file, which nft -c checks.
    assert script == (GOLDEN / "lab_snat_all.nft").read_text()


def test_object_names_come_from_one_place():
    lbs, options = lab_case()
    script = render_table(lbs, options).script
    web = next(s for s in service_ports(lbs) if s.lb.name == "web" and s.port.port == 80)
    assert web.chain == objects.service_chain(web.lb.ident, "tcp", 80) and f"chain {web.chain} {{" in script
    assert web.table is not None and f"map {web.slot_map} {{" in script
    assert web.slot_map == objects.backend_table(web.slot_map.removeprefix(objects.BACKEND_TABLE_PREFIX))
    for family in objects.FAMILIES:
        for name in (objects.vip_set(family), objects.allowed_set(family), objects.no_backends_set(family)):
            assert f"set {name} {{" in script
        for name in (objects.dispatch_map(family), objects.vip_drops_map(family)):
            assert f"map {name} {{" in script
    assert f'comment "{objects.table_comment(render_table(lbs, options).digest)}"' in script
    assert objects.is_health_owned("map", web.slot_map) and objects.is_health_owned("set", objects.no_backends_set(6))
    assert not objects.is_health_owned("set", objects.vip_set(4)) and not objects.is_health_owned("map", objects.dispatch_map(4))


def _model(raws: list[dict]) -> list:
    model = parse_loadbalancers(raws, parse_pools({"public": {"addresses": ["198.51.100.0/24"]}}))
    assert not model.problems, model.problems
    return model.loadbalancers


NODE_CHECK = {"type": "http", "port": 10256, "path": "/healthz"}
NODES = [{"address": f"192.0.2.{n}"} for n in (11, 12, 13)]


def nodeport_lb(name: str, vip: str, node_ports: tuple[int, ...], backends: list[dict] | None = None, **extra) -> dict:
    ports = [{"protocol": "tcp", "port": 80 + i, "backend_port": p} for i, p in enumerate(node_ports)]
    return {"name": name, "vip": vip, "ports": ports, "backends": NODES if backends is None else backends,
            "health_check": NODE_CHECK, **extra}


def test_listeners_with_the_same_backends_and_check_share_one_table_of_addresses():
    lbs = _model([nodeport_lb("a", "198.51.100.10", (30001, 30002)),
                  nodeport_lb("b", "198.51.100.11", (30003,), backends=list(reversed(NODES)))])
    services = service_ports(lbs)
    assert len({s.slot_map for s in services}) == 1 and services[0].table.addresses_only
    script = render_table(lbs, RenderOptions()).script
    assert script.count(f"map {services[0].slot_map} {{") == 1
    for service in services:  # the port comes in each listener's rule
        assert f"map @{service.slot_map} : {service.port.backend_port}\n" in script
    # Slot -> address: each listener's own port, the same owners (the map is one).
    tables = [slot_table(s, RenderOptions()) for s in services]
    assert [t.split(" . ")[0] for t in tables[0]] == [t.split(" . ")[0] for t in tables[2]]
    assert {t.split(" . ")[1] for t in tables[2]} == {"30003"}


def test_a_different_check_or_member_set_gets_its_own_table():
    base = nodeport_lb("a", "198.51.100.10", (30001,))
    own_port = nodeport_lb("b", "198.51.100.11", (30002,), health_check={"type": "tcp"})  # probes its own nodePort
    local = nodeport_lb("c", "198.51.100.12", (30003,), health_check={**NODE_CHECK, "port": 31000})
    fewer = nodeport_lb("d", "198.51.100.13", (30004,), backends=NODES[:2])
    weighted = nodeport_lb("e", "198.51.100.14", (30005,), backends=[{**NODES[0], "weight": 2}, *NODES[1:]])
    names = [service_ports([lb])[0].slot_map for lb in _model([base, own_port, local, fewer, weighted])]
    assert len(set(names)) == 5


def test_backends_with_their_own_ports_keep_address_port_tables_shared_when_equal():
    pods = [{"address": "192.0.2.11", "port": 8081}, {"address": "192.0.2.12", "port": 8082}]
    raws = [{"name": n, "vip": v, "ports": [{"protocol": "tcp", "port": 80, "backend_port": 8080}], "backends": pods}
            for n, v in (("a", "198.51.100.10"), ("b", "198.51.100.11"))]
    lbs = _model(raws)
    services = service_ports(lbs)
    assert services[0].slot_map == services[1].slot_map and not services[0].table.addresses_only
    script = render_table(lbs, RenderOptions()).script
    assert "typeof numgen inc mod 2 : ip daddr . tcp dport" in script
    assert f"map @{services[0].slot_map}\n" in script and ": 192.0.2.11 . 8081" in script


def test_a_table_is_named_by_its_content_and_a_lost_member_moves_only_its_slots():
    lbs = _model([nodeport_lb("a", "198.51.100.10", (30001,))])
    again = _model([nodeport_lb("renamed", "198.51.100.20", (30009,), backends=list(reversed(NODES)))])
    service, other = service_ports(lbs)[0], service_ports(again)[0]
    assert service.slot_map == other.slot_map  # every gateway, any LB listing order
    assert slot_table(service, RenderOptions(hash_seed=7)) != slot_table(service, RenderOptions())
    before = slot_table(service, RenderOptions())
    after = slot_table(service, RenderOptions(), service.healthy_keys({"192.0.2.12"}))
    assert all(a == b for a, b in zip(before, after) if not a.startswith("192.0.2.12 "))
    assert not any(a.startswith("192.0.2.12 ") for a in after)


def test_lbs_of_one_health_group_withhold_alike_in_the_render():
    lbs = _model([nodeport_lb("a", "198.51.100.10", (30001,)), nodeport_lb("b", "198.51.100.11", (30002,))])
    assert grouped_withheld(lbs, {"a": {"192.0.2.12"}}) == {"a": frozenset({"192.0.2.12"}), "b": frozenset({"192.0.2.12"})}
    script = render_table(lbs, RenderOptions(), {"a": {"192.0.2.12"}}).script
    assert ": 192.0.2.12," not in script and ": 192.0.2.12 }" not in script
    # Affinity listeners keep a map of their own: its slots jump to their own member chains.
    sticky = _model([nodeport_lb("s", "198.51.100.12", (30003,), session_affinity="client_ip")])
    assert service_ports(sticky)[0].table is None and service_ports(sticky)[0].slot_map.startswith(objects.SLOT_MAP_PREFIX)
