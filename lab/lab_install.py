"""Install lab files and services inside one lab container, idempotently.

up.yml runs this with `podman exec -i <container> python3 -c <this file>` and
the job as JSON on stdin:
    {"files": [{"path": "/usr/local/bin/x", "mode": "0755", "content": "..."}],
     "units": {"x.service": ["/usr/local/bin/x", "/etc/systemd/system/x.service"]},
     "stopped_units": ["y.service"]}
Files are rewritten only when their content or mode differs; each unit is
enabled and started, and restarted when one of its files changed; each stopped
unit (one an earlier lab mode started, e.g. BIRD on the router) is stopped and
disabled. Prints {"changed": [...]} for Ansible's changed_when.

One podman exec per container instead of one Ansible task per file and unit
through the podman connection (several podman calls each): `up` on a running
lab takes seconds instead of about 40 s.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from typing import Any


def write_if_changed(path: str, content: str, mode: int) -> bool:
    data = content.encode()
    try:
        with open(path, "rb") as current:
            same = current.read() == data
        if same and os.stat(path).st_mode & 0o7777 == mode:
            return False
    except FileNotFoundError:
        pass
    directory = os.path.dirname(path)
    os.makedirs(directory, mode=0o755, exist_ok=True)
    # Write then rename: a service restarting meanwhile never sees half a file.
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".lab-install-")
    with os.fdopen(fd, "wb") as new:
        new.write(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)
    return True


def systemctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["systemctl", *args], capture_output=True, text=True, check=False)


def must(*args: str) -> None:
    result = systemctl(*args)
    if result.returncode != 0:
        raise RuntimeError(f"systemctl {' '.join(args)}: {result.stderr.strip()}")


def converge_unit(unit: str, files_changed: bool) -> list[str]:
    changes = []
    if systemctl("is-enabled", "--quiet", unit).returncode != 0:
        must("enable", "--quiet", unit)
        changes.append(f"enabled {unit}")
    if files_changed:
        must("restart", unit)
        changes.append(f"restarted {unit}")
    elif systemctl("is-active", "--quiet", unit).returncode != 0:
        must("start", unit)
        changes.append(f"started {unit}")
    return changes


def stop_unit(unit: str) -> list[str]:
    changes = []
    if systemctl("is-active", "--quiet", unit).returncode == 0:
        must("stop", unit)
        changes.append(f"stopped {unit}")
    if systemctl("is-enabled", "--quiet", unit).returncode == 0:
        must("disable", "--quiet", unit)
        changes.append(f"disabled {unit}")
    return changes


def main() -> int:
    job: dict[str, Any] = json.load(sys.stdin)
    written = {f["path"] for f in job["files"] if write_if_changed(f["path"], f["content"], int(f["mode"], 8))}
    changes = [f"wrote {path}" for path in sorted(written)]
    if any(path.startswith("/etc/systemd/") for path in written):
        must("daemon-reload")
    for unit, paths in job["units"].items():
        changes += converge_unit(unit, bool(written.intersection(paths)))
    for unit in job.get("stopped_units", []):
        changes += stop_unit(unit)
    print(json.dumps({"changed": changes}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
