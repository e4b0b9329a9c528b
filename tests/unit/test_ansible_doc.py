"""`ansible-doc` renders every plugin of the collection, and every role's argument spec, cleanly.

The plugins are found from the files under the collection's `plugins/` (and roles from
`roles/*/meta/argument_specs.yml`), so a new plugin is covered without editing this test. For
each one, both `ansible-doc -t <type> <name>` and `ansible-doc -t <type> --json <name>` must exit
0 with nothing on stderr (warnings such as "not found", deprecations and YAML problems all land
there), and the documentation must come from this repository's copy.

ansible-doc runs with the Makefile's environment: `ANSIBLE_CONFIG=ansible.cfg` (whose
`collections_path = ./collections` finds the collection) and `PYTHONPATH=collections`.

Speed: ansible-doc stops at the first broken plugin of a batch, so each type is first rendered in
one batch; only a batch that fails is re-run one plugin at a time to say which plugin it was.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import importlib
import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest
import yaml

REPO = pathlib.Path(__file__).resolve().parents[2]
COLLECTION = REPO / "collections/ansible_collections/portico/gateway"
NAMESPACE = "portico.gateway"
ROLES = REPO / "roles"
# Filter and test files are imported to learn the names they register (tests/conftest.py does the
# same; repeated here so this file also runs on its own).
if str(REPO / "collections") not in sys.path:
    sys.path.insert(0, str(REPO / "collections"))

# Directory under plugins/ -> ansible-doc's plugin type.
DOC_TYPES = {
    "modules": "module",
    "inventory": "inventory",
    "callback": "callback",
    "lookup": "lookup",
    "filter": "filter",
    "test": "test",
    "connection": "connection",
    "become": "become",
    "cache": "cache",
    "vars": "vars",
    "strategy": "strategy",
    "shell": "shell",
    "cliconf": "cliconf",
    "httpapi": "httpapi",
    "netconf": "netconf",
    "terminal": "terminal",
}
# Directories with no documentation of their own.
NOT_DOCUMENTED = {
    "action": "an action plugin shares the documentation of the module of the same name",
    "module_utils": "shared code",
    "plugin_utils": "shared code",
    "doc_fragments": "pulled into the plugins that extend them, and checked there",
}
# Types whose files hold several plugins (FilterModule / TestModule), documented in sidecar YAML.
MULTI = {"filter": "FilterModule", "test": "TestModule"}
# Types whose documentation must carry examples (ansible-test requires them for modules too).
EXAMPLES_REQUIRED = {"module", "inventory"}


@dataclasses.dataclass(frozen=True)
class Plugin:
    type: str  # ansible-doc -t
    name: str  # as given to ansible-doc: FQCN, or the role's name
    path: pathlib.Path  # where the documentation must come from (file, sidecar or role directory)

    def __str__(self) -> str:
        return f"{self.type}:{self.name}"


def _python_files(directory: pathlib.Path) -> list[pathlib.Path]:
    return sorted(p for p in directory.glob("*.py") if p.name != "__init__.py")


def _doc_path(source: pathlib.Path, name: str) -> pathlib.Path:
    for suffix in (".yml", ".yaml"):
        sidecar = source.with_name(name + suffix)
        if sidecar.exists():
            return sidecar
    return source


def _multi_plugin_names(source: pathlib.Path, plugin_type: str) -> list[str]:
    """Names a filter/test file registers (the file is imported like Ansible would)."""
    module = importlib.import_module(f"ansible_collections.portico.gateway.plugins.{plugin_type}.{source.stem}")
    registry = getattr(module, MULTI[plugin_type])()
    return sorted(getattr(registry, plugin_type + "s")())


def discover() -> tuple[list[Plugin], list[str]]:
    """Every documented plugin and role, and the problems met while looking for them."""
    plugins: list[Plugin] = []
    problems: list[str] = []
    plugin_root = COLLECTION / "plugins"
    for directory in sorted(p for p in plugin_root.iterdir() if p.is_dir() and p.name != "__pycache__"):
        plugin_type = DOC_TYPES.get(directory.name)
        if plugin_type is None:
            if directory.name not in NOT_DOCUMENTED:
                problems.append(f"plugins/{directory.name}: unknown plugin directory (add it to DOC_TYPES or NOT_DOCUMENTED)")
            continue
        if plugin_type in MULTI:
            seen: set[str] = set()
            for source in _python_files(directory):
                try:
                    names = _multi_plugin_names(source, plugin_type)
                except Exception as exc:  # noqa: BLE001 - reported, not raised, so the rest still runs
                    problems.append(f"plugins/{directory.name}/{source.name}: cannot list its {plugin_type}s: {exc!r}")
                    continue
                for name in names:
                    seen.add(name)
                    plugins.append(Plugin(plugin_type, f"{NAMESPACE}.{name}", _doc_path(source, name)))
            for sidecar in sorted([*directory.glob("*.yml"), *directory.glob("*.yaml")]):
                if sidecar.stem not in seen:
                    problems.append(f"plugins/{directory.name}/{sidecar.name}: documents a {plugin_type} no file registers")
        else:
            for source in _python_files(directory):
                plugins.append(Plugin(plugin_type, f"{NAMESPACE}.{source.stem}", _doc_path(source, source.stem)))
    for role in sorted(p for p in ROLES.iterdir() if (p / "meta/argument_specs.yml").exists()):
        plugins.append(Plugin("role", role.name, role))
    return plugins, problems


PLUGINS, DISCOVERY_PROBLEMS = discover()
PLUGIN_TYPES = sorted({p.type for p in PLUGINS if p.type != "role"})


def _ansible_doc() -> str:
    beside_python = pathlib.Path(sys.executable).with_name("ansible-doc")
    found = str(beside_python) if beside_python.exists() else shutil.which("ansible-doc")
    if not found:
        pytest.fail("ansible-doc not found (run through `make unit`, which puts the venv on PATH)")
    return found


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_COLLECTIONS_PATH", "ANSIBLE_FORCE_COLOR"))}
    env["ANSIBLE_CONFIG"] = str(REPO / "ansible.cfg")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "collections"), os.environ.get("PYTHONPATH")]))
    env["ANSIBLE_NOCOLOR"] = "1"
    env["COLUMNS"] = "200"
    return env


@dataclasses.dataclass(frozen=True)
class Run:
    args: tuple[str, ...]
    rc: int
    stdout: str
    stderr: str

    def explain(self) -> str:
        return f"ansible-doc {' '.join(self.args)} exited {self.rc}\nstderr:\n{self.stderr.strip() or '(empty)'}"


def _view_args(view: str, plugin_type: str) -> list[str]:
    """ansible-doc arguments before the names: the type, the roles path, and --json for the JSON view."""
    return (["-t", plugin_type] + (["-r", str(ROLES)] if plugin_type == "role" else [])
            + (["--json"] if view == "json" else []))


class Docs:
    """ansible-doc's answers, per plugin, for the text and the JSON view, plus the type listings."""

    def __init__(self) -> None:
        self.executable = _ansible_doc()
        self.env = _env()
        self.per_plugin: dict[tuple[str, Plugin], Run] = {}
        self.batches: dict[tuple[str, str], Run] = {}
        self.listings: dict[str, Run] = {}
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=max(2, 2 * (os.cpu_count() or 1)))
        try:
            self._collect()
        finally:
            self._pool.shutdown()

    def _run(self, args: list[str]) -> Run:
        done = subprocess.run([self.executable, *args], cwd=REPO, env=self.env,
                              capture_output=True, text=True, timeout=300, check=False)
        return Run(tuple(args), done.returncode, done.stdout, done.stderr)

    def _collect(self) -> None:
        by_type: dict[str, list[Plugin]] = {}
        for plugin in PLUGINS:
            by_type.setdefault(plugin.type, []).append(plugin)
        batch_jobs = {
            (view, plugin_type): self._pool.submit(self._run, _view_args(view, plugin_type) + [p.name for p in plugins])
            for plugin_type, plugins in by_type.items() for view in ("text", "json")
        }
        listing_jobs = {t: self._pool.submit(self._run, ["-t", t, "-l", NAMESPACE, "--json"]) for t in PLUGIN_TYPES}
        self.batches = {key: job.result() for key, job in batch_jobs.items()}
        self.listings = {key: job.result() for key, job in listing_jobs.items()}
        # A failed batch says little about which plugin broke it: ask again one plugin at a time.
        single_jobs = {
            (view, plugin): self._pool.submit(self._run, _view_args(view, plugin.type) + [plugin.name])
            for (view, plugin_type), run in self.batches.items() if run.rc or run.stderr.strip()
            for plugin in by_type[plugin_type]
        }
        self.per_plugin = {key: job.result() for key, job in single_jobs.items()}

    def run_for(self, view: str, plugin: Plugin) -> Run:
        return self.per_plugin.get((view, plugin)) or self.batches[(view, plugin.type)]


@pytest.fixture(scope="session")
def docs() -> Docs:
    return Docs()


def _clean(run: Run) -> None:
    assert run.rc == 0 and not run.stderr.strip(), run.explain()


def test_discovery_found_the_plugins():
    assert not DISCOVERY_PROBLEMS, "\n".join(DISCOVERY_PROBLEMS)
    types = {p.type for p in PLUGINS}
    assert {"module", "inventory", "role"} <= types, f"discovery found only {sorted(types)} under {COLLECTION}"


def test_action_plugins_are_documented_by_their_module():
    missing = [
        action.name for action in _python_files(COLLECTION / "plugins/action")
        if not any((COLLECTION / "plugins/modules" / (action.stem + suffix)).exists() for suffix in (".py", ".yml", ".yaml"))
    ]
    assert not missing, f"action plugins without a module of the same name to document them: {missing}"


@pytest.mark.parametrize("plugin", PLUGINS, ids=str)
def test_ansible_doc_text(docs, plugin):
    run = docs.run_for("text", plugin)
    _clean(run)
    headers = [line for line in run.stdout.splitlines() if line.startswith(">")]
    assert any(plugin.name in line and f"({plugin.path})" in line for line in headers), (
        f"no '> ... {plugin.name} ({plugin.path})' header in ansible-doc's output; headers: {headers}")


@pytest.mark.parametrize("plugin", PLUGINS, ids=str)
def test_ansible_doc_json(docs, plugin):
    run = docs.run_for("json", plugin)
    _clean(run)
    entry = json.loads(run.stdout).get(plugin.name)
    assert entry, f"ansible-doc --json returned nothing for {plugin.name}"
    if plugin.type == "role":
        assert entry["path"] == str(plugin.path)
        assert entry.get("entry_points"), f"role {plugin.name}: no entry points"
        for entry_point, spec in entry["entry_points"].items():
            assert spec.get("short_description"), f"role {plugin.name}: entry point {entry_point}: no short_description"
            assert spec.get("options") is not None, f"role {plugin.name}: entry point {entry_point}: no options"
        return
    doc = entry.get("doc") or {}
    assert doc.get("short_description"), f"{plugin}: no short_description"
    assert doc.get("filename") == str(plugin.path), f"{plugin}: documented from {doc.get('filename')}, expected {plugin.path}"
    short_name = plugin.name.removeprefix(NAMESPACE + ".")
    declared = doc.get("module") or doc.get("name")
    assert declared in (short_name, plugin.name), f"{plugin}: its documentation calls it {declared!r}"
    examples = entry.get("examples")
    if plugin.type in EXAMPLES_REQUIRED:
        assert examples and examples.strip(), f"{plugin}: no EXAMPLES"
    if examples:
        try:
            yaml.safe_load(examples)
        except yaml.YAMLError as exc:
            pytest.fail(f"{plugin}: EXAMPLES are not valid YAML: {exc}")


@pytest.mark.parametrize("plugin_type", PLUGIN_TYPES)
def test_ansible_doc_lists_exactly_the_plugins_on_disk(docs, plugin_type):
    run = docs.listings[plugin_type]
    _clean(run)
    listed = json.loads(run.stdout)
    expected = sorted(p.name for p in PLUGINS if p.type == plugin_type)
    assert sorted(listed) == expected, f"ansible-doc lists {sorted(listed)}, the files hold {expected}"
    undocumented = sorted(name for name, description in listed.items() if description == "UNDOCUMENTED")
    assert not undocumented, f"undocumented {plugin_type} plugins: {undocumented}"
