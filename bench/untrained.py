"""`python -m bench.untrained OUT`: the four default-preset models, untrained, exported as artifacts.

For measuring speed where the bundled artifacts are missing (or on a machine without them): random
weights of the same architecture cost exactly the same time. Uses the export's own graph code and parity
check (training.export) with no checkpoint and no training run. The
manifests say `training.step: 0` and `checkpoint_sha256: "untrained"`.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

# kind -> (data set, model config overrides on top of the default preset), as the bundled models
BUNDLED = {
    "vae": ("photos", {"channels": 3, "likelihood": "gaussian"}),
    "beta_vae": ("shapes", {"channels": 1, "likelihood": "bernoulli"}),
    "vqvae": ("photos", {}),
    "mae": ("photos", {}),
}


def export_untrained(kind: str, out: Path, *, preset: str = "default", seed: int = 0) -> Path:
    """Write `<out>/<kind>/` from a freshly initialised model (torch.manual_seed(seed))."""
    import torch

    import models
    from training.export import kind_export, write_artifact

    data, overrides = BUNDLED[kind]
    torch.manual_seed(seed)
    config = models.make_config(kind, preset, **overrides)
    model = models.build_model(kind, config)
    folder = out / kind
    folder.mkdir(parents=True, exist_ok=True)
    state = {"model_config": dataclasses.asdict(config), "train_config": None, "data": data, "step": 0}
    write_artifact(kind_export(model), kind, folder, kind, state, "untrained")
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.untrained", description=__doc__)
    parser.add_argument("out", type=Path)
    parser.add_argument("--preset", default="default")
    args = parser.parse_args(argv)
    for kind in BUNDLED:
        print(f"wrote {export_untrained(kind, args.out, preset=args.preset)}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
