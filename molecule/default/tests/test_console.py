"""portico-console in a real browser (headless Chromium over WebDriver) against the lab.

The console runs on the controller (this host) as it would in production: bin/portico-console
with the lab inventory, collecting through playbooks/status.yml in a loop. The browser loads
the LB list and an LB's page, a backend is stopped on its node, and the page that stays open
(it refreshes itself) must show the backend down within the bound; screenshots of each page are
kept under .molecule-results/console/.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import time

import pytest

REPO = pathlib.Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "lab"))
from webdriver import Browser  # noqa: E402

import labtools  # noqa: E402

SHOTS = REPO / ".molecule-results" / "console"
# Where the converge of this scenario leaves its report (molecule.yml: the plan callback's plan_dir).
ROLLOUT = REPO / ".molecule-results" / "default" / "rollout" / "plan.json"
WEB = "198.51.100.10"
STOPPED = "192.0.2.11"  # node1
# Detection by the health checker (< 1 s), then one status run (podman exec per task) and the
# page's own refresh (2 s): what an operator waits for.
SHOWN_DOWN_WITHIN_S = 20.0


@pytest.fixture(scope="module")
def console(tmp_path_factory):
    state = tmp_path_factory.mktemp("console")
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1",
           "PATH": f"{pathlib.Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.Popen([sys.executable, str(REPO / "bin/portico-console"), "--inventory", str(REPO / "inventories/lab"),
                             "--listen", "127.0.0.1:0", "--state-dir", str(state), "--interval", "0.2",
                             "--rollout", str(ROLLOUT), "--plan", str(state / "no-plan.json")],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env, cwd=REPO)
    try:
        line = proc.stdout.readline().strip()
        assert line.startswith("listening on "), line
        yield "http://" + line.removeprefix("listening on ")
    finally:
        proc.terminate()
        proc.wait(20)


@pytest.fixture(scope="module")
def browser():
    with Browser() as opened:
        yield opened


@pytest.fixture
def node1_restored():
    yield
    labtools.sh("node1", "systemctl start portico-lab-echo")


def shot(browser: Browser, name: str) -> None:
    path = browser.screenshot(SHOTS / f"{name}.png")
    print(f"screenshot: {path.relative_to(REPO)}")


def test_the_console_shows_every_lb_with_its_health_and_a_stopped_backend_within_seconds(console, browser, node1_restored):
    labtools.install_probe("client")
    started = time.monotonic()
    browser.get(console + "/")
    # The first status run: the page fills itself in.
    labtools.wait_for(lambda: browser.find("tr[data-lb='web'] td.health"), 60, "the LB list", every=0.25)
    first = time.monotonic() - started
    # Steady traffic for the rates (two status runs see the counters move), 50 connections/s.
    traffic = labtools.probe("client", "--target", WEB, "--port", "80", "--every", "20", "--duration", "12")
    labtools.wait_for(lambda: browser.text("tr[data-lb='web'] td.new") not in ("", "-", "0.0 /s"), 40,
                      "traffic rates on the list", every=0.25)
    web = browser.text("tr[data-lb='web']")
    assert WEB in web and "3/3" in web and "gw1" in web and "inventory" in web, web
    for name in ("web-v6", "restricted", "snat"):
        assert "3/3" in browser.text(f"tr[data-lb='{name}']"), name
    services = [row for row in browser.script(
        "return [...document.querySelectorAll('#lbs tr[data-lb]')].map(r => r.innerText)") if "\tService\t" in row]
    assert services, "the Kubernetes Services are listed with their source"
    assert "ok" in browser.text("tr[data-gateway='gw1']")
    shot(browser, "1-load-balancers")

    browser.get(console + "/lb/web")
    labtools.wait_for(lambda: browser.find(f"tr[data-backend='{STOPPED}'] td.state"), 20, "the backend table")
    assert browser.text(f"tr[data-backend='{STOPPED}'] td.state") == "up"
    shot(browser, "2-lb-web")
    sent = labtools.finish(traffic)
    assert sent["failed"] == 0 and sent["ok"] > 100, sent

    stopped = float(labtools.sh("node1", "systemctl stop portico-lab-echo && date +%s.%N"))
    # The page is not reloaded: it refreshes itself.
    labtools.wait_for(lambda: browser.text(f"tr[data-backend='{STOPPED}'] td.state") == "DOWN", SHOWN_DOWN_WITHIN_S + 10,
                      "the stopped backend shown down", every=0.1)
    shown = time.time() - stopped
    labtools.report("console_backend_down_shown", seconds=round(shown, 2), bound_s=SHOWN_DOWN_WITHIN_S,
                    first_page_s=round(first, 1))
    assert shown <= SHOWN_DOWN_WITHIN_S, f"shown down after {shown:.1f}s"
    assert browser.text("#lb-health") == "2/3"
    shot(browser, "3-lb-web-backend-down")

    labtools.sh("node1", "systemctl start portico-lab-echo")
    labtools.wait_for(lambda: browser.text(f"tr[data-backend='{STOPPED}'] td.state") == "up", 30, "the backend up again",
                      every=0.2)

    browser.get(console + "/rollouts")
    labtools.wait_for(lambda: browser.find("#rollout"), 10, "the rollouts page")
    rollout = browser.text("#rollout")
    assert "succeeded" in rollout and "gw1" in rollout, rollout
    shot(browser, "4-rollouts")
    labtools.report("console_test", seconds=round(time.monotonic() - started, 1))
