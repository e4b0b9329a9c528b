# -*- coding: utf-8 -*-
# Copyright: Portico developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Jinja filters used by Portico's role templates (controller side, netaddr available)."""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping

import netaddr


def portico_vip_prefixes(loadbalancers: Iterable[Mapping[str, Any]]) -> list[str]:
    """Host prefixes (/32, /128) of the distinct VIPs of normalised LBs, sorted."""
    vips = {netaddr.IPAddress(lb["vip"]) for lb in loadbalancers}
    return [f"{vip}/{32 if vip.version == 4 else 128}" for vip in sorted(vips)]


class FilterModule:
    def filters(self) -> dict[str, Callable[..., Any]]:
        return {"portico_vip_prefixes": portico_vip_prefixes}
