"""Dynamic batching per graph: coalesce concurrent requests into one ONNX Runtime run.

A request is a dict of arrays that share axis 0 (its item count). Requests wait in a bounded queue;
one worker task per graph takes the oldest request, gathers later ones with the same non-batch shapes
(never mixing shapes in one batch) until `max_batch_size` items or `max_delay_s` (or at once when no other
request in flight could join: `demand`), drops requests whose client has gone (cancelled futures), runs
the batch in a thread and hands each request its slice. A failed batch fails every request in it with
the same error. A full queue refuses at once (`Overloaded`). A model reload `retire`s the old graph's
batcher: it serves what is queued and then stops, restarting for a late request that still holds the old
model, so a reload never fails a request.
"""

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import numpy as np
from starlette.concurrency import run_in_threadpool

from app.errors import InferenceFailed, InvalidInput, NotReady, Overloaded

Feeds = dict[str, np.ndarray]
ShapeKey = tuple[tuple[str, tuple[int, ...], str], ...]
T = TypeVar("T")

# The idle path runs a request on the event loop's thread only up to this many input values (an RGB
# 128x128 image; every bundled model's own size is far below): a larger one, such as a full photograph
# sent to a fully convolutional model with fit=none, takes seconds and goes to a worker thread, so the
# loop keeps answering other connections and health probes meanwhile.
INLINE_MAX_VALUES = 3 * 128 * 128


async def off_loop(work: int, limit: int, fn: Callable[..., T], *args: Any) -> T:
    """fn(*args) on a worker thread when `work` (values, pixels or bytes) exceeds `limit`, else here.
    Large work (decoding or encoding a photograph, parsing megabytes of JSON) would hold the event loop,
    and health probes with it, for seconds; small work costs less here than the hand-off to a thread."""
    return await run_in_threadpool(fn, *args) if work > limit else fn(*args)


class BatchObserver(Protocol):
    """Where a batcher reports what it does (app.metrics.Metrics implements it).

    A run's `phase_s` holds its seconds in compute_input (gathering the requests' inputs into one
    batch), compute_infer (the graph) and compute_output (handing each request its slice); `queue_s`
    has one entry per request: the time it waited before its run began."""

    def observe_batch(
        self, graph: str, items: int, queue_s: list[float], phase_s: dict[str, float], *, inline: bool = False
    ) -> None: ...

    def observe_failure(self, graph: str, queue_s: list[float], seconds: float) -> None: ...

    def set_queue_depth(self, graph: str, depth: int) -> None: ...

    def observe_skipped(self, graph: str, requests: int) -> None: ...


@dataclass
class BatcherStats:
    """Counters a test or an operator can read: how requests were actually coalesced."""

    batches: int = 0
    items: int = 0
    requests: int = 0
    skipped_cancelled: int = 0
    failed_batches: int = 0
    largest_batch: int = 0
    inline: int = 0  # requests run straight from submit (idle path), never queued
    batch_sizes: Counter[int] = field(default_factory=Counter)  # items per run -> number of runs


@dataclass
class _Pending:
    feeds: Feeds
    items: int
    key: ShapeKey
    future: asyncio.Future[Feeds]
    enqueued: float
    quiet_before_s: float  # time since the request before it arrived: how busy the graph is
    size: int = 0  # what the request weighs against max_batch_values (size_of), 0 when unbounded


def _shape_key(feeds: Feeds) -> tuple[int, ShapeKey]:
    if not feeds:
        raise InvalidInput("a request needs at least one input tensor")
    counts = {a.shape[0] if a.ndim else -1 for a in feeds.values()}
    if len(counts) != 1 or min(counts) < 1:
        raise InvalidInput("all inputs of one request must share a batch axis of at least 1")
    key = tuple(sorted((name, tuple(a.shape[1:]), str(a.dtype)) for name, a in feeds.items()))
    return counts.pop(), key


class Batcher:
    """The queue and worker of one graph. `await submit(feeds)` returns that request's outputs."""

    def __init__(
        self,
        name: str,
        run: Callable[[Feeds], Feeds],
        *,
        executor: Executor | None,
        max_batch_size: int,
        max_delay_s: float,
        max_queue: int,
        retry_after_s: int = 1,
        observer: BatchObserver | None = None,
        demand: Callable[[], int] | None = None,
        inline_when_idle: bool = False,
        size_of: Callable[[Feeds], int] | None = None,
        max_batch_values: int | None = None,
    ) -> None:
        """demand: how many requests the server is handling right now (any of them may still reach this
        graph). A batch never waits for more requests than could come: when no more are in flight than
        already wait here, it runs at once. inline_when_idle: a one-image request that is the only one in
        flight runs on the event loop's own thread (straight from `submit` when nothing is queued or
        running here), skipping the queue and the hand-off to the executor, if its inputs are small
        (INLINE_MAX_VALUES); a request arriving meanwhile waits at most that one small run.
        size_of, max_batch_values: requests join one run only while their sizes sum to at most
        max_batch_values (the images they decode to: six small token grids of 512 x 512 would otherwise
        make one 21-megapixel run); a request alone always runs."""
        self.name = name
        self._demand = demand
        self._inline_when_idle = inline_when_idle and demand is not None
        self._run = run
        self._executor = executor
        self.max_batch_size = max_batch_size
        self._size_of = size_of if max_batch_values is not None else None
        self.max_batch_values = max_batch_values
        self.max_delay_s = max_delay_s
        self.max_queue = max_queue
        self.retry_after_s = retry_after_s
        self._observer = observer
        self._pending: list[_Pending] = []
        self._arrived = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None
        self._closed = False
        self._retired = False
        self._last_arrival = float("-inf")
        self._running = False  # a batch is in session.run
        self.stats = BatcherStats()

    @property
    def depth(self) -> int:
        """Requests waiting (not yet taken into a batch)."""
        return len(self._pending)

    @property
    def running(self) -> bool:
        """The worker task is alive."""
        return self._worker is not None and not self._worker.done()

    def start(self) -> None:
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(self._loop(), name=f"batcher:{self.name}")
            self._report_depth()  # the gauge exists from the start, also for a graph only ever run idle

    def retire(self) -> None:
        """A reload replaced this graph: serve what is queued, then let the worker end (no new work is
        routed here; a request that looked the old model up before the swap restarts it)."""
        self._retired = True
        self._arrived.set()

    async def close(self) -> None:
        """Stop the worker; waiting requests fail with NotReady."""
        self._closed = True
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
            self._worker = None
        for p in self._pending:
            if not p.future.done():
                p.future.set_exception(NotReady(f"{self.name}: the service is shutting down"))
        self._pending.clear()

    async def submit(self, feeds: Feeds) -> Feeds:
        """Queue one request (arrays sharing axis 0) and wait for its outputs (same axis 0)."""
        if self._retired and not self._closed and (self._worker is None or self._worker.done()):
            self._worker = None
            self.start()
        if self._closed or self._worker is None:
            raise NotReady(f"{self.name} is not running")
        items, key = _shape_key(feeds)
        if len(self._pending) >= self.max_queue:
            raise Overloaded(
                f"{self.name}: {len(self._pending)} requests already queued; retry later",
                retry_after_s=self.retry_after_s,
            )
        now = time.perf_counter()
        if not self._pending and not self._running and self._run_here(feeds, items):
            # idle: nothing queued, nothing running, nobody else in flight; no queue, no task switch
            self._last_arrival = now
            self.stats.requests += 1
            return self._run_now(feeds, items, now)
        future: asyncio.Future[Feeds] = asyncio.get_running_loop().create_future()
        size = self._size_of(feeds) if self._size_of is not None else 0
        self._pending.append(_Pending(feeds, items, key, future, now, now - self._last_arrival, size))
        self._last_arrival = now
        self.stats.requests += 1
        self._report_depth()
        self._arrived.set()
        # If this task is cancelled (the client went away) the future is cancelled with it, and the
        # worker drops it before running.
        return await future

    def demand_dropped(self) -> None:
        """A request in flight elsewhere finished: a batch waiting for company re-checks at once whether
        any can still come, instead of at the next arrival or its deadline."""
        if self._pending:
            self._arrived.set()

    def _report_depth(self) -> None:
        # a retired batcher's graph may be gone from the registry: its draining must not bring the
        # gauge's label back (the new version of a graph reports under the same name)
        if self._observer is not None and not self._retired:
            self._observer.set_queue_depth(self.name, len(self._pending))

    def _group_size(self, key: ShapeKey) -> int:
        return sum(p.items for p in self._pending if p.key == key and not p.future.done())

    def _group_full(self, key: ShapeKey) -> bool:
        """Whether the run `_take` would make of one shape group now is full, by items or by size: not
        even a one-item request of that shape could join it, so waiting longer would add nothing."""
        live = [p for p in self._pending if p.key == key and not p.future.done()]
        if not live:
            return False
        run = self._pack(live)
        one = live[0].size // max(1, live[0].items)  # a shape group's requests weigh the same per item
        return not self._fits(sum(p.items for p in run) + 1, sum(p.size for p in run) + one)

    def _pack(self, group: list[_Pending]) -> list[_Pending]:
        """The run made of one shape group's live requests: oldest first, each one that still fits (the
        first always runs, whatever it weighs)."""
        run: list[_Pending] = []
        items = size = 0
        for p in group:
            if run and not self._fits(items + p.items, size + p.size):
                continue
            run.append(p)
            items += p.items
            size += p.size
        return run

    def _fits(self, items: int, size: int) -> bool:
        """Whether a run of `items` items weighing `size` stays within both bounds."""
        return items <= self.max_batch_size and (
            self.max_batch_values is None or size <= self.max_batch_values
        )

    def _none_can_join(self) -> bool:
        if self._demand is None:
            return False
        return self._demand() <= sum(1 for p in self._pending if not p.future.done())

    async def _wait_to_fill(self, first: _Pending) -> None:
        # A lone request after a quiet spell (nothing arrived within the delay before it) is unlikely to
        # be joined: run it now rather than add the delay to every request of a light load. Under load
        # requests arrive closer together than the delay, and the wait below fills the batch.
        if first.quiet_before_s > self.max_delay_s and self._group_size(first.key) == first.items:
            return
        deadline = first.enqueued + self.max_delay_s
        while not self._group_full(first.key) and not self._none_can_join():
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                return
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), timeout=remaining)
            except TimeoutError:
                return

    def _take(self, key: ShapeKey) -> list[_Pending]:
        """Remove and return the run of one shape group's live requests (`_pack`), dropping cancelled ones."""
        live = [p for p in self._pending if not p.future.done()]  # a cancelled one's client is gone
        skipped = len(self._pending) - len(live)
        taken = self._pack([p for p in live if p.key == key])
        chosen = {id(p) for p in taken}
        self._pending = [p for p in live if id(p) not in chosen]
        self._report_depth()
        if skipped:
            self.stats.skipped_cancelled += skipped
            if self._observer is not None:
                self._observer.observe_skipped(self.name, skipped)
        return taken

    async def _loop(self) -> None:
        while True:
            while not self._pending:
                if self._retired:
                    return
                self._arrived.clear()
                await self._arrived.wait()
            first = next((p for p in self._pending if not p.future.done()), None)
            if first is None:
                self._take(())  # only cancelled requests left: drop them
                continue
            await self._wait_to_fill(first)
            batch = self._take(first.key)
            if batch:
                await self._run_batch(batch)

    def _run_here(self, feeds: Feeds, items: int) -> bool:
        """Run on the event loop's thread: a small one-image batch while no other request is in flight."""
        return (
            self._inline_when_idle
            and items == 1
            and sum(a.size for a in feeds.values()) <= INLINE_MAX_VALUES
            and self._demand is not None
            and self._demand() <= 1
        )

    def _run_now(self, feeds: Feeds, items: int, enqueued: float) -> Feeds:
        started = time.perf_counter()
        try:
            outputs = self._run(feeds)
        except Exception as exc:
            raise self._failed(exc, [started - enqueued], time.perf_counter() - started) from exc
        phases = {"compute_input": 0.0, "compute_infer": time.perf_counter() - started, "compute_output": 0.0}
        self._record(items, [started - enqueued], phases, inline=True)
        return outputs

    def _failed(self, exc: Exception, queue_s: list[float], seconds: float) -> InferenceFailed:
        self.stats.failed_batches += 1
        if self._observer is not None:
            self._observer.observe_failure(self.name, queue_s, seconds)
        return InferenceFailed(f"{self.name}: inference failed: {exc}")

    def _record(
        self, items: int, queue_s: list[float], phase_s: dict[str, float], *, inline: bool = False
    ) -> None:
        self.stats.batches += 1
        self.stats.inline += inline
        self.stats.items += items
        self.stats.largest_batch = max(self.stats.largest_batch, items)
        self.stats.batch_sizes[items] += 1
        if self._observer is not None:
            self._observer.observe_batch(self.name, items, queue_s, phase_s, inline=inline)

    async def _run_batch(self, batch: list[_Pending]) -> None:
        started = time.perf_counter()
        queue_s = [started - p.enqueued for p in batch]
        feeds = {name: np.concatenate([p.feeds[name] for p in batch]) for name in batch[0].feeds}
        items = sum(p.items for p in batch)
        gathered = time.perf_counter()
        self._running = True
        try:
            if self._run_here(feeds, items):
                outputs = self._run(feeds)
            else:
                outputs = await asyncio.get_running_loop().run_in_executor(self._executor, self._run, feeds)
        except Exception as exc:  # one runtime failure reaches every request of the batch
            waiting = [q for q, p in zip(queue_s, batch, strict=True) if not p.future.done()]
            error = self._failed(exc, waiting, time.perf_counter() - started)
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(error)
            return
        finally:
            self._running = False
        ran = time.perf_counter()
        offset = 0
        answered = []  # the queue times of requests given a result (not those whose client left meanwhile)
        for p, q in zip(batch, queue_s, strict=True):
            part = {name: out[offset : offset + p.items] for name, out in outputs.items()}
            offset += p.items
            if not p.future.done():
                p.future.set_result(part)
                answered.append(q)
        phases = {"compute_input": gathered - started, "compute_infer": ran - gathered,
                  "compute_output": time.perf_counter() - ran}  # fmt: skip
        self._record(items, answered, phases)
