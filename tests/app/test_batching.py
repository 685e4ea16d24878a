"""The dynamic batcher on its own: coalescing, shape groups, admission, failures, cancellation."""

import asyncio
import threading

import numpy as np
import pytest

from app.batching import Batcher, Feeds
from app.errors import InferenceFailed, Overloaded
from app.metrics import Metrics


def double(feeds: Feeds) -> Feeds:
    """The backend: y = 2x, row by row (so a wrong slice shows)."""
    return {"y": feeds["x"] * 2}


def make(run=double, **kw: object) -> Batcher:  # type: ignore[no-untyped-def]
    opts: dict[str, object] = {"executor": None, "max_batch_size": 8, "max_delay_s": 0.05, "max_queue": 16}
    opts.update(kw)
    return Batcher("test", run, **opts)  # type: ignore[arg-type]


def test_concurrent_requests_coalesce_and_get_their_own_rows() -> None:
    async def main() -> None:
        b = make()
        b.start()
        xs = [np.full((1 + i % 2, 3), i, np.float32) for i in range(6)]  # 9 items in all
        outs = await asyncio.gather(*(b.submit({"x": x}) for x in xs))
        await b.close()
        for x, out in zip(xs, outs, strict=True):
            np.testing.assert_array_equal(out["y"], x * 2)
        assert b.stats.requests == 6
        assert b.stats.items == 9
        # oldest first up to max_batch_size (1+2+1+2+1 = 7; the last 2 would pass 8), then the rest
        assert b.stats.batch_sizes == {7: 1, 2: 1}

    asyncio.run(main())


def test_different_shapes_are_never_mixed() -> None:
    seen: list[tuple[int, ...]] = []

    def record(feeds: Feeds) -> Feeds:
        seen.append(feeds["x"].shape)
        return double(feeds)

    async def main() -> None:
        b = make(record)
        b.start()
        a, c = np.ones((1, 3), np.float32), np.ones((1, 5), np.float32)
        outs = await asyncio.gather(b.submit({"x": a}), b.submit({"x": c}), b.submit({"x": a}))
        await b.close()
        assert [o["y"].shape for o in outs] == [(1, 3), (1, 5), (1, 3)]

    asyncio.run(main())
    assert sorted(seen) == [(1, 5), (2, 3)]


def test_requests_join_a_run_only_while_their_sizes_fit() -> None:
    async def main() -> None:
        b = make(size_of=lambda feeds: feeds["x"].size, max_batch_values=10)
        b.start()
        big = np.ones((1, 12), np.float32)  # over the bound alone: it still runs, alone
        xs = [np.full((1, 4), i, np.float32) for i in range(4)] + [big]
        outs = await asyncio.gather(*(b.submit({"x": x}) for x in xs))
        await b.close()
        for x, out in zip(xs, outs, strict=True):
            np.testing.assert_array_equal(out["y"], x * 2)
        assert b.stats.batch_sizes == {2: 2, 1: 1}  # 4 + 4 values, 4 + 4, then 12 on its own

    asyncio.run(main())


def test_a_run_full_by_size_starts_without_waiting_out_the_delay() -> None:
    async def main() -> None:
        b = make(size_of=lambda feeds: feeds["x"].size, max_batch_values=10, max_delay_s=60.0)
        b.start()
        xs = [np.full((1, 5), i, np.float32) for i in range(2)]  # 10 values, the bound, in 2 items (under
        # max_batch_size): only the size says the run is full; a wait would last a minute
        outs = await asyncio.wait_for(asyncio.gather(*(b.submit({"x": x}) for x in xs)), timeout=20)
        await b.close()
        for x, out in zip(xs, outs, strict=True):
            np.testing.assert_array_equal(out["y"], x * 2)
        assert b.stats.batch_sizes == {2: 1}

    asyncio.run(main())


def test_a_run_that_one_more_item_could_join_waits_for_it() -> None:
    async def main() -> None:
        b = make(size_of=lambda feeds: feeds["x"].size, max_batch_values=10, max_delay_s=60.0)
        b.start()
        a, big, c = (np.full((n, 3), n, np.float32) for n in (1, 3, 2))  # 3, 9 and 6 values
        # a and big together would weigh 12: a's run holds a alone (3), which a 1- or 2-item request
        # could still join, so it waits; c (6) joins it, making it full (9: one more item would be 12)
        first = [asyncio.ensure_future(b.submit({"x": x})) for x in (a, big)]
        await asyncio.sleep(0.05)
        assert b.stats.batch_sizes == {}  # nothing has run yet
        outs = await asyncio.wait_for(asyncio.gather(*first, b.submit({"x": c})), timeout=20)
        await b.close()
        for x, out in zip((a, big, c), outs, strict=True):
            np.testing.assert_array_equal(out["y"], x * 2)
        assert b.stats.batch_sizes == {3: 2}  # a + c (1 + 2 items), then big (3) on its own

    asyncio.run(main())


def test_full_queue_is_refused_with_overloaded() -> None:
    async def main() -> None:
        b = make(max_queue=2, max_delay_s=0.2)
        b.start()
        first = [asyncio.ensure_future(b.submit({"x": np.ones((1, 1), np.float32)})) for _ in range(2)]
        await asyncio.sleep(0)
        with pytest.raises(Overloaded) as info:
            await b.submit({"x": np.ones((1, 1), np.float32)})
        assert info.value.retry_after_s == 1
        await asyncio.gather(*first)
        await b.close()

    asyncio.run(main())


def test_a_failed_batch_fails_every_request_in_it() -> None:
    def broken(feeds: Feeds) -> Feeds:
        raise RuntimeError("device lost")

    async def main() -> None:
        b = make(broken)
        b.start()
        results = await asyncio.gather(
            *(b.submit({"x": np.ones((1, 2), np.float32)}) for _ in range(3)), return_exceptions=True
        )
        await b.close()
        assert all(isinstance(r, InferenceFailed) and "device lost" in str(r) for r in results)
        assert b.stats.failed_batches == 1

    asyncio.run(main())


def test_failed_and_served_requests_reach_the_statistics() -> None:
    def flaky(feeds: Feeds) -> Feeds:
        if feeds["x"][0, 0] < 0:
            raise RuntimeError("device lost")
        return double(feeds)

    metrics = Metrics()

    async def main() -> None:
        b = make(flaky, observer=metrics)
        b.start()
        bad = await asyncio.gather(
            *(b.submit({"x": -np.ones((1, 2), np.float32)}) for _ in range(3)), return_exceptions=True
        )
        assert all(isinstance(r, InferenceFailed) for r in bad)
        await b.submit({"x": np.ones((2, 2), np.float32)})
        await b.close()

    asyncio.run(main())
    stats = metrics.graph_stats["test"].as_triton("test", "1")
    assert stats["inference_stats"]["fail"]["count"] == 3 and stats["inference_stats"]["fail"]["ns"] > 0
    assert stats["inference_stats"]["success"]["count"] == 1 and stats["inference_count"] == 2
    assert stats["execution_count"] == 1  # a failed run is no execution
    assert 'aeserve_batch_failed_requests_total{graph="test"} 3.0' in metrics.render().decode()


def test_a_request_cancelled_during_its_run_is_no_success_in_the_statistics() -> None:
    gate = threading.Event()

    def slow(feeds: Feeds) -> Feeds:
        gate.wait(5)
        return double(feeds)

    metrics = Metrics()

    async def main() -> None:
        b = make(slow, observer=metrics, executor=None)
        b.start()
        kept = asyncio.ensure_future(b.submit({"x": np.ones((1, 2), np.float32)}))
        gone = asyncio.ensure_future(b.submit({"x": np.ones((1, 2), np.float32)}))
        while not b._running:  # both in one run, which is now in ONNX Runtime's place
            await asyncio.sleep(0.01)
        gone.cancel()  # the client hangs up meanwhile
        gate.set()
        await kept
        await b.close()

    asyncio.run(main())
    stats = metrics.graph_stats["test"].as_triton("test", "1")
    assert stats["inference_stats"]["success"]["count"] == 1 and stats["inference_count"] == 2


def test_requests_whose_client_left_are_skipped() -> None:
    gate = threading.Event()
    rows: list[int] = []

    def slow(feeds: Feeds) -> Feeds:
        gate.wait(5)
        rows.append(len(feeds["x"]))
        return double(feeds)

    async def main() -> None:
        b = make(slow, max_delay_s=0.0, max_batch_size=1)
        b.start()
        busy = asyncio.ensure_future(b.submit({"x": np.ones((1, 1), np.float32)}))  # holds the worker
        await asyncio.sleep(0.05)
        gone = asyncio.ensure_future(b.submit({"x": np.ones((1, 1), np.float32)}))
        kept = asyncio.ensure_future(b.submit({"x": np.full((1, 1), 3, np.float32)}))
        await asyncio.sleep(0.01)
        gone.cancel()
        gate.set()
        assert (await kept)["y"][0, 0] == 6
        await busy
        await b.close()
        assert b.stats.skipped_cancelled == 1
        assert rows == [1, 1]  # the cancelled request never ran

    asyncio.run(main())


def test_a_lone_request_after_a_quiet_spell_does_not_wait_but_a_busy_graph_does() -> None:
    async def main() -> None:
        b = make(max_delay_s=2.0)
        b.start()
        x = np.ones((1, 3), np.float32)
        loop = asyncio.get_running_loop()
        started = loop.time()
        await b.submit({"x": x})  # nothing came before it: it runs at once, not after the 2 s delay
        alone_s = loop.time() - started
        # Then two requests 10 ms apart: the first arrives within the delay of the one before, so the
        # graph counts as busy and it waits; the second joins it in one run.
        first = asyncio.ensure_future(b.submit({"x": x}))
        await asyncio.sleep(0.01)
        await asyncio.gather(first, b.submit({"x": x}))
        await b.close()
        assert alone_s < 1.0  # a margin of hundreds of times the real cost: not a speed test
        assert b.stats.batch_sizes == {1: 1, 2: 1}

    asyncio.run(main())


def test_a_batch_waits_only_while_other_requests_in_flight_could_join() -> None:
    inflight = [0]

    async def timed(b: Batcher) -> float:
        started = asyncio.get_running_loop().time()
        await b.submit({"x": np.ones((1, 1), np.float32)})
        return asyncio.get_running_loop().time() - started

    async def main() -> None:
        b = make(max_delay_s=0.5, demand=lambda: inflight[0])
        b.start()
        inflight[0] = 1
        await timed(b)  # the first, after a quiet spell, runs at once anyway
        # back to back: the quiet-spell rule would wait the full 0.5 s, but nothing else is in flight
        assert await timed(b) < 0.25
        # two in flight, one here: it waits for the other, which arrives 0.1 s later and joins it
        inflight[0] = 2
        first = asyncio.ensure_future(timed(b))
        await asyncio.sleep(0.1)
        second = await timed(b)
        assert 0.08 <= await first < 0.4 and second < 0.25
        await b.close()
        assert b.stats.batch_sizes[2] == 1

    asyncio.run(main())


def test_a_waiting_batch_runs_once_the_request_it_waited_for_is_gone() -> None:
    inflight = [2]

    async def main() -> None:
        b = make(max_delay_s=0.5, demand=lambda: inflight[0])
        b.start()
        await b.submit({"x": np.ones((1, 1), np.float32)})  # after a quiet spell: at once
        loop = asyncio.get_running_loop()
        started = loop.time()
        waiting = asyncio.ensure_future(b.submit({"x": np.ones((1, 1), np.float32)}))
        await asyncio.sleep(0.05)
        assert not waiting.done()  # another request is in flight: it waits for it to join
        inflight[0] = 1  # that request finished elsewhere (its response went out) instead
        b.demand_dropped()
        await waiting
        assert loop.time() - started < 0.25  # not the 0.5 s deadline
        await b.close()
        assert b.stats.batch_sizes == {1: 2}

    asyncio.run(main())


def test_a_lone_one_image_batch_runs_on_the_loop_thread_only_when_idle() -> None:
    inflight = [1]
    threads: list[str] = []

    def record(feeds: Feeds) -> Feeds:
        threads.append(threading.current_thread().name)
        return double(feeds)

    async def main() -> None:
        b = make(record, demand=lambda: inflight[0], inline_when_idle=True)
        b.start()
        one, two = np.ones((1, 1), np.float32), np.ones((2, 1), np.float32)
        await b.submit({"x": one})  # idle, one image: here
        await b.submit({"x": two})  # two images: a worker thread
        await b.submit({"x": np.ones((1, 3, 512, 512), np.float32)})  # one large image: a worker thread
        inflight[0] = 3
        out = await b.submit({"x": one})  # others in flight: a worker thread
        await b.close()
        np.testing.assert_array_equal(out["y"], one * 2)

    asyncio.run(main())
    loop_thread = threading.main_thread().name
    assert threads[0] == loop_thread and loop_thread not in threads[1:]


def test_a_failure_on_the_idle_path_is_reported_like_a_failed_batch() -> None:
    def broken(feeds: Feeds) -> Feeds:
        raise RuntimeError("device lost")

    async def main() -> None:
        b = make(broken, demand=lambda: 1, inline_when_idle=True)
        b.start()
        with pytest.raises(InferenceFailed, match="device lost"):
            await b.submit({"x": np.ones((1, 1), np.float32)})
        await b.close()
        assert b.stats.failed_batches == 1 and b.stats.requests == 1

    asyncio.run(main())


def test_a_request_stops_counting_in_flight_when_its_response_is_complete() -> None:
    from app.admission import Inflight, InflightLimitMiddleware

    counter = Inflight()
    seen: list[int] = []  # the count at each release
    counter.on_release = lambda: seen.append(counter.count)
    during: list[int] = []

    async def app(scope, receive, send) -> None:  # type: ignore[no-untyped-def]
        during.append(counter.count)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"a", "more_body": True})
        during.append(counter.count)  # part of the body sent: still in flight
        await send({"type": "http.response.body", "body": b"b"})
        during.append(counter.count)  # response complete, app still running (logging, unwinding)

    async def main() -> None:
        middleware = InflightLimitMiddleware(
            app,
            limit=4,
            retry_after_s=1,
            respond=None,
            counter=counter,  # type: ignore[arg-type]
        )
        sent: list[dict] = []

        async def send(message: dict) -> None:  # type: ignore[type-arg]
            sent.append(message)

        async def receive() -> dict:  # type: ignore[type-arg]
            return {"type": "http.request", "body": b"", "more_body": False}

        await middleware({"type": "http", "method": "POST", "headers": []}, receive, send)
        assert [m["type"] for m in sent] == ["http.response.start", *["http.response.body"] * 2]

    asyncio.run(main())
    assert during == [1, 1, 0] and seen == [0] and counter.count == 0  # released once, not twice
