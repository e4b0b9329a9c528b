"""No secret in any log or artifact, after the last scenario: BGP with MD5 passwords (lab vault).

The plan runs with `-v` and a changed FRR setting, so the frr.conf diff (whose context holds
the peers' password lines) would be in its output if the role did not hide it. The scan covers
every scenario's artifacts collected so far (default, ha, bgp): lab/secret_grep.py.
"""

from __future__ import annotations

import pathlib
import sys

import testinfra

REPO = pathlib.Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO))
from lab import secret_grep  # noqa: E402 - needs the path above


def test_the_bgp_password_is_in_use_on_the_gateways():
    """Zero hits below mean something only while the secret is really there to leak."""
    password = secret_grep.secrets()["BGP password (router)"]
    for name in ("gw1", "gw2"):
        config = testinfra.get_host(f"podman://portico-lab-{name}").check_output("vtysh -c 'show running-config'")
        assert f"password {password}" in config, name


def test_no_secret_in_the_plan_or_any_container_log():
    result = secret_grep.verify_scenario("bgp", "inventories/lab-bgp", plan_args=("-e", "frr_route_map_delay_timer=2"))
    assert result.files > 10 and result.bytes > 100_000
    assert result.hits == []
