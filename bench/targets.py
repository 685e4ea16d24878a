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
    name: str, measured: float | None, target: float, unit: str, higher: bool, note: str = ""
) -> dict:
    passed = None if measured is None else (measured >= target if higher else measured <= target)
    return {
        "name": name,
        "measured": None if measured is None else round(measured, 3),
        "target": target,
        "unit": unit,
        "rule": ">=" if higher else "<=",
        "passed": passed,
        "note": note,
    }


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _get(row: dict[str, Any] | None, key: str) -> float | None:
    return None if row is None else row.get(key)


def evaluate(results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Every target that the sections present allow, for the device the service ran on."""
    out: list[dict[str, Any]] = []
    svc = results.get("service")
    gpu = bool(svc and svc["config"]["provider"] == "cuda")
    if svc:
        eng, rows = svc["engine"], svc["service"]
        served = [
            r for r in rows if r["server"] == "service" and r["workers"] == min(svc["config"]["workers"])
        ]
        recon, recon_png = best(eng, op="reconstruct", png=False), best(eng, op="reconstruct", png=True)
        tokens, tokens_png = best(eng, op="tokens", png=False), best(eng, op="tokens", png=True)
        c16 = pick(served, scenario="single", concurrency=16)
        c1 = pick(served, scenario="single", concurrency=1)
        c64 = pick(served, scenario="single", concurrency=64)
        bulk = max(
            (r for r in served if r["scenario"] == "bulk"), key=lambda r: r["images_per_s"], default=None
        )
        naive = pick([r for r in rows if r["server"] == "naive"], concurrency=64)
        if not gpu:
            with_png = _ratio(_get(c16, "images_per_s"), _get(recon_png, "images_per_s"))
            out.append(
                _target(
                    "single-image reconstruct, concurrency 16 / raw engine best",
                    _ratio(_get(c16, "images_per_s"), _get(recon, "images_per_s")),
                    0.85,
                    "ratio",
                    True,
                    f"engine best at batch {_get(recon, 'batch')}; with PNG decode+encode in the engine: "
                    + (f"{with_png:.3f}" if with_png else "n/a"),
                )
            )
            lat1 = pick(eng, op="reconstruct", png=False, batch=1)
            lat1_png = pick(eng, op="reconstruct", png=True, batch=1)
            over = None if c1 is None or lat1 is None else c1["p50_ms"] - lat1["latency_ms"]
            over_png = None if c1 is None or lat1_png is None else c1["p50_ms"] - lat1_png["latency_ms"]
            out.append(
                _target(
                    "p50 at concurrency 1 minus engine batch-1 latency",
                    over,
                    2.0,
                    "ms",
                    False,
                    f"p50 {_get(c1, 'p50_ms')} ms, engine {_get(lat1, 'latency_ms')} ms; "
                    "over the engine with PNG: " + (f"{over_png:.3f} ms" if over_png is not None else "n/a"),
                )
            )
        if tokens is not None:
            with_png = _ratio(_get(bulk, "images_per_s"), _get(tokens_png, "images_per_s"))
            out.append(
                _target(
                    "bulk tokens / raw engine best",
                    _ratio(_get(bulk, "images_per_s"), _get(tokens, "images_per_s")),
                    0.80 if gpu else 0.90,
                    "ratio",
                    True,
                    f"{_get(bulk, 'images_per_request')} images per request; with PNG decode in the engine: "
                    + (f"{with_png:.3f}" if with_png else "n/a"),
                )
            )
        out.append(
            _target(
                "single-image service / naive baseline, concurrency 64",
                _ratio(_get(c64, "images_per_s"), _get(naive, "images_per_s")),
                5.0 if gpu else 2.0,
                "x",
                True,
            )
        )
        noop = max(
            (r for r in rows if r["server"] == "noop"), key=lambda r: r["requests_per_s"], default=None
        )
        for workers in svc["config"]["workers"]:
            mine = [
                r
                for r in rows
                if r["server"] == "service" and r["workers"] == workers and r["scenario"] == "single"
            ]
            top = max(mine, key=lambda r: r["images_per_s"], default=None)
            out.append(
                _target(
                    f"single-image service ({workers} worker{'s' if workers > 1 else ''}) / no-op endpoint",
                    _ratio(_get(top, "requests_per_s"), _get(noop, "requests_per_s")),
                    0.0,
                    "ratio",
                    True,
                    "reported, no target: the framework's floor on this machine",
                )
            )
            out[-1]["passed"] = None
    eng_section = results.get("engine")
    if eng_section and gpu and svc:
        ratios = []
        for g in {r["graph"] for r in eng_section["rows"] if r["model"] == svc["model"]}:
            ort_row = pick(eng_section["rows"], model=svc["model"], graph=g, runtime="ort-fp32", batch=256)
            bf16 = pick(eng_section["rows"], model=svc["model"], graph=g, runtime="torch-bf16", batch=256)
            if ort_row and bf16:
                ratios.append((ort_row["images_per_s"] / bf16["images_per_s"], g))
        if ratios:
            worst = min(ratios)
            out.append(
                _target(
                    "served graph (ORT fp32) / torch eager bf16, batch 256",
                    worst[0],
                    1.3,
                    "x",
                    True,
                    "smallest over graphs: " + ", ".join(f"{g} {r:.2f}" for r, g in sorted(ratios)),
                )
            )
    cold = results.get("coldstart")
    if cold and cold["provider"] == "cpu":
        out.append(
            _target(
                f"cold start to ready, {len(cold['models'])} models (median)",
                cold["ready_median_s"],
                5.0,
                "s",
                False,
                f"max {cold['ready_max_s']} s; imports {cold['import_median_s']} s",
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
        goal = (
            ""
            if t["passed"] is None and t["target"] == 0
            else f" (target {t['rule']} {t['target']:g} {t['unit']})"
        )
        out.append(
            f"{verdict(t):>8}  {t['name']}: {measured}{goal}" + (f"; {t['note']}" if t["note"] else "")
        )
    return out
