# -*- coding: utf-8 -*-
# Copyright: Portico developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Validate LB definitions on the controller, before any gateway is contacted."""

from __future__ import annotations

from typing import Any

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

from ansible_collections.portico.gateway.plugins.module_utils.model.ipam import PoolError, parse_pools
from ansible_collections.portico.gateway.plugins.module_utils.model.sources import merge


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(("loadbalancers", "k8s_services", "pools", "strict"))

    def run(self, tmp: Any = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        result = super().run(tmp, task_vars)
        result["changed"] = False
        _spec, args = self.validate_argument_spec(
            argument_spec=dict(
                loadbalancers=dict(type="list", elements="raw", default=[]),
                k8s_services=dict(type="list", elements="dict", default=[]),
                pools=dict(type="dict", default={}),
                strict=dict(type="bool", default=True),
            )
        )
        try:
            pools = parse_pools(args["pools"])
        except PoolError as err:
            raise AnsibleActionFail(f"portico_pools: {err}") from None
        model = merge(args["loadbalancers"], args["k8s_services"], pools)
        valid = [lb.to_dict() for lb in model.loadbalancers]
        services = [status.to_dict() for status in model.services]
        result.update(
            loadbalancers=valid,
            problems=model.static_problems,
            services=services,
            vips=sorted({lb.vip for lb in model.loadbalancers}),
            ansible_facts={"portico_lb_model": valid, "portico_k8s_status": services},
        )
        for status in model.services:
            for problem in status.problems:
                self._display.warning(f"not served: {problem}")
        if model.static_problems:
            for problem in model.static_problems:
                self._display.warning(problem)
            if args["strict"]:
                result["failed"] = True
                result["msg"] = "invalid load balancer definitions:\n" + "\n".join(model.static_problems)
        return result
