# -*- coding: utf-8 -*-
# Copyright: Portico developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters about VIPs and their status: the TCP endpoints a post-check connects through, and the
status play's table of VIPs across gateways (both over module_utils/status/gateway.py)."""

from __future__ import annotations

from typing import Any, Callable

from ansible_collections.portico.gateway.plugins.module_utils.status.gateway import status_table, tcp_endpoints


class FilterModule:
    """VIP endpoint and status filters."""

    def filters(self) -> dict[str, Callable[..., Any]]:
        return {"tcp_endpoints": tcp_endpoints, "vip_status_table": status_table}
