# -*- coding: utf-8 -*-
# Copyright: Portico developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Validate LB definitions on the controller, before any gateway is contacted."""

from __future__ import annotations

from typing import Any

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

from ansible_collections.portico.gateway.plugins.module_utils.model.ipam import PoolError, parse_pools
from ansible_collections.portico.gateway.plugins.module_utils.model.problems import render
from ansible_collections.portico.gateway.plugins.module_utils.model.sources import ServiceStatus, merge


def _status_fact(status: ServiceStatus) -> dict[str, Any]:
    """What playbooks/k8s_status.yml writes back to one Service (problems as the text it shows)."""
    return {
        "cluster": status.cluster, "namespace": status.namespace, "name": status.name, "uid": status.uid,
        "ips": status.ips, "problems": render(status.problems), "warnings": render(status.warnings),
        "served": status.served,
    }


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
        services = [_status_fact(status) for status in model.services]
        static_problems = render(model.static_problems)
        result.update(
            loadbalancers=valid,
            problems=static_problems,
            services=services,
            vips=sorted({lb.vip for lb in model.loadbalancers}),
            ansible_facts={"portico_lb_model": valid, "portico_k8s_status": services},
        )
        for service in services:
            for problem in service["problems"]:
                self._display.warning(f"not served: {problem}")
        for problem in static_problems:
            self._display.warning(problem)
        if static_problems and args["strict"]:
            result["failed"] = True
            result["msg"] = "invalid load balancer definitions:\n" + "\n".join(static_problems)
        return result
