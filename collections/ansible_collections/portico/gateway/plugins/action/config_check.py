# -*- coding: utf-8 -*-
# Copyright: Portico developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Check a gateway's rendered configuration with its own checker, on the controller.

The checker runs in a fresh network namespace: the controller's own ruleset and interfaces never
change the verdict, and stand-ins for the gateway's interfaces let configurations that name them be
checked anywhere. Nothing is written outside a private temporary directory, so this also runs in
check mode, where Ansible's ``validate:`` does not.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from typing import Any, Mapping, Sequence

from ansible.errors import AnsibleActionFail
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.plugins.action import ActionBase

from ansible_collections.portico.gateway.plugins.module_utils.model.ipam import PoolError, parse_pools
from ansible_collections.portico.gateway.plugins.module_utils.model.loadbalancer import parse_loadbalancers
from ansible_collections.portico.gateway.plugins.module_utils.model.problems import render
from ansible_collections.portico.gateway.plugins.module_utils.dataplane.options import options_from_dict, render_options_spec
from ansible_collections.portico.gateway.plugins.module_utils.dataplane.render import render_table

# The arguments of nft_loadbalancer that shape the script: the model and the render options
# (the module's own spec; unset ones take its defaults).
_NFT_SPEC: dict[str, dict[str, Any]] = dict(
    loadbalancers=dict(type="raw", required=True),  # a list, or the LB model document
    pools=dict(type="dict", required=True),
    **render_options_spec(),
)

# Runs inside the new namespace: $1 counts the interface names that follow, then comes the checker's
# argv. A name `ip` refuses (too long, bad characters) stays missing: the checker reports it as the
# gateway would.
_NETNS_SCRIPT = (
    'n=$1; shift; while [ "$n" -gt 0 ]; do '
    'ip link add "$1" type dummy 2>/dev/null || ip link add "$1" type bridge 2>/dev/null || :; '
    'shift; n=$((n - 1)); done; exec "$@"'
)
_LINE_RE = re.compile(r"\b[Ll]ine \(?(\d+)\)?")
_TIMEOUT_S = 60


def render_nft_script(arguments: Mapping[str, Any]) -> str:
    """The script portico.gateway.nft_loadbalancer would apply (health state aside: every backend up)."""
    try:
        pools = parse_pools(arguments["pools"])
    except PoolError as err:
        raise AnsibleActionFail(f"portico_pools: {err}") from None
    model = parse_loadbalancers(arguments["loadbalancers"], pools)
    if model.problems:
        raise AnsibleActionFail("invalid load balancer definitions:\n" + "\n".join(render(model.problems)))
    try:
        return render_table(model.loadbalancers, options_from_dict(arguments)).intent_script
    except ValueError as err:
        raise AnsibleActionFail(f"cannot render the nftables script: {err}") from None


def netns_argv(command: Sequence[str], interfaces: Sequence[str]) -> list[str]:
    """``command`` in a new network namespace holding only lo and ``interfaces``."""
    # Without root, a user namespace gives the capabilities the new network namespace needs.
    unshare = ["unshare", "--net"] if os.geteuid() == 0 else ["unshare", "--map-root-user", "--net"]
    return [*unshare, "--", "/bin/sh", "-c", _NETNS_SCRIPT, "portico-config-check", str(len(interfaces)),
            *interfaces, *command]


def quote_lines(output: str, content: str) -> str:
    """The rendered lines the checker's output names, each after the line before it (parsers often
    name the token after the mistake): the user never sees the temporary file."""
    lines = content.splitlines()
    named = {int(n) for n in _LINE_RE.findall(output) if 0 < int(n) <= len(lines)}
    shown = sorted(named | {n - 1 for n in named if n > 1})
    return "".join(f"\n{'>' if n in named else ' '} {n:4}: {lines[n - 1]}" for n in shown)


def redact(text: str, secrets: Sequence[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "********")
    return text


def run_checker(command: Sequence[str], interfaces: Sequence[str], quiet: bool) -> tuple[bool, int, str]:
    """Run it; (passed, exit code, output). ``quiet``: output counts as failure even with exit 0."""
    try:
        proc = subprocess.run(netns_argv(command, interfaces), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, check=False, timeout=_TIMEOUT_S, env={**os.environ, "LC_ALL": "C"})
    except subprocess.TimeoutExpired:
        return False, -1, f"no verdict within {_TIMEOUT_S} s"
    output = proc.stdout.strip()
    return proc.returncode == 0 and not (quiet and output), proc.returncode, output


def _write_private(path: str, text: str) -> None:
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w", encoding="utf-8") as handle:
        handle.write(text)


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(("name", "content", "nftables", "command", "script", "checker", "filename", "interfaces",
                             "quiet", "requires", "redact"))

    def run(self, tmp: Any = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        result = super().run(tmp, task_vars)
        result["changed"] = False
        _spec, args = self.validate_argument_spec(
            argument_spec=dict(
                name=dict(type="str", required=True),
                content=dict(type="str"),
                nftables=dict(type="dict"),
                command=dict(type="list", elements="str"),
                script=dict(type="str"),
                checker=dict(type="str"),
                filename=dict(type="str"),
                interfaces=dict(type="list", elements="str", default=[]),
                quiet=dict(type="bool", default=False),
                requires=dict(type="list", elements="str", default=[]),
                redact=dict(type="list", elements="str", default=[], no_log=True),
            ),
            mutually_exclusive=[("content", "nftables"), ("command", "script")],
            required_one_of=[("content", "nftables")],
        )
        host = (task_vars or {}).get("inventory_hostname", "?")
        name = args["name"]
        nft = args["nftables"] is not None
        if not nft and not (args["command"] or args["script"] is not None):
            raise AnsibleActionFail("content needs a command or a script to check it")
        content = render_nft_script(self._nft_arguments(args["nftables"])) if nft else args["content"]
        # A script is the role's own check script, run the way its validate: runs it (SCRIPT FILE).
        command = args["command"] or (["nft", "-c", "-f", "%s"] if nft else ["/bin/sh", f"{name}-check", "%s"])
        missing = [tool for tool in ["unshare", command[0], *args["requires"]] if shutil.which(tool) is None]
        if missing:
            raise AnsibleActionFail(
                f"{host}: {name}: cannot check the rendered configuration: {', '.join(missing)} not found on the "
                "controller (install the packages in .ci/install-deps, or set portico_validate_configs: false)")
        # A bare name: the file stays inside the private directory.
        filename = os.path.basename(args["filename"] or f"{name}.{'nft' if nft else 'conf'}")
        checker = args["checker"] or " ".join(command).replace("%s", filename)
        with tempfile.TemporaryDirectory(prefix="portico-check-") as scratch:
            path = os.path.join(scratch, filename)
            # 0600: a rendered configuration may hold secrets (BGP passwords).
            _write_private(path, content)
            argv = [part.replace("%s", path) for part in command]
            if args["script"] is not None:
                argv[1] = os.path.join(scratch, argv[1])
                _write_private(argv[1], args["script"])
            passed, code, output = run_checker(argv, sorted(set(args["interfaces"])), args["quiet"])
            output = redact(output.replace(f"{scratch}/", ""), args["redact"])
        result.update(checked=filename, checker=checker, rc=code, output=output)
        if not passed:
            verdict = f"exit {code}" if code else "exit 0 but it printed errors"
            quoted = redact(quote_lines(output, content), args["redact"])
            result["failed"] = True
            result["msg"] = (f"{host}: {name}: the rendered {filename} does not pass `{checker}` ({verdict}):\n{output}"
                             + (f"\nThe lines named above (>), as rendered:{quoted}" if quoted else ""))
        return result

    @staticmethod
    def _nft_arguments(raw: Mapping[str, Any]) -> dict[str, Any]:
        validated = ArgumentSpecValidator(_NFT_SPEC).validate(dict(raw))
        if validated.error_messages:
            raise AnsibleActionFail("nftables: " + "; ".join(validated.error_messages))
        return dict(validated.validated_parameters)
