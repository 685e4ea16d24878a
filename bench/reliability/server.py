"""A real `uvicorn app.main:app` in a subprocess on 127.0.0.1, for measurements and end-to-end tests.

    with Server(model_dir, max_queue=8) as server:   # AESERVE_* settings as keyword arguments
        server.url, server.pid, server.rss_kib(), server.signal(signal.SIGHUP)

The server runs this interpreter's uvicorn with the repository as its working directory; its output
goes to a log file (`server.log_path`). Leaving the block sends SIGTERM and waits for the exit.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_kib(pid: int) -> int:
    """Resident set size of a process in KiB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


def request(
    port: int,
    method: str,
    target: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    timeout: float = 60.0,
) -> tuple[int, dict[str, str], bytes]:
    """One raw HTTP/1.1 request (the target is sent as is: no '..' normalization)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.putrequest(method, target, skip_accept_encoding=True)
        for k, v in (headers or {}).items():
            conn.putheader(k, v)
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


class Server:
    """A uvicorn subprocess serving `model_dir`; keyword arguments become AESERVE_* variables."""

    def __init__(
        self,
        model_dir: Path,
        *,
        startup_timeout_s: float = 180.0,
        uvicorn_args: tuple[str, ...] = (),
        **settings: Any,
    ) -> None:
        self.model_dir = model_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.startup_timeout_s = startup_timeout_s
        self.uvicorn_args = uvicorn_args
        self.settings = {"providers": "cpu", "log_format": "text", "log_level": "WARNING"} | settings
        self.log_path = Path(tempfile.mkstemp(prefix="aeserve-", suffix=".log")[1])
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> Server:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AESERVE_")}
        env |= {f"AESERVE_{k.upper()}": str(v) for k, v in self.settings.items()}
        env["AESERVE_MODEL_DIR"] = str(self.model_dir)
        command = [
            sys.executable,
            "-m",
            "uvicorn",
            "app.main:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--no-access-log",
            *self.uvicorn_args,
        ]
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with {self.process.returncode}: {self.log()[-2000:]}")
            try:
                if request(self.port, "GET", "/readyz", timeout=2)[0] == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(
            f"the server was not ready within {self.startup_timeout_s} s: {self.log()[-2000:]}"
        )

    def rss_kib(self) -> int:
        return rss_kib(self.pid)

    def signal(self, sig: int) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    def wait(self, timeout: float = 60.0) -> int:
        assert self.process is not None
        return self.process.wait(timeout)

    def stop(self, timeout: float = 60.0) -> int | None:
        """SIGTERM, then the exit status (SIGKILL after `timeout`)."""
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
