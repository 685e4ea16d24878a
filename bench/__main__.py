"""`python -m bench <command>`: engine, service, training, coldstart, profile, report, or all of them.

    python -m bench all --artifacts artifacts --out bench/results       # the full run (~8 min, 2 cores)
    python -m bench all --artifacts artifacts --out /tmp/smoke --smoke  # seconds: keeps the code working

Each command writes `<out>/<command>.json`; `report` (run last by `all`) writes `<out>/results.md`,
`<out>/plot.png` and the figures section of `--doc` (docs/PERFORMANCE.md by default for `all`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, NoReturn

from bench import targets
from bench.environment import REPO, describe, read_results, write_result

KINDS = ("vae", "beta_vae", "vqvae", "mae")
PRESETS = ("tiny", "default", "large")  # models.PRESET_NAMES, without importing torch


def _ints(text: str) -> tuple[int, ...]:
    """Comma-separated positive integers ('' for none)."""
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, not {text!r}") from None
    if any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected integers >= 1, not {text!r}")
    return values


def _count(text: str) -> int:
    """One integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, not {text!r}")
    return value


def _pause(text: str) -> float:
    """A finite number of seconds >= 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, not {text!r}") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected finite seconds >= 0, not {text!r}")
    return value


def _seconds(text: str) -> float:
    """A finite number of seconds > 0."""
    value = _pause(text)
    if value == 0:
        raise argparse.ArgumentTypeError("expected seconds > 0, not 0")
    return value


def _kinds(text: str) -> tuple[str, ...]:
    """Comma-separated model kinds."""
    kinds = tuple(v.strip() for v in text.split(",") if v.strip())
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        said = f"unknown kinds {unknown}" if unknown else "no kinds given"
        raise argparse.ArgumentTypeError(f"{said}; choose from {', '.join(KINDS)}")
    return kinds


def _setting(text: str) -> str:
    """One AESERVE_KEY=VALUE service setting, checked as the service would read it. The model folder and
    the provider are the benchmark's own flags (--artifacts, --provider), so both sides get them."""
    from pydantic import ValidationError

    from app.settings import Settings

    key, sep, value = text.partition("=")
    field = key.removeprefix("AESERVE_").lower()
    if not sep or not key.startswith("AESERVE_"):
        raise argparse.ArgumentTypeError(f"expected AESERVE_KEY=VALUE, not {text!r}")
    if field not in Settings.model_fields or field in ("model_dir", "providers"):
        raise argparse.ArgumentTypeError(f"{key} is not a service setting --server-env can change")
    try:
        Settings(**{field: value})
    except ValidationError as exc:
        raise argparse.ArgumentTypeError(f"{key}={value!r}: {exc.errors()[0]['msg']}") from None
    return text


# Full-run defaults and the --smoke ones (seconds-long; tiny artifacts).
FULL: dict[str, Any] = dict(
    batches=(1, 4, 16, 64, 256),
    seconds=0.5,
    duration=10.0,
    warmup=2.0,
    concurrency=(1, 8, 16, 64),
    bulk_sizes=(64, 256),
    bulk_concurrency=2,
    naive_concurrency=(64,),
    noop_concurrency=(1, 8, 16, 64),
    wrk_concurrency=(1, 16),
    engine_seconds=0.5,
    min_requests=3,
    train_steps=8,
    train_skip=2,
    train_batch=32,
    preset="default",
    repeats=3,
    profile_seconds=8.0,
)
SMOKE: dict[str, Any] = dict(
    batches=(1, 8),
    seconds=0.05,
    duration=1.0,
    warmup=0.2,
    concurrency=(1, 16, 64),
    bulk_sizes=(8,),
    bulk_concurrency=1,
    naive_concurrency=(64,),
    noop_concurrency=(16,),
    wrk_concurrency=(1,),
    engine_seconds=0.05,
    min_requests=1,
    train_steps=3,
    train_skip=1,
    train_batch=4,
    preset="tiny",
    repeats=1,
    profile_seconds=1.0,
)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "command", choices=("engine", "service", "training", "coldstart", "profile", "report", "all")
    )
    p.add_argument("--artifacts", type=Path, default=REPO / "artifacts", help="folder of artifact folders")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results", help="where results go")
    p.add_argument("--provider", choices=("cpu", "cuda"), default="cpu", help="ONNX Runtime and torch device")
    p.add_argument("--model", default="vqvae", help="the model measured over HTTP (service, profile)")
    p.add_argument(
        "--runs", type=Path, default=REPO / "runs", help="checkpoints runs/<name>/ for torch weights"
    )
    p.add_argument(
        "--smoke", action="store_true", help="seconds-long settings (CI); defaults below are FULL's"
    )
    p.add_argument("--doc", type=Path, default=None, help="update this doc's figures section (report, all)")
    p.add_argument("--no-doc", action="store_true", help="all: do not touch docs/PERFORMANCE.md")
    g = p.add_argument_group("engine")
    g.add_argument("--batches", type=_ints, help=f"batch sizes (default {FULL['batches']})")
    g.add_argument("--seconds", type=_seconds, help="timed seconds per (graph, runtime, batch); >= 3 runs")
    g.add_argument("--no-fp16", action="store_true", help="skip the fp16 graphs and their parity gate")
    g = p.add_argument_group("service")
    g.add_argument("--duration", type=_seconds, help="measured seconds per load scenario")
    g.add_argument("--warmup", type=_pause, help="unmeasured seconds before each scenario")
    g.add_argument("--concurrency", type=_ints, help="single-image clients")
    g.add_argument("--bulk-sizes", type=_ints, help="images per bulk tokens request ('' for none)")
    g.add_argument("--naive-concurrency", type=_ints, help="naive baseline clients ('' for none)")
    g.add_argument("--noop-concurrency", type=_ints, help="no-op endpoint clients ('' for none)")
    g.add_argument("--wrk-concurrency", type=_ints, help="wrk cross-check connections ('' for none)")
    g.add_argument("--workers", type=_ints, default=(1,), help="uvicorn worker counts (one start each)")
    g.add_argument(
        "--server-env", action="append", default=[], type=_setting,
        help="AESERVE_KEY=VALUE for the service and its engine reference (repeatable)",
    )  # fmt: skip
    g = p.add_argument_group("training")
    g.add_argument("--kinds", type=_kinds, default=KINDS)
    g.add_argument("--preset", choices=PRESETS, help="model preset (default: default; --smoke: tiny)")
    g.add_argument("--train-steps", type=_count)
    g.add_argument("--train-batch", type=_count)
    g = p.add_argument_group("coldstart and profile")
    g.add_argument("--repeats", type=_count, help="service starts to time")
    g.add_argument("--profile-seconds", type=_seconds)
    return p


def settings(args: argparse.Namespace) -> dict[str, Any]:
    """FULL or SMOKE, with every option given on the command line on top."""
    base = dict(SMOKE if args.smoke else FULL)
    for key in base:
        value = getattr(args, key, None)
        if value is not None:
            base[key] = value
    return base


def cmd_engine(args: argparse.Namespace, s: dict[str, Any]) -> Path:
    from bench import fp16
    from bench.engine import bench_artifact

    env = describe()
    rows, weights, gates, kept = [], {}, {}, {}
    for folder in _folders(args):
        files = None
        if not args.no_fp16:
            x = _gate_images(folder)
            files, kept[folder.name], gates[folder.name] = fp16.gated(
                folder, args.out / "work" / "fp16", x, args.provider
            )
        mine, weights[folder.name] = bench_artifact(
            folder,
            runs=args.runs,
            batches=s["batches"],
            seconds=s["seconds"],
            device=args.provider,
            torch_dtypes=("fp32", "bf16") if args.provider == "cuda" else ("fp32",),
            fp16_graphs=files,
        )
        rows += mine
        _say(f"engine: {folder.name} done ({len(mine)} rows)")
    return write_result(
        args.out,
        "engine",
        {
            "environment": env,
            "config": {"batches": s["batches"], "seconds": s["seconds"]},
            "device": args.provider,
            "rows": rows,
            "weights": weights,
            "fp16_gate": gates,
            "fp16_fp32_nodes": kept,
        },
    )


def _folders(args: argparse.Namespace) -> list[Path]:
    from app.manifest import ManifestError, read_manifest
    from bench.engine import artifact_folders

    found = artifact_folders(args.artifacts)
    if not found:
        _fail(f"no artifact folders (<name>/manifest.json) in {args.artifacts}")
    for folder in found:
        try:
            read_manifest(folder)
        except ManifestError as exc:
            _fail(f"artifact {folder}: {exc}")
    if args.command in ("service", "profile", "all") and args.model not in {f.name for f in found}:
        names = ", ".join(f.name for f in found)
        _fail(f"--model {args.model!r} is not in {args.artifacts} (it has {names})")
    return found


def _gate_images(folder: Path, n: int = 64) -> Any:
    """Held-out images of the data the model was trained on, float32 [n, C, H, W], for the fp16 gate:
    what `python -m training evaluate` measures on (dSprites for a shapes model: photographs would give a
    meaningless 7 dB PSNR)."""
    from training.backends import OnnxBackend
    from training.evaluate import held_out

    backend = OnnxBackend(folder)
    return held_out(backend.info.data or "photos", backend, n, 0).images


def _input(folder: Path) -> tuple[int, int, int]:
    import json

    i = json.loads((folder / "manifest.json").read_text())["input"]
    return i["height"], i["width"], i["channels"]


def cmd_service(args: argparse.Namespace, s: dict[str, Any]) -> Path:
    from bench.service import ServiceConfig, run_service

    _folders(args)
    cfg = ServiceConfig(
        artifacts=args.artifacts,
        model=args.model,
        provider=args.provider,
        workers=tuple(args.workers),
        concurrency=s["concurrency"],
        bulk_sizes=s["bulk_sizes"],
        bulk_concurrency=s["bulk_concurrency"],
        naive_concurrency=s["naive_concurrency"],
        noop_concurrency=s["noop_concurrency"],
        wrk_concurrency=s["wrk_concurrency"],
        duration_s=s["duration"],
        warmup_s=s["warmup"],
        min_requests=s["min_requests"],
        engine_batches=s["batches"],
        engine_seconds=s["engine_seconds"],
        server_env=tuple(args.server_env),
    )
    return write_result(args.out, "service", run_service(cfg, args.out))


def cmd_training(args: argparse.Namespace, s: dict[str, Any]) -> Path:
    from bench.train_speed import run_training

    env = describe()
    devices = ("cpu", "cuda") if args.provider == "cuda" else ("cpu",)
    rows = run_training(
        args.kinds,
        preset=s["preset"],
        steps=s["train_steps"],
        skip=s["train_skip"],
        batch_size=s["train_batch"],
        devices=devices,
    )
    return write_result(
        args.out,
        "training",
        {
            "environment": env,
            "config": {k: s[k] for k in ("preset", "train_steps", "train_skip", "train_batch")},
            "rows": rows,
        },
    )


def cmd_coldstart(args: argparse.Namespace, s: dict[str, Any]) -> Path:
    from bench.coldstart import run_coldstart

    env = describe()
    _folders(args)
    result = run_coldstart(
        args.artifacts, repeats=s["repeats"], provider=args.provider, work=args.out / "work"
    )
    return write_result(args.out, "coldstart", {"environment": env, **result})


def cmd_profile(args: argparse.Namespace, s: dict[str, Any]) -> Path:
    from bench.profiling import run_profile, summary_text

    env = describe()
    _folders(args)
    result = run_profile(
        args.artifacts,
        args.model,
        provider=args.provider,
        seconds=s["profile_seconds"],
        work=args.out / "work",
    )
    (args.out / "profile.md").parent.mkdir(parents=True, exist_ok=True)
    (args.out / "profile.md").write_text(summary_text(result))
    return write_result(args.out, "profile", {"environment": env, **result})


def cmd_report(args: argparse.Namespace) -> Path:
    from bench.report import write_report

    results = read_results(args.out)
    if not results:
        _fail(f"no benchmark results (<section>.json) in {args.out}")
    path = write_report(results, args.out, args.doc)
    for line in targets.lines(targets.evaluate(results)):
        print(line)
    return path


def _fail(message: str) -> NoReturn:
    """A user's mistake: one line on stderr and exit code 2, as argparse and `python -m training` do."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


COMMANDS = {
    "engine": cmd_engine,
    "service": cmd_service,
    "training": cmd_training,
    "coldstart": cmd_coldstart,
    "profile": cmd_profile,
}


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    s = settings(args)
    if args.command == "report":
        cmd_report(args)
        return 0
    if args.command == "all":
        if args.doc is None and not args.no_doc and not args.smoke:
            args.doc = REPO / "docs" / "PERFORMANCE.md"
        for name, command in COMMANDS.items():
            _say(f"== {name}")
            _say(f"wrote {command(args, s)}")
        _say("== report")
        _say(f"wrote {cmd_report(args)}")
        return 0
    _say(f"wrote {COMMANDS[args.command](args, s)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
