"""The host's Debian packages are one list (.ci/packages.txt): install-deps installs it, and every
host command the lab, the benchmarks and the tests check for or run has a line in it.

The commands are found in the code itself: literal names given to `shutil.which`, to the
benchmarks' `check_prerequisites`, iterated next to a `shutil.which` check, `command -v NAME` in
shell scripts, and the program of every `subprocess.run/Popen/...` (and the benchmarks' `run`)
whose argument list starts with a literal. So a new tool cannot slip in without its package.
"""

from __future__ import annotations

import ast
import pathlib
import re
import shutil
import subprocess

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
PACKAGE_LIST = REPO / ".ci/packages.txt"
GROUPS = {"lab", "tests", "bench", "checker", "ci"}
# On every Debian system (Essential packages, and apt), so never listed.
ESSENTIAL = {"sh", "bash", "cat", "date", "sleep", "timeout", "test", "rm", "mkdir", "cp", "mv", "kill", "env",
             "dpkg-query", "apt-cache", "apt-get"}
# From the venv (requirements.txt), or the interpreter running the tests.
FROM_PIP = {"ansible", "ansible-playbook", "ansible-doc", "ansible-test", "ansible-lint", "molecule", "pytest",
            "python3", "/usr/bin/python3"}
# Host-side Python. Left out: lab/lab_install.py and the health daemon run inside the lab's
# containers and on gateways, whose packages the lab image and the roles install.
PYTHON_SOURCES = ["bench/**/*.py", "lab/*.py", "lab/k8s_stub/**/*.py", "tests/**/*.py", "molecule/*/tests/*.py",
                  "bin/portico-watch"]
CONTAINER_SIDE = {"lab/lab_install.py"}
SHELL_SOURCES = ["lab/*.sh", "bench/run", ".ci/*"]
RUNNERS = {"run", "Popen", "check_output", "check_call", "call", "run_cli"}


def parse_list() -> list[tuple[str, str, set[str]]]:
    entries = []
    for number, line in enumerate(PACKAGE_LIST.read_text(encoding="utf-8").splitlines(), 1):
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        assert len(fields) == 3, f"{PACKAGE_LIST.name}:{number}: expected package, command, groups: {line!r}"
        entries.append((fields[0], fields[1], set(fields[2].split(","))))
    return entries


ENTRIES = parse_list()
LISTED_COMMANDS = {command for _, command, _ in ENTRIES}


def python_files() -> list[pathlib.Path]:
    files = {path for pattern in PYTHON_SOURCES for path in REPO.glob(pattern)}
    return sorted(path for path in files if str(path.relative_to(REPO)) not in CONTAINER_SIDE)


def _literal_strings(node: ast.AST) -> list[str]:
    """"a", ("a", "b"), (("a", "pkg"), ...) and {"a": "pkg"}: the command names (first elements, keys)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        names = []
        for element in node.elts:
            names += _literal_strings(element.elts[0] if isinstance(element, ast.Tuple) and element.elts else element)
        return names
    if isinstance(node, ast.Dict):
        return [key.value for key in node.keys if isinstance(key, ast.Constant) and isinstance(key.value, str)]
    return []


def _call_name(node: ast.Call) -> str:
    return node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")


def _calls_which(node: ast.AST) -> bool:
    return any(isinstance(n, ast.Call) and _call_name(n) == "which" for n in ast.walk(node))


def checked_and_run(path: pathlib.Path) -> tuple[set[str], set[str]]:
    """(commands the file checks for, commands it runs) in one Python file (loops: _comprehension_checks)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    checked: set[str] = set()
    ran: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = _call_name(node)
            if name == "which" and node.args:
                checked.update(_literal_strings(node.args[0]))
            elif name == "check_prerequisites":
                for arg in node.args:
                    checked.update(_literal_strings(arg))
            elif name in RUNNERS and node.args and isinstance(node.args[0], ast.List) and node.args[0].elts:
                ran.update(_literal_strings(node.args[0].elts[0]))
        elif isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "REQUIRED_TOOLS" for t in node.targets):
            checked.update(_literal_strings(node.value))
    return checked, ran


def _comprehension_checks(tree: ast.AST) -> set[str]:
    """Names iterated by a comprehension or loop that calls shutil.which on them."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.GeneratorExp, ast.ListComp, ast.SetComp, ast.DictComp)) and _calls_which(node):
            for generator in node.generators:
                names.update(_literal_strings(generator.iter))
        elif isinstance(node, ast.For) and _calls_which(node):
            names.update(_literal_strings(node.iter))
    return names


def shell_checks(path: pathlib.Path) -> set[str]:
    return set(re.findall(r"command -v \"?([A-Za-z0-9_.+-]+)\"?", path.read_text(encoding="utf-8")))


def test_the_list_is_well_formed():
    assert ENTRIES
    for package, command, groups in ENTRIES:
        assert package == "-" or re.fullmatch(r"[a-z0-9][a-z0-9+.-]+", package), package
        assert command == "-" or re.fullmatch(r"/?[A-Za-z0-9_./+-]+", command), command
        assert groups <= GROUPS, f"{package} {command}: unknown group(s) {groups - GROUPS} (known: {sorted(GROUPS)})"
    commands = [command for _, command, _ in ENTRIES if command != "-"]
    assert len(commands) == len(set(commands)), "a command is listed twice"


def test_install_deps_installs_exactly_the_list():
    listed = list(dict.fromkeys(package for package, _, _ in ENTRIES if package != "-"))
    printed = subprocess.run(["bash", str(REPO / ".ci/install-deps"), "--list"], capture_output=True, text=True,
                             check=True).stdout.split()
    assert printed == listed


def test_lab_sh_and_bench_read_the_list():
    assert ".ci/packages.txt" in (REPO / "lab/lab.sh").read_text(encoding="utf-8")
    assert ".ci/packages.txt" in (REPO / "bench/lib/netns_topology.py").read_text(encoding="utf-8")


@pytest.mark.parametrize("path", python_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_every_command_python_code_checks_or_runs_is_listed(path):
    checked, ran = checked_and_run(path)
    checked |= _comprehension_checks(ast.parse(path.read_text(encoding="utf-8")))
    unlisted = sorted((checked | ran) - LISTED_COMMANDS - ESSENTIAL - FROM_PIP)
    assert not unlisted, f"{path.relative_to(REPO)} needs {unlisted}: add their Debian packages to .ci/packages.txt"


@pytest.mark.parametrize("path", sorted({p for pattern in SHELL_SOURCES for p in REPO.glob(pattern) if p.is_file()}),
                         ids=lambda p: str(p.relative_to(REPO)))
def test_every_command_shell_scripts_check_is_listed(path):
    unlisted = sorted(shell_checks(path) - LISTED_COMMANDS - ESSENTIAL - FROM_PIP)
    assert not unlisted, f"{path.relative_to(REPO)} checks for {unlisted}: add their Debian packages to .ci/packages.txt"


def test_the_scan_finds_checks_and_commands(tmp_path):
    """The scanner itself: each way of checking or running a command is seen."""
    source = tmp_path / "sample.py"
    source.write_text(
        "import shutil, subprocess\n"
        "shutil.which('wrk')\n"
        "missing = [t for t, p in (('ip', 'iproute2'), ('nft', 'nftables')) if shutil.which(t) is None]\n"
        "ok = all(shutil.which(tool) for tool in ('vtysh', 'unshare'))\n"
        "check_prerequisites(('iperf3',))\n"
        "subprocess.run(['openssl', 'req'], check=True)\n"
        "REQUIRED_TOOLS = ('nginx',)\n",
        encoding="utf-8")
    checked, ran = checked_and_run(source)
    checked |= _comprehension_checks(ast.parse(source.read_text(encoding="utf-8")))
    assert checked == {"wrk", "ip", "nft", "vtysh", "unshare", "iperf3", "nginx"}
    assert ran == {"openssl"}


@pytest.mark.skipif(shutil.which("dpkg-query") is None or shutil.which("apt-cache") is None, reason="not Debian")
def test_each_installed_package_ships_its_command():
    """install-deps --dry-run checks the installed packages against the list (dpkg's file lists)."""
    run = subprocess.run(["bash", str(REPO / ".ci/install-deps"), "--dry-run"], capture_output=True, text=True,
                         check=False, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
