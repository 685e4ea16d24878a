"""Metrics of one app instance: Prometheus (its own CollectorRegistry, so several apps can coexist) and
per-graph inference statistics in the form of Triton's statistics extension (GET /v2/models/stats)."""

import time
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "GraphStats", "Metrics"]

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


@dataclass
class _Duration:
    count: int = 0
    ns: int = 0

    def add(self, count: int, seconds: float) -> None:
        self.count += count
        self.ns += round(seconds * 1e9)

    def as_json(self) -> dict[str, int]:
        return {"count": self.count, "ns": self.ns}


_PHASES = ("compute_input", "compute_infer", "compute_output")


@dataclass
class GraphStats:
    """Cumulative statistics of one graph since the server started, as Triton keeps them.

    Per request: success / fail (count and total time from entering the batcher's queue to the result),
    queue, and the three phases of the run it was part of (compute_input: gathering the batch's inputs,
    compute_infer: ONNX Runtime, compute_output: handing each request its slice), each phase counted
    once per request with the whole run's duration, as Triton does. Per run: `execution_count`, and the
    phases by batch size (`batch_stats`). `inference_count` counts items (images), not requests. There
    is no response cache, so its hits and misses stay zero. HTTP parsing and encoding are outside these
    times: the Prometheus request histogram has the whole request.
    """

    last_inference_ms: int = 0
    inference_count: int = 0
    execution_count: int = 0
    success: _Duration = field(default_factory=_Duration)
    fail: _Duration = field(default_factory=_Duration)
    queue: _Duration = field(default_factory=_Duration)
    phases: dict[str, _Duration] = field(default_factory=lambda: {p: _Duration() for p in _PHASES})
    by_batch_size: dict[int, dict[str, _Duration]] = field(default_factory=dict)

    def observe_run(self, items: int, queue_s: list[float], phase_s: dict[str, float]) -> None:
        requests = len(queue_s)
        self.last_inference_ms = int(time.time() * 1000)
        self.inference_count += items
        self.execution_count += 1
        run_s = sum(phase_s.values())
        self.success.add(requests, sum(queue_s) + requests * run_s)
        self.queue.add(requests, sum(queue_s))
        per_size = self.by_batch_size.setdefault(items, {p: _Duration() for p in _PHASES})
        for phase in _PHASES:
            self.phases[phase].add(requests, requests * phase_s.get(phase, 0.0))
            per_size[phase].add(1, phase_s.get(phase, 0.0))

    def observe_failure(self, queue_s: list[float], seconds: float) -> None:
        self.fail.add(len(queue_s), sum(queue_s) + len(queue_s) * seconds)

    def as_triton(self, name: str, version: str) -> dict[str, Any]:
        return {
            "name": name,
            "version": version,
            "last_inference": self.last_inference_ms,
            "inference_count": self.inference_count,
            "execution_count": self.execution_count,
            "inference_stats": {
                "success": self.success.as_json(),
                "fail": self.fail.as_json(),
                "queue": self.queue.as_json(),
                **{p: d.as_json() for p, d in self.phases.items()},
                "cache_hit": _Duration().as_json(),
                "cache_miss": _Duration().as_json(),
            },
            "batch_stats": [
                {"batch_size": size, **{p: d.as_json() for p, d in phases.items()}}
                for size, phases in sorted(self.by_batch_size.items())
            ],
        }


class Metrics:
    """Request, batching and provider metrics; implements app.batching.BatchObserver."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "aeserve_requests",
            "HTTP requests by route template, model and status.",
            ["route", "model", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "aeserve_request_seconds",
            "HTTP request latency, seconds.",
            ["route", "model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_time = Histogram(
            "aeserve_queue_seconds",
            "Time a request waited for its batch, seconds.",
            ["graph"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.compute_time = Histogram(
            "aeserve_compute_seconds",
            "ONNX Runtime time per batch, seconds.",
            ["graph"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "aeserve_batch_size", "Items per batched run.", ["graph"], buckets=_BATCH_BUCKETS, registry=r
        )
        self.inline = Counter(
            "aeserve_batch_inline",
            "One-image requests run at once on the event loop because nothing else was in flight.",
            ["graph"],
            registry=r,
        )
        self.queue_depth = Gauge(
            "aeserve_queue_depth", "Requests waiting for a batch.", ["graph"], registry=r
        )
        self.provider = Gauge(
            "aeserve_graph_provider",
            "1 for the execution provider each graph runs on.",
            ["graph", "provider"],
            registry=r,
        )
        self.skipped = Counter(
            "aeserve_batch_skipped",
            "Queued requests dropped before running because their client had gone.",
            ["graph"],
            registry=r,
        )
        self.failed = Counter(
            "aeserve_batch_failed_requests",
            "Requests failed by an error of the run they were batched into.",
            ["graph"],
            registry=r,
        )
        self.model_ready = Gauge(
            "aeserve_model_ready", "1 when the model serves, 0 when unavailable.", ["model"], registry=r
        )
        self.graph_stats: dict[str, GraphStats] = {}  # v2 graph name -> its statistics

    def observe_batch(
        self, graph: str, items: int, queue_s: list[float], phase_s: dict[str, float], *, inline: bool = False
    ) -> None:
        if inline:
            self.inline.labels(graph).inc()
        self.batch_size.labels(graph).observe(items)
        self.compute_time.labels(graph).observe(phase_s.get("compute_infer", 0.0))
        for q in queue_s:
            self.queue_time.labels(graph).observe(q)
        self.graph_stats.setdefault(graph, GraphStats()).observe_run(items, queue_s, phase_s)

    def observe_failure(self, graph: str, queue_s: list[float], seconds: float) -> None:
        self.failed.labels(graph).inc(len(queue_s))
        self.graph_stats.setdefault(graph, GraphStats()).observe_failure(queue_s, seconds)

    def set_queue_depth(self, graph: str, depth: int) -> None:
        self.queue_depth.labels(graph).set(depth)

    def observe_skipped(self, graph: str, requests: int) -> None:
        self.skipped.labels(graph).inc(requests)

    def publish_models(self, ready: dict[str, bool], providers: dict[str, str]) -> None:
        """Model readiness and each graph's provider, replacing what an earlier load published."""
        self.model_ready.clear()
        self.provider.clear()
        for model, is_ready in ready.items():
            self.model_ready.labels(model).set(1 if is_ready else 0)
        for graph, provider in providers.items():
            self.provider.labels(graph, provider).set(1)
        # the queues of graphs no longer served (a model removed by a reload) leave the scrape too
        for family in self.queue_depth.collect():
            for graph in {sample.labels["graph"] for sample in family.samples} - set(providers):
                self.queue_depth.remove(graph)

    def observe_request(self, route: str, model: str, status: int, seconds: float) -> None:
        self.requests.labels(route, model, str(status)).inc()
        self.latency.labels(route, model).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
