# -*- coding: utf-8 -*-
# Copyright: Portico developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The LB model document (``portico_lb_model``) as a list of plain LB definitions."""

from __future__ import annotations

from typing import Any, Callable

from ansible_collections.portico.gateway.plugins.module_utils.model.documents import expanded_loadbalancers


class FilterModule:
    """LB model filters."""

    def filters(self) -> dict[str, Callable[..., Any]]:
        return {"lb_model": expanded_loadbalancers}
