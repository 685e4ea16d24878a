"""Servers under test, each a `uvicorn` subprocess on 127.0.0.1 with its log in a file.

`Server(app, env=..., workers=...)` is a context manager: it picks a free port, starts uvicorn as `make
serve` does (`uvicorn app.main:app --host --port`, plus `--workers N`), waits until `ready_path` answers
200, records how long that took, and stops the process group on exit.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

from bench.environment import REPO

SERVICE_APP = "app.main:app"
NAIVE_APP = "bench.naive_app:app"
NOOP_APP = "bench.noop_app:app"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerFailed(RuntimeError):
    """The server exited or did not become ready; the message ends with its log's last lines."""


class Server:
    def __init__(
        self,
        app: str,
        *,
        env: dict[str, str] | None = None,
        workers: int = 1,
        log: Path,
        ready_path: str = "/v2/health/ready",
        timeout_s: float = 120.0,
        poll_s: float = 0.02,
    ) -> None:
        self.app, self.workers, self.log, self.ready_path = app, workers, log, ready_path
        self.env = {**os.environ, **(env or {})}
        self.timeout_s, self.poll_s = timeout_s, poll_s
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.ready_s: float | None = None  # seconds from spawning uvicorn to the first 200 on ready_path

    @property
    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "uvicorn",
            self.app,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            *(["--workers", str(self.workers)] if self.workers > 1 else []),
        ]

    def __enter__(self) -> Server:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                self.command,
                cwd=REPO,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        url = f"http://127.0.0.1:{self.port}{self.ready_path}"
        while time.perf_counter() - started < self.timeout_s:
            if self.process.poll() is not None:
                self._fail(f"server exited with code {self.process.returncode}")
            try:
                with urllib.request.urlopen(url, timeout=1) as response:
                    if response.status == 200:
                        self.ready_s = time.perf_counter() - started
                        return self
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(self.poll_s)
        self._fail(f"server not ready after {self.timeout_s:.0f} s")
        raise AssertionError("unreachable")

    def _fail(self, why: str) -> None:
        self.stop()
        tail = self.log.read_text(errors="replace").strip().splitlines()[-15:]
        raise ServerFailed(f"{self.app}: {why}; {self.log}:\n" + "\n".join(tail))

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        # uvicorn shuts down cleanly on SIGINT; the group reaches its workers too
        os.killpg(self.process.pid, signal.SIGINT)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
