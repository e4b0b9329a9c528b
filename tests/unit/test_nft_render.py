"""Golden tests of the rendered ruleset, each checked by the kernel with ``nft -c``.

Regenerate after an intended change: PORTICO_UPDATE_GOLDEN=1 pytest tests/unit/test_nft_render.py
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess

import pytest
import yaml

from ansible_collections.portico.gateway.plugins.module_utils.model.ipam import parse_pools
from ansible_collections.portico.gateway.plugins.module_utils.model.loadbalancer import parse_loadbalancers
from ansible_collections.portico.gateway.plugins.module_utils.dataplane.render import (
    EgressSnat,
    RenderOptions,
    describe,
    render_ruleset,
    slot_table,
    service_ports,
)

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


CASES = {"lab": lab_case, "edge_cases": edge_case}


def nft_check(script: str, tmp_path: pathlib.Path) -> subprocess.CompletedProcess:
    path = tmp_path / "ruleset.nft"
    path.write_text(script)
    # A private network namespace: the check can never disturb the host's ruleset.
    return subprocess.run(["unshare", "--net", "nft", "-c", "-f", str(path)], capture_output=True, text=True, check=False)


@pytest.fixture(scope="module", autouse=True)
def need_nft():
    if shutil.which("nft") is None or os.geteuid() != 0:
        pytest.fail("golden tests need root and nft (apt-get install nftables)")


@pytest.mark.parametrize("case", sorted(CASES))
def test_rendered_ruleset_matches_golden(case):
    lbs, options = CASES[case]()
    script, _ = render_ruleset(lbs, options)
    golden = GOLDEN / f"{case}.nft"
    if os.environ.get("PORTICO_UPDATE_GOLDEN"):
        golden.write_text(script)
    assert script == golden.read_text()


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden_passes_nft_check(case, tmp_path):
    result = nft_check((GOLDEN / f"{case}.nft").read_text(), tmp_path)
    assert result.returncode == 0, result.stderr


def test_nft_check_catches_a_broken_ruleset(tmp_path):
    script = (GOLDEN / "lab.nft").read_text().replace("vmap @dispatch4", "vmap @dispatch_missing")
    result = nft_check(script, tmp_path)
    assert result.returncode != 0 and "dispatch_missing" in result.stderr


def test_render_is_independent_of_input_order():
    lbs, options = lab_case()
    assert render_ruleset(lbs, options) == render_ruleset(list(reversed(lbs)), options)


def test_rendering_only_touches_portico_table():
    lbs, options = lab_case()
    script, _ = render_ruleset(lbs, RenderOptions(table="lbtest"))
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


def test_snat_all_marks_every_lb_and_uses_the_gateway_return_address(tmp_path):
    """Active/active: every LB SNATs to the VRRP-held per-gateway address (symmetric return path)."""
    lbs, options = lab_case()
    plain, _ = render_ruleset(lbs, options)
    preserving = [lb for lb in lbs if lb.preserve_source_ip]
    assert preserving, "the lab must have LBs that keep the client address"
    chain_of = {s.lb.name: s.chain for s in service_ports(lbs)}
    marked = "meta mark set meta mark | 0x00020000"
    web_chain = plain.split(f"chain {chain_of['web']} {{", 1)[1].split("}", 1)[0]
    assert marked not in web_chain

    active = RenderOptions(egress_snat=options.egress_snat, snat_all=True,
                           snat_source4="192.0.2.21", snat_source6="2001:db8:192::21")
    script, _ = render_ruleset(lbs, active)
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
    assert nft_check(script, tmp_path).returncode == 0
