"""The four measured experiments, each against a real `uvicorn app.main:app` on 127.0.0.1.

Every function returns a JSON-ready dict of what it measured; `bench/reliability/__main__.py` writes
them with the machine, the date and the command, and renders the markdown.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import signal
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from app.settings import Settings
from bench.reliability import corpus, load
from bench.reliability.server import Server, request


@contextmanager
def rss_sampler(server: Server, every_s: float = 0.5) -> Iterator[list[tuple[float, int]]]:
    """(seconds since start, RSS KiB) of the server, sampled in a thread while the block runs."""
    samples: list[tuple[float, int]] = []
    stop = threading.Event()
    start = time.perf_counter()

    def sample() -> None:
        while not stop.is_set():
            samples.append((round(time.perf_counter() - start, 2), server.rss_kib()))
            stop.wait(every_s)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield samples
    finally:
        stop.set()
        thread.join()


def served_models(port: int) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """The /v1/models entries and the v2 metadata of every served graph."""
    models = json.loads(request(port, "GET", "/v1/models")[2])["models"]
    graphs = {}
    for m in models:
        for g in (m.get("graphs") or {}).values():
            graphs[g["v2_name"]] = json.loads(request(port, "GET", f"/v2/models/{g['v2_name']}")[2])
    return models, graphs


def target(models: list[dict[str, Any]], name: str | None) -> tuple[str, bytes]:
    """The model the load uses (`name`, else the first ready VAE, else the first ready model) and one
    raw reconstruct request for it."""
    ready = [m["name"] for m in models if m["status"] == "ready"]
    vaes = [m["name"] for m in models if m["status"] == "ready" and m["kind"] in ("vae", "beta_vae")]
    chosen = name or (vaes or ready or [None])[0]
    if chosen not in ready:
        raise SystemExit(f"error: no ready model {chosen!r} to load (ready: {ready})")
    body, headers = corpus.files("image")
    return str(chosen), load.http_request(
        "POST", f"/v1/models/{chosen}/reconstruct", body, headers["content-type"]
    )


def _growth(before: int, after: int) -> float:
    return round(100.0 * (after - before) / before, 2)


# ---- 1. bad input -------------------------------------------------------------------------------


def bad_input(model_dir: Path, rounds: int) -> dict[str, Any]:
    """The whole corpus once to warm up, then `rounds` more; every answer judged, RSS after each round."""
    defaults = Settings(model_dir=model_dir)
    with Server(model_dir) as server:
        models, graphs = served_models(server.port)
        cases = corpus.build(
            models,
            graphs,
            max_images=defaults.max_images,
            max_pixels=defaults.max_pixels,
            max_body_bytes=defaults.max_body_bytes,
        )
        statuses: Counter[int] = Counter()
        failures: list[str] = []
        rss = []
        started = time.perf_counter()
        for r in range(rounds + 1):
            for case in cases:
                status, headers, body = request(
                    server.port, case.method, case.target, case.body, case.headers
                )
                statuses[status] += 1
                problem = corpus.judge(case, status, headers, body)
                if problem and r == 0:
                    failures.append(f"{case.id}: {problem}")
            rss.append(server.rss_kib())
        seconds = time.perf_counter() - started
        alive = request(server.port, "GET", "/healthz")[0] == 200
    return {
        "cases": len(cases),
        "rounds_after_warmup": rounds,
        "requests": sum(statuses.values()),
        "seconds": round(seconds, 1),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "server_errors": sum(v for k, v in statuses.items() if k >= 500),
        "wrong_answers": len(failures),
        "wrong_answer_examples": failures[:20],
        "alive_after": alive,
        "rss_kib_per_round": rss,
        "rss_growth_pct_after_warmup": _growth(rss[0], rss[-1]),
        "rss_growth_pct_after_first_measured_round": _growth(rss[1], rss[-1]) if len(rss) > 2 else None,
    }


# ---- 2. overload --------------------------------------------------------------------------------


def _metric(text: str, name: str, label: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name) and label in line
    )


def overload(
    model_dir: Path,
    *,
    model: str | None,
    clients: int,
    burst_s: float,
    steady_s: float,
    max_queue: int,
    max_inflight: int,
) -> dict[str, Any]:
    """Steady load, a burst of `clients` concurrent clients, steady load again; then clients that hang up."""
    limits = {"max_queue": max_queue, "max_inflight": max_inflight}
    with Server(model_dir, max_queue=max_queue, max_inflight=max_inflight) as server:
        name, req = target(served_models(server.port)[0], model)
        before = asyncio.run(load.closed_loop(server.port, req, clients=4, seconds=steady_s))
        rss_before = server.rss_kib()
        with rss_sampler(server) as rss:
            burst = asyncio.run(load.closed_loop(server.port, req, clients=clients, seconds=burst_s))
        after = asyncio.run(load.closed_loop(server.port, req, clients=4, seconds=steady_s))
        alive = request(server.port, "GET", "/healthz")[0] == 200
    # Hang-ups: requests wait up to 1 s for their batch, and their clients leave 0.3 s in.
    gone = 20
    with Server(model_dir, max_delay_ms=1000, max_batch_size=64) as server:
        name, req = target(served_models(server.port)[0], model)
        leader = asyncio.run(load.abandon(server.port, req, clients=gone, after_s=0.3))
        time.sleep(1.5)
        text = request(server.port, "GET", "/metrics")[2].decode()
    return {
        "model": name,
        "settings": limits,
        "before": before,
        "burst": burst | {"rss_kib_before": rss_before, "rss_kib_peak": max(v for _, v in rss)},
        "after": after,
        "alive_after": alive,
        "recovered_pct": round(100 * float(after["ok_per_s"] or 0) / float(before["ok_per_s"] or 1), 1),
        "hang_ups": {
            "clients": gone,
            "skipped_by_batcher": _metric(text, "aeserve_batch_skipped_total", ""),
            "logged_499": _metric(text, "aeserve_requests_total", 'status="499"'),
            "leader_status": leader,  # the request sent just before them, which is answered
            "items_computed_besides_the_leader": _metric(text, "aeserve_batch_size_sum", "") - 1,
        },
    }


# ---- 3. faults ----------------------------------------------------------------------------------


def _set_sha(folder: Path, file: str, section: str, key: str) -> None:
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest[section][key]["sha256"] = hashlib.sha256((folder / file).read_bytes()).hexdigest()
    (folder / "manifest.json").write_text(json.dumps(manifest))


def _touch_metrics(folder: Path, value: float) -> None:
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["metrics"] = dict(manifest.get("metrics") or {}) | {"reliability_marker": value}
    (folder / "manifest.json").write_text(json.dumps(manifest))


def _under_load(
    port: int, req: bytes, action: Callable[[], Any], seconds: float
) -> tuple[dict[str, Any], Any]:
    """Closed-loop load on 4 clients for `seconds`; `action` runs in a thread 1 s in."""
    with ThreadPoolExecutor(1) as pool:

        def later() -> Any:
            time.sleep(1.0)
            return action()

        done = pool.submit(later)
        result = asyncio.run(load.closed_loop(port, req, clients=4, seconds=seconds))
        return result, done.result()


def faults(model_dir: Path, *, model: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    work = Path(tempfile.mkdtemp(prefix="aeserve-faults-"))
    try:
        root = work / "models"
        shutil.copytree(model_dir, root)
        folders = sorted(p for p in root.iterdir() if (p / "manifest.json").is_file())
        victim, other = folders[0], folders[-1]
        graph = next(iter(json.loads((victim / "manifest.json").read_text())["graphs"]))
        graph_file = json.loads((victim / "manifest.json").read_text())["graphs"][graph]["file"]
        # start-up with a corrupt graph (checksum updated, so the runtime has to refuse it) and a bad manifest
        saved = (victim / graph_file).read_bytes(), (victim / "manifest.json").read_text()
        (victim / graph_file).write_bytes(b"this is not an ONNX graph")
        _set_sha(victim, graph_file, "graphs", graph)
        saved_other = (other / "manifest.json").read_text()
        (other / "manifest.json").write_text("{ broken")
        with Server(root, strict_readiness=False) as server:  # strict readiness would never be ready
            models = json.loads(request(server.port, "GET", "/v1/models")[2])["models"]
            out["startup_broken"] = {
                m["name"]: {"status": m["status"], "reason": m["reason"]} for m in models
            }
        strict = Server(root, strict_startup=True)
        try:
            strict.start()
            out["strict_startup"] = {"refused": False}
        except RuntimeError:
            out["strict_startup"] = {
                "refused": True,
                "exit_code": strict.process.returncode if strict.process else None,
                "last_line": strict.log().strip().splitlines()[-1][:300],
            }
        (victim / graph_file).write_bytes(saved[0])
        (victim / "manifest.json").write_text(saved[1])
        (other / "manifest.json").write_text(saved_other)
        # reloads under load: a new version, a broken version (rejected), SIGHUP
        with Server(root) as server:
            name, req = target(served_models(server.port)[0], model)
            folder = next(f for f in folders if json.loads((f / "manifest.json").read_text())["name"] == name)
            spec = json.loads((folder / "manifest.json").read_text())["graphs"]
            graph_file = spec[next(iter(spec))]["file"]

            def reloads() -> dict[str, Any]:
                seen: dict[str, Any] = {}
                _touch_metrics(folder, 1.0)
                t = time.perf_counter()
                seen["new_version"] = json.loads(request(server.port, "POST", "/v1/admin/reload")[2])
                seen["new_version_seconds"] = round(time.perf_counter() - t, 2)
                good = (folder / graph_file).read_bytes()
                (folder / graph_file).write_bytes(b"broken")
                seen["broken_version"] = json.loads(request(server.port, "POST", "/v1/admin/reload")[2])
                (folder / graph_file).write_bytes(good)
                _touch_metrics(folder, 2.0)
                server.signal(signal.SIGHUP)
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    info = json.loads(request(server.port, "GET", f"/v1/models/{name}")[2])
                    if info["metrics"].get("reliability_marker") == 2.0:
                        break
                    time.sleep(0.2)
                seen["sighup_applied"] = info["metrics"].get("reliability_marker") == 2.0
                seen["status_after"] = info["status"]
                return seen

            loaded, seen = _under_load(server.port, req, reloads, seconds=12.0)
            out["reload_under_load"] = seen | {"load": loaded}
        # SIGTERM with requests in flight (each held up to 2 s waiting for its batch to fill)
        server = Server(root, max_delay_ms=2000, max_batch_size=64).start()
        _, req = target(served_models(server.port)[0], model)
        body = req.split(b"\r\n\r\n", 1)[1]
        ctype = next(
            ln.split(b": ", 1)[1].decode() for ln in req.split(b"\r\n") if ln.startswith(b"Content-Type")
        )
        path = req.split(b" ", 2)[1].decode()
        with ThreadPoolExecutor(16) as pool:
            answers = [
                pool.submit(request, server.port, "POST", path, body, {"content-type": ctype})
                for _ in range(16)
            ]
            time.sleep(0.5)
            t = time.perf_counter()
            server.signal(signal.SIGTERM)
            statuses = Counter(a.result()[0] for a in answers)
            code = server.wait(60)
        out["sigterm_drain"] = {
            "in_flight": 16,
            "statuses": {str(k): v for k, v in statuses.items()},
            "exit_code": code,
            "seconds_to_exit": round(time.perf_counter() - t, 2),
            "clean_shutdown_logged": "Application shutdown complete" in server.log(),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


# ---- 4. soak ------------------------------------------------------------------------------------


def soak(
    model_dir: Path, *, model: str | None, seconds: float, capacity_s: float, fraction: float
) -> dict[str, Any]:
    """Capacity (closed loop, 8 clients), then an open loop at `fraction` of it for `seconds`."""
    with Server(model_dir) as server:
        name, req = target(served_models(server.port)[0], model)
        capacity = asyncio.run(load.closed_loop(server.port, req, clients=8, seconds=capacity_s))
        rate = round(fraction * float(capacity["ok_per_s"] or 0), 2)
        with rss_sampler(server, every_s=max(1.0, seconds / 200)) as rss:
            run = asyncio.run(load.open_loop(server.port, req, rate=rate, seconds=seconds))
        alive = request(server.port, "GET", "/healthz")[0] == 200
    p99 = [w["p99_ms"] for w in run["windows"] if w["p99_ms"] is not None]
    settled = [v for t, v in rss if t >= 0.1 * seconds] or [v for _, v in rss]
    errors = sum(v for k, v in run["statuses"].items() if k != "200")
    return {
        "model": name,
        "capacity": capacity,
        "fraction": fraction,
        "soak": run,
        "errors": errors,
        "alive_after": alive,
        "p99_ms_first_last_max": [p99[0], p99[-1], max(p99)] if p99 else None,
        "rss_kib_start_end": [settled[0], settled[-1]],
        "rss_growth_pct": _growth(settled[0], settled[-1]),
        "rss_kib_samples": rss[:: max(1, len(rss) // 50)],
    }
