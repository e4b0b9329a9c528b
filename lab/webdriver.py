"""A small W3C WebDriver client for headless Chromium (Debian's chromium and chromium-driver).

Enough for the lab's browser tests: start chromedriver on a loopback port, open a session with a
fresh profile, load pages, find elements, read their text, run a script, take screenshots.
Nothing is downloaded: the browser and the driver are the Debian packages (.ci/packages.txt).
"""

from __future__ import annotations

import base64
import contextlib
import json
import pathlib
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from typing import Any

# Running as root in CI: no sandbox; nothing in the background talks to the network.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1400,1000"]
ELEMENT = "element-6066-11e4-a52e-4f735466cecf"


class WebDriverError(RuntimeError):
    pass


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Browser:
    """One chromedriver process and one session; use as a context manager."""

    def __init__(self, driver: str = "chromedriver", binary: str = "/usr/bin/chromium") -> None:
        path = shutil.which(driver)
        if path is None or shutil.which("chromium") is None:
            raise WebDriverError("chromium and chromedriver are needed (Debian: chromium chromium-driver)")
        self.port = _free_port()
        self.profile = tempfile.TemporaryDirectory(prefix="portico-chromium-")
        self.driver = subprocess.Popen([path, f"--port={self.port}", "--allowed-ips=127.0.0.1"],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.base = f"http://127.0.0.1:{self.port}"
        self.session = ""
        deadline = time.monotonic() + 20
        while True:
            try:
                if self._call("GET", "/status")["ready"]:
                    break
            except (OSError, WebDriverError):
                pass
            if time.monotonic() > deadline:
                self.close()
                raise WebDriverError("chromedriver did not start")
            time.sleep(0.1)
        capabilities = {"browserName": "chrome", "goog:chromeOptions": {
            "binary": binary, "args": [*CHROMIUM_ARGS, f"--user-data-dir={self.profile.name}"]}}
        self.session = self._call("POST", "/session", {"capabilities": {"alwaysMatch": capabilities}})["sessionId"]

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return json.loads(response.read())["value"]
        except urllib.error.HTTPError as err:
            raise WebDriverError(f"{method} {path}: {err.read().decode(errors='replace')[:500]}") from None

    def _session(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        return self._call(method, f"/session/{self.session}{path}", body)

    def get(self, url: str) -> None:
        self._session("POST", "/url", {"url": url})

    def find(self, css: str) -> list[str]:
        """Element ids matching a CSS selector (empty when none)."""
        return [item[ELEMENT] for item in self._session("POST", "/elements", {"using": "css selector", "value": css})]

    def text(self, css: str) -> str:
        """The visible text of the first element matching ``css`` ('' when there is none)."""
        found = self.find(css)
        if not found:
            return ""
        try:
            return self._session("GET", f"/element/{found[0]}/text")
        except WebDriverError as err:
            # The console refreshes itself: an element found a moment ago may have been replaced.
            # Like an element not there yet, it reads as '' and the caller's wait looks again.
            if "stale element reference" in str(err):
                return ""
            raise

    def script(self, source: str, *args: Any) -> Any:
        return self._session("POST", "/execute/sync", {"script": source, "args": list(args)})

    def screenshot(self, path: pathlib.Path) -> pathlib.Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(self._session("GET", "/screenshot")))
        return path

    def close(self) -> None:
        if self.session:
            with contextlib.suppress(OSError, WebDriverError):
                self._session("DELETE", "")
            self.session = ""
        self.driver.terminate()
        try:
            self.driver.wait(10)
        except subprocess.TimeoutExpired:
            self.driver.kill()
        self.profile.cleanup()

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
