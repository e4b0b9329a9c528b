"""The kernel accepts every golden ruleset (``nft -c`` in a private network namespace).

tests/unit/test_nft_render.py proves each golden file is what the renderer writes; this proves
nft would load it, so a render change that nft refuses fails here.
"""

from __future__ import annotations

import pathlib

import pytest

from conftest import REPO, Netns

GOLDEN = REPO / "tests" / "golden"


def nft_check(ns: Netns, script: str, tmp_path: pathlib.Path) -> tuple[int, str]:
    path = tmp_path / "ruleset.nft"
    path.write_text(script)
    result = ns.run("nft", "-c", "-f", str(path), check=False)
    return result.returncode, result.stderr


@pytest.mark.parametrize("case", sorted(path.stem for path in GOLDEN.glob("*.nft")))
def test_golden_passes_nft_check(case: str, netns: Netns, tmp_path: pathlib.Path) -> None:
    code, stderr = nft_check(netns, (GOLDEN / f"{case}.nft").read_text(), tmp_path)
    assert code == 0, stderr


def test_nft_check_catches_a_broken_ruleset(netns: Netns, tmp_path: pathlib.Path) -> None:
    script = (GOLDEN / "lab.nft").read_text().replace("vmap @dispatch4", "vmap @dispatch_missing")
    code, stderr = nft_check(netns, script, tmp_path)
    assert code != 0 and "dispatch_missing" in stderr
