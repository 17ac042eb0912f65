"""A `tunewise serve` subprocess for the server's tests: started on 127.0.0.1 with an ephemeral port
(--port 0; the address is read from the line it prints), stopped with SIGTERM as a scheduler would."""

from __future__ import annotations

import contextlib
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
BROWSER_REQUIRED = os.environ.get("TUNEWISE_TEST_BROWSER") == "required"
"""Set by .ci/run, which installs Debian's chromium: there the browser tests fail instead of skipping."""
START_SECONDS = 300
"""Loading torch and the model on 2 busy cores can take a minute; a server that is not up by then is broken."""


@dataclass
class Server:
    process: subprocess.Popen[str]
    url: str
    lines: queue.Queue[str]

    def output(self) -> str:
        """What the server printed so far (stdout and stderr)."""
        printed = []
        while not self.lines.empty():
            printed.append(self.lines.get_nowait())
        return "".join(printed)

    def stop(self) -> int:
        """SIGTERM, then its exit code (killed after a minute)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError("the server did not stop within a minute of SIGTERM") from None


def start_server(model: Path, *flags: str, env: dict[str, str] | None = None) -> Server:
    """`tunewise -q serve MODEL --port 0 FLAGS...` in a subprocess, once /health answers."""
    process = subprocess.Popen([sys.executable, "-m", "tunewise", "-q", "serve", str(model), "--port", "0", *flags],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, **(env or {})})
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=_pump, args=(process, lines), daemon=True).start()
    deadline = time.monotonic() + START_SECONDS
    printed = ""
    while "serving " not in printed:
        try:
            printed += lines.get(timeout=max(0.1, deadline - time.monotonic()))
        except queue.Empty:
            process.kill()
            raise AssertionError(f"the server did not start in {START_SECONDS} s:\n{printed}") from None
        if process.poll() is not None and lines.empty():
            raise AssertionError(f"the server exited with {process.returncode}:\n{printed}")
    url = next(word for word in printed.split() if word.startswith("http://")).rstrip("/")
    httpx.get(f"{url}/health", timeout=60).raise_for_status()
    return Server(process, url, lines)


def _pump(process: subprocess.Popen[str], lines: queue.Queue[str]) -> None:
    assert process.stdout is not None
    for line in process.stdout:
        lines.put(line)


def skip_without_chromium() -> None:
    """Skip (fail under TUNEWISE_TEST_BROWSER=required) when Debian's chromium or its driver is missing."""
    if CHROMIUM.is_file() and CHROMEDRIVER.is_file():
        return
    if BROWSER_REQUIRED:
        pytest.fail("TUNEWISE_TEST_BROWSER=required but /usr/bin/chromium or /usr/bin/chromedriver is missing")
    pytest.skip("Debian's chromium and chromium-driver are not installed (apt-get install chromium "
                "chromium-driver; .ci/run does)")


@contextlib.contextmanager
def chromium(profile: Path) -> Iterator[Any]:
    """Headless Debian chromium driven by selenium through Debian's chromedriver (nothing downloaded),
    with a fresh profile in `profile`; the browser's console is kept (driver.get_log("browser"))."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1100,1000", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def page_errors(driver: Any) -> list[str]:
    """The page's console errors so far (a failed script, a failed request)."""
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
