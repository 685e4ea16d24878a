"""The markdown of the reliability results, and the figures section of docs/RELIABILITY.md."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

BEGIN, END = "<!-- reliability-figures:begin -->", "<!-- reliability-figures:end -->"


def _env(result: dict[str, Any]) -> str:
    e = result.get("environment", {})
    load = f"load average {e.get('load_average_start')} → {e.get('load_average_end')}"
    quick = " **(quick run: short durations, not the full figures)**" if result.get("quick") else ""
    return (
        f"*{e.get('date')}, {e.get('cpu')} ({e.get('cores')} cores), {load}, git {e.get('git')};"
        f" `{e.get('command')}`; models: `{e.get('model_dir')}`*{quick}"
    )


def _statuses(d: dict[str, int]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in d.items())


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    def line(cells: list[Any]) -> str:
        return "| " + " | ".join(str(c) for c in cells) + " |"

    return [line(header), line(["---"] * len(header)), *(line(r) for r in rows), ""]


def _lat(r: dict[str, Any]) -> str:
    lat = r.get("latency_ms") or {}
    return f"{lat.get('p50', '–')} / {lat.get('p99', '–')}"


def _badinput(r: dict[str, Any]) -> list[str]:
    rss = r["rss_kib_per_round"]
    header = [
        "corpus cases",
        "rounds after warm-up",
        "requests",
        "5xx",
        "wrong answers",
        "answers",
        "alive after",
        "RSS after warm-up → end (KiB)",
        "growth",
    ]
    row = [
        r["cases"],
        r["rounds_after_warmup"],
        r["requests"],
        r["server_errors"],
        r["wrong_answers"],
        _statuses(r["statuses"]),
        r["alive_after"],
        f"{rss[0]} → {rss[-1]}",
        f"{r['rss_growth_pct_after_warmup']} %",
    ]
    wrong = [f"- wrong: `{w}`" for w in r["wrong_answer_examples"]]
    trend = (
        f"RSS after each round (KiB, the warm-up round first): {', '.join(map(str, rss))}; growth from the "
        f"end of the first measured round to the end: {r.get('rss_growth_pct_after_first_measured_round')} %."
    )
    return ["### Bad input", _env(r), "", *_table(header, [row]), trend, "", *wrong, ""]


def _overload(r: dict[str, Any]) -> list[str]:
    rows = []
    for phase in ("before", "burst", "after"):
        p = r[phase]
        rows.append(
            f"| {phase} | {p['clients']} | {p['seconds']} | {_statuses(p['statuses'])} | {p['ok_per_s']} "
            f"| {_lat(p)} | {p['retry_after_missing']} |"
        )
    b, h = r["burst"], r["hang_ups"]
    return [
        "### Overload",
        _env(r),
        "",
        f"Model `{r['model']}`, settings {r['settings']}.",
        "",
        "| phase | clients | s | answers | 200/s | p50 / p99 ms (200s) | 429 without Retry-After |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
        f"- Throughput after the burst: {r['recovered_pct']} % of before; server alive: {r['alive_after']}.",
        f"- Server RSS: {b['rss_kib_before']} KiB before the burst, peak {b['rss_kib_peak']} KiB during it.",
        f"- {h['clients']} clients hung up while queued: {h['skipped_by_batcher']:.0f} skipped by the "
        f"batcher (`aeserve_batch_skipped_total`), {h['logged_499']:.0f} logged as 499, "
        f"{h['items_computed_besides_the_leader']:.0f} of their items computed (a leader request just "
        f"before them was answered {h['leader_status']}).",
        "",
    ]


def _faults(r: dict[str, Any]) -> list[str]:
    lines = [
        "### Faults",
        _env(r),
        "",
        "| start-up with broken artifacts | status | reason |",
        "|---|---|---|",
    ]
    for name, m in r["startup_broken"].items():
        lines.append(f"| {name} | {m['status']} | {(m['reason'] or '').replace('|', '/')[:120]} |")
    s, rl, d = r["strict_startup"], r["reload_under_load"], r["sigterm_drain"]
    lines += [
        "",
        f"- `AESERVE_STRICT_STARTUP=true`: refused {s.get('refused')}, exit code {s.get('exit_code')}.",
        f"- Reload of a new version under load: loaded {rl['new_version']['loaded']} in "
        f"{rl['new_version_seconds']} s; a broken version: rejected "
        f"{list(rl['broken_version']['rejected'])}, old version kept; SIGHUP applied: "
        f"{rl['sighup_applied']}; status after: {rl['status_after']}.",
        f"- Requests during those reloads: {_statuses(rl['load']['statuses'])} "
        f"(p50 / p99 {_lat(rl['load'])} ms).",
        f"- SIGTERM with {d['in_flight']} requests in flight: {_statuses(d['statuses'])}; exit code "
        f"{d['exit_code']} (-15: uvicorn re-raises the SIGTERM after its graceful shutdown) after "
        f"{d['seconds_to_exit']} s; clean shutdown logged: {d['clean_shutdown_logged']}.",
        "",
    ]
    return lines


def _soak(r: dict[str, Any]) -> list[str]:
    c, s = r["capacity"], r["soak"]
    windows = " · ".join(f"{w['p99_ms']}" for w in s["windows"])
    header = [
        "requests",
        "errors (non-200)",
        "p50 / p99 ms",
        "p99 first / last / max window ms",
        "RSS start → end (KiB)",
        "RSS growth",
    ]
    row = [
        s["requests"],
        r["errors"],
        _lat(s),
        " / ".join(map(str, r["p99_ms_first_last_max"] or [])),
        " → ".join(map(str, r["rss_kib_start_end"])),
        f"{r['rss_growth_pct']} %",
    ]
    return [
        "### Soak", _env(r), "",
        f"Capacity (closed loop, {c['clients']} clients, {c['seconds']} s): **{c['ok_per_s']} req/s** "
        f"(p50 / p99 {_lat(c)} ms). Soak: {r['fraction']:.0%} of it = {s['rate']} req/s for "
        f"{s['seconds']} s, model `{r['model']}`.", "",
        *_table(header, [row]),
        f"p99 per tenth of the run (ms): {windows}.", "",
    ]  # fmt: skip


def render(results: dict[str, dict[str, Any]]) -> str:
    """Markdown of every result present, in a fixed order."""
    parts = {"badinput": _badinput, "overload": _overload, "faults": _faults, "soak": _soak}
    lines: list[str] = []
    for section, fn in parts.items():
        if section in results:
            lines += fn(results[section])
    return "\n".join(lines).strip() + "\n"


def update_doc(doc: Path, markdown: str) -> None:
    """Replace the text between the figures markers of `doc` (which must hold both)."""
    text = doc.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"error: {doc} lacks the markers {BEGIN} ... {END}")
    pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.S)
    doc.write_text(pattern.sub(lambda _: f"{BEGIN}\n{markdown}{END}", text))
