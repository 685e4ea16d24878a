"""Large photographs through the VQ-VAE with fit=none: the server's memory after each, and how long a
health probe waits while one runs.

    python -m bench.large_images [--width 3000 --height 2000] [--artifacts artifacts] [--out FILE.json]

One server (the artifacts folder's models; its `vqvae` is used), one request at a time: reconstruct,
encode, then interpolate between two copies (each image kept at its size, 4-pixel multiples). The
resident memory of the server process is read from /proc after each response and once more after an
idle pause; during reconstruct and encode (JSON) a GET /healthz goes out every 0.2 s and the longest
wait is kept. Linux only (/proc).
"""

from __future__ import annotations

import argparse
import io
import json
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from bench.servers import Server


def photo_png(width: int, height: int) -> bytes:
    """A smooth synthetic RGB image (small as a PNG, so the body limit is no obstacle)."""
    yy, xx = np.mgrid[0:height, 0:width]
    rgb = np.stack([xx % 256, yy % 256, (xx + yy) % 256], -1).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(rgb).save(out, "PNG")
    return out.getvalue()


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


def measure(width: int, height: int, artifacts: Path, log: Path, *, idle_s: float = 3.0) -> dict[str, float]:
    png = photo_png(width, height)
    env = {"AESERVE_LOG_LEVEL": "WARNING", "AESERVE_MODEL_DIR": str(artifacts.resolve())}
    with Server("app.main:app", env=env, log=log) as server, httpx.Client(timeout=600) as client:
        assert server.process is not None
        pid, base = server.process.pid, f"http://127.0.0.1:{server.port}"
        figures = {"rss_start_mib": rss_mib(pid)}

        def timed(path: str, files: dict[str, tuple[str, bytes, str]]) -> tuple[float, float]:
            """(seconds the request took, the longest a /healthz probe waited meanwhile, in ms): probes go
            out every 0.2 s while it runs."""
            waits: list[float] = []
            done = threading.Event()

            def probe() -> None:
                while not done.wait(0.2):
                    sent = time.perf_counter()
                    httpx.get(base + "/healthz", timeout=600)
                    waits.append(time.perf_counter() - sent)

            thread = threading.Thread(target=probe)
            thread.start()
            started = time.perf_counter()
            client.post(base + path, files=files).raise_for_status()
            took = time.perf_counter() - started
            done.set()
            thread.join()
            return took, max(waits, default=0.0) * 1000

        image = {"image": ("a.png", png, "image/png")}
        figures["reconstruct_s"], figures["healthz_worst_during_reconstruct_ms"] = timed(
            "/v1/models/vqvae/reconstruct?fit=none", image
        )
        figures["rss_after_reconstruct_mib"] = rss_mib(pid)
        figures["encode_json_s"], figures["healthz_worst_during_encode_ms"] = timed(
            "/v1/models/vqvae/encode?fit=none", image
        )
        figures["rss_after_encode_mib"] = rss_mib(pid)
        pair = {"start": ("a.png", png, "image/png"), "end": ("b.png", png, "image/png")}
        client.post(f"{base}/v1/models/vqvae/interpolate?fit=none&steps=2", files=pair).raise_for_status()
        figures["rss_after_interpolate_mib"] = rss_mib(pid)
        time.sleep(idle_s)
        figures["rss_idle_mib"] = rss_mib(pid)
    return figures


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.large_images", description=__doc__.splitlines()[0])
    p.add_argument("--width", type=int, default=3000)
    p.add_argument("--height", type=int, default=2000)
    p.add_argument(
        "--artifacts", type=Path, default=Path("artifacts"), help="model folder (default artifacts)"
    )
    p.add_argument("--idle", type=float, default=3.0, help="seconds idle before the last reading (default 3)")
    p.add_argument("--out", type=Path, help="write the figures here as JSON")
    args = p.parse_args(argv)
    if args.width % 4 or args.height % 4 or min(args.width, args.height) < 4:
        p.error("--width and --height must be positive multiples of 4 (the VQ-VAE's downsampling)")
    log = (args.out.parent if args.out else Path(tempfile.gettempdir())) / "work" / "large_images.server.log"
    if not (args.artifacts / "vqvae" / "manifest.json").is_file():
        p.error(f"no vqvae artifact in {args.artifacts}")
    figures = measure(args.width, args.height, args.artifacts, log, idle_s=args.idle)
    for key, value in figures.items():
        print(f"{key:<28} {value:10.1f}")
    if args.out:
        args.out.write_text(
            json.dumps({"width": args.width, "height": args.height, **figures}, indent=2) + "\n"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
