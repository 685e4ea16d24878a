"""Tiny real models to serve when no bundled artifacts exist: one per kind, trained for a few steps on
CPU by the real loop and exported by the real exporter (the same recipe as the tests' fixture). Their
figures measure the service's robustness, not model quality."""

from __future__ import annotations

from pathlib import Path

# kind -> data set (the tiny VAE preset is gray + Bernoulli; on photos it is served as RGB + Gaussian)
DATA = {"vae": "photos", "beta_vae": "shapes", "vqvae": "photos", "mae": "photos"}
OVERRIDES: dict[str, dict[str, object]] = {"vae": {"channels": 3, "likelihood": "gaussian"}}


def tiny_models(root: Path) -> Path:
    """`root/models/<kind>/` for every kind, built once (reused when all four manifests exist)."""
    models = root / "models"
    if all((models / kind / "manifest.json").is_file() for kind in DATA):
        return models
    from training.config import TrainConfig  # torch: only here, never in the server
    from training.export import export_artifact
    from training.loop import train

    for kind, data in DATA.items():
        run = TrainConfig(
            model=kind,
            data=data,
            preset="tiny",
            overrides=dict(OVERRIDES.get(kind, {})),
            steps=4,
            batch_size=8,
            warmup_steps=1,
            device="cpu",
            out=str(root / "runs" / kind),
            val_every=0,
            val_images=16,
            checkpoint_every=0,
            epoch_crops=64,
            workers=0,
            quiet=True,
        )
        export_artifact(Path(train(run)), models / kind, kind, log=None)
    return models
