"""Where and how a result was measured: machine, date, versions, command, and the JSON result files.

Every result file is `{"section": ..., "environment": {...}, "config": {...}, ...}` so a number never
travels without the machine and the command that produced it.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import json
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("onnxruntime", "onnxruntime-gpu", "torch", "numpy", "fastapi", "uvicorn", "starlette", "pillow")


def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo (Linux), else platform.processor()."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu_name() -> str | None:
    """The first GPU torch sees, or None (no torch, or no CUDA)."""
    try:
        import torch

        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        return None


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _git_revision() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=5
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "app", "bench"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=5,
        )
        return (
            out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "") if out.returncode == 0 else None
        )
    except (OSError, subprocess.SubprocessError):
        return None


def load_average() -> list[float] | None:
    """1/5/15-minute load averages: a busy machine explains a slow figure."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def describe() -> dict[str, Any]:
    """The machine, date, versions and command of this process."""
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "gpu": gpu_name(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": {p: v for p in PACKAGES if (v := _version(p)) is not None},
        "git": _git_revision(),
        "command": shlex.join(["python", "-m", "bench", *sys.argv[1:]]),
        "load_average_start": load_average(),
    }


def write_result(out: Path, section: str, result: dict[str, Any]) -> Path:
    """Write `<out>/<section>.json` with the environment filled in (load average also at the end)."""
    out.mkdir(parents=True, exist_ok=True)
    env = result.setdefault("environment", describe())
    env["load_average_end"] = load_average()
    path = out / f"{section}.json"
    path.write_text(json.dumps({"section": section, **result}, indent=2, default=_plain) + "\n")
    return path


def read_results(out: Path) -> dict[str, dict[str, Any]]:
    """section -> result of every `<out>/*.json` written by `write_result`."""
    found = {}
    for path in sorted(out.glob("*.json")):
        data = json.loads(path.read_text())
        if isinstance(data, dict) and "section" in data:
            found[data["section"]] = data
    return found


def _plain(value: Any) -> Any:
    """numpy scalars and paths in JSON."""
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")
