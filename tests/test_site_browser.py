"""The built site in a real browser: Chromium headless (Debian package) loads pages over file://.

Chromium is driven through the DevTools protocol over `--remote-debugging-pipe` (NUL-separated
JSON on file descriptors 3 and 4), so the test needs nothing beyond the standard library. Each
page must load with no console error, no uncaught exception and no failed request; screenshots
in light and dark mode are saved under artifacts/screenshots/ as test artefacts.
"""
from __future__ import annotations

import base64
import fcntl
import json
import os
import shutil
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
from helpers import ROOT, SAMPLE_FLOW_RUN, build_sample, sample_flow_record

from fastflow.site import SiteData, build_site, render_flow_pages, write_pages

SCREENSHOTS = ROOT / "artifacts" / "screenshots"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-extensions", "--hide-scrollbars", "--remote-debugging-pipe"]

pytestmark = pytest.mark.slow


class Browser:
    """A minimal DevTools-protocol client over Chromium's debugging pipe."""

    def __init__(self, profile: Path) -> None:
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()

        def wire_fds() -> None:  # the browser reads commands on fd 3 and answers on fd 4
            # via fds >= 10 first: the pipe ends themselves may be fds 3 or 4
            high_r = fcntl.fcntl(to_chrome_r, fcntl.F_DUPFD, 10)
            high_w = fcntl.fcntl(from_chrome_w, fcntl.F_DUPFD, 10)
            os.dup2(high_r, 3)
            os.dup2(high_w, 4)

        # fds 3 and 4 are kept open in the child because they are listed in pass_fds (the
        # close happens after preexec_fn has wired them).
        self.proc = subprocess.Popen(
            [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
            preexec_fn=wire_fds, pass_fds=(3, 4, to_chrome_r, from_chrome_w),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict] = []

    def _read(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            if time.monotonic() > deadline:
                raise TimeoutError("Chromium did not answer in time")
            chunk = os.read(self._from_chrome, 1 << 20)
            if not chunk:
                raise RuntimeError("Chromium closed the debugging pipe")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def send(self, method: str, session: str | None = None, timeout: float = 30, **params):
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._to_chrome, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str, session: str, timeout: float = 30) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            for event in self.events:
                if event.get("method") == method and event.get("sessionId") == session:
                    self.events.remove(event)
                    return event
            self.events.append(self._read(deadline))

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=10)
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._to_chrome)
        os.close(self._from_chrome)


def load(browser: Browser, url: str, dark: bool, shot: Path) -> list[str]:
    """Open `url` in a fresh tab, save a full-page screenshot; return every problem seen."""
    target = browser.send("Target.createTarget", url="about:blank")["targetId"]
    session = browser.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
    for domain in ("Page", "Runtime", "Log", "Network"):
        browser.send(f"{domain}.enable", session)
    browser.send("Emulation.setEmulatedMedia", session, features=[
        {"name": "prefers-color-scheme", "value": "dark" if dark else "light"}])
    browser.send("Emulation.setDeviceMetricsOverride", session, width=1280, height=900,
                 deviceScaleFactor=1, mobile=False)
    browser.events.clear()
    browser.send("Page.navigate", session, url=url)
    browser.wait_for("Page.loadEventFired", session)
    size = browser.send("Page.getLayoutMetrics", session)["cssContentSize"]
    shot.write_bytes(base64.b64decode(browser.send(
        "Page.captureScreenshot", session, format="png", captureBeyondViewport=True,
        clip={"x": 0, "y": 0, "width": 1280, "height": min(size["height"], 4000), "scale": 1},
    )["data"]))
    problems = [json.dumps(e["params"])[:300] for e in browser.events
                if e.get("sessionId") == session and _is_problem(e)]
    browser.send("Target.closeTarget", targetId=target)
    return problems


def _is_problem(event: dict) -> bool:
    method, params = event.get("method"), event.get("params", {})
    if method == "Runtime.consoleAPICalled":
        return params.get("type") in ("error", "warning", "assert")
    if method == "Log.entryAdded":
        return params.get("entry", {}).get("level") in ("error", "warning")
    return method in ("Runtime.exceptionThrown", "Network.loadingFailed")


@pytest.fixture(scope="module")
def built_site(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("site")
    data, runs, logs = build_sample(tmp)
    out = tmp / "out"
    build_site(data, runs, logs, out)
    return out


def test_pages_load_in_chromium_without_errors(built_site, tmp_path):
    if CHROMIUM is None:
        pytest.fail("Chromium is missing: apt-get install -y chromium")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    run_page = sorted((built_site / "runs" / "etl_daily").rglob("*.html"))[-1]
    pages = {
        "overview": built_site / "index.html",
        "pipeline": built_site / "pipelines" / "etl_daily" / "index.html",
        "history": built_site / "pipelines" / "etl_daily" / "history-2.html",
        "run": run_page,
    }
    browser = Browser(tmp_path / "profile")
    try:
        problems = {}
        for name, path in pages.items():
            for theme in ("light", "dark"):
                shot = SCREENSHOTS / f"{name}-{theme}.png"
                problems[f"{name}/{theme}"] = load(browser, path.as_uri(), theme == "dark", shot)
                assert shot.stat().st_size > 10_000
    finally:
        browser.close()
    assert problems == {key: [] for key in problems}


def test_a_broken_link_would_be_reported(tmp_path):
    """The detector itself works: a page with a missing stylesheet yields a failed request."""
    if CHROMIUM is None:
        pytest.fail("Chromium is missing: apt-get install -y chromium")
    page = tmp_path / "bad.html"
    page.write_text('<!DOCTYPE html><html lang="en"><head><title>x</title>'
                    '<link rel="stylesheet" href="missing.css"></head><body>x</body></html>')
    browser = Browser(tmp_path / "profile")
    try:
        problems = load(browser, page.as_uri(), False, tmp_path / "bad.png")
    finally:
        browser.close()
    assert any("missing.css" in p or "ERR_FILE_NOT_FOUND" in p for p in problems), problems


def test_flow_pages_load_in_chromium_without_errors(built_site, tmp_path):
    """A flow run's page (the DAG as inline SVG) and its flow's page, light and dark."""
    if CHROMIUM is None:
        pytest.fail("Chromium is missing: apt-get install -y chromium")
    now = datetime(2026, 12, 2, 9, 0, tzinfo=timezone.utc)
    pages = render_flow_pages(SiteData(now=now), "weather", [sample_flow_record()])
    write_pages(pages, built_site)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    browser = Browser(tmp_path / "profile")
    try:
        problems = {}
        for name, rel in (("flow-run", f"flows/weather/2026/12/{SAMPLE_FLOW_RUN}.html"),
                          ("flow", "flows/weather/index.html")):
            for theme in ("light", "dark"):
                shot = SCREENSHOTS / f"{name}-{theme}.png"
                problems[f"{name}/{theme}"] = load(browser, (built_site / rel).as_uri(),
                                                   theme == "dark", shot)
                assert shot.stat().st_size > 10_000
    finally:
        browser.close()
    assert problems == {key: [] for key in problems}
