"""Shared fixtures: tiny artifacts made by the real training loop and the real export.

`tiny_checkpoints` trains one tiny model per kind for a few steps (`training.loop.train`); `tiny_artifacts`
exports each with `training.export.export_artifact` (parity check included). Both live in pytest's tmp
dir for the session; nothing is cached elsewhere.

    tiny_artifacts/
      vae/        photos, RGB, Gaussian likelihood
      beta_vae/   shapes, gray, Bernoulli likelihood
      vqvae/      photos, RGB
      mae/        photos, RGB
"""

from __future__ import annotations

from pathlib import Path

import pytest

# kind -> (data set, model config overrides on top of the tiny preset)
TINY_RUNS: dict[str, tuple[str, dict[str, object]]] = {
    # the tiny VAE preset is gray + Bernoulli (for shapes); on photos it is RGB + Gaussian, as served
    "vae": ("photos", {"channels": 3, "likelihood": "gaussian"}),
    "beta_vae": ("shapes", {}),
    "vqvae": ("photos", {}),
    "mae": ("photos", {}),
}
TINY_STEPS = 4  # enough to move every weight (and the VQ codebook's k-means start) off its init


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """kind -> checkpoint folder of a tiny model trained for TINY_STEPS steps on CPU."""
    from training.config import TrainConfig
    from training.loop import train

    root = tmp_path_factory.mktemp("tiny_runs")
    checkpoints = {}
    for kind, (data, overrides) in TINY_RUNS.items():
        config = TrainConfig(
            model=kind, data=data, preset="tiny", overrides=dict(overrides), steps=TINY_STEPS, batch_size=8,
            warmup_steps=1, seed=0, device="cpu", out=str(root / kind), val_every=0, val_images=16,
            checkpoint_every=0, log_every=1, epoch_crops=64, workers=0, quiet=True,
        )
        checkpoints[kind] = Path(train(config))
    return checkpoints


@pytest.fixture(scope="session")
def tiny_artifacts(tiny_checkpoints: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding the artifact folders `vae`, `beta_vae`, `vqvae`, `mae` (docs/ARTIFACT.md)."""
    from training.export import export_artifact

    root = tmp_path_factory.mktemp("tiny_artifacts")
    for kind, checkpoint in tiny_checkpoints.items():
        export_artifact(checkpoint, root / kind, kind, log=None)
    return root
