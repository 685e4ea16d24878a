"""The autoencoders (PyTorch modules only) and their config presets.

`make_config(kind, preset, **overrides)` -> config dataclass; `build_model(kind, config)` -> nn.Module with
`kind`, `config` and `loss(x, *, generator, step)`; `config_from_dict` rebuilds a config from a checkpoint.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from models.mae import MAE, MAEConfig
from models.mae import PRESETS as _MAE_PRESETS
from models.vae import PRESETS as _VAE_PRESETS
from models.vae import VAE, VAEConfig
from models.vqvae import PRESETS as _VQ_PRESETS
from models.vqvae import VQVAE, VQVAEConfig

KINDS = ("vae", "beta_vae", "vqvae", "mae")
PRESET_NAMES = ("tiny", "default", "large")

ModelConfig = VAEConfig | VQVAEConfig | MAEConfig
Autoencoder = VAE | VQVAE | MAE  # every one has kind, config and loss(x, *, generator, step)

_CONFIGS: dict[str, type[ModelConfig]] = {
    "vae": VAEConfig,
    "beta_vae": VAEConfig,
    "vqvae": VQVAEConfig,
    "mae": MAEConfig,
}
_MODELS: dict[str, type[Autoencoder]] = {"vae": VAE, "beta_vae": VAE, "vqvae": VQVAE, "mae": MAE}
_PRESETS: dict[str, dict[str, dict[str, Any]]] = {**_VAE_PRESETS, **_VQ_PRESETS, **_MAE_PRESETS}

__all__ = [
    "KINDS",
    "PRESET_NAMES",
    "MAE",
    "MAEConfig",
    "VAE",
    "VAEConfig",
    "VQVAE",
    "VQVAEConfig",
    "ModelConfig",
    "Autoencoder",
    "build_model",
    "config_from_dict",
    "make_config",
]


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown model kind {kind!r}; choose one of {', '.join(KINDS)}")


def config_from_dict(kind: str, d: dict[str, Any]) -> ModelConfig:
    """Rebuild `kind`'s config from a dict (e.g. `dataclasses.asdict` of a saved one); unknown keys: error."""
    _check_kind(kind)
    cls = _CONFIGS[kind]
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ValueError(f"unknown {kind} config field(s): {', '.join(unknown)}")
    values = dict(d)
    values.setdefault("kind", kind)
    if values["kind"] != kind:
        raise ValueError(f"config is for kind {values['kind']!r}, not {kind!r}")
    return cls(**values)


def make_config(kind: str, preset: str = "default", **overrides: Any) -> ModelConfig:
    """The config of `kind` at `preset` ("tiny" for tests, "default" for the bundled models, "large")."""
    _check_kind(kind)
    if preset not in PRESET_NAMES:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESET_NAMES)}")
    return config_from_dict(kind, {**_PRESETS[kind][preset], **overrides})


def build_model(kind: str, config: ModelConfig) -> Autoencoder:
    """A freshly initialised model of `kind` from its config (the config's class must match the kind)."""
    _check_kind(kind)
    if not isinstance(config, _CONFIGS[kind]) or getattr(config, "kind", kind) != kind:
        raise ValueError(
            f"config {type(config).__name__}(kind={getattr(config, 'kind', None)!r}) "
            f"does not build a {kind!r} model"
        )
    return _MODELS[kind](config)  # type: ignore[arg-type]  # the isinstance check above pairs them
