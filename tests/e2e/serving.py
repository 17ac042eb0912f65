"""A `tunewise serve` subprocess for the server's tests: started on 127.0.0.1 with an ephemeral port
(--port 0; the address is read from the line it prints), stopped with SIGTERM as a scheduler would."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

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
