"""Training throughput: images/s per model kind through the real training loop (training.loop.train).

A few optimizer steps per kind at a preset (default: the bundled models' `default`), on the bundled
models' data (photos; shapes for beta_vae). The first `skip` steps are not timed (allocation, the
VQ-VAE's k-means start); the final validation and checkpoint happen after the last step and are not
timed either. Each device runs fp32 and bf16 autocast (the loop's `amp`, with `amp_cpu` on the CPU).

`BENCH_TRAIN_DATA=shapes` trains the photo kinds on the shapes data set in RGB instead (same model,
same tensor sizes), for machines without scikit-image's photographs (the GPU machine); rows say so.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

DATA = {"vae": "photos", "beta_vae": "shapes", "vqvae": "photos", "mae": "photos"}


def train_rate(
    kind: str, *, preset: str, steps: int, skip: int, batch_size: int, device: str, amp: bool, seed: int = 0
) -> dict[str, Any]:
    """One short run; images/s over the steps after the first `skip`."""
    import torch

    from training.config import TrainConfig
    from training.loop import train

    data, overrides = DATA[kind], {}
    if os.environ.get("BENCH_TRAIN_DATA") == "shapes" and data == "photos":
        # the photo models' architecture: RGB, and a Gaussian likelihood for the VAE
        data, overrides = "shapes", {"channels": 3, **({"likelihood": "gaussian"} if kind == "vae" else {})}
    stamps: list[float] = []
    with tempfile.TemporaryDirectory(prefix=f"bench-train-{kind}-") as tmp:
        config = TrainConfig(
            model=kind, data=data, overrides=overrides, preset=preset, steps=steps, batch_size=batch_size,
            seed=seed, device=device, amp=amp, amp_cpu=amp, out=str(Path(tmp) / "run"), val_every=0,
            val_images=8, checkpoint_every=0, log_every=0, epoch_crops=max(64, steps * batch_size), workers=0,
            quiet=True,
        )  # fmt: skip

        def stamp(step: int, logs: dict[str, float]) -> None:
            if device == "cuda":
                torch.cuda.synchronize()  # time the GPU's work, not the launch queue
            stamps.append(time.perf_counter())

        train(config, callback=stamp)
    timed = stamps[skip:]
    seconds = timed[-1] - timed[0]
    images = batch_size * (len(timed) - 1)
    return {
        "kind": kind,
        "preset": preset,
        "data": data,
        "device": device,
        "precision": "bf16 autocast" if amp else "fp32",
        "batch_size": batch_size,
        "steps_timed": len(timed) - 1,
        "torch_threads": torch.get_num_threads(),
        "seconds_per_step": round(seconds / (len(timed) - 1), 4),
        "images_per_s": round(images / seconds, 2),
    }


def run_training(
    kinds: Sequence[str], *, preset: str, steps: int, skip: int, batch_size: int, devices: Sequence[str]
) -> list[dict[str, Any]]:
    """Rows for every kind x device x (fp32, bf16 autocast)."""
    if steps < skip + 2:
        raise ValueError(f"steps must be at least skip + 2 = {skip + 2} to time one step")
    common: dict[str, Any] = {"preset": preset, "steps": steps, "skip": skip, "batch_size": batch_size}
    rows = []
    for device in devices:
        for amp in (False, True):
            rows += [train_rate(kind, device=device, amp=amp, **common) for kind in kinds]
    return rows
