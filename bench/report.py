"""Results -> `results.md` (tables), `plot.png` and the figures section of docs/PERFORMANCE.md.

Everything here is read from the JSON files the benchmarks wrote; nothing is typed in by hand. The doc's
section between BEGIN and END is replaced; the rest of the doc is left as it is.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import targets as targets_mod
from bench.engine import best

BEGIN = "<!-- bench:begin (written by `python -m bench report`; do not edit by hand) -->"
END = "<!-- bench:end -->"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    def cell(v: Any) -> str:
        if v is None:
            return "–"
        if isinstance(v, float):
            return f"{v:,.1f}" if abs(v) >= 100 else f"{v:.3g}"
        return str(v)

    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return out + [""]


def environment_lines(results: dict[str, dict[str, Any]]) -> list[str]:
    envs = [(s, r["environment"]) for s, r in results.items() if "environment" in r]
    if not envs:
        return []
    first = envs[0][1]
    v = first.get("versions", {})
    lines = [
        f"- Machine: {first['cpu']}, {first['cores']} cores"
        + (f", GPU {first['gpu']}" if first.get("gpu") else ""),
        f"- Date: {first['date']}; git {first.get('git')}; {first['platform']}",
        f"- Versions: python {first['python']}, " + ", ".join(f"{k} {val}" for k, val in v.items()),
        "- Commands and load average (1/5/15 min) at start and end of each section:",
    ]
    for section, env in envs:
        lines.append(
            f"  - {section}: `{env['command']}` — load {env.get('load_average_start')} → "
            f"{env.get('load_average_end')}"
        )
    return lines + [""]


def engine_tables(section: dict[str, Any]) -> list[str]:
    rows = section["rows"]
    batches = sorted({r["batch"] for r in rows})
    out = [f"Images/s per graph and runtime (median of timed runs; {section['device']}). Torch weights: "]
    out += [f"- {m}: {w}" for m, w in section["weights"].items()] + [""]
    keys = list(dict.fromkeys((r["model"], r["graph"], r["runtime"]) for r in rows))
    table = []
    for model, graph, runtime in keys:
        cells = {
            r["batch"]: r["images_per_s"]
            for r in rows
            if (r["model"], r["graph"], r["runtime"]) == (model, graph, runtime)
        }
        table.append([model, graph, runtime, *(cells.get(b) for b in batches)])
    out += _table(["model", "graph", "runtime", *(f"batch {b}" for b in batches)], table)
    gates = section.get("fp16_gate") or {}
    if gates:
        out.append(
            "fp16 parity gate (PSNR drop <= 0.1 dB, >= 99.5% equal tokens), on the reconstruction and "
            "tokens and on every graph alone (image outputs and tokens by the same rules, latents and "
            "scores within 1% of max(1, |value|)); a graph that fails is named, and its fp16 row above is "
            "timed but not usable. Kept in fp32: `lookup` = the codebook distances and argmin; "
            "`token-path` = everything the token depends on (the encoder too), tried when `lookup` fails. "
            "The fp16 timings above use the last policy listed per model:"
        )
        out.append("")
        out += _table(
            [
                "model",
                "fp32 kept",
                "passed",
                "PSNR fp32",
                "PSNR fp16",
                "drop dB",
                "equal tokens",
                "failing graphs",
                "error",
            ],
            [
                [
                    m,
                    a.get("policy", "lookup"),
                    a.get("passed"),
                    a.get("psnr_fp32_db"),
                    a.get("psnr_fp16_db"),
                    a.get("psnr_drop_db"),
                    a.get("equal_tokens"),
                    ", ".join(a.get("failing_graphs") or []) or "–",
                    a.get("error"),
                ]
                for m, g in gates.items()
                for a in g.get("attempts", [g])
            ],
        )
    return out


def service_tables(section: dict[str, Any]) -> list[str]:
    eng = section["engine"]
    out = [
        f"Model `{section['model']}` ({section['kind']}, input {section['input']}), provider "
        f"{section['config']['provider']}. Raw engine (same graphs and threads, no HTTP; measured before "
        "and after the HTTP scenarios, the faster of the two per point), images/s:",
        "",
    ]
    batches = sorted({r["batch"] for r in eng})
    keys = list(dict.fromkeys((r["op"], r["png"]) for r in eng))
    out += _table(
        ["operation", "PNG decode+encode", *(f"batch {b}" for b in batches)],
        [
            [
                op,
                png,
                *(
                    {r["batch"]: r["images_per_s"] for r in eng if (r["op"], r["png"]) == (op, png)}.get(b)
                    for b in batches
                ),
            ]
            for op, png in keys
        ],
    )
    out += ["Over HTTP (load generator in its own process; client CPU seconds shown):", ""]
    out += _table(
        [
            "server",
            "scenario",
            "workers",
            "concurrency",
            "images/request",
            "requests/s",
            "images/s",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "errors",
            "client CPU s",
        ],
        [
            [
                r["server"],
                r["scenario"],
                r["workers"],
                r["concurrency"],
                r["images_per_request"],
                r["requests_per_s"],
                r["images_per_s"],
                r["p50_ms"],
                r["p90_ms"],
                r["p99_ms"],
                r["errors"],
                r["client_cpu_s"],
            ]
            for r in section["service"]
        ],
    )
    return out


def training_table(section: dict[str, Any]) -> list[str]:
    return _table(
        ["kind", "preset", "data", "device", "precision", "batch", "steps timed", "s/step", "images/s"],
        [
            [
                r["kind"],
                r["preset"],
                r["data"],
                r["device"],
                r["precision"],
                r["batch_size"],
                r["steps_timed"],
                r["seconds_per_step"],
                r["images_per_s"],
            ]
            for r in section["rows"]
        ],
    )


def markdown(results: dict[str, dict[str, Any]], plot: str | None) -> str:
    """All sections present, as markdown."""
    out = ["### Where and how", ""] + environment_lines(results)
    tgts = targets_mod.evaluate(results)
    if tgts:
        out += ["### Targets", ""]
        out += _table(
            ["target", "measured", "goal", "verdict", "note"],
            [
                [
                    t["name"],
                    t["measured"],
                    f"{t['rule']} {t['target']:g} {t['unit']}" if t["target"] is not None else "–",
                    targets_mod.verdict(t),
                    t["note"],
                ]
                for t in tgts
            ],
        )
    if plot:
        out += [f"![engine and service throughput]({plot})", ""]
    if "engine" in results:
        out += ["### Engine", ""] + engine_tables(results["engine"])
    if "service" in results:
        out += ["### Service", ""] + service_tables(results["service"])
    if "training" in results:
        out += ["### Training", ""] + training_table(results["training"])
    if "coldstart" in results:
        c = results["coldstart"]
        out += [
            "### Cold start",
            "",
            f"{c['repeats']} starts of `uvicorn app.main:app` with {', '.join(c['models'])} "
            f"({c['provider']}): "
            f"ready after {c['ready_s']} s (median {c['ready_median_s']} s); importing app.main alone: "
            f"{c['import_median_s']} s.",
            "",
        ]
    if "profile" in results:
        from bench.profiling import summary_text

        out += ["### Profile", "", *summary_text(results["profile"]).splitlines()[2:], ""]
    return "\n".join(out) + "\n"


def plot(results: dict[str, dict[str, Any]], path: Path) -> Path | None:
    """Left: engine images/s vs batch for the service model's graphs; right: service vs concurrency."""
    if "engine" not in results and "service" not in results:
        return None
    try:
        import matplotlib
    except ImportError:  # the GPU machine may lack it: tables only
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    model = results.get("service", {}).get("model")
    if "engine" in results:
        rows = results["engine"]["rows"]
        model = model or rows[0]["model"]
        for graph, runtime in dict.fromkeys((r["graph"], r["runtime"]) for r in rows if r["model"] == model):
            mine = sorted(
                (r for r in rows if (r["model"], r["graph"], r["runtime"]) == (model, graph, runtime)),
                key=lambda r: r["batch"],
            )
            left.plot(
                [r["batch"] for r in mine],
                [r["images_per_s"] for r in mine],
                marker="o",
                label=f"{graph} {runtime}",
            )
        left.set(xscale="log", yscale="log", xlabel="batch", ylabel="images/s", title=f"engine: {model}")
        left.legend(fontsize=7)
    if "service" in results:
        svc = results["service"]
        for server, workers in dict.fromkeys(
            (r["server"], r["workers"]) for r in svc["service"] if r["scenario"] == "single"
        ):
            mine = sorted(
                (
                    r
                    for r in svc["service"]
                    if (r["server"], r["workers"], r["scenario"]) == (server, workers, "single")
                ),
                key=lambda r: r["concurrency"],
            )
            right.plot(
                [r["concurrency"] for r in mine],
                [r["images_per_s"] for r in mine],
                marker="o",
                label=f"{server} ({workers} w)" if server == "service" else server,
            )
        for png, style in ((False, "--"), (True, ":")):
            top = best(svc["engine"], op="reconstruct", png=png)
            if top:
                right.axhline(
                    top["images_per_s"],
                    linestyle=style,
                    color="gray",
                    label=f"raw engine best{' + PNG' if png else ''} (batch {top['batch']})",
                )
        right.set(
            xscale="log",
            yscale="log",
            xlabel="concurrent clients",
            ylabel="images/s",
            title=f"single-image reconstruct over HTTP: {svc['model']}",
        )
        right.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(results: dict[str, dict[str, Any]], out: Path, doc: Path | None) -> Path:
    """results.md and plot.png under `out`; the doc's generated section when `doc` is given."""
    picture = plot(results, out / "plot.png")
    (out / "results.md").write_text(markdown(results, picture.name if picture else None))
    if doc is not None:
        rel = os.path.relpath(picture, doc.parent) if picture else None
        section = markdown(results, rel)
        text = doc.read_text()
        if BEGIN not in text or END not in text:
            raise ValueError(f"{doc} has no generated section ({BEGIN} ... {END})")
        head, rest = text.split(BEGIN, 1)
        doc.write_text(head + BEGIN + "\n" + section + rest[rest.index(END) :])
    return out / "results.md"
