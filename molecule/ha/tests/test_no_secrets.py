"""No secret in any log or artifact of the ha scenario (a VRRP pair, keepalived and conntrackd;
the run reads the lab vault): its plan with `-v` and every container's journal and logs, and
the artifacts of the scenarios before it (lab/secret_grep.py)."""

from __future__ import annotations

import pathlib
import sys

REPO = pathlib.Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO))
from lab import secret_grep  # noqa: E402 - needs the path above


def test_no_secret_in_the_plan_or_any_container_log():
    result = secret_grep.verify_scenario("ha", "inventories/lab-ha")
    assert result.files > 10 and result.bytes > 100_000
    assert result.hits == []
