# -*- coding: utf-8 -*-
# Copyright: Portico developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""netaddr for the collection's filters: a missing library is a clear error when a filter runs.

Filter files must load without it (ansible-doc lists them, ansible-test imports them in a bare
environment), so they import netaddr from here and hand their filters to ``needing_netaddr``.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

from ansible.errors import AnsibleFilterError
from ansible.module_utils.basic import missing_required_lib

try:
    import netaddr
except ImportError as error:  # checked when a filter runs
    netaddr = None
    NETADDR_IMPORT_ERROR: ImportError | None = error
else:
    NETADDR_IMPORT_ERROR = None

__all__ = ["NETADDR_IMPORT_ERROR", "needing_netaddr", "netaddr"]


def needing_netaddr(filters: dict[str, Callable[..., Any]]) -> dict[str, Callable[..., Any]]:
    """The filters, each failing with "netaddr is required" when the library is not installed."""

    def guarded(function: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(function)
        def run(*args: Any, **kwargs: Any) -> Any:
            if NETADDR_IMPORT_ERROR is not None:
                raise AnsibleFilterError(missing_required_lib("netaddr")) from NETADDR_IMPORT_ERROR
            return function(*args, **kwargs)

        return run

    return {name: guarded(function) for name, function in filters.items()}
