"""plan_report: task results of one run summarised per gateway (the portico.gateway.plan callback's logic)."""

from __future__ import annotations

from ansible_collections.portico.gateway.plugins.plugin_utils.plan_report import (
    HostPlan,
    item_changes,
    line_counts,
    render_markdown,
    report_data,
)

KEEPALIVED_BEFORE = """vrrp_instance vip4 {
    unicast_peer {
        198.18.0.12
    }
    virtual_ipaddress {
        198.18.0.10/24 dev uplink
        198.51.100.10/32 dev lo
    }
    virtual_ipaddress_excluded {
        2001:db8:100::10/128 dev lo
    }
}
"""
KEEPALIVED_AFTER = KEEPALIVED_BEFORE.replace("        198.51.100.10/32 dev lo\n",
                                             "        198.51.100.10/32 dev lo\n        198.51.100.11/32 dev lo\n") \
    .replace("2001:db8:100::10/128", "2001:db8:100::11/128").replace("198.18.0.12", "198.18.0.13")
FRR_BEFORE = """router bgp 64512
 neighbor 198.18.0.1 remote-as 64500
exit
!
ip prefix-list PORTICO-ANNOUNCE4 seq 5 permit 198.51.100.0/25 ge 32
ip prefix-list PORTICO-ANNOUNCE4 seq 10 permit 198.51.100.240/32
!
ipv6 prefix-list PORTICO-ANNOUNCE6 seq 5 permit 2001:db8:100::/64 ge 128
"""


def template_result(path: str, before: str, after: str) -> dict:
    """What the template action returns in check mode with --diff."""
    return {"changed": True, "diff": [{"before": before, "after": after, "before_header": path,
                                       "after_header": "/root/.ansible/tmp/x/frr.conf.j2"}],
            "invocation": {"module_args": {"dest": path}}}


def test_line_counts():
    assert line_counts("a\nb\nc\n", "a\nB\nc\nd\n") == (2, 1)
    assert line_counts("", "x\ny\n") == (2, 0)
    assert line_counts("same\n", "same\n") == (0, 0)


def test_frr_prefixes_compare_as_sets_so_renumbering_is_no_change():
    after = FRR_BEFORE.replace("seq 5 permit 198.51.100.0/25 ge 32\n", "seq 5 permit 198.51.100.0/24 ge 32\n") \
        .replace("seq 10 permit 198.51.100.240/32", "seq 10 permit 198.51.100.0/25 ge 32\nip prefix-list PORTICO-ANNOUNCE4 seq 15 permit 198.51.100.240/32")
    assert item_changes("/etc/frr/frr.conf", FRR_BEFORE, after) == {
        "announce filter": {"added": ["198.51.100.0/24 ge 32"], "removed": []}}
    peers = FRR_BEFORE.replace("neighbor 198.18.0.1 remote-as 64500", "neighbor 198.18.0.2 remote-as 64501")
    assert item_changes("/etc/frr/frr.conf", FRR_BEFORE, peers) == {
        "bgp peers": {"added": ["198.18.0.2 AS64501"], "removed": ["198.18.0.1 AS64500"]}}
    assert item_changes("/etc/other.conf", FRR_BEFORE, peers) == {}


def test_keepalived_addresses_are_what_the_master_announces():
    plan = HostPlan()
    plan.record("ansible.builtin.template", "Write the keepalived configuration",
                template_result("/etc/keepalived/keepalived.conf", KEEPALIVED_BEFORE, KEEPALIVED_AFTER))
    [entry] = plan.configs
    assert entry["file"] == "/etc/keepalived/keepalived.conf"
    assert (entry["lines_added"], entry["lines_removed"]) == (3, 2)
    # The unicast peer is an address in the file but not a VRRP address.
    assert entry["items"] == {"vrrp addresses": {"added": ["198.51.100.11/32", "2001:db8:100::11/128"],
                                                 "removed": ["2001:db8:100::10/128"]}}
    assert plan.announcements() == {"announce": ["198.51.100.11/32", "2001:db8:100::11/128"],
                                    "withdraw": ["2001:db8:100::10/128"]}


def test_local_routes_are_bgp_announcements_and_addresses_are_not():
    plan = HostPlan()
    plan.record("portico.gateway.ip_addresses", "Accept the VIPs as AnyIP local routes on lo",
                {"changed": True, "added": ["198.51.100.11/32"], "removed": ["198.51.100.12/32"], "interface": "lo",
                 "kind": "local_route"})
    plan.record("portico.gateway.ip_addresses", "Add static interface addresses (backend)",
                {"changed": True, "added": ["192.0.2.1/24"], "removed": [], "interface": "backend", "kind": "address"})
    plan.record("portico.gateway.ip_addresses", "Hold the VIPs as addresses on lo",
                {"changed": False, "added": [], "removed": [], "interface": "lo", "kind": "address"})
    assert plan.announcements() == {"announce": ["198.51.100.11/32"], "withdraw": ["198.51.100.12/32"]}
    assert [entry["interface"] for entry in plan.addresses] == ["lo", "backend"]
    text = render_markdown(report_data({"gw1": plan}, {"check_mode": True}), {"gw1": plan})
    assert "- AnyIP local routes on `lo`: +`198.51.100.11/32`, -`198.51.100.12/32`" in text
    assert "- addresses on `backend`: +`192.0.2.1/24`" in text
    assert "announced (BGP while a backend is healthy, or VRRP on the master): +`198.51.100.11/32`" in text


def test_no_log_results_are_reported_without_content():
    plan = HostPlan()
    plan.record("ansible.builtin.template", "Write the FRR configuration",
                {"changed": True, "censored": "the output has been hidden", "_ansible_no_log": True})
    [entry] = plan.configs
    assert entry["hidden"] is True and entry["file"] == "Write the FRR configuration"
    assert entry["note"] == "details hidden (no_log)" and entry["items"] == {}
    assert "| `Write the FRR configuration` | would change | details hidden (no_log) |" in render_markdown(
        report_data({"gw1": plan}, {}), {"gw1": plan})


def test_loop_items_writing_one_file_are_one_entry():
    item = {"changed": True, "_ansible_item_label": "bgpd",
            "diff": [{"before": "bgpd=no\n", "after": "bgpd=yes\n", "before_header": "/etc/frr/daemons (content)"},
                     {"before_header": "/etc/frr/daemons (file attributes)"}],
            "invocation": {"module_args": {"path": "/etc/frr/daemons"}}}
    plan = HostPlan()
    plan.record("ansible.builtin.lineinfile", "Run bgpd and bfdd",
                {"changed": True, "results": [item, {**item, "_ansible_item_label": "bfdd"}, {"skipped": True}]})
    assert [(e["file"], e["lines_added"], e["lines_removed"]) for e in plan.configs] == [("/etc/frr/daemons", 2, 2)]


def test_a_changed_file_without_diff_mode_is_still_listed():
    plan = HostPlan()
    plan.record("ansible.builtin.template", "Write the conntrackd configuration",
                {"changed": True, "dest": "/etc/conntrackd/conntrackd.conf"})
    assert "| `/etc/conntrackd/conntrackd.conf` | changes (run with --diff for lines) |  |" in render_markdown(
        report_data({"gw1": plan}, {}), {"gw1": plan})


def test_other_changes_handlers_routes_and_unchanged_tasks():
    plan = HostPlan()
    plan.record("ansible.builtin.apt", "Install missing packages", {"changed": True})
    plan.record("ansible.builtin.systemd_service", "Reload frr", {"changed": True}, handler=True)
    plan.record("ansible.builtin.stat", "Read the gateway's maintenance state", {"changed": False})
    plan.record("ansible.builtin.file", "Create the hooks directory",
                {"changed": True, "diff": {"before": {"state": "absent"}, "after": {"state": "directory"}}})
    plan.record("portico.gateway.ip_routes", "Route static prefixes and pod CIDRs",
                {"changed": True, "added": ["198.19.1.0/24 via 192.0.2.13"], "removed": ["198.19.1.0/24 via 192.0.2.11"]})
    assert plan.other == ["Install missing packages", "handler: Reload frr", "Create the hooks directory"]
    assert plan.configs == [] and plan.status() == "changes"
    text = render_markdown(report_data({"gw1": plan}, {}), {"gw1": plan})
    assert "- static routes: +`198.19.1.0/24 via 192.0.2.13`, -`198.19.1.0/24 via 192.0.2.11`" in text
    assert "- `handler: Reload frr`" in text


def test_dataplane_plan_drift_and_no_change():
    empty = {"loadbalancers": {"added": [], "removed": [], "changed": []}, "vips": {"added": [], "removed": []}, "options": {}}
    quiet = HostPlan()
    quiet.record("portico.gateway.nft_loadbalancer", "Converge the load balancer table",
                 {"changed": False, "drift": False, "plan": empty})
    assert quiet.status() == "no change" and quiet.configs == []
    drifted = HostPlan()
    drifted.record("portico.gateway.nft_loadbalancer", "Converge the load balancer table",
                   {"changed": True, "drift": True, "plan": empty,
                    "diff": {"before": "web\n", "after": "web\n", "before_header": "inet portico (live)"}})
    assert drifted.status() == "changes"
    assert drifted.configs[0]["file"] == "nft table inet portico" and "drift" in drifted.configs[0]["note"]
    text = render_markdown(report_data({"gw1": quiet, "gw2": drifted}, {"check_mode": True, "playbook": "site.yml"}),
                           {"gw1": quiet, "gw2": drifted})
    assert text.startswith("# Portico plan: site.yml\n\ncheck mode: nothing was applied")
    assert "## gw1\n\nNo change." in text
    assert "- inet portico: changed outside Portico (drift); it will be replaced" in text


def test_failures_are_one_bounded_line_and_markdown_is_not_interpreted():
    plan = HostPlan()
    plan.record_failure("Converge", "invalid load balancer definitions:\nweb: ports[0].port: 70000 is out of range\n" + "x" * 2000)
    assert plan.failures[0]["msg"].startswith("invalid load balancer definitions:; web: ports[0].port: 70000")
    assert len(plan.failures[0]["msg"]) == 1000 and plan.status() == "failed"
    plan.record("ansible.builtin.apt", "Install `evil` | packages", {"changed": True})
    text = render_markdown(report_data({"gw1": plan}, {}), {"gw1": plan})
    assert "- `Install 'evil' | packages`" in text


def test_a_pipe_in_a_table_cell_is_escaped():
    plan = HostPlan()
    plan.record("ansible.builtin.template", "Write a | b", {"changed": True, "censored": "hidden"})
    assert "| `Write a \\| b` | would change |" in render_markdown(report_data({"gw1": plan}, {}), {"gw1": plan})
