"""`python -m training sweep`: the beta-VAE's disentanglement / reconstruction trade-off, measured.

    python -m training sweep --betas 1,2,4,8 --steps 20000 [--seeds 0,1,2] [--out runs/sweep] ...

For each beta, and each seed, it trains the beta-VAE on shapes (`training.loop.train`, the same settings
apart from beta and the seed), evaluates the checkpoint on held-out shapes (`training.evaluate`: MIG,
PSNR, SSIM, negative ELBO and its reconstruction part in bits/dim), and writes into --out:

    sweep.json   every measured row, the per-beta means over seeds, and the settings
    sweep.md     the tables and the choice
    sweep.png    MIG (mean, and each seed) and PSNR against beta
    beta_<b>/    the run (checkpoint, metrics.csv) and its evaluation figures (report/);
                 beta_<b>_seed_<s>/ when several seeds are asked for

It chooses the beta with the highest mean MIG and says what it measured, nothing more: whether MIG did
rise and reconstruction did worsen with beta at this training length is read off the numbers, not
assumed. MIG depends on the seed about as much as on beta (Locatello et al., ICML 2019, found the random
seed and the hyperparameters mattering more than the model), so a trend needs several seeds per beta: the
summary gives the means, their spread, and the rank correlation of MIG with beta over all runs.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from training import report
from training.backends import TorchBackend
from training.errors import OneLineParser, UserError, check_folder_path
from training.evaluate import Settings, evaluate, held_out

# A latent whose mean KL to the prior is below this carries (almost) no information: posterior collapse.
ACTIVE_KL_NATS = 0.01


def log(message: str) -> None:
    print(f"[sweep] {message}", file=sys.stderr, flush=True)


def run_sweep(
    betas: list[float],
    *,
    steps: int,
    out: Path,
    preset: str = "default",
    batch_size: int = 64,
    lr: float | None = None,
    seeds: tuple[int, ...] = (0,),
    device: str = "auto",
    settings: Settings | None = None,
) -> dict[str, Any]:
    """Train and evaluate one beta-VAE per beta and seed on shapes; write the tables and plot; return the
    summary."""
    from training.config import TrainConfig
    from training.loop import train

    settings = settings or Settings()
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for beta, seed in [(beta, seed) for beta in betas for seed in seeds]:
        run_dir = out / (f"beta_{beta:g}" if len(seeds) == 1 else f"beta_{beta:g}_seed_{seed}")
        # The loop's own validation is a by-product here (evaluate measures below): keep it small.
        config = TrainConfig(
            model="beta_vae", data="shapes", preset=preset, overrides={"beta": float(beta)}, steps=steps,
            batch_size=batch_size, lr=lr, seed=seed, device=device, out=str(run_dir), val_every=0,
            checkpoint_every=0, val_images=min(256, settings.n), quiet=True,
        )  # fmt: skip
        checkpoint, step = _existing_run(run_dir, config)
        if checkpoint is None:
            command = ["python", "-m", "training", "sweep", f"--betas={beta:g}", f"--seeds={seed}"]
            if step is not None:  # stopped part-way (Ctrl-C, SIGTERM), even before its first step
                log(f"beta={beta:g} seed={seed}: resuming {run_dir} at step {step} of {steps}")
                config = dataclasses.replace(config, resume=True)
            else:
                log(f"beta={beta:g} seed={seed}: training {steps} steps into {run_dir}")
            checkpoint = train(config, command=command)
        else:
            log(f"beta={beta:g} seed={seed}: {run_dir} already holds this run, finished; evaluating it")
        backend = TorchBackend.from_checkpoint(Path(checkpoint))
        log(f"beta={beta:g} seed={seed}: evaluating on held-out shapes")
        data = held_out("shapes", backend, settings.n, settings.seed)
        result = evaluate(backend, data, settings, run_dir / "report")
        m, d = result.metrics, result.details
        rows.append({
            "beta": float(beta), "seed": seed, "mig": m["mig"], "psnr": m["psnr"], "ssim": m["ssim"],
            "elbo_bits_per_dim": m["elbo_bits_per_dim"], "recon_bits_per_dim": d["recon_bits_per_dim"],
            "kl_bits_per_dim": d["kl_bits_per_dim"], "mig_per_factor": d["mig_per_factor"],
            "active_latents": sum(kl > ACTIVE_KL_NATS for kl in d["kl_per_latent_nats"]),
            "latents": len(d["kl_per_latent_nats"]),
            "checkpoint": str(checkpoint),
        })  # fmt: skip
    summary = summarize(rows)
    summary["settings"] = {
        "steps": steps, "preset": preset, "batch_size": batch_size, "lr": lr, "seeds": list(seeds),
        "n_images": settings.n, "mig_n": settings.mig_n, "data": "shapes, val split",
    }  # fmt: skip
    (out / "sweep.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "sweep.md").write_text(markdown(summary))
    means = summary["by_beta"]
    report.save_tradeoff(
        out / "sweep.png", [b["beta"] for b in means], [b["mig"] for b in means], [b["psnr"] for b in means],
        xlabel="beta", left_label="MIG (higher: more disentangled)", right_label="PSNR (dB, higher: sharper)",
        title=f"beta-VAE on held-out shapes after {steps} steps"
        + (f", mean of {len(seeds)} seeds (dots: each seed)" if len(seeds) > 1 else ""),
        left_points=[(r["beta"], r["mig"]) for r in rows] if len(seeds) > 1 else None,
    )  # fmt: skip
    summary["files"] = [str(out / name) for name in ("sweep.json", "sweep.md", "sweep.png")]
    return summary


def _existing_run(run_dir: Path, config: Any) -> tuple[Path | None, int | None]:
    """What `run_dir` already holds of the run `config` asks for: (its checkpoint, its step) when finished,
    (None, step) when stopped part-way, (None, None) when there is none. A run there with other settings is
    a UserError: it is neither reused nor overwritten.

    A sweep is hours of CPU; rerunning it (a new beta, a lost plot, after Ctrl-C) should not retrain what
    is done. Only the settings that shape the weights are compared, not the run's logging options.
    """
    from training.checkpoint import STATE_FILE, read_state, resolve_checkpoint

    if not (run_dir / "checkpoint" / STATE_FILE).is_file():
        return None, None
    state = read_state(run_dir)
    done = state["train_config"]
    wanted = dataclasses.asdict(config)
    same = ("model", "data", "preset", "steps", "batch_size", "lr", "seed")
    differ = [k for k in same if done.get(k) != wanted[k]]
    if float(done.get("overrides", {}).get("beta", -1)) != float(wanted["overrides"]["beta"]):
        differ.append("beta")
    if differ:
        raise UserError(
            f"{run_dir} holds a run with other settings ({', '.join(differ)}); "
            "remove it or pass another --out"
        )
    step = int(state.get("step", 0))
    return (resolve_checkpoint(run_dir), step) if step >= config.steps else (None, step)


def trend(values: list[float], tol: float = 1e-6) -> str:
    """How a series ordered by beta moves: "rises", "falls", "stays level" or "goes up and down"."""
    steps = [b - a for a, b in zip(values, values[1:], strict=False)]
    if all(abs(d) <= tol for d in steps):
        return "stays level"
    if all(d >= -tol for d in steps):
        return "rises"
    if all(d <= tol for d in steps):
        return "falls"
    return "goes up and down"


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The rows, their means per beta (over seeds), the chosen beta (highest mean MIG; the smaller beta
    on a tie) and the measured trends: of the means, and MIG's rank correlation with beta over all runs."""
    rows = sorted(rows, key=lambda r: (r["beta"], r.get("seed", 0)))
    groups: dict[float, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(r["beta"], []).append(r)
    by_beta = [
        {
            "beta": beta,
            "seeds": len(runs),
            **{key: float(np.mean([r[key] for r in runs])) for key in ("mig", "psnr", "recon_bits_per_dim")},
            "mig_sd": float(np.std([r["mig"] for r in runs])),
            "mig_min": min(r["mig"] for r in runs),
            "mig_max": max(r["mig"] for r in runs),
        }
        for beta, runs in groups.items()
    ]
    best = max(by_beta, key=lambda b: b["mig"])  # max keeps the first of equals: the smallest beta
    ties = [b["beta"] for b in by_beta if b["mig"] == best["mig"]]
    over = f" over {best['seeds']} seeds" if best["seeds"] > 1 else ""
    because = f"highest {'mean ' if over else ''}MIG ({best['mig']:.3f}{over}) of the betas tried"
    if len(ties) > 1:
        because += f"; tied with beta {', '.join(f'{b:g}' for b in ties if b != best['beta'])}, smallest kept"
    x, y = [r["beta"] for r in rows], [r["mig"] for r in rows]
    rho = float(stats.spearmanr(x, y).statistic) if len(set(x)) > 1 and len(set(y)) > 1 else math.nan
    return {
        "rows": rows,
        "by_beta": by_beta,
        "chosen_beta": best["beta"],
        "chosen_because": because,
        "observed": {
            # recon bits/dim is a cost: "rises" means reconstruction gets worse as beta grows
            "mig_vs_beta": trend([b["mig"] for b in by_beta]),
            "recon_bits_per_dim_vs_beta": trend([b["recon_bits_per_dim"] for b in by_beta]),
            "psnr_vs_beta": trend([b["psnr"] for b in by_beta]),
            # Spearman's rho of MIG against beta over every run: +1 when MIG only ever rises with beta
            "mig_beta_rank_correlation": None if math.isnan(rho) else round(rho, 3),
        },
    }


def markdown(summary: dict[str, Any]) -> str:
    """sweep.md: the tables, the choice, and the observation in plain words."""
    s = summary.get("settings", {})
    seeds = s.get("seeds") or sorted({r.get("seed", 0) for r in summary["rows"]})
    several = len(seeds) > 1
    lines = [
        "# beta-VAE sweep on shapes",
        "",
        f"Each row: `beta_vae` preset `{s.get('preset')}`, {s.get('steps')} steps, "
        f"seed{'s' if several else ''} {', '.join(map(str, seeds))}; evaluated on held-out shapes "
        f"({s.get('n_images')} images for PSNR/SSIM/ELBO, {s.get('mig_n')} for MIG).",
        "",
        f"| beta |{' seed |' if several else ''} MIG | PSNR (dB) | SSIM | -ELBO (bits/dim) "
        "| recon (bits/dim) | KL (bits/dim) | active latents |",
        f"|---|{'---|' if several else ''}---|---|---|---|---|---|---|",
    ]
    for r in summary["rows"]:
        seed_cell = f" {r.get('seed')} |" if several else ""
        lines.append(
            f"| {r['beta']:g} |{seed_cell} {r['mig']:.3f} | {r['psnr']:.2f} | {r['ssim']:.3f} | "
            f"{r['elbo_bits_per_dim']:.4f} | {r['recon_bits_per_dim']:.4f} | {r['kl_bits_per_dim']:.4f} | "
            f"{r['active_latents']} of {r['latents']} |"
        )
    if several:
        lines += [
            "",
            "Per beta, over the seeds:",
            "",
            "| beta | seeds | MIG mean | MIG sd | MIG min-max | PSNR mean (dB) | recon mean (bits/dim) |",
            "|---|---|---|---|---|---|---|",
        ]
        for b in summary["by_beta"]:
            lines.append(
                f"| {b['beta']:g} | {b['seeds']} | {b['mig']:.3f} | {b['mig_sd']:.3f} | "
                f"{b['mig_min']:.3f}-{b['mig_max']:.3f} | {b['psnr']:.2f} | {b['recon_bits_per_dim']:.4f} |"
            )
    obs = summary["observed"]
    rho = obs.get("mig_beta_rank_correlation")
    caveat = (
        f"{len(seeds)} seeds per beta: the means move less with the seed than one run does, and the spread "
        "says how far to trust a difference."
        if several
        else "One seed per beta and one training length: small MIG differences may not survive another "
        "seed (`--seeds` trains several)."
    )
    lines += [
        "",
        f"Chosen: beta = {summary['chosen_beta']:g} ({summary['chosen_because']}).",
        "",
        f"Measured here, as beta grows: {'mean ' if several else ''}MIG {obs['mig_vs_beta']}"
        f"{f' (rank correlation with beta over all runs {rho:+.2f})' if rho is not None else ''}; "
        f"the reconstruction cost (recon bits/dim) {obs['recon_bits_per_dim_vs_beta']}; PSNR "
        f"{obs['psnr_vs_beta']}. The expected trade-off is MIG rising while the reconstruction cost rises. "
        f"{caveat} A row with no active latent (mean KL per latent under {ACTIVE_KL_NATS} nats) has "
        "collapsed to the prior: its MIG measures noise, not disentanglement.",
        "",
        "![MIG and PSNR against beta](sweep.png)",
        "",
    ]
    return "\n".join(lines)


def _seeds(text: str) -> tuple[int, ...]:
    try:
        seeds = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise UserError(f"sweep: --seeds must be integers separated by commas, not {text!r}") from None
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise UserError(f"sweep: --seeds needs distinct non-negative integers, got {text!r}")
    return seeds


def _betas(text: str) -> list[float]:
    try:
        betas = [float(b) for b in text.split(",") if b.strip()]
    except ValueError:
        raise UserError(f"sweep: --betas must be numbers separated by commas, not {text!r}") from None
    if not betas or not all(0 < b < math.inf for b in betas) or len(set(betas)) != len(betas):
        raise UserError(f"sweep: --betas needs distinct positive finite numbers, got {text!r}")
    return betas


def main(argv: list[str]) -> int:
    p = OneLineParser(prog="python -m training sweep", description=__doc__.split("\n\n")[0])
    p.add_argument("--betas", required=True, help="comma-separated, e.g. 1,2,4,8")
    p.add_argument("--steps", type=int, required=True, help="training steps per beta")
    p.add_argument("--out", type=Path, default=Path("runs/sweep"))
    p.add_argument("--preset", default="default", help="beta_vae model preset (tiny for tests)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--seed", type=int, default=None, help="one seed for every run (default 0)")
    p.add_argument("--seeds", help="comma-separated seeds, one run per beta and seed, e.g. 0,1,2")
    p.add_argument("--device", default="auto")
    p.add_argument("--n", type=int, default=Settings.n, help="held-out images for PSNR/ELBO")
    p.add_argument("--mig-n", type=int, default=Settings.mig_n, help="held-out shapes for MIG")
    args = p.parse_args(argv)
    betas = _betas(args.betas)
    if args.seed is not None and args.seeds is not None:
        raise UserError("sweep: give --seed or --seeds, not both")
    seeds = _seeds(args.seeds) if args.seeds is not None else (args.seed or 0,)
    if min(seeds) < 0:
        raise UserError(f"sweep: --seed must be non-negative, not {seeds[0]}")
    if args.steps < 1 or args.n < 1 or args.mig_n < 2:
        raise UserError("sweep: --steps and --n must be at least 1, --mig-n at least 2")
    check_folder_path(args.out, "--out")
    from training.loop import stop_on_sigterm

    with stop_on_sigterm():
        summary = run_sweep(
            betas, steps=args.steps, out=args.out, preset=args.preset, batch_size=args.batch_size, lr=args.lr,
            seeds=seeds, device=args.device, settings=Settings(n=args.n, mig_n=args.mig_n, seed=seeds[0]),
        )  # fmt: skip
    print(json.dumps(summary, indent=2))
    return 0
