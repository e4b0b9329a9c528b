"""Helpers for tests that talk to the stand-in the way users do: kubectl subprocesses with
their own discovery cache (so one test's cluster never leaks into another's), and raw
requests for what the typed clients hide (status codes, Warning headers, content types)."""

from __future__ import annotations

import json
import pathlib
import shutil
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

KUBECTL = shutil.which("kubectl")
EXAMPLES = pathlib.Path(__file__).resolve().parent / "fixtures" / "examples"
WIDGETS_CRD = EXAMPLES / "widgets-crd.yaml"


def kubectl(kubeconfig: pathlib.Path, *args: str, check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run kubectl against the stand-in the kubeconfig names; with `check`, a failure raises
    with kubectl's stderr in the message."""
    if KUBECTL is None:
        raise RuntimeError("kubectl is not installed")
    cache = kubeconfig.parent / f"{kubeconfig.name}.kubectl-cache"
    proc = subprocess.run([KUBECTL, "--kubeconfig", str(kubeconfig), "--cache-dir", str(cache), *args],
                          capture_output=True, text=True, input=stdin, timeout=60, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


@dataclass
class Reply:
    status: int
    headers: Any
    body: Any

    @property
    def warnings(self) -> list[str]:
        return self.headers.get_all("Warning") or []


def request(url: str, method: str = "GET", body: Any = None, content_type: str = "application/json",
            accept: str = "application/json") -> Reply:
    """One HTTP request to the stand-in; JSON bodies are encoded and decoded."""
    data = None if body is None else body.encode() if isinstance(body, str) else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": content_type, "Accept": accept})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            raw = resp.read()
            return Reply(resp.status, resp.headers, json.loads(raw) if raw else None)
    except urllib.error.HTTPError as err:
        raw = err.read()
        return Reply(err.code, err.headers, json.loads(raw) if raw else None)
