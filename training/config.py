"""The training run's settings: one dataclass, read from defaults, a JSON/TOML file and flags.

Precedence: dataclass defaults < `--config FILE` < command-line flags. Every key is checked: an unknown
key or a value of the wrong type is a `UserError`, never silently ignored.
"""

import dataclasses
import json
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from training.errors import UserError

# Adam(W) learning rate and weight decay when the run does not set them: the VAEs and the VQ-VAE follow
# their papers' orders of magnitude; the MAE uses AdamW with decay 0.05 (He et al. 2022) at a small-model lr.
DEFAULT_LR = {"vae": 1e-3, "beta_vae": 5e-4, "vqvae": 3e-4, "mae": 1e-3}
DEFAULT_WEIGHT_DECAY = {"vae": 0.0, "beta_vae": 0.0, "vqvae": 0.0, "mae": 0.05}


@dataclass
class TrainConfig:
    model: str = ""  # kind: vae, beta_vae, vqvae or mae
    data: str = "shapes"  # shapes, photos, or a folder of images
    preset: str = "default"  # model preset: tiny (tests), default, large
    overrides: dict[str, Any] = field(default_factory=dict)  # model config fields, e.g. {"beta": 8}
    steps: int = 10_000  # optimizer steps in all (a resumed run continues up to this number)
    epochs: float | None = None  # if set, wins over steps: steps = ceil(epochs * steps per epoch)
    batch_size: int = 64  # images per step per process (global batch = batch_size * world size)
    lr: float | None = None  # peak learning rate; None: DEFAULT_LR[model]
    weight_decay: float | None = None  # AdamW decoupled decay; None: DEFAULT_WEIGHT_DECAY[model]
    warmup_steps: int = 200  # linear warmup from 0, then cosine decay to lr * min_lr_ratio at `steps`
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0  # max global gradient norm; 0 turns clipping off
    seed: int = 0  # model init, data order, photo crops, eps / masks: same seed, same run (on CPU)
    device: str = "auto"  # auto (cuda if present), cpu or cuda
    out: str = "runs/run"  # run folder: checkpoint/, metrics.csv, TensorBoard events
    resume: bool = False  # continue from out/checkpoint (same kind required)
    init_from: str | None = None  # fresh run (step 0, new optimizer) from this checkpoint's weights
    # with init_from: comma-separated module names, as in model.named_modules() ("encoder.11,decoder.0":
    # a VAE's latent layers), whose weights are drawn afresh (seeded by `seed`); the rest is kept
    reinit: str | None = None
    val_every: int = 500  # steps between validations (0: only at the end)
    val_images: int = 2048  # at most this many validation images per validation (evenly spaced)
    checkpoint_every: int = 1000  # steps between checkpoints (0: only at the end)
    log_every: int = 50  # steps per training row in metrics.csv
    epoch_crops: int = 10_000  # photos: crops per epoch
    workers: int | None = None  # DataLoader workers; None: 0 on CPU, up to 8 on CUDA
    amp: bool = True  # bf16 autocast on CUDA (on the CPU only with amp_cpu)
    amp_cpu: bool = False  # bf16 autocast on the CPU too: pays off on CPUs with bf16 instructions (AMX)
    quiet: bool = False  # no progress bar or messages (for tests and sweeps)

    def resolved_lr(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR[self.model]

    def resolved_weight_decay(self) -> float:
        return self.weight_decay if self.weight_decay is not None else DEFAULT_WEIGHT_DECAY[self.model]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}


def config_from_dict(values: dict[str, Any], *, where: str = "config") -> TrainConfig:
    """A TrainConfig from plain values, checking names and types (ints are accepted for floats)."""
    unknown = sorted(set(values) - set(FIELDS))
    if unknown:
        raise UserError(f"unknown {where} key(s): {', '.join(unknown)}; known: {', '.join(FIELDS)}")
    hints = typing.get_type_hints(TrainConfig)
    checked = {name: check_type(name, value, hints[name], where) for name, value in values.items()}
    return TrainConfig(**checked)


def check_type(name: str, value: Any, hint: Any, where: str) -> Any:
    """`value` if it fits the annotation `hint` (an int is widened for a float), else a UserError."""
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    for option in options:
        base = typing.get_origin(option) or option
        if option is type(None) and value is None:
            return None
        if base is float and isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if base is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if base in (str, bool, dict) and isinstance(value, base):
            return value
    raise UserError(f"{where}: {name} must be {_describe(hint)}, not {value!r}")


def _describe(hint: Any) -> str:
    names = [getattr(t, "__name__", str(t)) for t in typing.get_args(hint)] or [hint.__name__]
    return " or ".join("null" if n == "NoneType" else n for n in names)


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The table in a .json or .toml file (keys as in TrainConfig); raises UserError if unreadable."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise UserError(f"cannot read config file {str(path)!r}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise UserError(f"config file {str(path)!r} is not UTF-8 text (byte {exc.start})") from exc
    try:
        if path.suffix.lower() == ".toml":
            values = tomllib.loads(text)
        elif path.suffix.lower() == ".json":
            values = json.loads(text)
        else:
            raise UserError(f"config file {str(path)!r} must end in .json or .toml")
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise UserError(f"config file {str(path)!r} is not valid {path.suffix[1:].upper()}: {exc}") from exc
    if not isinstance(values, dict):
        raise UserError(f"config file {str(path)!r} must hold a table of settings")
    return values


def parse_override(item: str) -> tuple[str, Any]:
    """`KEY=VALUE` -> (key, value); VALUE is read as JSON when it parses (8, 0.5, true), else a string."""
    key, sep, raw = item.partition("=")
    if not sep or not key:
        raise UserError(f"--set expects KEY=VALUE, got {item!r}")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.strip(), value
