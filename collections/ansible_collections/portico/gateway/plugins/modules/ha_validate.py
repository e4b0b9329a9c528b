#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Portico developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: ha_validate
short_description: Check the HA settings of every gateway together, on the controller
version_added: "0.3.0"
description:
  - Checks the HA variables of every host in O(gateways) as one set, before any
    gateway is contacted. A host's own role sees only its own variables; this catches what only
    shows across hosts.
  - 'Per host: C(portico_ha_mode) is C(single), C(vrrp) or C(bgp); VRRP instances have a name, an
    interface, a VRID 1-255 and a priority 1-254; BGP mode has C(frr_asn), an IPv4 C(frr_router_id)
    and peers that each have an address and an C(asn).'
  - 'Across hosts: a VRID used by two different VRRP groups on one interface, members of one group
    disagreeing on VRID or addresses, a tie for the highest priority, two gateways with one BGP
    router-id, two gateways with one SNAT return address.'
  - 'Every problem names the host and the variable: C(<host>: <variable>[index] (<name>): <what>).'
author:
  - Portico developers (@portico)
options:
  gateways:
    description:
      - Host name -> that host's HA variables C(portico_ha_mode), C(keepalived_instances),
        C(keepalived_priority), C(frr_asn), C(frr_router_id), C(frr_peers), C(nftables_snat_source4),
        C(nftables_snat_source6). Keys that are null count as not set.
      - Collect them per host first (C(set_fact)), so each is templated in its own host's context.
    type: dict
    required: true
  strict:
    description: Fail on any problem. When false, problems are returned and shown as warnings.
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
- name: Collect each gateway's HA settings
  ansible.builtin.set_fact:
    portico_ha_settings:
      portico_ha_mode: "{{ portico_ha_mode | default('single') }}"
      frr_asn: "{{ frr_asn | default(none) }}"
      frr_router_id: "{{ frr_router_id | default(none) }}"
      frr_peers: "{{ frr_peers | default([]) }}"

- name: Check HA settings across all gateways
  portico.gateway.ha_validate:
    gateways: "{{ dict(ansible_play_hosts_all | zip(ansible_play_hosts_all | map('extract', hostvars, 'portico_ha_settings'))) }}"
  run_once: true
"""

RETURN = r"""
problems:
  description: One line per problem.
  returned: always
  type: list
  elements: str
vrrp_groups:
  description: VRRP group name -> members with VRID, interface and priority.
  returned: always
  type: dict
"""
