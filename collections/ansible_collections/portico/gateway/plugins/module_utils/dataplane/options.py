# -*- coding: utf-8 -*-
# Copyright: Portico developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The options that shape Portico's nftables table: one spec for every place that takes them.

``RenderOptions`` is what the renderer reads. ``render_options_spec()`` is the same set as
an Ansible argument spec (the ``nft_loadbalancer`` module and the ``config_check`` action
take it; the ``nft_render_options`` doc fragment documents it), and ``options_to_dict`` /
``options_from_dict`` are its plain-data form (module parameters, the dataplane record).
"""

from __future__ import annotations

import copy
import ipaddress
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Mapping

from ansible_collections.portico.gateway.plugins.module_utils.dataplane.objects import DEFAULT_TABLE
from ansible_collections.portico.gateway.plugins.module_utils.model.loadbalancer import LoadBalancer


@dataclass(frozen=True)
class EgressSnat:
    """Source NAT for connections the backend network opens itself."""

    source: str
    to_address: str | None = None
    out_interface: str | None = None

    @property
    def family(self) -> int:
        return ipaddress.ip_network(self.source, strict=False).version


@dataclass(frozen=True)
class RenderOptions:
    table: str = DEFAULT_TABLE
    hash_seed: int = 0x5EED5EED
    slots_per_backend: int = 100
    snat_mark: int = 0x00020000
    allow_icmp: bool = True
    local_dispatch: bool = True
    egress_snat: tuple[EgressSnat, ...] = field(default_factory=tuple)
    # Active/active (BGP) gateways SNAT every LB so replies come back through the gateway that holds
    # the flow's state: a symmetric return path without asymmetric-routing races.
    snat_all: bool = False
    # Source for LB SNAT instead of the egress interface address: a per-gateway address that VRRP
    # moves to a peer when the gateway fails, so synced flows keep a return path.
    snat_source4: str = ""
    snat_source6: str = ""

    def snats(self, lb: LoadBalancer) -> bool:
        """Whether connections to this LB leave with a gateway source address."""
        return self.snat_all or not lb.preserve_source_ip


OPTION_NAMES = tuple(f.name for f in fields(RenderOptions))

_EGRESS_SNAT_SPEC: dict[str, dict[str, Any]] = dict(
    source=dict(type="str", required=True),
    to_address=dict(type="str"),
    out_interface=dict(type="str"),
)


def render_options_spec() -> dict[str, dict[str, Any]]:
    """The render options as an Ansible argument spec, defaults from ``RenderOptions`` (a fresh copy)."""
    defaults = RenderOptions()
    spec: dict[str, dict[str, Any]] = {}
    for option in fields(RenderOptions):
        value = getattr(defaults, option.name)
        if option.name == "egress_snat":
            spec[option.name] = dict(type="list", elements="dict", default=[], options=copy.deepcopy(_EGRESS_SNAT_SPEC))
        else:
            kind = {bool: "bool", int: "int", str: "str"}[type(value)]
            spec[option.name] = dict(type=kind, default=value)
    return spec


def options_to_dict(options: RenderOptions) -> dict[str, Any]:
    """Plain data: what the dataplane record keeps and the plan compares."""
    data = asdict(options)
    data["egress_snat"] = [asdict(rule) for rule in options.egress_snat]
    return data


def options_from_dict(data: Mapping[str, Any]) -> RenderOptions:
    """From plain data (a record, or module parameters: other keys are ignored, unset ones default)."""
    values = {name: data[name] for name in OPTION_NAMES if data.get(name) is not None}
    values["egress_snat"] = tuple(EgressSnat(**rule) for rule in values.get("egress_snat", ()))
    return RenderOptions(**values)


def option_problems(options: RenderOptions) -> list[str]:
    """What is wrong with options a spec cannot check (addresses and their family)."""
    problems: list[str] = []
    for name, version in (("snat_source4", 4), ("snat_source6", 6)):
        value = getattr(options, name)
        if not value:
            continue
        try:
            address = ipaddress.ip_address(value)
        except ValueError:
            problems.append(f"{name}: {value!r} is not an IP address")
            continue
        if address.version != version:
            problems.append(f"{name}: {value} is not an IPv{version} address")
    return problems
