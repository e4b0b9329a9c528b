"""The variable reference is generated from the argument specs and must be current; every role
documents every variable it defaults."""

import pathlib
import runpy

import pytest
import yaml

REPO = pathlib.Path(__file__).resolve().parents[2]
ROLES = sorted(p for p in (REPO / "roles").iterdir() if p.is_dir())


def _main_spec_options(role: pathlib.Path) -> dict:
    specs = yaml.safe_load((role / "meta/argument_specs.yml").read_text())["argument_specs"]
    return specs.get("main", {}).get("options") or {}


def test_variable_reference_is_up_to_date():
    generator = runpy.run_path(str(REPO / "docs/tools/gen_variables.py"))
    assert (REPO / "docs/variables.md").read_text() == generator["render"](), "run: python3 docs/tools/gen_variables.py"


def test_every_role_has_argument_specs():
    assert ROLES
    missing = [role.name for role in ROLES if not (role / "meta/argument_specs.yml").exists()]
    assert not missing, f"roles without meta/argument_specs.yml: {missing}"


@pytest.mark.parametrize("role", ROLES, ids=lambda role: role.name)
def test_every_default_is_in_the_argument_spec(role):
    """docs/variables.md lists the main entry point's options: a default without one is invisible."""
    defaults_file = role / "defaults/main.yml"
    if not defaults_file.exists():
        pytest.skip(f"role {role.name} has no defaults/main.yml")
    defaults = yaml.safe_load(defaults_file.read_text()) or {}
    options = _main_spec_options(role)
    missing = [name for name in defaults if name not in options]
    assert not missing, (
        f"role {role.name}: defaults/main.yml sets {', '.join(missing)} but meta/argument_specs.yml "
        "(entry point main) does not describe them; add them, then run python3 docs/tools/gen_variables.py")


@pytest.mark.parametrize("role", ROLES, ids=lambda role: role.name)
def test_every_spec_entry_without_a_default_is_required(role):
    """An option with neither a default nor required: true has no documented value."""
    defaults_file = role / "defaults/main.yml"
    defaults = (yaml.safe_load(defaults_file.read_text()) or {}) if defaults_file.exists() else {}
    loose = [name for name, option in _main_spec_options(role).items()
             if name not in defaults and not (option or {}).get("required") and "default" not in (option or {})]
    assert not loose, (
        f"role {role.name}: meta/argument_specs.yml describes {', '.join(loose)} with no default in "
        "defaults/main.yml and no required: true")
