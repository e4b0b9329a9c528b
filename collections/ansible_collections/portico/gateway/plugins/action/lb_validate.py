# -*- coding: utf-8 -*-
# Copyright: Portico developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Validate LB definitions on the controller, before any gateway is contacted.

The model is the same for every gateway, so playbooks run this once per play (``run_once``:
Ansible then sets the facts on every host of the play). Large data crosses Ansible as documents
(``model.documents``): the Service entries come in as one, the model and the per-Service status
go out as one each, so thousands of Services cost Ansible a few strings, not millions of nodes.
"""

from __future__ import annotations

from typing import Any

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

from ansible_collections.portico.gateway.plugins.module_utils.k8s.resources import reports_health
from ansible_collections.portico.gateway.plugins.module_utils.model.documents import STATUS_FORMAT, DocumentError, encode
from ansible_collections.portico.gateway.plugins.module_utils.model.ipam import PoolError, parse_pools
from ansible_collections.portico.gateway.plugins.module_utils.model.loadbalancer import encode_model
from ansible_collections.portico.gateway.plugins.module_utils.model.problems import render, to_data
from ansible_collections.portico.gateway.plugins.module_utils.model.sources import MergedModel, ServiceStatus, merge


def status_item(status: ServiceStatus) -> dict[str, Any]:
    """What the status write-back does for one object (problems as data: each kind's status says
    them in its own way, and the Events as ``<object>: <field>: <what>``)."""
    return {
        "kind": status.kind, "cluster": status.cluster, "namespace": status.namespace, "name": status.name,
        "uid": status.uid, "ips": status.ips, "problems": to_data(status.problems), "warnings": to_data(status.warnings),
        "served": status.served, "release": status.release, "release_reason": status.release_reason,
        "claimed": status.claimed, "loadbalancers": status.loadbalancers, "details": status.details,
    }


def health_lbs(model: MergedModel) -> list[str]:
    """The LBs whose objects show the gateways' health in their status (the status play asks the
    gateways about these only)."""
    return sorted(lb for status in model.services if status.served and reports_health(status.kind) for lb in status.loadbalancers)


def counts(model: MergedModel) -> dict[str, int]:
    return {
        "loadbalancers": len(model.loadbalancers),
        "services_served": sum(1 for s in model.services if s.served),
        "services_not_served": sum(1 for s in model.services if not s.served and not s.release),
        "services_releasing": sum(1 for s in model.services if s.release),
        "services_to_claim": sum(1 for s in model.services if s.served and not s.claimed),
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
                k8s_services=dict(type="raw", default=""),
                pools=dict(type="dict", default={}),
                strict=dict(type="bool", default=True),
            )
        )
        try:
            pools = parse_pools(args["pools"])
        except PoolError as err:
            raise AnsibleActionFail(f"portico_pools: {err}") from None
        try:
            model = merge(args["loadbalancers"], args["k8s_services"], pools)
        except DocumentError as err:
            raise AnsibleActionFail(str(err)) from None
        statuses = [status_item(status) for status in model.services]
        static_problems = render(model.static_problems)
        not_served = [problem for status in model.services for problem in render(status.problems)]
        tally = counts(model)
        result.update(
            problems=static_problems,
            counts=tally,
            vips=sorted({lb.vip for lb in model.loadbalancers}),
            ansible_facts={"portico_lb_model": encode_model(model.loadbalancers),
                           "portico_k8s_status": encode(STATUS_FORMAT, statuses),
                           # How many Services the claim stage must mark before the converge (0: no call at all).
                           "portico_k8s_to_claim": tally["services_to_claim"],
                           # The LBs the status play asks each gateway's health checker about.
                           "portico_k8s_health_lbs": health_lbs(model)},
        )
        for problem in not_served:
            self._display.warning(f"not served: {problem}")
        for problem in static_problems:
            self._display.warning(problem)
        if static_problems and args["strict"]:
            result["failed"] = True
            result["msg"] = "invalid load balancer definitions:\n" + "\n".join(static_problems)
        return result
