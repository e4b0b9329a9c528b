# -*- coding: utf-8 -*-
# Copyright: Portico developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    # The options that shape Portico's nftables table: module_utils/dataplane/options.py
    # (RenderOptions, render_options_spec) is the spec these describe.
    DOCUMENTATION = r"""
options:
  table:
    description: Name of Portico's table in the C(inet) family.
    type: str
    default: portico
  hash_seed:
    description:
      - Seed of the flow hash. Must be the same on every gateway so that they all pick the
        same backend for the same flow.
    type: int
    default: 1592614637
  slots_per_backend:
    description:
      - Minimum Maglev slots per backend; 100 keeps the spread within 1%.
    type: int
    default: 100
  snat_mark:
    description: Packet mark bit used to select connections of LBs that SNAT toward backends.
    type: int
    default: 131072
  allow_icmp:
    description: Accept ICMP echo to VIPs (errors and neighbour discovery are always accepted).
    type: bool
    default: true
  local_dispatch:
    description: Also load balance connections the gateway itself opens to a VIP.
    type: bool
    default: true
  egress_snat:
    description: Source NAT for connections that the backend network opens itself.
    type: list
    elements: dict
    default: []
    suboptions:
      source:
        description: Source CIDR (the backend network).
        type: str
        required: true
      to_address:
        description: Address to translate to; masquerade when omitted.
        type: str
      out_interface:
        description: Only for packets leaving through this interface.
        type: str
  snat_all:
    description:
      - SNAT connections of every LB, whatever its C(preserve_source_ip). Active/active (BGP) gateways
        set this so replies return through the gateway that holds the connection's state.
    type: bool
    default: false
    version_added: "0.3.0"
  snat_source4:
    description:
      - IPv4 source address for LB SNAT instead of the outgoing interface's address (masquerade).
      - In HA modes a per-gateway address that VRRP moves to a peer when this gateway fails, so
        connections synced by conntrackd keep their return path.
    type: str
    default: ""
    version_added: "0.3.0"
  snat_source6:
    description: IPv6 counterpart of O(snat_source4).
    type: str
    default: ""
    version_added: "0.3.0"
"""
