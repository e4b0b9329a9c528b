"""No secret in any log or artifact of the default scenario (single gateway + Kubernetes).

Produces what a pipeline keeps of such a site: the plan (`.ci/plan`, i.e. site.yml --check
--diff with the plan callback) with `-v`, and the watcher's log at DEBUG for one full run; then
collects every lab container's journal and logs (lab/secret_grep.py) and greps all scenarios'
artifacts collected so far for the Kubernetes token, the vault password and the BGP password.
"""

from __future__ import annotations

import pathlib
import sys

REPO = pathlib.Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO))
from lab import secret_grep  # noqa: E402 - needs the path above


def test_the_grep_finds_a_planted_secret(tmp_path):
    """Without this, zero hits below could mean a grep that finds nothing."""
    values = secret_grep.secrets()
    assert {"vault password", "BGP password (router)"} <= set(values)
    assert any(name.startswith("Kubernetes token") for name in values)
    (tmp_path / "leak.log").write_text(f"Authorization: Bearer {values['Kubernetes token (stand-in default)']}\n")
    hits = secret_grep.scan([tmp_path]).hits
    assert len(hits) == 1 and hits[0]["secret"].startswith("Kubernetes token"), hits


def test_no_secret_in_the_plan_the_watcher_log_or_any_container_log():
    result = secret_grep.verify_scenario("default", "inventories/lab", watcher=True)
    assert result.files > 10 and result.bytes > 100_000
    assert result.hits == []
