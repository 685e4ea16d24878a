"""Prometheus metrics of one app instance (its own CollectorRegistry, so several apps can coexist)."""

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


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
        self.model_ready = Gauge(
            "aeserve_model_ready", "1 when the model serves, 0 when unavailable.", ["model"], registry=r
        )

    def observe_batch(
        self, graph: str, items: int, queue_s: list[float], compute_s: float, *, inline: bool = False
    ) -> None:
        if inline:
            self.inline.labels(graph).inc()
        self.batch_size.labels(graph).observe(items)
        self.compute_time.labels(graph).observe(compute_s)
        for q in queue_s:
            self.queue_time.labels(graph).observe(q)

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

    def observe_request(self, route: str, model: str, status: int, seconds: float) -> None:
        self.requests.labels(route, model, str(status)).inc()
        self.latency.labels(route, model).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
