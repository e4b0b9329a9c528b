"""No secret in any log or artifact: collect what a lab scenario leaves behind and grep it.

The secrets are the lab's own: the BGP MD5 password (the router's copy in lab/topology.yml and
the gateways' vaulted one, decrypted here), the vault password (lab/vault-password) and the
Kubernetes stand-in's bearer token (its kubeconfig). Each is searched raw and base64-encoded.

What is searched, per scenario, under ``$PORTICO_ARTIFACTS`` (default /tmp/portico-artifacts):
``collect`` copies every running lab container's journal (every unit: FRR, keepalived, BIRD,
portico-healthd, ...), /var/log, /var/lib/portico and /run/portico, and the controller's
stand-in log; the scenario's verify step adds what it produced (the plan with ``-v``, the
watcher's log). Configuration files that must hold a secret (frr.conf, bird.conf) are not
artifacts and are not collected. Each scenario's verify step scans its own artifacts and those
of the scenarios before it in ``make molecule`` (SCENARIOS), so the last one covers all of them.

    python3 -m lab.secret_grep collect SCENARIO
    python3 -m lab.secret_grep scan [PATH ...]     # exit 1 on a hit; prints the numbers as JSON
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tarfile
from dataclasses import dataclass, field
from typing import Any

import yaml

REPO = pathlib.Path(__file__).resolve().parents[1]
ARTIFACTS = pathlib.Path(os.environ.get("PORTICO_ARTIFACTS", "/tmp/portico-artifacts"))
KUBECONFIG = pathlib.Path("/run/portico-lab/kubeconfig")
STUB_LOG = pathlib.Path("/run/portico-lab/k8s-stub.log")
VAULT_PASSWORD_FILE = REPO / "lab/vault-password"
LAB_LABEL = "portico.lab"
# make molecule's order: a scenario's check covers its own artifacts and those of the ones before
# it (a later scenario's are from an earlier run, not this one's).
SCENARIOS = ("default", "ha", "bgp")
# Inside each container: logs and Portico's runtime and state artifacts (not /etc: configuration).
CONTAINER_PATHS = ("var/log", "var/lib/portico", "run/portico")


class _VaultLoader(yaml.SafeLoader):
    """Reads ``!vault`` values as their ciphertext."""


_VaultLoader.add_constructor("!vault", lambda loader, node: {"__vault__": loader.construct_scalar(node)})
# Other Ansible tags (!unsafe): their plain value.
_VaultLoader.add_multi_constructor("!", lambda loader, _suffix, node: loader.construct_scalar(node))


def _decrypt(ciphertext: str, password: str) -> str:
    # Imported here: only a controller with ansible-core decrypts; `scan` of plain values needs none.
    from ansible.parsing.vault import VaultLib, VaultSecret  # pylint: disable=import-outside-toplevel

    vault = VaultLib([("default", VaultSecret(password.encode()))])
    return vault.decrypt(ciphertext.encode()).decode()


def _vaulted(value: Any) -> list[tuple[str, str]]:
    """(variable, ciphertext) of every vaulted value in a YAML document."""
    found: list[tuple[str, str]] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, dict) and set(item) == {"__vault__"}:
                found.append((str(key), item["__vault__"]))
            else:
                found.extend(_vaulted(item))
    elif isinstance(value, list):
        for item in value:
            found.extend(_vaulted(item))
    return found


def secrets() -> dict[str, str]:
    """Name -> value of every lab secret (the ones that exist on this machine)."""
    found: dict[str, str] = {}
    password = VAULT_PASSWORD_FILE.read_text().strip()
    found["vault password"] = password
    topology = yaml.safe_load((REPO / "lab/topology.yml").read_text())
    found["BGP password (router)"] = str(topology["portico_lab_bgp_password"])
    for path in sorted((REPO / "inventories").rglob("*.yml")):
        for variable, ciphertext in _vaulted(yaml.load(path.read_text(), Loader=_VaultLoader)):
            found[f"{variable} ({path.relative_to(REPO)})"] = _decrypt(ciphertext, password)
    # The stand-in's built-in token (read from its source: importing the stand-in is not needed).
    default_token = re.search(r'^DEFAULT_TOKEN = "([^"]+)"', (REPO / "lab/k8s_stub/apiserver.py").read_text(), re.MULTILINE)
    if default_token:
        found["Kubernetes token (stand-in default)"] = default_token.group(1)
    if KUBECONFIG.exists():
        for user in yaml.safe_load(KUBECONFIG.read_text()).get("users") or []:
            token = (user.get("user") or {}).get("token")
            if token:
                found[f"Kubernetes token ({user.get('name')})"] = str(token)
    return {name: value for name, value in found.items() if value}


def needles(values: dict[str, str]) -> dict[bytes, str]:
    """The byte strings to look for: each secret raw and base64-encoded."""
    result: dict[bytes, str] = {}
    for name, value in values.items():
        raw = value.encode()
        result[raw] = name
        result[base64.b64encode(raw).rstrip(b"=")] = f"{name}, base64"
    return result


# --- collect ---------------------------------------------------------------------------------


def _podman(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["podman", *args], capture_output=True, check=check, timeout=300)


def lab_containers() -> list[str]:
    listing = _podman("ps", "--filter", f"label={LAB_LABEL}", "--format", "{{.Names}}").stdout.decode()
    return sorted(name for name in listing.split() if name)


def collect(scenario: str) -> pathlib.Path:
    """Copy the running lab's logs and artifacts into ARTIFACTS/SCENARIO/containers."""
    target = ARTIFACTS / scenario / "containers"
    for container in lab_containers():
        where = target / container
        where.mkdir(parents=True, exist_ok=True)
        journal = _podman("exec", container, "journalctl", "--no-pager", "-o", "short-iso", check=False)
        (where / "journal.txt").write_bytes(journal.stdout + journal.stderr)
        paths = [p for p in CONTAINER_PATHS if _podman("exec", container, "test", "-e", f"/{p}", check=False).returncode == 0]
        if paths:
            archive = _podman("exec", container, "tar", "-C", "/", "-cf", "-", *paths, check=False).stdout
            with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
                # The "data" filter (no absolute paths, links out or devices) exists from Python
                # 3.11.4 on; Debian 12's python3 3.11.2 lacks it, and the archive is our own
                # container's files anyway.
                if hasattr(tarfile, "data_filter"):
                    tar.extractall(where, filter="data")
                else:
                    tar.extractall(where)
    if STUB_LOG.exists():
        (ARTIFACTS / scenario / "k8s-stub.log").write_bytes(STUB_LOG.read_bytes())
    return target


# --- scan ------------------------------------------------------------------------------------


@dataclass
class ScanResult:
    secrets: int  # distinct secret values
    needles: int  # byte strings searched (each secret raw and in base64)
    files: int = 0
    bytes: int = 0
    hits: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"secrets": self.secrets, "needles": self.needles, "files": self.files, "bytes": self.bytes, "hits": self.hits}


def scan(paths: list[pathlib.Path], values: dict[str, str] | None = None) -> ScanResult:
    """Every regular file under the paths (symlinks are not followed), searched for every needle."""
    values = secrets() if values is None else values
    wanted = needles(values)
    result = ScanResult(secrets=len(set(values.values())), needles=len(wanted))
    for root in paths:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink())
        for path in files:
            data = path.read_bytes()
            result.files += 1
            result.bytes += len(data)
            for needle, name in wanted.items():
                count = data.count(needle)
                if count:
                    result.hits.append({"file": str(path), "secret": name, "count": count})
    return result


# --- one scenario ------------------------------------------------------------------------------


def _run(command: list[str], log: pathlib.Path, timeout: float) -> subprocess.CompletedProcess:
    bin_dir = pathlib.Path(sys.executable).parent
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1",
           "ANSIBLE_VAULT_PASSWORD_FILE": str(VAULT_PASSWORD_FILE), "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}"}
    proc = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, check=False, timeout=timeout)
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(proc.stdout + proc.stderr)
    return proc


def verify_scenario(scenario: str, inventory: str, plan_args: tuple[str, ...] = (), watcher: bool = False) -> ScanResult:
    """What a pipeline keeps of the scenario's site, produced now, plus the lab's logs; then every
    scenario's artifacts so far, scanned. ``plan_args``: extra options of the plan (a variable
    that changes a configuration holding a secret, so its diff is in the output). ``watcher``:
    one full run of bin/portico-watch at DEBUG (a site with a Kubernetes source)."""
    out = ARTIFACTS / scenario
    shutil.rmtree(out, ignore_errors=True)  # this scenario's artifacts of an earlier run
    plan = _run(["bash", ".ci/plan", inventory, str(out / "plan"), "-v", *plan_args], out / "plan" / "ansible-playbook-v.log", 900)
    assert plan.returncode == 0 and (out / "plan" / "plan.json").exists(), plan.stdout[-3000:]
    if watcher:
        watch = _run([str(REPO / "bin/portico-watch"), "-i", inventory, "--once", "--log-level", "DEBUG", "--command", "true"],
                     out / "watcher.log", 300)
        assert watch.returncode == 0, watch.stderr[-3000:]
    collect(scenario)
    covered = [name for name in SCENARIOS[:SCENARIOS.index(scenario) + 1] if (ARTIFACTS / name).is_dir()]
    result = scan([ARTIFACTS / name for name in covered])
    print(f"\nSECRET-GREP after {scenario}: secrets={result.secrets} needles={result.needles} "
          f"scenarios={covered} files={result.files} bytes={result.bytes} hits={len(result.hits)}")
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="action", required=True)
    sub.add_parser("collect").add_argument("scenario")
    sub.add_parser("scan").add_argument("paths", nargs="*", type=pathlib.Path)
    args = parser.parse_args()
    if args.action == "collect":
        print(collect(args.scenario))
        return 0
    result = scan(args.paths or [ARTIFACTS])
    json.dump(result.to_dict(), sys.stdout, indent=1)
    print()
    return 1 if result.hits else 0


if __name__ == "__main__":
    sys.exit(main())
