#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Portico developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: config_check
short_description: Check a gateway's rendered configuration with its own checker, on the controller
version_added: "0.4.0"
description:
  - Writes a configuration rendered for the current host to a private temporary directory on the
    controller and runs a checker on it (C(nft -c), C(vtysh -C), C(keepalived --config-test), a
    role's check script). Fails with the host, the configuration's name, the checker's output and
    the rendered lines the output names.
  - The checker runs in a new network namespace (C(unshare --net)) that holds only C(lo) and
    stand-ins for O(interfaces), so the controller's own ruleset and interfaces never change the
    verdict. A name that C(ip link add) refuses (too long, bad characters) stays missing, so the
    checker reports it as the gateway would.
  - With O(nftables), renders the script that P(portico.gateway.nft_loadbalancer#module) would apply
    (every backend healthy) with the same model and renderer, and checks it with C(nft -c).
  - Used by C(playbooks/validate.yml) through each role's C(tasks/check_config.yml), so a broken
    configuration fails the run before any gateway is contacted, also in check mode.
author:
  - Portico developers (@portico)
options:
  name:
    description: What is checked (C(frr), C(keepalived)); starts every message after the host name.
    type: str
    required: true
  content:
    description: The rendered configuration, e.g. C(lookup('ansible.builtin.template', 'frr.conf.j2')).
    type: str
  nftables:
    description:
      - Instead of O(content), the arguments of P(portico.gateway.nft_loadbalancer#module) that shape the
        script, C(loadbalancers), C(pools) and its render options (C(table), C(hash_seed), C(snat_all), ...),
        validated with that module's own spec; unset ones take its defaults.
    type: dict
  command:
    description:
      - The checker's argv; C(%s) becomes the configuration file's path.
      - Defaults to C(nft -c -f %s) with O(nftables). Either this or O(script) is required with O(content).
    type: list
    elements: str
  script:
    description:
      - A check script's text (a role's C(validate:) script), run as C(/bin/sh SCRIPT FILE) instead of O(command).
    type: str
  checker:
    description: How messages name the checker. Defaults to O(command) with the file's name for C(%s).
    type: str
  filename:
    description:
      - Name of the configuration file (checkers print it in their messages). Defaults to O(name) with
        C(.conf), or C(.nft) with O(nftables).
    type: str
  interfaces:
    description: Interfaces the configuration names; each gets a stand-in in the checker's namespace.
    type: list
    elements: str
    default: []
  quiet:
    description: The checker must also print nothing (C(vtysh -C) exits 0 for some errors and prints them).
    type: bool
    default: false
  requires:
    description:
      - More programs that must exist on the controller, e.g. the binary a O(script) calls (a
        missing one would otherwise go unnoticed).
    type: list
    elements: str
    default: []
  redact:
    description: Secrets (BGP passwords) replaced by C(********) wherever they would show in the result.
    type: list
    elements: str
    default: []
attributes:
  check_mode:
    support: full
    description: Changes nothing; runs in check mode too.
  diff_mode:
    support: none
    description: Nothing to diff.
  action:
    support: full
    description: Runs on the controller.
notes:
  - This is an action plugin; it never connects to the target host.
  - Needs C(unshare) and C(ip) on the controller, and root (or unprivileged user namespaces).
requirements:
  - util-linux (unshare), iproute2, and the checkers used (nftables, frr, keepalived, conntrackd).
"""

EXAMPLES = r"""
- name: Check the rendered FRR configuration (on the controller)
  portico.gateway.config_check:
    name: frr
    filename: frr.conf
    content: "{{ lookup('ansible.builtin.template', 'frr.conf.j2') }}"
    command: [vtysh, -C, -f, "%s"]
    quiet: true

- name: Check the rendered keepalived configuration (on the controller)
  portico.gateway.config_check:
    name: keepalived
    content: "{{ lookup('ansible.builtin.template', 'keepalived.conf.j2') }}"
    command: [/usr/sbin/keepalived, --config-test, "--use-file=%s"]
    interfaces: [uplink, backend]

- name: Check the nftables script (on the controller)
  portico.gateway.config_check:
    name: nftables
    nftables:
      loadbalancers: "{{ portico_lb_model }}"
      pools: "{{ portico_pools }}"
"""

RETURN = r"""
checked:
  description: Name of the checked file.
  returned: when the checker ran
  type: str
  sample: frr.conf
checker:
  description: The checker, as messages name it.
  returned: when the checker ran
  type: str
  sample: vtysh -C -f frr.conf
rc:
  description: The checker's exit code (-1 when it gave no verdict in time).
  returned: when the checker ran
  type: int
output:
  description: What the checker printed (stdout and stderr), secrets redacted.
  returned: when the checker ran
  type: str
"""
