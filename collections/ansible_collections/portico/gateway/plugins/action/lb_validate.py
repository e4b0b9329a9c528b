# -*- coding: utf-8 -*-
# Copyright: Portico developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Validate LB definitions on the controller, before any gateway is contacted."""

from __future__ import annotations

from typing import Any

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

from ansible_collections.portico.gateway.plugins.module_utils.ipam import PoolError, parse_pools
from ansible_collections.portico.gateway.plugins.module_utils.lb_model import parse_loadbalancers


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(("loadbalancers", "pools", "strict"))

    def run(self, tmp: Any = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        result = super().run(tmp, task_vars)
        result["changed"] = False
        _spec, args = self.validate_argument_spec(
            argument_spec=dict(
                loadbalancers=dict(type="list", elements="raw", default=[]),
                pools=dict(type="dict", default={}),
                strict=dict(type="bool", default=True),
            )
        )
        try:
            pools = parse_pools(args["pools"])
        except PoolError as err:
            raise AnsibleActionFail(f"portico_pools: {err}") from None
        model = parse_loadbalancers(args["loadbalancers"], pools)
        valid = [lb.to_dict() for lb in model.loadbalancers]
        result.update(
            loadbalancers=valid,
            problems=model.problems,
            refused=model.refused,
            vips=sorted({lb.vip for lb in model.loadbalancers}),
            ansible_facts={"portico_lb_model": valid},
        )
        if model.problems:
            for problem in model.problems:
                self._display.warning(problem)
            if args["strict"]:
                result["failed"] = True
                result["msg"] = "invalid load balancer definitions:\n" + "\n".join(model.problems)
        return result
