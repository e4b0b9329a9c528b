"""The plan of a change (`.ci/plan`: --check --diff with the portico.gateway.plan callback), end to
end in a private network namespace: a real apply, an inventory change, then a plan that lists
exactly that change and applies nothing."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
from typing import Any

import yaml

from conftest import BIN, REPO, Netns, task_results

POOLS = {"public": {"addresses": ["198.51.100.0/24"]}}
WEB = {"name": "web", "vip": "198.51.100.10", "ports": [{"protocol": "tcp", "port": 80, "backend_port": 8080}],
       "backends": ["192.0.2.11", "192.0.2.12", "192.0.2.13"]}
OLD = {"name": "old", "vip": "198.51.100.12", "ports": [{"protocol": "tcp", "port": 25}], "backends": ["192.0.2.31"]}
API = {"name": "api", "vip": "198.51.100.11", "ports": [{"protocol": "tcp", "port": 443, "backend_port": 8443}],
       "backends": ["192.0.2.21", "192.0.2.22"]}

# The gateway tasks the plan reads, against files under the test's directory: the dataplane, the
# VIPs on lo, and a routing daemon's configuration naming each VIP (frr.conf's announce list).
PLAYBOOK = [{
    "name": "Converge the test gateway",
    "hosts": "gateways",
    "gather_facts": False,
    "tasks": [
        {"name": "Converge the load balancer table",
         "portico.gateway.nft_loadbalancer": {
             "loadbalancers": "{{ lbs }}", "pools": "{{ pools }}", "state_dir": "{{ work }}/nft",
             "health_state_file": "{{ work }}/healthd.json", "lock_file": "{{ work }}/dataplane.lock"}},
        {"name": "Hold the VIPs",
         "portico.gateway.ip_addresses": {
             "interface": "lo", "addresses": "{{ lbs | map(attribute='vip') | map('regex_replace', '$', '/32') | list }}",
             "state_dir": "{{ work }}/addresses"}},
        {"name": "Write the FRR configuration",
         "ansible.builtin.copy": {
             "dest": "{{ work }}/frr.conf", "mode": "0644",
             "content": "router bgp 64512\n neighbor 198.18.0.1 remote-as 64500\nexit\n!\n"
                        "{% for lb in lbs | sort(attribute='vip') %}"
                        "ip prefix-list PORTICO-ANNOUNCE4 seq {{ loop.index * 5 }} permit {{ lb.vip }}/32\n"
                        "{% endfor %}"}},
    ],
}]


def write_inventory(path: pathlib.Path, work: pathlib.Path, lbs: list[dict]) -> None:
    host = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable,
            "work": str(work), "pools": POOLS, "lbs": lbs}
    path.write_text(yaml.safe_dump({"all": {"children": {"gateways": {"hosts": {"gw-test": host}}}}}))


def run(ns: Netns, argv: list[str], **env: str) -> subprocess.CompletedProcess:
    environ = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
               "ANSIBLE_LOCALHOST_WARNING": "false", **env}
    environ.pop("ANSIBLE_CALLBACKS_ENABLED", None)
    environ.pop("PORTICO_PLAN_DIR", None)
    environ.update(env)
    return subprocess.run(["ip", "netns", "exec", ns.name, *argv], capture_output=True, text=True, cwd=REPO,
                          env=environ, check=False)


def apply(ns: Netns, inventory: pathlib.Path, playbook: pathlib.Path) -> None:
    """A normal run with the callback enabled: it must not get in the way."""
    proc = run(ns, [str(BIN / "ansible-playbook"), "-i", str(inventory), str(playbook)],
               ANSIBLE_CALLBACKS_ENABLED="portico.gateway.plan")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "PORTICO PLAN" in proc.stdout


def plan(ns: Netns, inventory: pathlib.Path, playbook: pathlib.Path, out: pathlib.Path) -> tuple[dict[str, Any], str]:
    proc = run(ns, ["bash", str(REPO / ".ci/plan"), str(inventory), str(out)], PORTICO_PLAN_PLAYBOOK=str(playbook))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"plan: {out}/plan.md" in proc.stdout
    return json.loads((out / "plan.json").read_text()), (out / "plan.md").read_text()


def snapshot(ns: Netns, work: pathlib.Path) -> tuple[str, str, str]:
    """What a check run must leave alone: the table, the addresses on lo, the config file."""
    table = ns.run("nft", "-s", "list", "table", "inet", "portico").stdout
    addresses = ns.run("ip", "-4", "address", "show", "dev", "lo").stdout
    return table, addresses, (work / "frr.conf").read_text()


def workspace(tmp_path: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path, pathlib.Path, pathlib.Path]:
    """(gateway state dir, inventory, playbook, plan output dir), with the playbook written."""
    work, inventory, playbook, out = tmp_path / "gw", tmp_path / "hosts.yml", tmp_path / "site.yml", tmp_path / "plan"
    work.mkdir()
    playbook.write_text(yaml.safe_dump(PLAYBOOK, sort_keys=False))
    return work, inventory, playbook, out


def test_plan_lists_exactly_the_inventory_change_and_applies_nothing(netns, tmp_path):
    work, inventory, playbook, out = workspace(tmp_path)
    write_inventory(inventory, work, [WEB, OLD])
    apply(netns, inventory, playbook)
    before = snapshot(netns, work)
    assert "198.51.100.12/32" in before[1]

    # The change under review: one LB added, one removed, one backend out of web.
    web = {**WEB, "backends": ["192.0.2.11", "192.0.2.12"]}
    write_inventory(inventory, work, [web, API])
    data, markdown = plan(netns, inventory, playbook, out)
    assert snapshot(netns, work) == before, "a plan must not apply anything"

    assert data["check_mode"] is True and data["diff_mode"] is True
    host = data["hosts"]["gw-test"]
    assert host["status"] == "changes" and host["failures"] == []
    dataplane = host["dataplane"][0]["plan"]
    assert [lb["name"] for lb in dataplane["loadbalancers"]["added"]] == ["api"]
    assert dataplane["loadbalancers"]["added"][0]["listeners"] == ["tcp/443 -> 8443"]
    assert [lb["name"] for lb in dataplane["loadbalancers"]["removed"]] == ["old"]
    [changed] = dataplane["loadbalancers"]["changed"]
    assert changed["name"] == "web"
    assert changed["backends"] == {"added": [], "removed": [{"backend": "192.0.2.13", "weight": 1}], "changed": []}
    assert changed["listeners"] == {"added": [], "removed": [], "changed": []} and changed["fields"] == {}
    assert dataplane["vips"] == {"added": ["198.51.100.11"], "removed": ["198.51.100.12"]}
    assert dataplane["options"] == {}
    assert host["addresses"] == [{"task": "Hold the VIPs", "interface": "lo", "kind": "address",
                                  "added": ["198.51.100.11/32"], "removed": ["198.51.100.12/32"]}]
    files = {entry["file"]: entry for entry in host["configs"]}
    assert sorted(files) == [str(work / "frr.conf"), "nft table inet portico"]
    frr = files[str(work / "frr.conf")]
    # 198.51.100.12 -> .11 on one line; .10 keeps its seq: one line out, one in.
    assert (frr["lines_added"], frr["lines_removed"]) == (1, 1)
    assert frr["items"] == {"announce filter": {"added": ["198.51.100.11/32"], "removed": ["198.51.100.12/32"]}}
    assert files["nft table inet portico"]["lines_added"] > 0
    assert host["other"] == []
    assert host["counts"] == {"lbs_added": 1, "lbs_removed": 1, "lbs_changed": 1, "backends_in": 0, "backends_out": 1,
                              "vips_added": 1, "vips_removed": 1, "announce": 0, "withdraw": 0, "configs": 2, "other": 0}

    assert "| `gw-test` | changes | 1/1/1 | 0/1 | 1/1 | 0/0 | 2 | 0 |" in markdown
    assert "- LB added `api` `198.51.100.11`: tcp/443 -> 8443; backends 192.0.2.21, 192.0.2.22" in markdown
    assert "- LB removed `old` `198.51.100.12`: tcp/25 -> 25" in markdown
    assert "- LB changed `web` `198.51.100.10`: backend out 192.0.2.13" in markdown
    assert "- addresses on `lo`: +`198.51.100.11/32`, -`198.51.100.12/32`" in markdown
    assert "announce filter +`198.51.100.11/32`, -`198.51.100.12/32`" in markdown


def test_plan_after_the_change_is_applied_says_no_change(netns, tmp_path):
    work, inventory, playbook, out = workspace(tmp_path)
    write_inventory(inventory, work, [WEB, API])
    apply(netns, inventory, playbook)
    data, markdown = plan(netns, inventory, playbook, out)
    host = data["hosts"]["gw-test"]
    assert host["status"] == "no change", markdown
    assert host["configs"] == [] and host["addresses"] == [] and host["other"] == []
    assert host["dataplane"][0]["changed"] is False and host["dataplane"][0]["lines"] == []
    assert "## gw-test\n\nNo change." in markdown


def test_plan_of_a_failing_run_still_leaves_the_report(netns, tmp_path):
    work, inventory, playbook, out = workspace(tmp_path)
    bad = {**WEB, "ports": [{"protocol": "tcp", "port": 70000}]}
    write_inventory(inventory, work, [bad])
    proc = run(netns, ["bash", str(REPO / ".ci/plan"), str(inventory), str(out)], PORTICO_PLAN_PLAYBOOK=str(playbook))
    assert proc.returncode != 0
    host = json.loads((out / "plan.json").read_text())["hosts"]["gw-test"]
    assert host["status"] == "failed"
    assert host["failures"][0]["task"] == "Converge the load balancer table"
    assert "web: ports[0].port: 70000 is out of range 1-65535" in (out / "plan.md").read_text()


def test_module_plan_of_a_health_check_change_is_reported_once(netns, tmp_path):
    """Such a change rewrites only the dataplane record (the table is the same): the next run must
    compare against that record and report nothing, also in check mode."""
    def converge(lbs: list[dict], *flags: str) -> dict:
        task = {"portico.gateway.nft_loadbalancer": {
            "loadbalancers": lbs, "pools": POOLS, "state_dir": str(tmp_path / "nft"),
            "health_state_file": str(tmp_path / "healthd.json"), "lock_file": str(tmp_path / "dataplane.lock")}}
        return task_results(netns.play([task], tmp_path, *flags))[0]

    first = converge([WEB])
    assert [lb["name"] for lb in first["plan"]["loadbalancers"]["added"]] == ["web"]
    assert first["plan_lines"][0].startswith("+ lb web 198.51.100.10: tcp/80 -> 8080")
    slower = {**WEB, "health_check": {"interval_ms": 500}}
    check = converge([slower], "--check", "--diff")
    assert check["changed"] is True and check["plan_lines"] == ["~ lb web 198.51.100.10: health_check.interval_ms 200 -> 500"]
    assert converge([slower])["plan"]["loadbalancers"]["changed"][0]["fields"] == {
        "health_check.interval_ms": {"from": 200, "to": 500}}
    again = converge([slower], "--check", "--diff")
    assert again["changed"] is False and again["plan_lines"] == [] and again["updated"] == []
    gone = converge([], "--check")
    assert gone["plan"]["vips"] == {"added": [], "removed": ["198.51.100.10"]}
