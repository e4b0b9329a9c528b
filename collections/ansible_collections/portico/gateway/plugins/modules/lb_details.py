#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Portico developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: lb_details
short_description: Report each load balancer a gateway serves, with backend health and traffic
version_added: "0.6.0"
description:
  - Joins what the gateway already has about each load balancer it serves - the definition the
    nft module applied (the dataplane record with VIP, source, listeners and backends), each
    backend's health from C(portico-healthd) (state, since when, probe latency) and the traffic
    counters of its C(/metrics) (new connections, packets and bytes per listener, new connections
    per backend address, drops per VIP).
  - What C(playbooks/status.yml) collects for C(portico-console) when O(ignore:portico_status_dir) is set.
    Never changes anything.
author:
  - Portico developers (@portico)
options:
  healthd_url:
    description: Base URL of the health checker's HTTP endpoint (its C(/status) and C(/metrics)).
    type: str
    default: http://127.0.0.1:9641
  dataplane_file:
    description: The dataplane record the nft module writes.
    type: path
    default: /var/lib/portico/nftables/portico.dataplane.json
  timeout:
    description: Seconds to wait for each answer of the health checker.
    type: float
    default: 5.0
notes:
  - Supports check mode; it only reads.
"""

EXAMPLES = r"""
- name: Everything the gateway knows about its load balancers
  portico.gateway.lb_details:
  register: details

- name: Backends down
  ansible.builtin.debug:
    msg: "{{ details.loadbalancers.values() | map(attribute='backends') | flatten | selectattr('state', 'eq', 'down') | list }}"
"""

RETURN = r"""
loadbalancers:
  description: >-
    Per LB name: C(vip), C(source), C(pool), C(listeners) (protocol, port, backend_port and their counters
    C(new_connections), C(packets_in), C(packets_out), C(bytes_in), C(bytes_out)), C(backends) (C(address),
    C(state) up, down or unchecked, C(since), C(latency), C(detail), C(new_connections) of the address over
    every LB), C(healthy), C(total), C(traffic) totals (null without counters) and C(dropped_packets) of its VIP.
  returned: always
  type: dict
healthd_running:
  description: Whether the health checker answered; without it backends are reported unchecked.
  returned: always
  type: bool
"""

import json
from typing import Any

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.urls import open_url

from ansible_collections.portico.gateway.plugins.module_utils.dataplane.records import read_record
from ansible_collections.portico.gateway.plugins.module_utils.health.tracker import Dataplane
from ansible_collections.portico.gateway.plugins.module_utils.status.details import lb_details, traffic_counters


def _get(module: AnsibleModule, path: str) -> str | None:
    try:
        return open_url(module.params["healthd_url"].rstrip("/") + path, timeout=module.params["timeout"]).read().decode(
            "utf-8", "replace")
    except Exception:  # pylint: disable=broad-except  # a status read never fails: the daemon may be away
        return None


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            healthd_url=dict(type="str", default="http://127.0.0.1:9641"),
            dataplane_file=dict(type="path", default="/var/lib/portico/nftables/portico.dataplane.json"),
            timeout=dict(type="float", default=5.0),
        ),
        supports_check_mode=True,
    )
    try:
        record = read_record(module.params["dataplane_file"])
    except (OSError, ValueError, TypeError) as err:
        module.fail_json(msg=f"{module.params['dataplane_file']}: unreadable dataplane record: {err}")
    status = _get(module, "/status")
    try:
        healthd: dict[str, Any] | None = json.loads(status) if status else None
    except ValueError:
        healthd = None
    metrics = _get(module, "/metrics")
    traffic = traffic_counters(metrics) if metrics else None
    module.exit_json(changed=False, healthd_running=healthd is not None,
                     loadbalancers=lb_details(Dataplane.from_record(record).loadbalancers, healthd, traffic))


if __name__ == "__main__":
    main()
