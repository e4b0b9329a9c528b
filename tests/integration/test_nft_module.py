"""portico.gateway.nft_loadbalancer and ip_addresses through real Ansible, in a private netns."""

from __future__ import annotations

import copy
import pathlib
import sys

from conftest import Netns, task_results

POOLS = {"public": {"addresses": ["198.51.100.0/24", "2001:db8:100::/64"]}}
WEB = {"name": "web", "vip": "198.51.100.10", "ports": [{"protocol": "tcp", "port": 80, "backend_port": 8080}],
       "backends": ["192.0.2.11", "192.0.2.12", "192.0.2.13"]}


def converge(lbs: list[dict], tmp: pathlib.Path, **extra) -> dict:
    args = {"loadbalancers": lbs, "pools": POOLS, "state_dir": str(tmp / "state"), **extra}
    return {"portico.gateway.nft_loadbalancer": args}


def run(ns: Netns, tmp: pathlib.Path, lbs: list[dict], *flags: str, **extra) -> dict:
    return task_results(ns.play([converge(lbs, tmp, **extra)], tmp, *flags))[0]


def listing(ns: Netns, table: str = "portico") -> str:
    return ns.run("nft", "-s", "list", "table", "inet", table, check=False).stdout


def test_apply_then_second_run_reports_no_change(netns, tmp_path):
    first = run(netns, tmp_path, [WEB])
    assert first["changed"] is True and first["added"] == ["web"]
    assert "198.51.100.10 . tcp . 80 : goto svc_web_" in listing(netns)
    second = run(netns, tmp_path, [WEB])
    assert second["changed"] is False and second["drift"] is False


def test_check_mode_reports_but_does_not_apply(netns, tmp_path):
    run(netns, tmp_path, [WEB])
    before = listing(netns)
    more = [WEB, {**WEB, "name": "api", "vip": "198.51.100.11"}]
    result = run(netns, tmp_path, more, "--check", "--diff")
    assert result["changed"] is True and result["added"] == ["api"]
    assert "api 198.51.100.11:80/tcp" in result["diff"]["after"]
    assert listing(netns) == before


def test_counters_do_not_make_a_change(netns, tmp_path):
    run(netns, tmp_path, [WEB])
    # Bump a named counter as traffic would.
    netns.run("nft", "add", "rule", "inet", "portico", "filter_prerouting", "counter", "name", "drop_c633640a")
    netns.run("nft", "delete", "rule", "inet", "portico", "filter_prerouting", "handle",
              netns.run("sh", "-c", "nft -a list chain inet portico filter_prerouting | awk '/counter name/ {print $NF}'").stdout.strip())
    assert run(netns, tmp_path, [WEB])["changed"] is False


def test_drift_is_detected_and_repaired(netns, tmp_path):
    run(netns, tmp_path, [WEB])
    clean = listing(netns)
    netns.run("nft", "add", "rule", "inet", "portico", "nat_prerouting", "ip", "daddr", "198.51.100.99", "dnat", "ip", "to", "192.0.2.99")
    result = run(netns, tmp_path, [WEB])
    assert result["changed"] is True and result["drift"] is True
    assert listing(netns) == clean


def test_other_tables_are_left_alone(netns, tmp_path):
    netns.run("nft", "add", "table", "inet", "hostfw")
    netns.run("nft", "add", "chain", "inet", "hostfw", "input", "{ type filter hook input priority 0; policy accept; }")
    netns.run("nft", "add", "rule", "inet", "hostfw", "input", "tcp", "dport", "22", "accept")
    run(netns, tmp_path, [WEB])
    run(netns, tmp_path, [WEB, {**WEB, "name": "api", "vip": "198.51.100.11"}])
    run(netns, tmp_path, [], state="absent")
    assert "tcp dport 22 accept" in listing(netns, "hostfw")
    assert listing(netns) == ""


def test_bad_definition_fails_and_keeps_the_live_table(netns, tmp_path):
    run(netns, tmp_path, [WEB])
    before = listing(netns)
    bad = copy.deepcopy(WEB)
    bad["ports"][0]["port"] = 70000
    result = run(netns, tmp_path, [bad])
    assert result["failed"] is True
    assert "web: ports[0].port: 70000 is out of range 1-65535" in result["msg"]
    assert listing(netns) == before


def test_ruleset_refused_by_nft_keeps_the_live_table(netns, tmp_path):
    run(netns, tmp_path, [WEB])
    before = listing(netns)
    # An egress rule with an interface name nft refuses (too long): the kernel check fails.
    result = run(netns, tmp_path, [WEB], egress_snat=[{"source": "192.0.2.0/24", "out_interface": "x" * 40}])
    assert result["failed"] is True and "nft check failed" in result["msg"]
    assert listing(netns) == before


def test_ip_addresses_adds_purges_and_is_idempotent(netns, tmp_path):
    def addresses(wanted: list[str], *flags: str) -> dict:
        task = {"portico.gateway.ip_addresses": {"interface": "lo", "addresses": wanted, "state_dir": str(tmp_path / "addr")}}
        return task_results(netns.play([task], tmp_path, *flags))[0]

    first = addresses(["198.51.100.10/32", "2001:db8:100::10/128"])
    assert first["changed"] is True
    assert addresses(["198.51.100.10/32", "2001:db8:100::10/128"])["changed"] is False
    netns.run("ip", "address", "add", "198.51.100.77/32", "dev", "lo")  # not ours: must survive
    check = addresses(["198.51.100.11/32"], "--check")
    assert check["changed"] is True and "198.51.100.10/32" in check["removed"]
    assert "198.51.100.10/32" in netns.run("ip", "-4", "address", "show", "dev", "lo").stdout
    result = addresses(["198.51.100.11/32"])
    assert sorted(result["removed"]) == ["198.51.100.10/32", "2001:db8:100::10/128"]
    shown = netns.run("ip", "address", "show", "dev", "lo").stdout
    assert "198.51.100.11/32" in shown and "198.51.100.77/32" in shown and "198.51.100.10/32" not in shown


def test_ip_addresses_local_routes_accept_the_vip_without_an_address(netns, tmp_path):
    """BGP mode: AnyIP routes, so zebra sees no connected /32 for the VIP; switching kinds moves the VIP."""
    def vips(kind: str, wanted: list[str], *flags: str) -> dict:
        task = {"portico.gateway.ip_addresses": {"interface": "lo", "kind": kind, "addresses": wanted,
                                                 "state_dir": str(tmp_path / "addr")}}
        return task_results(netns.play([task], tmp_path, *flags))[0]

    wanted = ["198.51.100.10/32", "2001:db8:100::10/128"]
    assert vips("address", wanted)["changed"] is True
    assert vips("local_route", wanted, "--check")["changed"] is True
    anyip = [line for line in netns.run("ip", "route", "show", "table", "local", "dev", "lo").stdout.splitlines()
             if "198.51.100.10" in line and "proto kernel" not in line]
    assert anyip == []  # check mode added nothing
    assert vips("local_route", wanted)["changed"] is True
    assert vips("address", [])["removed"] == wanted
    assert vips("local_route", wanted)["changed"] is False
    local4 = netns.run("ip", "-4", "route", "show", "table", "local", "type", "local", "dev", "lo").stdout
    local6 = netns.run("ip", "-6", "route", "show", "table", "local", "type", "local", "dev", "lo").stdout
    assert "198.51.100.10 " in local4 and "2001:db8:100::10 " in local6
    assert "198.51.100.10" not in netns.run("ip", "address", "show", "dev", "lo").stdout
    # The namespace accepts the VIP as its own: routed locally, and a socket can bind it.
    assert netns.run("ip", "route", "get", "198.51.100.10").stdout.startswith("local 198.51.100.10")
    netns.run(sys.executable, "-c", "import socket; socket.socket().bind(('198.51.100.10', 0))")
    assert sorted(vips("local_route", [])["removed"]) == wanted
    assert "198.51.100.10" not in netns.run("ip", "route", "show", "table", "local").stdout


def test_ip_routes_owns_only_its_protocol(netns, tmp_path):
    netns.run("ip", "link", "add", "backend", "type", "veth", "peer", "name", "backend-peer")
    netns.run("ip", "link", "set", "backend", "up")
    netns.run("ip", "address", "add", "192.0.2.2/24", "dev", "backend")
    netns.run("ip", "route", "add", "198.19.9.0/24", "via", "192.0.2.99")  # someone else's

    def routes(wanted: list[dict], *flags: str) -> dict:
        return task_results(netns.play([{"portico.gateway.ip_routes": {"routes": wanted}}], tmp_path, *flags))[0]

    pods = [{"to": "198.19.1.0/24", "via": "192.0.2.11"}, {"to": "198.19.2.0/24", "via": "192.0.2.12"}]
    assert routes(pods)["changed"] is True
    assert routes(pods)["changed"] is False
    moved = [{"to": "198.19.1.0/24", "via": "192.0.2.13"}]
    check = routes(moved, "--check")
    assert check["changed"] is True and check["removed"] == ["198.19.2.0/24 via 192.0.2.12"]
    assert "198.19.2.0/24 via 192.0.2.12" in netns.run("ip", "route").stdout
    routes(moved)
    table = netns.run("ip", "route").stdout
    assert "198.19.1.0/24 via 192.0.2.13 dev backend proto 200" in table
    assert "198.19.2.0/24" not in table and "198.19.9.0/24 via 192.0.2.99" in table
    bad = routes([{"to": "198.19.1.0/24", "via": "2001:db8:192::11"}])
    assert bad["failed"] is True and "different families" in bad["msg"]


def test_ip_routes_refuses_to_replace_a_foreign_route(netns, tmp_path):
    netns.run("ip", "link", "add", "backend", "type", "veth", "peer", "name", "backend-peer")
    netns.run("ip", "link", "set", "backend", "up")
    netns.run("ip", "address", "add", "192.0.2.2/24", "dev", "backend")
    netns.run("ip", "route", "add", "198.19.5.0/24", "via", "192.0.2.99", "proto", "bird")  # a CNI's BGP route
    task = {"portico.gateway.ip_routes": {"routes": [{"to": "198.19.5.0/24", "via": "192.0.2.15"}]}}
    result = task_results(netns.play([task], tmp_path))[0]
    assert result["failed"] is True and "already routed by protocol bird" in result["msg"]
    assert "198.19.5.0/24 via 192.0.2.99" in netns.run("ip", "route").stdout


def test_files_of_earlier_versions_are_removed_once(netns, tmp_path):
    run(netns, tmp_path, [WEB])
    state = tmp_path / "state"
    stale = [state / "portico.json", state / "portico.listing"]  # the model and the text listing 0.5 kept
    for path in stale:
        path.write_text("{}\n")
    result = run(netns, tmp_path, [WEB])
    assert result["changed"] is True and result["drift"] is False, result
    assert not any(path.exists() for path in stale)
    assert sorted(p.name for p in state.iterdir()) == [
        "portico.dataplane.json", "portico.nft", "portico.structure.json", "portico.txt"]
    assert run(netns, tmp_path, [WEB])["changed"] is False


def test_a_hand_added_reject_element_is_drift(netns, tmp_path):
    run(netns, tmp_path, [WEB])
    netns.run("nft", "add", "element", "inet", "portico", "no_backends4", "{ 198.51.100.10 . tcp . 80 }")
    result = run(netns, tmp_path, [WEB])
    assert result["changed"] is True and result["drift"] is True, result
    assert "198.51.100.10 . tcp . 80" not in netns.run("nft", "list", "set", "inet", "portico", "no_backends4").stdout
    assert run(netns, tmp_path, [WEB])["changed"] is False
