"""Cold start: seconds from spawning `uvicorn app.main:app` to the first 200 from /v2/health/ready, with
every model of the folder loaded and warmed up (the service reports ready only after that), and the
share of it spent importing the service's modules (a bare `python -c "import app.main"`)."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.environment import REPO
from bench.servers import SERVICE_APP, Server


def import_seconds() -> float:
    """Seconds for a fresh interpreter to import app.main (and exit)."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import app.main"], cwd=REPO, check=True, capture_output=True)
    return time.perf_counter() - started


def run_coldstart(artifacts: Path, *, repeats: int, provider: str, work: Path) -> dict[str, Any]:
    """`repeats` service starts on the whole artifact folder; median and max seconds to ready."""
    env = {"AESERVE_MODEL_DIR": str(artifacts.resolve()), "AESERVE_PROVIDERS": provider}
    ready = []
    for i in range(repeats):
        with Server(SERVICE_APP, env=env, log=work / f"coldstart-{i}.log", poll_s=0.01) as server:
            ready.append(server.ready_s or 0.0)
    imports = [import_seconds() for _ in range(repeats)]
    models = sorted(p.name for p in artifacts.iterdir() if (p / "manifest.json").is_file())
    return {
        "models": models,
        "provider": provider,
        "repeats": repeats,
        "ready_s": [round(s, 3) for s in ready],
        "ready_median_s": round(statistics.median(ready), 3),
        "ready_max_s": round(max(ready), 3),
        "import_median_s": round(statistics.median(imports), 3),
    }
