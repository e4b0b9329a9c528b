"""The collection's addressing filters and module_utils_files, and that roles reach every filter by
its FQCN through Ansible itself (no filter_plugins path in ansible.cfg)."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.portico.gateway.plugins.filter import addressing, frr, module_utils_files
from ansible_collections.portico.gateway.plugins.plugin_utils import netaddr_filters

REPO = pathlib.Path(__file__).resolve().parents[2]


def test_vip_prefixes_are_distinct_host_prefixes_ipv4_first():
    lbs = [{"vip": "2001:db8:100::10"}, {"vip": "198.51.100.12"}, {"vip": "198.51.100.10"}, {"vip": "198.51.100.10"}]
    assert addressing.vip_prefixes(lbs) == ["198.51.100.10/32", "198.51.100.12/32", "2001:db8:100::10/128"]
    assert addressing.vip_prefixes([]) == []


def test_pod_routes_go_through_the_node_address_of_the_same_family():
    nodes = [
        {"name": "node2", "internal_ips": ["192.0.2.12", "2001:db8:192::12"],
         "pod_cidrs": ["2001:db8:244:2::/64", "198.19.2.0/24"]},
        {"name": "node1", "internal_ips": ["192.0.2.11"], "pod_cidrs": ["198.19.1.0/24", "2001:db8:244:1::/64"]},
        {"name": "node3", "internal_ips": [], "pod_cidrs": None},
    ]
    assert addressing.pod_routes(nodes) == [
        {"to": "198.19.1.0/24", "via": "192.0.2.11"},
        {"to": "198.19.2.0/24", "via": "192.0.2.12"},
        {"to": "2001:db8:244:2::/64", "via": "2001:db8:192::12"},
    ]


def test_return_path_instances_own_one_back_up_the_rest_and_keep_vrids_by_order():
    hosts, v4, v6 = ["gw1", "gw2", "gw3"], ["192.0.2.21", "192.0.2.22", "192.0.2.23"], ["2001:db8:192::21", "", ""]
    instances = addressing.return_path_instances(hosts, v4, v6, "gw2")
    assert [(i["name"], i["vrid"], i["priority"]) for i in instances] == [
        ("RETURN_gw1", 60, 100), ("RETURN_gw2", 61, 150), ("RETURN_gw3", 62, 100)]
    assert instances[0]["addresses"] == ["192.0.2.21/24", "2001:db8:192::21/64"]
    assert instances[1]["addresses"] == ["192.0.2.22/24"]
    assert all(i["sync_group"] is False and i["preempt_delay_s"] == 0 for i in instances)
    # Appending a gateway keeps the VRIDs of the others.
    more = addressing.return_path_instances([*hosts, "gw4"], [*v4, "192.0.2.24"], [*v6, ""], "gw2")
    assert [i["vrid"] for i in more[:3]] == [i["vrid"] for i in instances]


def test_module_utils_files_lists_every_source_file_of_the_packages(tmp_path):
    root = tmp_path / "module_utils"
    for relative in ("__init__.py", "model/__init__.py", "model/loadbalancer.py", "model/sub/__init__.py",
                     "model/sub/x.py", "model/__pycache__/loadbalancer.cpython-311.pyc", "model/notes.txt",
                     "health/__init__.py"):
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text("")
    files = module_utils_files.module_utils_files(["model"], root=str(root))
    assert [f["path"] for f in files] == [
        "__init__.py", "model/__init__.py", "model/loadbalancer.py", "model/sub/__init__.py", "model/sub/x.py"]
    assert all(pathlib.Path(f["src"]) == root / f["path"] for f in files)
    with pytest.raises(ValueError, match="no module_utils package named 'k8'"):
        module_utils_files.module_utils_files(["k8"], root=str(root))


def test_module_utils_files_defaults_to_this_collections_module_utils():
    files = module_utils_files.module_utils_files(["model"])
    paths = {f["path"] for f in files}
    assert "__init__.py" in paths and "model/__init__.py" in paths
    assert all(pathlib.Path(f["src"]).is_file() for f in files)


@pytest.mark.parametrize("module", [addressing, frr], ids=["addressing", "frr"])
def test_without_netaddr_the_filters_load_and_say_what_is_missing(module, monkeypatch):
    monkeypatch.setattr(netaddr_filters, "NETADDR_IMPORT_ERROR", ImportError("No module named 'netaddr'"))
    filters = module.FilterModule().filters()
    for name, function in filters.items():
        with pytest.raises(AnsibleFilterError, match="netaddr"):
            function([])
        assert function.__wrapped__ is getattr(module, name)


def test_roles_reach_the_filters_by_fqcn_through_ansible():
    expression = (
        "{{ {'vips': [{'vip': '198.51.100.10'}] | portico.gateway.vip_prefixes,"
        " 'pools': {'p': {'addresses': ['198.51.100.0-198.51.100.3']}} | portico.gateway.pool_prefixes,"
        " 'entries': ['198.51.100.0/24'] | portico.gateway.frr_prefix_list_entries(4, 'hosts'),"
        " 'version': '2001:db8::1' | portico.gateway.ip_version,"
        " 'files': (['model'] | portico.gateway.module_utils_files | length) > 1} | to_json }}"
    )
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1",
           "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1", "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json"}
    run = subprocess.run([str(pathlib.Path(sys.executable).with_name("ansible")), "localhost", "-i", "localhost,",
                          "-c", "local", "-m", "ansible.builtin.debug", "-a", json.dumps({"msg": expression})],
                         cwd=REPO, env=env, capture_output=True, text=True, check=False, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    result = json.loads(json.loads(run.stdout)["plays"][0]["tasks"][0]["hosts"]["localhost"]["msg"])
    assert result == {"vips": ["198.51.100.10/32"], "pools": ["198.51.100.0/30"],
                      "entries": ["198.51.100.0/24 ge 32"], "version": 6, "files": True}
