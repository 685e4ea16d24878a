"""`python -m bench.reliability {badinput,overload,faults,soak,all} [options]`: see docs/RELIABILITY.md.

Durations are parameters: the defaults are the full runs (10-minute soak); `--quick` shortens all of
them for a smoke run. Results go to `--out` as JSON; `report` (and `all`) renders the markdown.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any

from bench.environment import REPO, describe, read_results, write_result
from bench.reliability import experiments, report
from bench.reliability.tiny import tiny_models

SECTIONS = ("badinput", "overload", "faults", "soak")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.reliability", description=__doc__)
    p.add_argument("what", choices=(*SECTIONS, "report", "all"))
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="results folder (default bench/results/reliability; with --quick runs/reliability-quick, so "
        "a smoke run never replaces the committed figures)",
    )
    p.add_argument(
        "--model-dir",
        type=Path,
        default=None,
        help="artifact folders to serve (default: artifacts/, else tiny models built in runs/)",
    )
    p.add_argument("--tiny", action="store_true", help="serve tiny models built in runs/ (all four kinds)")
    p.add_argument("--model", default=None, help="the model the load uses (default: the first ready VAE)")
    p.add_argument("--rounds", type=int, default=10, help="bad-input corpus rounds after the warm-up round")
    p.add_argument("--clients", type=int, default=256, help="concurrent clients of the overload burst")
    p.add_argument("--burst-s", type=float, default=20.0)
    p.add_argument("--steady-s", type=float, default=10.0, help="steady load before and after the burst")
    p.add_argument("--max-queue", type=int, default=8, help="AESERVE_MAX_QUEUE during the overload run")
    p.add_argument(
        "--max-inflight", type=int, default=32, help="AESERVE_MAX_INFLIGHT during the overload run"
    )
    p.add_argument("--soak-s", type=float, default=600.0, help="soak duration (seconds)")
    p.add_argument("--capacity-s", type=float, default=30.0, help="capacity measurement before the soak")
    p.add_argument("--fraction", type=float, default=0.7, help="soak rate as a fraction of capacity")
    p.add_argument("--quick", action="store_true", help="short everything (a smoke run, not the figures)")
    p.add_argument(
        "--doc",
        type=Path,
        default=None,
        help="the document whose figures section `report` rewrites (default docs/RELIABILITY.md; with "
        "--quick none unless given)",
    )
    return p


def _quick(args: argparse.Namespace) -> None:
    args.rounds, args.burst_s, args.steady_s = 3, 5.0, 3.0
    args.soak_s, args.capacity_s, args.clients = 40.0, 8.0, 128


def _model_dir(args: argparse.Namespace) -> Path:
    if args.model_dir is not None:
        return Path(args.model_dir)
    if args.tiny:
        return tiny_models(REPO / "runs" / "reliability-tiny")
    bundled = REPO / "artifacts"
    if bundled.is_dir() and any((p / "manifest.json").is_file() for p in bundled.iterdir()):
        return bundled
    return tiny_models(REPO / "runs" / "reliability-tiny")


def _run(section: str, args: argparse.Namespace, model_dir: Path) -> dict[str, Any]:
    if section == "badinput":
        return experiments.bad_input(model_dir, args.rounds)
    if section == "overload":
        return experiments.overload(
            model_dir,
            model=args.model,
            clients=args.clients,
            burst_s=args.burst_s,
            steady_s=args.steady_s,
            max_queue=args.max_queue,
            max_inflight=args.max_inflight,
        )
    if section == "faults":
        return experiments.faults(model_dir, model=args.model)
    return experiments.soak(
        model_dir, model=args.model, seconds=args.soak_s, capacity_s=args.capacity_s, fraction=args.fraction
    )


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.quick:
        _quick(args)
    if args.out is None:
        args.out = REPO / ("runs/reliability-quick" if args.quick else "bench/results/reliability")
    if args.doc is None and not args.quick:
        args.doc = REPO / "docs" / "RELIABILITY.md"
    command = shlex.join(["python", "-m", "bench.reliability", *(sys.argv[1:] if argv is None else argv)])
    if args.what != "report":
        model_dir = _model_dir(args)
        for section in SECTIONS if args.what == "all" else (args.what,):
            print(f"== {section}", flush=True)
            env = describe() | {"command": command, "model_dir": str(model_dir)}
            result = _run(section, args, model_dir)
            path = write_result(args.out, section, {"environment": env, "quick": args.quick, **result})
            print(f"wrote {path}", flush=True)
    if args.what in ("report", "all"):
        markdown = report.render(read_results(args.out))
        (args.out / "report.md").write_text(markdown)
        if args.doc is not None:
            report.update_doc(args.doc, markdown)
        print(f"wrote {args.out / 'report.md'}" + (f" and the figures of {args.doc}" if args.doc else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
