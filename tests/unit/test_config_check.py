"""The helpers of the config_check action: quoting, redaction, rendering (the checker's namespace and
the quiet rule need root: tests/integration/test_config_check_netns.py)."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleActionFail

from ansible_collections.portico.gateway.plugins.action.config_check import (
    quote_lines,
    redact,
    render_nft_script,
)

CONTENT = "one\ntwo\nthree\nfour\n"


@pytest.mark.parametrize("output", [
    "line 3: % Unknown command",                         # vtysh
    "(keepalived.conf: Line 3) invalid number",         # keepalived
    "parsing config file in line (3), symbol 'x'",      # conntrackd
])
def test_the_named_line_is_quoted_after_the_one_before(output: str) -> None:
    assert quote_lines(output, CONTENT) == "\n     2: two\n>    3: three"


def test_lines_out_of_range_or_absent_are_not_quoted() -> None:
    assert quote_lines("line 99: nope", CONTENT) == ""
    assert quote_lines("no line numbers here", CONTENT) == ""
    assert quote_lines("line 1: first", CONTENT) == "\n>    1: one"


def test_redact_blanks_every_secret_and_ignores_empty_ones() -> None:
    assert redact("password s3cret and s3cret", ["s3cret", ""]) == "password ******** and ********"


def test_render_refuses_what_the_model_refuses() -> None:
    with pytest.raises(AnsibleActionFail, match="web: vip: 203.0.113.1 is not in any pool"):
        render_nft_script({"pools": {"public": {"addresses": ["198.51.100.0/24"]}}, "loadbalancers": [
            {"name": "web", "vip": "203.0.113.1", "ports": [{"protocol": "tcp", "port": 80}],
             "backends": [{"address": "192.0.2.11"}]}]})


def test_render_reports_a_bad_egress_source_instead_of_crashing() -> None:
    with pytest.raises(AnsibleActionFail, match="cannot render the nftables script"):
        render_nft_script({"pools": {}, "loadbalancers": [], "egress_snat": [{"source": "not-a-network"}]})
