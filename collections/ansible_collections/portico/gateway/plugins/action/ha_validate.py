# -*- coding: utf-8 -*-
# Copyright: Portico developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Check the HA variables of all gateways together, on the controller."""

from __future__ import annotations

from typing import Any

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

from ansible_collections.portico.gateway.plugins.module_utils.ha_model import check_gateways

# The inventory variables the check reads from every host.
HA_VARIABLES = ("portico_ha_mode", "keepalived_instances", "frr_asn", "frr_router_id", "frr_peers",
                "nftables_snat_source4", "nftables_snat_source6")


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(("hosts", "strict"))

    def run(self, tmp: Any = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        result = super().run(tmp, task_vars)
        result["changed"] = False
        _spec, args = self.validate_argument_spec(
            argument_spec=dict(hosts=dict(type="list", elements="str", required=True),
                               strict=dict(type="bool", default=True)))
        hostvars = (task_vars or {}).get("hostvars", {})
        gateways: dict[str, dict[str, Any]] = {}
        for host in args["hosts"]:
            if host not in hostvars:
                raise AnsibleActionFail(f"hosts: {host} is not in the inventory")
            gateways[host] = self._ha_variables(hostvars[host])
        report = check_gateways(gateways)
        groups: dict[str, list[dict[str, Any]]] = {}
        for instance in report.instances:
            groups.setdefault(instance.name, []).append(
                {"host": instance.host, "vrid": instance.vrid, "interface": instance.interface, "priority": instance.priority})
        result.update(problems=report.problems, vrrp_groups=groups)
        for problem in report.problems:
            self._display.warning(problem)
        if report.problems and args["strict"]:
            result["failed"] = True
            result["msg"] = "invalid HA settings:\n" + "\n".join(report.problems)
        return result

    def _ha_variables(self, host_vars: Any) -> dict[str, Any]:
        """The HA variables of one host, templated (inventory values may reference other variables)."""
        found: dict[str, Any] = {}
        for name in HA_VARIABLES:
            if name in host_vars:
                found[name] = self._templar.template(host_vars[name])
        return found
