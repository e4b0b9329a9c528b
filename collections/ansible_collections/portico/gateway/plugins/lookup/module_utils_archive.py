# -*- coding: utf-8 -*-
# Copyright: Portico developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: module_utils_archive
version_added: "0.6.0"
short_description: One zip archive of some of this collection's module_utils packages, for a gateway
description:
  - Builds, on the controller, a zip archive of the named C(module_utils) packages (every Python
    file, compiled caches left out, with the package path C(ansible_collections/portico/gateway/plugins/module_utils)
    inside) and returns its path. Python imports straight from it (C(zipimport)), so a role ships the
    very code the modules run in one file transfer instead of one per file.
  - The archive is byte-for-byte the same for the same sources (sorted entries, fixed timestamps), and
    its name carries a digest of its content, so the C(copy) that ships it is idempotent and a new
    archive appears only when the code changed. It is kept in the controller's temporary directory;
    check mode is safe (nothing is written on any host).
  - Fails for a name that is not a C(module_utils) package.
author: Portico developers (@portico)
options:
  _terms:
    description: Package names under C(plugins/module_utils), such as C(model) or C(health).
    type: list
    elements: str
    required: true
  directory:
    description: Where to keep the archive on the controller; default a per-user directory in the system's temporary directory.
    type: path
"""

EXAMPLES = r"""
- name: Ship the packages portico-healthd imports
  ansible.builtin.copy:
    src: "{{ lookup('portico.gateway.module_utils_archive', 'model', 'dataplane', 'health') }}"
    dest: /usr/lib/portico/module_utils.zip
    mode: "0644"
"""

RETURN = r"""
_raw:
  description: The archive's path on the controller (one item).
  type: list
  elements: path
"""

import hashlib
import io
import os
import tempfile
import zipfile
from typing import Any, Iterable

from ansible.errors import AnsibleLookupError
from ansible.plugins.lookup import LookupBase

from ansible_collections.portico.gateway.plugins.filter.module_utils_files import MODULE_UTILS, module_utils_files

# Where the packages sit inside the archive: the import path the modules use.
PREFIX = "ansible_collections/portico/gateway/plugins/module_utils"
# zip cannot store dates before 1980; a fixed one keeps the bytes equal for equal sources.
_FIXED_DATE = (1980, 1, 1, 0, 0, 0)


def _entry(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=_FIXED_DATE)
    info.external_attr = (0o40755 if name.endswith("/") else 0o100644) << 16
    info.compress_type = zipfile.ZIP_STORED if name.endswith("/") else zipfile.ZIP_DEFLATED
    return info


def archive_bytes(packages: Iterable[str], root: str = MODULE_UTILS) -> bytes:
    """The archive of these packages: directory entries too (zipimport finds the namespace packages
    ``ansible_collections``, ``portico``, ... only through them), entries sorted, dates fixed."""
    files = module_utils_files(packages, root)
    directories = set()
    for item in files:
        parts = f"{PREFIX}/{item['path']}".split("/")[:-1]
        directories.update("/".join(parts[:depth]) + "/" for depth in range(1, len(parts) + 1))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name in sorted(directories):
            archive.writestr(_entry(name), b"")
        for item in sorted(files, key=lambda f: f["path"]):
            with open(item["src"], "rb") as handle:
                archive.writestr(_entry(f"{PREFIX}/{item['path']}"), handle.read())
    return buffer.getvalue()


def write_archive(packages: Iterable[str], directory: str, root: str = MODULE_UTILS) -> str:
    """The archive's path in ``directory``, named by its digest; written (atomically) only when new."""
    data = archive_bytes(packages, root)
    path = os.path.join(directory, f"module_utils-{hashlib.sha256(data).hexdigest()[:16]}.zip")
    if not os.path.exists(path):
        os.makedirs(directory, mode=0o700, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, suffix=".tmp")
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    return path


def _names(terms: Iterable[Any]) -> list[str]:
    """Package names given one by one or as a list (``lookup(..., some_list)``)."""
    names: list[str] = []
    for term in terms:
        names.extend(str(item) for item in term) if isinstance(term, (list, tuple)) else names.append(str(term))
    return names


class LookupModule(LookupBase):
    def run(self, terms: list[Any], variables: Any = None, **kwargs: Any) -> list[str]:
        self.set_options(var_options=variables, direct=kwargs)
        directory = self.get_option("directory") or os.path.join(tempfile.gettempdir(), f"portico-{os.getuid()}")
        try:
            return [write_archive(_names(terms), directory)]
        except (OSError, ValueError) as err:
            raise AnsibleLookupError(f"module_utils_archive: {err}") from err
