"""Load for the reliability runs: keep-alive HTTP/1.1 clients on asyncio streams (no HTTP library in
the loop, so the client takes little of a 2-core machine), closed-loop or open-loop at a fixed rate.

Open loop: requests are scheduled at `rate` per second whatever the server does, and a request's
latency counts from its scheduled time, so a stalled server shows as latency instead of as fewer
requests (no coordinated omission).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bench.loadgen import read_response


def http_request(method: str, target: str, body: bytes, content_type: str, *, close: bool = False) -> bytes:
    head = (
        f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n" + ("Connection: close\r\n" if close else "") + "\r\n"
    )
    return head.encode() + body


@dataclass
class Tally:
    """What a load run saw: statuses, latencies (s) of the 200s with their finish times."""

    statuses: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    finished: list[float] = field(default_factory=list)  # seconds since the start, per latency
    retry_after_missing: int = 0  # 429/503 answers without Retry-After

    def add(self, status: int | str, headers: dict[str, str], latency: float, at: float) -> None:
        self.statuses[str(status)] += 1
        if status in (429, 503) and "retry-after" not in headers:
            self.retry_after_missing += 1
        if status == 200:
            self.latencies.append(latency)
            self.finished.append(at)

    def summary(self, seconds: float) -> dict[str, Any]:
        lat = np.asarray(self.latencies) * 1000
        pct = {f"p{q}": round(float(np.percentile(lat, q)), 1) for q in (50, 90, 99)} if len(lat) else {}
        return {
            "seconds": round(seconds, 2),
            "requests": sum(self.statuses.values()),
            "statuses": dict(sorted(self.statuses.items())),
            "ok_per_s": round(len(lat) / seconds, 2) if seconds > 0 else None,
            "latency_ms": pct,
            "retry_after_missing": self.retry_after_missing,
        }


class Connections:
    """Idle keep-alive connections, taken by one exchange at a time."""

    def __init__(self) -> None:
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    def close(self) -> None:
        for _, writer in self.idle:
            writer.close()
        self.idle.clear()


async def exchange(port: int, request: bytes, pool: Connections) -> tuple[int | str, dict[str, str]]:
    """Send one request on an idle connection (or a new one); the status, or "error:<kind>" when a new
    connection failed, and the headers. A kept-alive connection the server has meanwhile closed (its
    keep-alive timeout) is retried once on a new connection, as HTTP clients do. The connection goes
    back to the pool unless the server closes it."""
    while True:
        fresh = not pool.idle
        writer: asyncio.StreamWriter | None = None
        try:
            if fresh:
                reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 24)
            else:
                reader, writer = pool.idle.pop()
            writer.write(request)
            status, headers, _ = await read_response(reader)
            break
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            if writer is not None:
                writer.close()
            if fresh:
                return f"error:{type(exc).__name__}", {}
    if headers.get("connection", "").lower() == "close":
        writer.close()
    else:
        pool.idle.append((reader, writer))
    return status, headers


async def closed_loop(port: int, request: bytes, *, clients: int, seconds: float) -> dict[str, Any]:
    """`clients` connections, each sending its next request when the last answer arrives."""
    tally = Tally()
    start = time.perf_counter()
    stop = start + seconds
    pool = Connections()

    async def client() -> None:
        while time.perf_counter() < stop:
            sent = time.perf_counter()
            status, headers = await exchange(port, request, pool)
            now = time.perf_counter()
            tally.add(status, headers, now - sent, now - start)

    await asyncio.gather(*(client() for _ in range(clients)))
    pool.close()
    return tally.summary(time.perf_counter() - start) | {"clients": clients}


async def open_loop(
    port: int,
    request: bytes,
    *,
    rate: float,
    seconds: float,
    connections: int = 64,
    windows: int = 10,
) -> dict[str, Any]:
    """`rate` requests per second for `seconds`, on up to `connections` keep-alive connections; the
    result adds p50/p99 per window of the run (to see whether latency drifts)."""
    tally = Tally()
    start = time.perf_counter()
    total = int(rate * seconds)
    due: asyncio.Queue[float | None] = asyncio.Queue()
    pool = Connections()

    async def schedule() -> None:
        for i in range(total):
            at = start + i / rate
            await asyncio.sleep(max(0.0, at - time.perf_counter()))
            due.put_nowait(at)
        for _ in range(connections):
            due.put_nowait(None)

    async def client() -> None:
        while (at := await due.get()) is not None:
            status, headers = await exchange(port, request, pool)
            now = time.perf_counter()
            tally.add(status, headers, now - at, now - start)

    await asyncio.gather(schedule(), *(client() for _ in range(connections)))
    pool.close()
    elapsed = time.perf_counter() - start
    edges = np.linspace(0, elapsed, windows + 1)
    lat, fin = np.asarray(tally.latencies) * 1000, np.asarray(tally.finished)
    per_window = []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        sel = lat[(fin >= lo) & (fin < hi)]
        per_window.append(
            {
                "from_s": round(float(lo), 1),
                "ok": int(sel.size),
                "p50_ms": round(float(np.percentile(sel, 50)), 1) if sel.size else None,
                "p99_ms": round(float(np.percentile(sel, 99)), 1) if sel.size else None,
            }
        )
    return tally.summary(elapsed) | {"rate": rate, "windows": per_window}


async def abandon(port: int, request: bytes, *, clients: int, after_s: float) -> int | str:
    """`clients` connections send `request` and hang up `after_s` later, before any answer.

    A leader sends the same request just before them and waits for its answer (its status is
    returned): a batcher may run a request that follows a quiet spell at once. A slow uploader sends
    all of the request but its last byte and holds it until the clients have gone: one more request in
    flight that could join their batch, so they wait for it to fill and are still queued when they
    leave (a batcher does not wait when no other request is in flight).
    """

    async def one() -> None:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request)
        await writer.drain()
        await asyncio.sleep(after_s)
        writer.close()

    pool = Connections()
    leader = asyncio.ensure_future(exchange(port, request, pool))
    await asyncio.sleep(0.05)
    _, slow = await asyncio.open_connection("127.0.0.1", port)
    slow.write(request[:-1])
    await slow.drain()
    await asyncio.gather(*(one() for _ in range(clients)))
    slow.close()
    status = (await leader)[0]
    pool.close()
    return status
