"""The config_check action's checker namespace: stand-in interfaces, an empty ruleset, the quiet rule.

Runs the real ``unshare --net`` as the action does on a controller (root here).
"""

from __future__ import annotations

from ansible_collections.portico.gateway.plugins.action.config_check import run_checker


def test_stand_in_interfaces_exist_in_the_namespace_and_bad_names_do_not() -> None:
    passed, code, output = run_checker(["ip", "-o", "link", "show"], ["uplink", "backend", "name-far-too-long-0"], False)
    assert passed and code == 0, output
    names = {line.split(":")[1].strip().split("@")[0] for line in output.splitlines()}
    assert names == {"lo", "uplink", "backend"}, output


def test_the_namespace_is_empty_of_the_controllers_ruleset() -> None:
    passed, _code, output = run_checker(["nft", "list", "ruleset"], [], True)
    assert passed, output


def test_quiet_turns_output_with_exit_0_into_a_failure() -> None:
    assert run_checker(["echo", "% Unknown command"], [], True) == (False, 0, "% Unknown command")
    assert run_checker(["echo", "fine"], [], False) == (True, 0, "fine")
    assert run_checker(["false"], [], False)[:2] == (False, 1)
