"""Client-IP session affinity in the rendered table: per-backend client sets with the model's
timeout, per-backend chains that remember the client, verdict slots, and how the health checker
and the nft module treat them (tests/integration/test_affinity.py runs them in the kernel)."""

from __future__ import annotations

import json
import re

from ansible_collections.portico.gateway.plugins.module_utils.dataplane import objects
from ansible_collections.portico.gateway.plugins.module_utils.dataplane.nft import TableListing
from ansible_collections.portico.gateway.plugins.module_utils.dataplane.options import RenderOptions
from ansible_collections.portico.gateway.plugins.module_utils.dataplane.render import (
    AFFINITY_SET_SIZE,
    describe,
    health_elements,
    remembered_clients_script,
    render_health_update,
    render_table,
    service_ports,
    slot_table,
)
from ansible_collections.portico.gateway.plugins.module_utils.model.ipam import parse_pools
from ansible_collections.portico.gateway.plugins.module_utils.model.loadbalancer import parse_loadbalancer

POOLS = parse_pools({"public": {"addresses": ["198.51.100.0/24", "2001:db8:100::/64"]}})
BACKENDS = ["192.0.2.11", "192.0.2.12", "192.0.2.13"]
OPTIONS = RenderOptions()


def lb(name="web", vip="198.51.100.10", backends=None, **extra):
    raw = {"name": name, "vip": vip, "ports": [{"protocol": "tcp", "port": 80, "backend_port": 8080}],
           "backends": BACKENDS if backends is None else backends, "session_affinity": "client_ip", **extra}
    return parse_loadbalancer(raw, POOLS)


def block(script: str, kind: str, name: str) -> list[str]:
    """The lines inside one ``set``/``map``/``chain`` of a rendered script."""
    body = script.split(f"\t{kind} {name} {{\n", 1)[1].split("\n\t}", 1)[0]
    return [line.strip() for line in body.splitlines() if line.strip()]


def member(service, address: str, port: int = 8080) -> tuple[str, str]:
    return service.member_set(address, port), service.member_chain(address, port)


def test_each_backend_gets_a_client_set_with_the_models_timeout():
    web = lb(session_affinity_timeout_s=60)
    service = service_ports([web])[0]
    script = render_table([web], OPTIONS).script
    for address in BACKENDS:
        member_set, member_chain = member(service, address)
        assert member_set == objects.affinity_set(web.ident, "tcp", 80, objects.affinity_member(address, 8080))
        assert block(script, "set", member_set) == [
            "type ipv4_addr", f"size {AFFINITY_SET_SIZE}", "flags dynamic,timeout", "timeout 60s"]
        # Remembered (the timeout re-armed) on every new connection it sends there, then DNAT.
        assert block(script, "chain", member_chain) == [
            f"update @{member_set} {{ ip saddr }}", f"meta l4proto tcp dnat ip to {address}:8080"]


def test_the_timeout_defaults_to_kubernetes_10800_seconds():
    web = lb()
    assert web.session_affinity_timeout_s == 10800
    service = service_ports([web])[0]
    script = render_table([web], OPTIONS).script
    assert "timeout 10800s" in block(script, "set", member(service, "192.0.2.11")[0])
    assert "each client kept 10800s after its last new connection" in describe([web], OPTIONS)


def test_remembered_clients_go_first_then_maglev_on_the_client_address():
    web = lb(preserve_source_ip=False)
    service = service_ports([web])[0]
    script = render_table([web], OPTIONS).script
    rules = block(script, "chain", service.chain)
    assert rules[0].startswith("comment ") and rules[1] == "meta mark set meta mark | 0x00020000"
    assert rules[2:5] == [f"ip saddr @{s} goto {c}" for s, c in (member(service, a) for a in BACKENDS)]
    size = len(slot_table(service, OPTIONS))
    assert rules[5:] == [f"jhash ip saddr mod {size} seed 0x5eed5eed vmap @{service.slot_map}"]


def test_verdict_slots_send_each_slot_to_the_chain_of_its_maglev_owner():
    web = lb()
    service = service_ports([web])[0]
    script = render_table([web], OPTIONS).script
    lines = block(script, "map", service.slot_map)
    assert lines[0] == "typeof numgen inc mod 2 : verdict"
    slots = dict(re.findall(r"(\d+) : goto (\S+?),?(?: }|$)", "\n".join(lines[1:]), re.M))
    owners = slot_table(service, OPTIONS)
    assert len(slots) == len(owners)
    chain_of = {f"{a} . 8080": member(service, a)[1] for a in BACKENDS}
    assert all(slots[str(slot)] == chain_of[owner] for slot, owner in enumerate(owners))


def test_one_backend_is_remembered_too():
    # Its clients must stay with it when a second backend comes: no plain dnat for affinity.
    web = lb(backends=["192.0.2.11"])
    service = service_ports([web])[0]
    script = render_table([web], OPTIONS).script
    member_set, member_chain = member(service, "192.0.2.11")
    assert f"ip saddr @{member_set} goto {member_chain}" in block(script, "chain", service.chain)
    assert f"map {service.slot_map} {{" in script


def test_ipv6_affinity_uses_ip6_addresses():
    web = lb(vip="2001:db8:100::10", backends=["2001:db8:192::11", {"address": "2001:db8:192::12", "port": 9090}],
             session_affinity_timeout_s=300)
    service = service_ports([web])[0]
    script = render_table([web], OPTIONS).script
    member_set, member_chain = member(service, "2001:db8:192::12", 9090)
    assert block(script, "set", member_set)[0] == "type ipv6_addr"
    assert block(script, "chain", member_chain) == [
        f"update @{member_set} {{ ip6 saddr }}", "meta l4proto tcp dnat ip6 to [2001:db8:192::12]:9090"]
    assert f"ip6 saddr @{member_set} goto {member_chain}" in block(script, "chain", service.chain)


def test_a_withheld_backend_gets_no_slot_and_its_clients_are_forgotten():
    web = lb()
    service = service_ports([web])[0]
    dead_set, dead_chain = member(service, "192.0.2.11")
    script = render_table([web], OPTIONS, {"web": {"192.0.2.11"}}).script
    assert f"goto {dead_chain}," not in script and f"goto {dead_chain} }}" not in script
    update = render_health_update([service], OPTIONS, {"web": {"192.0.2.11"}}).splitlines()
    # One transaction: new verdict slots and the dead backend's clients forgotten.
    assert update[0] == f"flush map inet portico {service.slot_map}"
    assert update[1].startswith(f"add element inet portico {service.slot_map} {{ 0 : goto affep_")
    assert dead_chain not in update[1]
    assert update[2] == f"flush set inet portico {dead_set}"
    assert not any(line.startswith("flush set") and member(service, a)[0] in line for line in update for a in BACKENDS[1:])
    # Back in rotation: its slots return, the others' clients are not touched.
    healthy = render_health_update([service], OPTIONS, {"web": set()})
    assert dead_chain in healthy and "flush set" not in healthy


def test_non_affinity_listeners_are_rendered_as_before():
    plain = parse_loadbalancer({"name": "plain", "vip": "198.51.100.11", "ports": [{"protocol": "tcp", "port": 80, "backend_port": 8080}],
                                "backends": BACKENDS}, POOLS)
    script = render_table([plain], OPTIONS).script
    assert objects.AFFINITY_SET_PREFIX not in script and objects.AFFINITY_MEMBER_CHAIN_PREFIX not in script
    service = service_ports([plain])[0]
    assert block(script, "chain", service.chain)[1].startswith("meta l4proto tcp dnat ip to jhash ip saddr . th sport mod")
    assert "flush set" not in render_health_update([service], OPTIONS, {"plain": {"192.0.2.11"}})


def test_remembered_clients_are_carried_into_a_replaced_table():
    old = lb(session_affinity_timeout_s=60)
    new = lb(backends=[*BACKENDS, "192.0.2.14"], session_affinity_timeout_s=60)
    service = service_ports([new])[0]
    kept_set = member(service, "192.0.2.12")[0]
    dead_set = member(service, "192.0.2.11")[0]
    gone_set = objects.affinity_set(old.ident, "tcp", 80, objects.affinity_member("192.0.2.99", 8080))
    live = {kept_set: [("203.0.113.7", 59), ("203.0.113.5", 12)], dead_set: [("203.0.113.9", 30)],
            gone_set: [("203.0.113.8", 40)]}
    script = remembered_clients_script([new], OPTIONS, {"web": {"192.0.2.11"}}, live)
    # nft lists whole seconds: one more, never past the listener's timeout; withheld and vanished backends left out.
    assert script == f"add element inet portico {kept_set} {{ 203.0.113.5 expires 13s, 203.0.113.7 expires 60s }}\n"
    shorter = remembered_clients_script([lb(session_affinity_timeout_s=10)], OPTIONS, None, {kept_set: [("203.0.113.7", 59)]})
    assert shorter == f"add element inet portico {kept_set} {{ 203.0.113.7 expires 10s }}\n"
    assert remembered_clients_script([new], OPTIONS, None, {kept_set: []}) == ""


def _listing(*items: dict) -> TableListing:
    meta = {"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}}
    return TableListing.from_json(json.dumps({"nftables": [meta, *items]}))


def test_kernel_filled_sets_are_never_compared_and_verdict_slots_are_health_owned():
    web = lb()
    service = service_ports([web])[0]
    member_set = member(service, "192.0.2.11")[0]
    assert objects.is_dynamic("set", member_set) and not objects.is_dynamic("set", objects.vip_set(4))
    declared = {"family": "inet", "name": member_set, "table": "portico", "type": "ipv4_addr", "handle": 4,
                "size": AFFINITY_SET_SIZE, "flags": ["timeout"], "timeout": 10800}
    filled = {**declared, "elem": [{"elem": {"val": "203.0.113.7", "expires": 10790}}]}
    assert _listing({"set": filled}).structure() == _listing({"set": declared}).structure()
    assert _listing({"set": filled}).structure() != _listing({"set": {**declared, "timeout": 60}}).structure()
    # The verdict slots as nft -j lists them read back as the render's health elements.
    wanted = health_elements([web], OPTIONS, {"web": {"192.0.2.13"}})[service.slot_map]
    assert all(verdict == "goto" and chain != member(service, "192.0.2.13")[1] for _slot, verdict, chain in wanted)
    elems = [[slot, {"goto": {"target": chain}}] for slot, _verdict, chain in sorted(wanted)]
    listed = _listing({"map": {"family": "inet", "name": service.slot_map, "table": "portico", "handle": 5,
                               "type": "integer", "map": "verdict", "elem": elems}})
    assert listed.health_elements() == {service.slot_map: wanted}
    assert listed.structure() == _listing({"map": {"family": "inet", "name": service.slot_map, "table": "portico",
                                                   "handle": 5, "type": "integer", "map": "verdict"}}).structure()
