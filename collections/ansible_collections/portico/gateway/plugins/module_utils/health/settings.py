# -*- coding: utf-8 -*-
# Copyright: Portico developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The health checker's configuration file (JSON, written by the healthcheck role) and its checks."""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from typing import Any

from ansible_collections.portico.gateway.plugins.module_utils.dataplane.records import (
    DEFAULT_LOCK_FILE,
    DEFAULT_STATE_FILE,
    DataplaneFiles,
)
from ansible_collections.portico.gateway.plugins.module_utils.health.state import ALL_DOWN_POLICIES

DEFAULT_CONFIG_FILE = "/etc/portico/healthd.json"


@dataclass(frozen=True)
class Settings:
    dataplane_file: str = DataplaneFiles().record
    state_file: str = DEFAULT_STATE_FILE
    lock_file: str = DEFAULT_LOCK_FILE
    all_down: str = "reject"
    withdraw_vips: bool = True
    announce_table: int = 201
    announce_protocol: int = 201
    hooks_dir: str = "/etc/portico/healthd/hooks.d"
    metrics_address: str = "127.0.0.1"
    metrics_port: int = 9641
    poll_interval: float = 1.0
    nft: str = "nft"
    ip: str = "ip"

    @classmethod
    def from_mapping(cls, raw: Any, where: str) -> Settings:
        """Settings from a parsed configuration file; ValueError naming ``where`` and each bad field."""
        if not isinstance(raw, dict):
            raise ValueError(f"{where}: expected a JSON object")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"{where}: unknown setting(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        settings = cls(**raw)
        problems = settings.problems()
        if problems:
            raise ValueError("\n".join(f"{where}: {p}" for p in problems))
        return settings

    def problems(self) -> list[str]:
        out = []
        if self.all_down not in ALL_DOWN_POLICIES:
            out.append(f"all_down: {self.all_down!r} is not one of {', '.join(ALL_DOWN_POLICIES)}")
        for name in ("announce_table", "announce_protocol"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 0xFFFFFFFF:
                out.append(f"{name}: expected an integer (0 disables the announcement table), got {value!r}")
        if isinstance(self.announce_protocol, int) and not 0 < self.announce_protocol < 256:
            out.append(f"announce_protocol: expected 1-255, got {self.announce_protocol!r}")
        if not isinstance(self.metrics_port, int) or not 0 <= self.metrics_port <= 65535:
            out.append(f"metrics_port: expected 0-65535 (0 disables), got {self.metrics_port!r}")
        if not isinstance(self.withdraw_vips, bool):
            out.append(f"withdraw_vips: expected true or false, got {self.withdraw_vips!r}")
        for name in ("dataplane_file", "state_file", "lock_file", "hooks_dir"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name).startswith("/"):
                out.append(f"{name}: expected an absolute path, got {getattr(self, name)!r}")
        return out


def load_settings(path: str) -> Settings:
    """The settings in ``path``; the defaults when it does not exist; ValueError when it is wrong."""
    try:
        with open(path, encoding="utf-8") as handle:
            raw = json.load(handle)
    except FileNotFoundError:
        return Settings()
    except ValueError as err:
        raise ValueError(f"{path}: not valid JSON: {err}") from err
    return Settings.from_mapping(raw, path)
