"""`python -m bench profile`: where the time goes, in a short summary.

1. ONNX Runtime's own profiler on every graph of the service's model (batch 1 and the batcher's largest
   batch): total time per operator type.
2. The service's PNG writer (app.imaging.png_bytes) beside Pillow's at compress_level=1 on the same
   decoded photographs: microseconds and bytes per image.
3. py-spy (if installed) sampling the service process while the load generator posts single images at
   concurrency 16: samples per area of the code (ONNX Runtime, image decode/encode, multipart, HTTP,
   logging, ...) taken from the innermost frame that belongs to a known area, and the top frames.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import tempfile
import timeit
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

# area -> substrings of a frame ("function (file:line)") that place a sample in it; first match wins,
# scanning from the innermost frame outwards
AREAS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("thread hand-off (futures, locks)", ("concurrent/futures", "threading.py")),
    ("onnxruntime session.run", ("onnxruntime",)),
    ("image decode/fit (PIL)", ("PIL/", "imaging.py")),
    ("multipart parsing", ("multipart", "formparsers")),
    ("logging", ("logging/", "app/logs.py")),
    ("metrics", ("prometheus_client", "app/metrics.py")),
    ("batcher", ("app/batching.py",)),
    ("numpy", ("numpy/",)),
    ("HTTP (h11/httptools, uvicorn)", ("h11/", "httptools", "uvicorn/")),
    ("FastAPI/Starlette routing", ("fastapi/", "starlette/", "pydantic")),
    ("service code", ("app/",)),
    ("asyncio event loop", ("asyncio/", "selectors.py")),
)


def ort_operator_profile(
    path: Path, feeds: dict[str, np.ndarray], runs: int, provider: str
) -> list[dict[str, Any]]:
    """Per operator type: total microseconds over `runs` runs and its share, most expensive first."""
    import onnxruntime as ort

    from app.registry import provider_plan, session_options
    from app.settings import Settings

    opts = session_options(Settings(providers=provider), provider == "cuda")  # type: ignore[arg-type]
    with tempfile.TemporaryDirectory() as tmp:
        opts.enable_profiling = True
        opts.profile_file_prefix = str(Path(tmp) / "ort")
        session = ort.InferenceSession(str(path), opts, providers=provider_plan(provider))
        for _ in range(runs):
            session.run(None, feeds)
        events = json.loads(Path(session.end_profiling()).read_text())
    per_op: Counter[str] = Counter()
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
            per_op[e.get("args", {}).get("op_name", "?")] += int(e.get("dur", 0))
    total = sum(per_op.values()) or 1
    return [{"op": op, "us": us, "share": round(us / total, 4)} for op, us in per_op.most_common(8)]


def png_writers(m: Any, n: int = 64, repeats: int = 5) -> dict[str, Any]:
    """app.imaging.png_bytes against Pillow (compress_level=1) on n photo crops of the model's size: the
    best of `repeats` passes, microseconds per image, and the mean file size."""
    from app import imaging
    from bench import photos

    images = list(photos.arrays(n, m.height, m.width, m.channels))

    def pillow(image: np.ndarray) -> bytes:
        buf = io.BytesIO()
        imaging.to_pil(image).save(buf, "PNG", compress_level=1)
        return buf.getvalue()

    out: dict[str, Any] = {"images": n, "size": f"{m.width}x{m.height}x{m.channels}"}
    for name, write in (("service", imaging.png_bytes), ("pillow_level1", pillow)):
        best = min(timeit.repeat(lambda w=write: [w(i) for i in images], number=1, repeat=repeats))
        size = float(np.mean([len(write(i)) for i in images]))
        out[name] = {"us": round(best / n * 1e6, 1), "bytes": round(size)}
    return out


# innermost frames of a thread that is waiting, not working (py-spy's idle detection misses some)
IDLE = ("Condition.wait (threading.py", "select (selectors.py", "_worker (concurrent/futures/thread.py")


def area_of(stack: list[str]) -> str:
    if any(stack[-1].startswith(i) for i in IDLE):
        return "idle (waiting for work or I/O)"
    for frame in reversed(stack):  # innermost last in py-spy's raw format
        for area, needles in AREAS:
            if any(n in frame for n in needles):
                return area
    return "other"


def summarize_pyspy(raw: Path) -> dict[str, Any]:
    """py-spy's raw (collapsed) output -> samples per area and the top innermost frames."""
    areas: Counter[str] = Counter()
    frames: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        stack_text, _, count = line.rpartition(" ")
        if not stack_text or not count.isdigit():
            continue
        stack = stack_text.split(";")
        areas[area_of(stack)] += int(count)
        frames[stack[-1]] += int(count)
    total = sum(areas.values()) or 1
    return {
        "samples": total,
        "areas": [{"area": a, "share": round(n / total, 4)} for a, n in areas.most_common()],
        "top_frames": [{"frame": f, "share": round(n / total, 4)} for f, n in frames.most_common(12)],
    }


def pyspy_command(pid: int, seconds: float, raw: Path) -> list[str] | None:
    """The py-spy command sampling process `pid` for `seconds` into `raw`; None when py-spy is missing."""
    exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(exe).exists():
        return None
    return [
        exe,
        "record",
        "--pid",
        str(pid),
        "--duration",
        str(max(1, round(seconds))),
        "--rate",
        "200",
        "--format",
        "raw",
        "--output",
        str(raw),
        "--nonblocking",
    ]


def run_profile(
    artifacts: Path, model: str, *, provider: str, seconds: float, work: Path, max_batch: int = 32
) -> dict[str, Any]:
    """Both profiles of `model` (see the module docstring) as one result document."""
    from app.kinds import ADAPTERS
    from app.manifest import read_manifest
    from bench import photos
    from bench.servers import SERVICE_APP, Server
    from bench.service import MULTIPART, Payloads, ServiceConfig, load

    folder = artifacts / model
    m = read_manifest(folder)
    adapter = ADAPTERS[m.kind]
    operators = {}
    for graph in adapter.served_graphs(m):
        one = adapter.warmup_feeds(m, graph)
        for batch, runs in ((1, 20), (max_batch, 3)):
            feeds = {k: np.repeat(v, batch, axis=0) for k, v in one.items()}
            if "image" in feeds:  # photographs, not zeros: some kernels (ReLU, argmin) care
                feeds["image"] = photos.arrays(batch, m.height, m.width, m.channels)
            operators[f"{graph} batch {batch}"] = ort_operator_profile(
                folder / m.graphs[graph].file, feeds, runs, provider
            )
    result: dict[str, Any] = {"model": model, "ort_operators": operators, "png_writer": png_writers(m)}
    payloads = Payloads(work / "payloads", photos.png_crops(32, m.height, m.width, m.channels), None)
    cfg = ServiceConfig(artifacts=artifacts, model=model, provider=provider, duration_s=seconds, warmup_s=1.0)
    env = {"AESERVE_MODEL_DIR": str(artifacts.resolve()), "AESERVE_PROVIDERS": provider}
    raw = work / "pyspy.raw"
    with Server(SERVICE_APP, env=env, log=work / "profile-service.log") as server:
        assert server.process is not None
        command = pyspy_command(server.process.pid, seconds + cfg.warmup_s, raw)
        spy = (
            subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            if command
            else None
        )
        result["load"] = load(
            server,
            work,
            "profile-c16",
            path=f"/v1/models/{model}/reconstruct",
            bodies=payloads.single(),
            content_type=MULTIPART,
            images=1,
            concurrency=16,
            cfg=cfg,
            expect="image/png",
        )
        spy_log = spy.communicate(timeout=seconds + 60)[0] if spy else ""
    if spy is None:
        result["pyspy"] = {"error": "py-spy is not installed (pip install py-spy)"}
    elif spy.returncode != 0 or not raw.exists():
        result["pyspy"] = {"error": f"py-spy failed: {spy_log.strip().splitlines()[-1:]}"}
    else:
        result["pyspy"] = summarize_pyspy(raw)
    return result


def summary_text(result: dict[str, Any]) -> str:
    """The profile as a few readable lines."""
    lines = [f"# Profile of {result['model']}", "", "## ONNX Runtime operators (share of kernel time)"]
    for where, ops in result["ort_operators"].items():
        lines.append(f"- {where}: " + ", ".join(f"{o['op']} {o['share']:.0%}" for o in ops[:5]))
    png = result.get("png_writer")
    if png:
        ours, pil = png["service"], png["pillow_level1"]
        lines += [
            "",
            f"## PNG writer ({png['images']} photo crops, {png['size']})",
            f"- the service's: {ours['us']} us, {ours['bytes']} bytes per image",
            f"- Pillow, compress_level=1: {pil['us']} us, {pil['bytes']} bytes per image",
        ]
    load = result.get("load", {})
    lines += [
        "",
        f"## Service under load (single-image reconstruct, concurrency 16): "
        f"{load.get('images_per_s')} images/s, p50 {load.get('p50_ms')} ms",
        "",
    ]
    spy = result.get("pyspy", {})
    if "error" in spy:
        lines.append(f"py-spy: {spy['error']}")
    else:
        lines.append(f"py-spy samples: {spy['samples']} (innermost frame in a known area)")
        lines += [f"- {a['area']}: {a['share']:.0%}" for a in spy["areas"]]
        lines += ["", "Top frames:"] + [f"- {f['share']:.1%} {f['frame']}" for f in spy["top_frames"]]
    return "\n".join(lines) + "\n"
