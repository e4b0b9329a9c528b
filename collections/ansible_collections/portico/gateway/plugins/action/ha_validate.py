# -*- coding: utf-8 -*-
# Copyright: Portico developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Check the HA variables of all gateways together, on the controller."""

from __future__ import annotations

from typing import Any

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

from ansible_collections.portico.gateway.plugins.module_utils.model.ha import check_gateways
from ansible_collections.portico.gateway.plugins.module_utils.model.problems import render


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(("gateways", "strict"))

    def run(self, tmp: Any = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        result = super().run(tmp, task_vars)
        result["changed"] = False
        _spec, args = self.validate_argument_spec(
            argument_spec=dict(gateways=dict(type="dict", required=True),
                               strict=dict(type="bool", default=True)))
        gateways: dict[str, dict[str, Any]] = {}
        for host, settings in args["gateways"].items():
            if not isinstance(settings, dict):
                raise AnsibleActionFail(f"gateways.{host}: expected the host's HA variables as a mapping")
            gateways[host] = {name: value for name, value in settings.items() if value is not None}
        report = check_gateways(gateways)
        groups: dict[str, list[dict[str, Any]]] = {}
        for instance in report.instances:
            groups.setdefault(instance.name, []).append(
                {"host": instance.host, "vrid": instance.vrid, "interface": instance.interface, "priority": instance.priority})
        problems = render(report.problems)
        result.update(problems=problems, vrrp_groups=groups)
        for problem in problems:
            self._display.warning(problem)
        if problems and args["strict"]:
            result["failed"] = True
            result["msg"] = "invalid HA settings:\n" + "\n".join(problems)
        return result
