"""Service benchmark: the real service under load from a separate process, beside the raw engine, the
naive baseline and the framework's floor, all measured in the same run on the same model.

Scenarios (each a `python -m bench.loadgen` process against a uvicorn subprocess):
- `single`: one PNG per request to /v1/models/<model>/reconstruct at each concurrency;
- `bulk`: 64..256 PNGs per request to /v1/models/<model>/tokens (VQ-VAE only);
- `naive`: bench/naive_app.py (JSON float lists, one session.run per request) at its concurrencies;
- `noop`: bench/noop_app.py (reads the body, answers a fixed PNG) with the single-image requests;
- when `wrk` (Debian's compiled load generator) is installed, it posts the first single-image body to the
  service and to the no-op endpoint at `wrk_concurrency` as a cross-check of the Python client: rows
  `service (wrk)` and `noop (wrk)`, no client CPU figure. The targets use the Python client's rows.
The raw engine (bench/pipeline.py) is measured first, in this process, with the service's thread budget.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench import photos
from bench.engine import DEFAULT_BATCHES
from bench.environment import describe
from bench.pipeline import engine_rows
from bench.servers import NAIVE_APP, NOOP_APP, SERVICE_APP, Server

# One boundary for every body, so one Content-Type header serves all requests of a scenario.
BOUNDARY = "aeserve-bench-6b9d3c0f2e41"
MULTIPART = f"multipart/form-data; boundary={BOUNDARY}"


@dataclass
class ServiceConfig:
    artifacts: Path  # folder of artifact folders (AESERVE_MODEL_DIR)
    model: str = "vqvae"  # the model whose reconstruct (and tokens) are measured
    provider: str = "cpu"  # AESERVE_PROVIDERS for the service and the raw engine
    workers: tuple[int, ...] = (1,)  # uvicorn worker processes; one service start per value
    concurrency: tuple[int, ...] = (1, 8, 16, 64)  # single-image clients
    bulk_sizes: tuple[int, ...] = (64, 256)  # images per /tokens request
    bulk_concurrency: int = 2  # two bulk requests in flight: one decodes while the other runs
    naive_concurrency: tuple[int, ...] = (64,)
    noop_concurrency: tuple[int, ...] = (1, 8, 16, 64)
    wrk_concurrency: tuple[int, ...] = (1, 16)  # wrk cross-check (skipped when wrk is not installed)
    duration_s: float = 10.0  # measured window per scenario
    warmup_s: float = 2.0
    min_requests: int = 3  # a scenario runs past duration_s until this many requests were measured
    engine_batches: tuple[int, ...] = DEFAULT_BATCHES
    engine_seconds: float = 1.0  # per (operation, batch) of the raw engine
    server_env: tuple[str, ...] = ()  # extra KEY=VALUE for the service (e.g. AESERVE_MAX_BATCH_SIZE=64)


def _multipart(field: str, files: Sequence[bytes]) -> bytes:
    """A multipart/form-data body (boundary BOUNDARY) with every file under `field`."""
    boundary = BOUNDARY
    parts = [
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{i}.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + f
        + b"\r\n"
        for i, f in enumerate(files)
    ]
    return b"".join(parts) + f"--{boundary}--\r\n".encode()


class Payloads:
    """Request bodies written once under `<out>/payloads/`; `spec(...)` makes a load generator spec."""

    def __init__(self, root: Path, pngs: list[bytes], arrays: Any) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.pngs, self.arrays = pngs, arrays

    def _write(self, name: str, bodies: list[bytes]) -> list[str]:
        files = []
        for i, body in enumerate(bodies):
            path = self.root / f"{name}-{i:03d}.bin"
            path.write_bytes(body)
            files.append(str(path))
        return files

    def single(self) -> list[str]:
        """One body per photo crop: the field `image` holding one PNG."""
        return self._write("single", [_multipart("image", [p]) for p in self.pngs])

    def bulk(self, size: int) -> list[str]:
        """Two bodies of `size` PNGs each under the repeated field `images`."""
        many = self.pngs * (-(-size // len(self.pngs)) + 1)
        return self._write(f"bulk{size}", [_multipart("images", many[k : k + size]) for k in (0, 1)])

    def naive(self) -> list[str]:
        return self._write("naive", [json.dumps({"image": a.tolist()}).encode() for a in self.arrays])


def load(
    server: Server,
    out: Path,
    name: str,
    *,
    path: str,
    bodies: list[str],
    content_type: str | None,
    images: int,
    concurrency: int,
    cfg: ServiceConfig,
    expect: str,
) -> dict[str, Any]:
    """Run one load generator process against `server`; its summary with the scenario's labels."""
    spec = {
        "host": "127.0.0.1",
        "port": server.port,
        "path": path,
        "bodies": bodies,
        "content_type": content_type or MULTIPART,
        "images_per_request": images,
        "concurrency": concurrency,
        "duration_s": cfg.duration_s,
        "warmup_s": cfg.warmup_s,
        "min_requests": cfg.min_requests,
        "expect_type": expect,
    }
    spec_file, result_file = out / f"{name}.spec.json", out / f"{name}.result.json"
    spec_file.write_text(json.dumps(spec, indent=2))
    subprocess.run(
        [sys.executable, "-m", "bench.loadgen", str(spec_file), "--out", str(result_file)], check=True
    )
    return json.loads(result_file.read_text())


_WRK_UNIT_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def parse_wrk(text: str) -> dict[str, Any]:
    """requests, requests/s, p50/p90/p99 (ms) and errors from `wrk --latency` output."""

    def number(pattern: str) -> float:
        m = re.search(pattern, text)
        return float(m.group(1)) if m else 0.0

    latency = {
        int(q): round(float(v) * _WRK_UNIT_MS[unit], 3)
        for q, v, unit in re.findall(r"^\s+(\d+)%\s+([\d.]+)(us|ms|s)\s*$", text, re.MULTILINE)
    }
    socket = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    errors = int(number(r"Non-2xx or 3xx responses: (\d+)")) + (
        sum(int(g) for g in socket.groups()) if socket else 0
    )
    return {
        "requests": int(number(r"(\d+) requests in")),
        "requests_per_s": number(r"Requests/sec:\s+([\d.]+)"),
        "p50_ms": latency.get(50),
        "p90_ms": latency.get(90),
        "p99_ms": latency.get(99),
        "errors": errors,
    }


def wrk_load(
    exe: str,
    server: Server,
    out: Path,
    name: str,
    *,
    path: str,
    body: str,
    content_type: str,
    concurrency: int,
    cfg: ServiceConfig,
) -> dict[str, Any]:
    """`wrk` (at `exe`) posting one body at `concurrency` keep-alive connections (one thread): warm-up,
    then a measured window."""
    script = out / f"{name}.lua"
    script.write_text(
        'wrk.method = "POST"\n'
        f'wrk.headers["Content-Type"] = "{content_type}"\n'
        f'local f = assert(io.open("{body}", "rb"))\n'
        'wrk.body = f:read("*a")\n'
        "f:close()\n"
    )
    url = f"http://127.0.0.1:{server.port}{path}"

    def run(seconds: float) -> str:
        command = [exe, "-t1", f"-c{concurrency}", f"-d{max(1, round(seconds))}s", "--latency", "-s",
                   str(script), url]  # fmt: skip
        return subprocess.run(command, check=True, capture_output=True, text=True).stdout

    run(cfg.warmup_s)
    text = run(cfg.duration_s)
    (out / f"{name}.wrk.txt").write_text(text)
    result = parse_wrk(text)
    return {
        "concurrency": concurrency,
        "images_per_request": 1,
        "window_s": cfg.duration_s,
        **result,
        "images_per_s": result["requests_per_s"],
        "client_cpu_s": None,
    }


def faster_of(first: list[dict[str, Any]], second: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Row by row (same op, PNG work and batch), the measurement with more images/s."""
    return [a if a["images_per_s"] >= b["images_per_s"] else b for a, b in zip(first, second, strict=True)]


def run_service(cfg: ServiceConfig, out: Path) -> dict[str, Any]:
    """Every scenario; returns the result document (see module docstring)."""
    env = describe()
    folder = cfg.artifacts / cfg.model
    manifest = json.loads((folder / "manifest.json").read_text())
    h, w, c = manifest["input"]["height"], manifest["input"]["width"], manifest["input"]["channels"]
    work = out / "work" / "service"
    payloads = Payloads(work / "payloads", photos.png_crops(32, h, w, c), photos.arrays(32, h, w, c))
    vq = manifest["kind"] == "vqvae"
    ops = ("reconstruct", "tokens") if vq else ("reconstruct",)
    extra_env = dict(kv.split("=", 1) for kv in cfg.server_env)

    def measure_engine() -> list[dict[str, Any]]:
        return engine_rows(
            folder,
            ops,
            batches=cfg.engine_batches,
            seconds=cfg.engine_seconds,
            provider=cfg.provider,
            pngs=payloads.pngs,
            arrays=payloads.arrays,
            server_env=extra_env,
        )

    # the engine is measured before and after the HTTP scenarios, and each point keeps the faster of
    # the two: one measurement taken in a busy moment would make every ratio against it look better
    engine_before = measure_engine()
    single = payloads.single()
    service_env = {
        "AESERVE_MODEL_DIR": str(cfg.artifacts.resolve()),
        "AESERVE_PROVIDERS": cfg.provider,
        "AESERVE_MAX_IMAGES": str(max(cfg.bulk_sizes, default=64)),
    }
    service_env |= extra_env
    rows: list[dict[str, Any]] = []
    starts: list[dict[str, Any]] = []

    def scenario(
        server: Server,
        label: str,
        workers: int,
        kind: str,
        name: str,
        path: str,
        bodies: list[str],
        images: int,
        concurrency: int,
        expect: str,
        ctype: str | None = None,
    ) -> None:
        r = load(server, work, name, path=path, bodies=bodies, content_type=ctype, images=images,
                 concurrency=concurrency, cfg=cfg, expect=expect)  # fmt: skip
        rows.append({"server": label, "scenario": kind, "workers": workers, **r})

    base = f"/v1/models/{cfg.model}"
    for w in cfg.workers:
        env_w = {**service_env, "AESERVE_WORKERS": str(w)}
        with Server(SERVICE_APP, env=env_w, workers=w, log=work / f"service-w{w}.log") as server:
            starts.append({"server": "service", "workers": w, "ready_s": round(server.ready_s or 0, 3)})
            for c in cfg.concurrency:
                scenario(
                    server,
                    "service",
                    w,
                    "single",
                    f"single-w{w}-c{c}",
                    f"{base}/reconstruct",
                    single,
                    1,
                    c,
                    "image/png",
                )
            for size in cfg.bulk_sizes if vq else ():
                scenario(
                    server,
                    "service",
                    w,
                    "bulk",
                    f"bulk{size}-w{w}",
                    f"{base}/tokens",
                    payloads.bulk(size),
                    size,
                    cfg.bulk_concurrency,
                    "application/json",
                )
    if cfg.naive_concurrency:
        with Server(NAIVE_APP, env={"NAIVE_MODEL": str(folder.resolve())}, log=work / "naive.log") as server:
            bodies = payloads.naive()
            for c in cfg.naive_concurrency:
                scenario(
                    server,
                    "naive",
                    1,
                    "single",
                    f"naive-c{c}",
                    "/reconstruct",
                    bodies,
                    1,
                    c,
                    "application/json",
                    "application/json",
                )
    if cfg.noop_concurrency:
        with Server(NOOP_APP, log=work / "noop.log") as server:
            for c in cfg.noop_concurrency:
                scenario(server, "noop", 1, "single", f"noop-c{c}", "/noop", single, 1, c, "image/png")
    wrk = shutil.which("wrk")
    if cfg.wrk_concurrency and wrk is not None:
        targets = (
            (SERVICE_APP, "service", f"{base}/reconstruct", service_env),
            (NOOP_APP, "noop", "/noop", {}),
        )
        for app, label, path, app_env in targets:
            with Server(app, env=app_env, log=work / f"{label}-wrk.log") as server:
                for c in cfg.wrk_concurrency:
                    r = wrk_load(wrk, server, work, f"{label}-wrk-c{c}", path=path, body=single[0],
                                 content_type=MULTIPART, concurrency=c, cfg=cfg)  # fmt: skip
                    rows.append({"server": f"{label} (wrk)", "scenario": "single", "workers": 1, **r})
    engine_after = measure_engine()
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()}
    return {
        "environment": env,
        "config": config,
        "model": cfg.model,
        "kind": manifest["kind"],
        "input": [manifest["input"][k] for k in ("channels", "height", "width")],
        "engine": faster_of(engine_before, engine_after),
        "engine_measurements": {"before": engine_before, "after": engine_after},
        "service": rows,
        "starts": starts,
    }
