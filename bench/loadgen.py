"""The load generator: its own process, `python -m bench.loadgen SPEC --out RESULT.json`.

N concurrent clients, each on its own keep-alive HTTP/1.1 connection (as wrk does), post pre-built
request bodies in turn for `warmup + duration` seconds. Only requests that start after the warm-up and
finish inside the measured window count. The client is a few lines of asyncio streams (no HTTP library
in the loop), so it spends little CPU: on a 2-core machine the client shares the cores with the server,
and its own CPU seconds are reported so the reader can see what it took.

SPEC (JSON): {"host", "port", "path", "content_type", "bodies": [file, ...], "images_per_request",
"concurrency", "duration_s", "warmup_s", "min_requests", "expect_type"}. Clients keep issuing requests
past `duration_s` until `min_requests` have been measured (at most 5x the duration), so slow bulk
requests still give a figure; the rate is measured over the window that was actually used.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)  # seconds, measured requests that succeeded
    statuses: Counter[str] = field(default_factory=Counter)  # "200", "429", "error:<exception>"
    bytes_in: int = 0
    wrong_type: int = 0  # 200 with another content type than expected
    measured: int = 0  # requests started after the warm-up, whatever their outcome
    last_done: float = 0.0  # perf_counter() when the last measured request finished


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """Status, headers (lower-case names) and body of one HTTP/1.1 response (Content-Length or chunked)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {
        k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)
    }
    if headers.get("transfer-encoding", "").lower() == "chunked":
        parts = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip().split(b";")[0], 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                break
            parts.append(chunk[:-2])
        return status, headers, b"".join(parts)
    return status, headers, await reader.readexactly(int(headers.get("content-length", "0")))


async def _client(
    spec: dict[str, Any], requests: list[bytes], start: float, tally: Tally, index: int
) -> None:
    begin = start + spec["warmup_s"]
    end, hard_end = begin + spec["duration_s"], begin + 5 * spec["duration_s"]
    expect, wanted = spec.get("expect_type") or "", spec.get("min_requests", 1)
    i = index
    reader = writer = None
    while True:
        now = time.perf_counter()
        if now >= hard_end or (now >= end and tally.measured >= wanted):
            break
        if writer is None:
            reader, writer = await asyncio.open_connection(spec["host"], spec["port"])
        assert reader is not None
        t0 = time.perf_counter()
        try:
            writer.write(requests[i % len(requests)])
            await writer.drain()
            status, headers, body = await read_response(reader)
            ctype = headers.get("content-type", "")
            outcome = str(status)
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            status, ctype, body, outcome = -1, "", b"", f"error:{type(exc).__name__}"
            writer.close()
            writer = None
        t1 = time.perf_counter()
        i += spec["concurrency"]
        if t0 < begin:
            continue  # warm-up
        tally.measured += 1
        tally.last_done = max(tally.last_done, t1)
        tally.statuses[outcome] += 1
        if status == 200 and expect and not ctype.startswith(expect):
            tally.wrong_type += 1  # an error, not a served request
        elif status == 200:
            tally.latencies.append(t1 - t0)
            tally.bytes_in += len(body)
    if writer is not None:
        writer.close()


def build_requests(spec: dict[str, Any]) -> list[bytes]:
    """The raw HTTP requests (head + body) for every body file."""
    out = []
    for file in spec["bodies"]:
        body = Path(file).read_bytes()
        head = (
            f"POST {spec['path']} HTTP/1.1\r\nHost: {spec['host']}:{spec['port']}\r\n"
            f"Content-Type: {spec['content_type']}\r\nContent-Length: {len(body)}\r\n"
            "Connection: keep-alive\r\n\r\n"
        )
        out.append(head.encode("latin-1") + body)
    return out


async def run(spec: dict[str, Any]) -> dict[str, Any]:
    """Drive the load and summarise it (requests/s, images/s, latency percentiles in ms, errors)."""
    requests = build_requests(spec)
    tally = Tally()
    start = time.perf_counter()
    await asyncio.gather(*(_client(spec, requests, start, tally, k) for k in range(spec["concurrency"])))
    window = max(tally.last_done - (start + spec["warmup_s"]), 1e-9)
    ok = len(tally.latencies)
    errors = sum(n for s, n in tally.statuses.items() if s != "200") + tally.wrong_type
    lat = np.array(tally.latencies) * 1000 if ok else np.array([np.nan])
    rps = ok / window
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "concurrency": spec["concurrency"],
        "images_per_request": spec["images_per_request"],
        "window_s": round(window, 3),
        "requests": ok,
        "errors": errors,
        "statuses": dict(tally.statuses),
        "requests_per_s": round(rps, 2),
        "images_per_s": round(rps * spec["images_per_request"], 2),
        "p50_ms": round(float(np.percentile(lat, 50)), 3),
        "p90_ms": round(float(np.percentile(lat, 90)), 3),
        "p99_ms": round(float(np.percentile(lat, 99)), 3),
        "mean_ms": round(float(lat.mean()), 3),
        "response_bytes_mean": round(tally.bytes_in / ok) if ok else 0,
        "client_cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.loadgen", description=__doc__)
    parser.add_argument("spec", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    result = asyncio.run(run(json.loads(args.spec.read_text())))
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
