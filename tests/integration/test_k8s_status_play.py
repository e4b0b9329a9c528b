"""The status plays around a converge (k8s_claim.yml before it, k8s_status.yml after it) through
real ansible-playbook, the k8s_services inventory and the API stand-in. The converge is a
stand-in play that marks the gateways it reached, or fails on the ones told to."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from conftest import LAB_FIXTURES, REPO

from lab.k8s_stub import FakeApiServer

BIN = pathlib.Path(sys.executable).parent
PLAYBOOKS = REPO / "playbooks"
FINALIZER = "service.kubernetes.io/load-balancer-cleanup"


class Site:
    """Two local gateways, the lab's pools and a k8s_services source pointing at the stand-in."""

    def __init__(self, tmp: pathlib.Path, api: FakeApiServer):
        self.tmp, self.api = tmp, api
        inventory = tmp / "inventory"
        (inventory / "group_vars").mkdir(parents=True)
        gateway = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
        (inventory / "hosts.yml").write_text(yaml.safe_dump({"all": {"children": {"gateways": {"hosts": {"gw1": gateway, "gw2": gateway}}}}}))
        (inventory / "group_vars" / "gateways.yml").write_text(yaml.safe_dump({
            "portico_pools": {"public": {"addresses": ["198.51.100.0/25", "2001:db8:100::/64"]}},
            "portico_k8s_required": True}))
        kubeconfig = api.write_kubeconfig(tmp / "kubeconfig")
        (inventory / "lab.k8s_services.yml").write_text(yaml.safe_dump({
            "plugin": "portico.gateway.k8s_services", "clusters": [{"name": "lab", "kubeconfig": str(kubeconfig)}]}))
        self.inventory = inventory
        self.flow = tmp / "flow.yml"
        self.flow.write_text(yaml.safe_dump([
            {"import_playbook": str(PLAYBOOKS / "validate.yml"), "vars": {"portico_validate_configs": False}},
            {"import_playbook": str(PLAYBOOKS / "k8s_claim.yml")},
            {"name": "Converge (stand-in)", "hosts": "gateways", "gather_facts": False, "tasks": [
                {"ansible.builtin.fail": {"msg": "this gateway failed"}, "when": "inventory_hostname in (portico_test_broken | default([]))"},
                {"ansible.builtin.set_fact": {"portico_converged": True}}]},
            {"import_playbook": str(PLAYBOOKS / "k8s_status.yml")},
        ]))

    def run(self, playbook: pathlib.Path, *args: str) -> subprocess.CompletedProcess:
        env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"}
        env.pop("PORTICO_CHANGED", None)
        return subprocess.run([str(BIN / "ansible-playbook"), "-i", str(self.inventory), str(playbook), *args],
                              capture_output=True, text=True, cwd=REPO, env=env, check=False)

    def sync(self, *args: str) -> str:
        proc = self.run(self.flow, *args)
        return proc.stdout + proc.stderr

    def service(self, name: str, namespace: str = "default") -> dict[str, Any] | None:
        return self.api.get("Service", namespace, name)


@pytest.fixture
def site(tmp_path: pathlib.Path) -> Iterator[Site]:
    with FakeApiServer(fixtures=LAB_FIXTURES) as api:
        yield Site(tmp_path, api)


def ingress(service: dict[str, Any] | None) -> list[str]:
    return [entry["ip"] for entry in ((service or {}).get("status") or {}).get("loadBalancer", {}).get("ingress") or []]


def test_k8s_status_on_its_own_says_what_to_run(site: Site):
    proc = site.run(PLAYBOOKS / "k8s_status.yml")
    assert proc.returncode != 0
    assert "run playbooks/sync.yml (validate, converge, status; seconds) or playbooks/site.yml instead" in proc.stdout
    assert all(not ingress(s) for s in site.api.list("Service"))


def test_a_sync_claims_then_publishes_and_a_second_one_changes_nothing(site: Site):
    output = site.sync()
    echo = site.service("echo")
    assert FINALIZER in echo["metadata"]["finalizers"] and echo["metadata"]["annotations"]["portico.io/served-by"] == "portico.io/gateway"
    assert len(ingress(echo)) == 1 and len(ingress(site.service("echo-dual"))) == 2
    assert "k8s_services: cluster lab: 5 LoadBalancer Services to serve" in output
    again = site.sync()
    recap = again.split("PLAY RECAP")[-1]
    assert "changed=0" in recap and "changed=1" not in recap, again[-3000:]
    assert "Claim them on the controller" in again and "skipping" in again.split("Claim them on the controller")[1][:200]


def test_a_deleted_service_keeps_its_finalizer_until_every_gateway_converged(site: Site):
    site.sync()
    address = ingress(site.service("echo"))
    site.api.delete("Service", "default", "echo")
    assert site.service("echo")["metadata"]["deletionTimestamp"]
    output = " ".join(site.sync("-e", json.dumps({"portico_test_broken": ["gw2"]})).split())  # the callback wraps lines
    assert "1 object(s) keep their address and finalizer until a converge reaches every gateway: lab/default/echo" in output
    held = site.service("echo")
    assert held is not None and ingress(held) == address and FINALIZER in held["metadata"]["finalizers"]
    site.sync()
    assert site.service("echo") is None
    events = [e for e in site.api.list("Event", "default") if e["involvedObject"]["name"] == "echo" and e["reason"] == "Released"]
    assert events and address[0] in events[0]["message"]


def test_a_service_leaving_the_scope_is_released_and_lives_on(site: Site):
    site.sync()
    dns = site.service("dns")
    dns["spec"] = {**dns["spec"], "type": "ClusterIP", "loadBalancerClass": None}
    for port in dns["spec"]["ports"]:
        port.pop("nodePort", None)
    site.api.apply(dns)
    output = site.sync()
    assert "1 to release" in output
    after = site.service("dns")
    assert after is not None and ingress(after) == [] and not after["metadata"].get("finalizers")
    assert "portico.io/served-by" not in (after["metadata"].get("annotations") or {})
