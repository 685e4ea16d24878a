"""The performance targets, each a ratio of two figures from one run, with PASS/MISS.

CPU: single-image reconstruct at concurrency 16 >= 85% of the raw engine's best images/s; bulk tokens
>= 90%; p50 at concurrency 1 <= the engine's batch-1 latency + 2 ms; >= 2x the naive baseline at
concurrency 64; cold start to ready <= 5 s. GPU: the served graph >= 1.3x torch eager bf16 at batch 256;
bulk tokens >= 80% of the engine; >= 5x the naive baseline; single-image throughput reported against the
no-op endpoint (no target). The engine figure of a target is the one without PNG cost; the ratio with
the PNG cost included is given beside it.
"""

from __future__ import annotations

from typing import Any

from bench.engine import best, pick


def _target(
    name: str,
    measured: float | None,
    target: float | None,
    unit: str,
    rule: str = ">=",
    note: str = "",
    measured_on: tuple[dict[str, Any] | None, ...] = (),
) -> dict[str, Any]:
    """A target row; target None means reported without a goal (passed is None). measured_on: the load
    runs the figure comes from; one with errors (non-200 answers, wrong content types, broken
    connections) keeps the target from passing, whatever its ratio: failures are not throughput."""
    if measured is None or target is None:
        passed = None
    else:
        passed = measured >= target if rule == ">=" else measured <= target
    errors = sum(int(r.get("errors") or 0) for r in measured_on if r is not None)
    if errors:
        passed = False if passed is not None else None
        note = f"{errors} errors in the runs measured; " + note
    return {
        "name": name,
        "measured": None if measured is None else round(measured, 3),
        "target": target,
        "unit": unit,
        "rule": rule,
        "passed": passed,
        "note": note,
    }


def _ratio(a: dict[str, Any] | None, b: dict[str, Any] | None, key: str = "images_per_s") -> float | None:
    """a[key] / b[key], or None when either row is missing."""
    return a[key] / b[key] if a is not None and b is not None and b[key] else None


def _fmt(value: float | None, unit: str = "") -> str:
    return "n/a" if value is None else f"{value:.3f}{unit}"


def _single_rows(rows: list[dict[str, Any]], server: str, workers: int = 1) -> list[dict[str, Any]]:
    return [r for r in rows if (r["server"], r["scenario"], r["workers"]) == (server, "single", workers)]


def _service_targets(svc: dict[str, Any], gpu: bool) -> list[dict[str, Any]]:
    eng, rows = svc["engine"], svc["service"]
    first = min(svc["config"]["workers"])
    served = [r for r in rows if r["server"] == "service" and r["workers"] == first]
    single = _single_rows(rows, "service", first)
    c1, c16, c64 = (pick(single, concurrency=c) for c in (1, 16, 64))
    out = []
    if not gpu:
        recon, recon_png = best(eng, op="reconstruct", png=False), best(eng, op="reconstruct", png=True)
        out.append(
            _target(
                "single-image reconstruct, concurrency 16 / raw engine best",
                _ratio(c16, recon),
                0.85,
                "ratio",
                note=f"engine best at batch {recon and recon['batch']}; "
                f"with PNG decode+encode in the engine: {_fmt(_ratio(c16, recon_png))}",
                measured_on=(c16,),
            )
        )
        lat, lat_png = (pick(eng, op="reconstruct", png=png, batch=1) for png in (False, True))
        over, over_png = (
            None if c1 is None or e is None else c1["p50_ms"] - e["latency_ms"] for e in (lat, lat_png)
        )
        wrk = pick(_single_rows(rows, "service (wrk)"), concurrency=1)
        wrk_over = (
            None if wrk is None or lat is None or wrk["p50_ms"] is None else wrk["p50_ms"] - lat["latency_ms"]
        )
        out.append(
            _target(
                "p50 at concurrency 1 minus engine batch-1 latency",
                over,
                2.0,
                "ms",
                "<=",
                note=f"p50 {c1 and c1['p50_ms']} ms, engine {lat and lat['latency_ms']} ms; "
                f"over the engine with PNG: {_fmt(over_png, ' ms')}"
                + (
                    f"; wrk as the client: p50 {wrk['p50_ms']} ms, {_fmt(wrk_over, ' ms')} over"
                    if wrk
                    else ""
                ),
                measured_on=(c1,),
            )
        )
    tokens, tokens_png = best(eng, op="tokens", png=False), best(eng, op="tokens", png=True)
    if tokens is not None:
        bulk = max(
            (r for r in served if r["scenario"] == "bulk"), key=lambda r: r["images_per_s"], default=None
        )
        out.append(
            _target(
                "bulk tokens / raw engine best",
                _ratio(bulk, tokens),
                0.80 if gpu else 0.90,
                "ratio",
                note=f"{bulk and bulk['images_per_request']} images per request; "
                f"with PNG decode in the engine: {_fmt(_ratio(bulk, tokens_png))}",
                measured_on=(bulk,),
            )
        )
    naive = pick(_single_rows(rows, "naive"), concurrency=64)
    out.append(
        _target(
            "single-image service / naive baseline, concurrency 64",
            _ratio(c64, naive),
            5.0 if gpu else 2.0,
            "x",
            measured_on=(c64, naive),
        )
    )
    noop = max(_single_rows(rows, "noop"), key=lambda r: r["requests_per_s"], default=None)
    for workers in svc["config"]["workers"]:
        top = max(_single_rows(rows, "service", workers), key=lambda r: r["requests_per_s"], default=None)
        out.append(
            _target(
                f"single-image service ({workers} worker{'s' if workers > 1 else ''}) / no-op endpoint",
                _ratio(top, noop, "requests_per_s"),
                None,
                "ratio",
                note="reported, no target: best requests/s of each, the no-op is the framework's floor",
            )
        )
    return out


def _engine_target(engine: dict[str, Any], model: str) -> list[dict[str, Any]]:
    """GPU: the served graph (ORT fp32) against torch eager bf16 at batch 256, the worst graph counts."""
    ratios = []
    for graph in dict.fromkeys(r["graph"] for r in engine["rows"] if r["model"] == model):
        mine = {"model": model, "graph": graph, "batch": 256}
        ratio = _ratio(
            pick(engine["rows"], runtime="ort-fp32", **mine),
            pick(engine["rows"], runtime="torch-bf16", **mine),
        )
        if ratio is not None:
            ratios.append((ratio, graph))
    if not ratios:
        return []
    return [
        _target(
            "served graph (ORT fp32) / torch eager bf16, batch 256",
            min(ratios)[0],
            1.3,
            "x",
            note="per graph: " + ", ".join(f"{g} {r:.2f}" for r, g in sorted(ratios)),
        )
    ]


def evaluate(results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Every target that the sections present allow, for the device the service ran on."""
    out: list[dict[str, Any]] = []
    svc = results.get("service")
    gpu = bool(svc and svc["config"]["provider"] == "cuda")
    if svc:
        out += _service_targets(svc, gpu)
        if gpu and "engine" in results:
            out += _engine_target(results["engine"], svc["model"])
    cold = results.get("coldstart")
    if cold and cold["provider"] == "cpu":
        out.append(
            _target(
                f"cold start to ready, {len(cold['models'])} models (median)",
                cold["ready_median_s"],
                5.0,
                "s",
                "<=",
                note=f"max {cold['ready_max_s']} s; imports {cold['import_median_s']} s",
            )
        )
    return out


def verdict(t: dict[str, Any]) -> str:
    return "reported" if t["passed"] is None else ("PASS" if t["passed"] else "MISS")


def lines(targets: list[dict[str, Any]]) -> list[str]:
    """One printable line per target: measured, target, PASS/MISS."""
    out = []
    for t in targets:
        measured = "n/a" if t["measured"] is None else f"{t['measured']:g} {t['unit']}"
        goal = "" if t["target"] is None else f" (target {t['rule']} {t['target']:g} {t['unit']})"
        note = f"; {t['note']}" if t["note"] else ""
        out.append(f"{verdict(t):>8}  {t['name']}: {measured}{goal}{note}")
    return out
