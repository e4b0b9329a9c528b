"""The archive the healthcheck role ships portico-healthd's code in (lookup module_utils_archive)."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import zipfile

from ansible_collections.portico.gateway.plugins.lookup.module_utils_archive import archive_bytes, write_archive

REPO = pathlib.Path(__file__).resolve().parents[2]
DAEMON = REPO / "roles/healthcheck/files/portico-healthd"
PACKAGES = ["model", "dataplane", "health"]


def test_same_sources_give_the_same_bytes_and_name(tmp_path):
    first = write_archive(PACKAGES, str(tmp_path / "a"))
    second = write_archive(PACKAGES, str(tmp_path / "b"))
    assert os.path.basename(first) == os.path.basename(second)
    assert pathlib.Path(first).read_bytes() == pathlib.Path(second).read_bytes() == archive_bytes(PACKAGES)


def test_a_changed_source_gives_a_new_archive(tmp_path):
    root = tmp_path / "module_utils"
    (root / "model").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "model" / "__init__.py").write_text("")
    (root / "model" / "x.py").write_text("X = 1\n")
    before = write_archive(["model"], str(tmp_path / "out"), root=str(root))
    (root / "model" / "x.py").write_text("X = 2\n")
    after = write_archive(["model"], str(tmp_path / "out"), root=str(root))
    assert before != after and os.path.exists(before)
    with zipfile.ZipFile(after) as archive:
        assert archive.read("ansible_collections/portico/gateway/plugins/module_utils/model/x.py") == b"X = 2\n"
        assert not [name for name in archive.namelist() if "__pycache__" in name]


def test_the_daemon_runs_from_the_archive_alone(tmp_path):
    """Installed as the role does it: the entry point and module_utils.zip, no source tree on the path."""
    install = tmp_path / "lib"
    install.mkdir()
    (install / "module_utils.zip").write_bytes(archive_bytes(PACKAGES))
    (install / "portico-healthd").write_bytes(DAEMON.read_bytes())
    config = tmp_path / "healthd.json"
    config.write_text('{"metrics_port": 0}\n')
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "PORTICO_PYTHONPATH")}
    result = subprocess.run([sys.executable, "-I", str(install / "portico-healthd"), "check-config", str(config)],
                            capture_output=True, text=True, env=env, cwd=tmp_path, check=False)
    assert result.returncode == 0, result.stderr
    bad = tmp_path / "bad.json"
    bad.write_text('{"all_down": "sometimes"}\n')
    refused = subprocess.run([sys.executable, "-I", str(install / "portico-healthd"), "check-config", str(bad)],
                             capture_output=True, text=True, env=env, cwd=tmp_path, check=False)
    assert refused.returncode == 1 and "all_down" in refused.stderr
