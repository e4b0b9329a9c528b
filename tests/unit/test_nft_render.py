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
    after = slot_table(web, options, healthy={"192.0.2.11:8080", "192.0.2.13:8080"})
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
    assert web.slot_map == objects.slot_map(web.lb.ident, "tcp", 80) and f"map {web.slot_map} {{" in script
    for family in objects.FAMILIES:
        for name in (objects.vip_set(family), objects.allowed_set(family), objects.no_backends_set(family)):
            assert f"set {name} {{" in script
        for name in (objects.dispatch_map(family), objects.vip_drops_map(family)):
            assert f"map {name} {{" in script
    assert f'comment "{objects.table_comment(render_table(lbs, options).digest)}"' in script
    assert objects.is_health_owned("map", web.slot_map) and objects.is_health_owned("set", objects.no_backends_set(6))
    assert not objects.is_health_owned("set", objects.vip_set(4)) and not objects.is_health_owned("map", objects.dispatch_map(4))
