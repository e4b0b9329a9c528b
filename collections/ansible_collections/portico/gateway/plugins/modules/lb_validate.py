#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Portico developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: lb_validate
short_description: Validate Portico load balancer definitions on the controller
version_added: "0.1.0"
description:
  - Runs every definition through Portico's LB model (parse, defaults, validation, VIP
    and listener clashes) on the controller, without contacting the host.
  - Sets the fact C(portico_lb_model) to the normalised definitions of the valid LBs, and
    C(portico_k8s_status) to what each Kubernetes Service should show (addresses or reasons, or
    that it is being released), and C(portico_k8s_to_claim) to how many served Services lack the
    cleanup finalizer and Portico's mark. Both are JSON documents (strings, see C(portico_k8s_services) of
    the C(portico.gateway.k8s_services) inventory plugin), which the roles, modules and filters
    that read them decode; C(portico_lb_model | from_json) shows one.
  - The result is the same for every gateway. Run it once per play (C(run_once), which sets the
    facts on every host of the play), not once per gateway.
  - Static LBs win every clash with a Kubernetes Service (VIP or listener). Kubernetes Services
    contest addresses by age (C(metadata.creationTimestamp), then uid), and the older one wins.
  - 'Every problem is reported as C(<object>: <field>: <what is wrong>): the object is the LB, or the
    Kubernetes Service with its own field or annotation (C(spec.ports[0].port)) where the value came from it.'
author:
  - Portico developers (@portico)
options:
  loadbalancers:
    description: Load balancer definitions.
    type: list
    elements: raw
    default: []
  k8s_services:
    description:
      - The Service entries of the C(portico.gateway.k8s_services) inventory plugin
        (C(portico_k8s_services), its JSON document, or a list of entries), their problems and
        warnings as C({subject, field, message}). VIPs are allocated from O(pools); a Service that
        cannot be served is left out with its reasons in C(portico_k8s_status), and never fails
        the task.
    type: raw
    default: ""
  pools:
    description: Address pools (C(portico_pools)).
    type: dict
    default: {}
  strict:
    description:
      - Fail when any definition is invalid (static inventory). When false, invalid
        definitions are reported as warnings and left out, and the valid ones go on.
    type: bool
    default: true
attributes:
  check_mode:
    support: full
    description: Never changes anything.
  diff_mode:
    support: none
    description: Nothing to diff.
  action:
    support: full
    description: Runs on the controller.
notes:
  - This is an action plugin; it never connects to the target host.
"""

EXAMPLES = r"""
- name: Validate the LB definitions before touching gateways
  portico.gateway.lb_validate:
    loadbalancers: "{{ portico_loadbalancers }}"
    k8s_services: "{{ portico_k8s_services | default('') }}"
    pools: "{{ portico_pools }}"
  run_once: true
"""

RETURN = r"""
problems:
  description: 'One line per problem of a static LB, C(<lb>: <field>: <what>).'
  returned: always
  type: list
  elements: str
counts:
  description: How many LBs are valid, and how many Services are served, not served and being released.
  returned: always
  type: dict
  sample: {"loadbalancers": 12, "services_served": 10, "services_not_served": 1, "services_releasing": 1, "services_to_claim": 2}
vips:
  description: The distinct VIPs of the valid LBs.
  returned: always
  type: list
  elements: str
"""
