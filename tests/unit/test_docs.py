"""The variable reference is generated from the argument specs and must be current."""

import pathlib
import runpy

REPO = pathlib.Path(__file__).resolve().parents[2]


def test_variable_reference_is_up_to_date():
    generator = runpy.run_path(str(REPO / "docs/tools/gen_variables.py"))
    assert (REPO / "docs/variables.md").read_text() == generator["render"](), "run: python3 docs/tools/gen_variables.py"


def test_every_role_has_argument_specs():
    roles = [p for p in (REPO / "roles").iterdir() if p.is_dir()]
    assert roles and all((p / "meta/argument_specs.yml").exists() for p in roles)
