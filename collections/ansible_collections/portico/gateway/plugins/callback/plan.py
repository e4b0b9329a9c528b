# -*- coding: utf-8 -*-
# Copyright: Portico developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
name: plan
type: aggregate
short_description: Per-gateway summary of what a Portico run changes (the plan of a --check --diff run)
version_added: "0.4.0"
description:
  - Collects, per host, what the tasks of a run change and, at the end of the playbook, prints a
    summary and optionally writes it as C(plan.md) and C(plan.json).
  - Meant for C(ansible-playbook playbooks/site.yml --check --diff) - the plan of a change before it is
    applied. In a normal run it reports what was changed.
  - Reads the C(plan) of C(portico.gateway.nft_loadbalancer) (load balancers added, removed and
    changed, backends in and out, weights, listeners, source ranges, VIPs, table options), the
    results of C(portico.gateway.ip_addresses) (VIPs held as addresses or AnyIP routes, the
    latter being what BGP announces) and C(portico.gateway.ip_routes), and every changed file
    (C(frr.conf), C(keepalived.conf), C(conntrackd.conf), units...) as lines added and removed;
    for C(frr.conf) also the announced prefixes and BGP peers, for C(keepalived.conf) the VRRP addresses.
    Any other change is listed by task name.
  - Results are read as data only, never templated. Results hidden by C(no_log) are reported
    without their content.
  - An aggregate callback - it runs next to the stdout callback and never changes the run's outcome.
requirements:
  - Enable it with C(ANSIBLE_CALLBACKS_ENABLED=portico.gateway.plan) or C(callbacks_enabled) in C(ansible.cfg).
options:
  plan_dir:
    description:
      - Directory to write C(plan.md) and C(plan.json) to, created when missing. Nothing is written when unset.
    type: path
    env:
      - name: PORTICO_PLAN_DIR
    ini:
      - section: callback_portico_plan
        key: plan_dir
  show:
    description: Print the summary at the end of the playbook.
    type: bool
    default: true
    env:
      - name: PORTICO_PLAN_SHOW
    ini:
      - section: callback_portico_plan
        key: show
"""

EXAMPLES = r"""
# The plan of a change, as files for a pipeline artifact:
#   ANSIBLE_CALLBACKS_ENABLED=portico.gateway.plan PORTICO_PLAN_DIR=plan \
#     ansible-playbook -i inventories/site playbooks/site.yml --check --diff
# or, in ansible.cfg:
#   [defaults]
#   callbacks_enabled = portico.gateway.plan
#   [callback_portico_plan]
#   plan_dir = plan
"""

import datetime
import json
import os
import tempfile
from typing import Any

from ansible import context
from ansible.playbook.handler import Handler
from ansible.plugins.callback import CallbackBase

from ansible_collections.portico.gateway.plugins.plugin_utils.plan_report import HostPlan, render_markdown, report_data


def _write_atomic(path: str, text: str) -> None:
    """A pipeline may pick the artifact up at any time: never leave a half-written file."""
    handle, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".plan-")
    with os.fdopen(handle, "w", encoding="utf-8") as out:
        out.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


class CallbackModule(CallbackBase):
    """Collects per-host changes and reports them at the end of the playbook."""

    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "portico.gateway.plan"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._hosts: dict[str, HostPlan] = {}
        self._playbook = ""

    def _host(self, result: Any) -> HostPlan:
        return self._hosts.setdefault(result.host.get_name(), HostPlan())

    @staticmethod
    def _action(result: Any) -> str:
        task = result.task
        return str(getattr(task, "resolved_action", None) or task.action or "")

    def v2_playbook_on_start(self, playbook: Any) -> None:
        self._playbook = os.path.basename(getattr(playbook, "_file_name", "") or "")

    def v2_runner_on_ok(self, result: Any) -> None:
        self._host(result).record(self._action(result), result.task_name, result.result, handler=isinstance(result.task, Handler))

    def v2_runner_on_failed(self, result: Any, ignore_errors: bool = False) -> None:
        if ignore_errors:
            return
        message = result.result.get("msg", "") if "censored" not in result.result else "hidden (no_log)"
        self._host(result).record_failure(result.task_name, str(message or "failed"))

    def v2_runner_on_unreachable(self, result: Any) -> None:
        self._host(result).unreachable = True

    def v2_playbook_on_stats(self, stats: Any) -> None:
        meta = {
            "playbook": self._playbook,
            "check_mode": bool(context.CLIARGS.get("check", False)),
            "diff_mode": bool(context.CLIARGS.get("diff", False)),
            "generated": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        data = report_data(self._hosts, meta)
        markdown = render_markdown(data, self._hosts)
        if self.get_option("show"):
            self._display.banner("PORTICO PLAN")
            self._display.display(markdown)
        plan_dir = self.get_option("plan_dir")
        if plan_dir:
            os.makedirs(plan_dir, exist_ok=True)
            _write_atomic(os.path.join(plan_dir, "plan.md"), markdown)
            _write_atomic(os.path.join(plan_dir, "plan.json"), json.dumps(data, indent=1, sort_keys=True, default=str) + "\n")
            self._display.display(f"plan written to {os.path.join(plan_dir, 'plan.md')} and plan.json")
