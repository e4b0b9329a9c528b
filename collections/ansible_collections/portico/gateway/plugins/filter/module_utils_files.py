# -*- coding: utf-8 -*-
# Copyright: Portico developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The files of module_utils packages, for roles that ship the collection's code to gateways."""

from __future__ import annotations

import os
from typing import Any, Callable, Iterable

# This collection's module_utils: the copy the modules run is the one shipped.
MODULE_UTILS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "module_utils")


def module_utils_files(packages: Iterable[str], root: str = MODULE_UTILS) -> list[dict[str, str]]:
    """Every Python file of these module_utils packages: ``{"src": controller path, "path": relative path}``.

    The healthcheck role ships them to gateways for portico-healthd, so the daemon runs the
    very model, dataplane and health code the modules use. Listing the packages' files here
    (compiled caches left out) means no hand-kept file list can drift from what the daemon imports.
    """
    files = [{"src": os.path.join(root, "__init__.py"), "path": "__init__.py"}]
    for name in packages:
        top = os.path.join(root, name)
        if not os.path.isfile(os.path.join(top, "__init__.py")):
            raise ValueError(f"module_utils_files: no module_utils package named {name!r} ({top})")
        for directory, subdirs, names in os.walk(top):
            subdirs[:] = sorted(d for d in subdirs if d != "__pycache__")
            for file_name in sorted(n for n in names if n.endswith(".py")):
                src = os.path.join(directory, file_name)
                files.append({"src": src, "path": os.path.relpath(src, root)})
    return files


class FilterModule:
    """Shipping the collection's code."""

    def filters(self) -> dict[str, Callable[..., Any]]:
        return {"module_utils_files": module_utils_files}
