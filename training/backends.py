"""One interface to run a model for evaluation: torch from a checkpoint, or ONNX Runtime from an artifact.

Evaluation measures what is served: on an artifact it runs the very graphs the service loads (checked
against the manifest's sha256), with the same inputs a torch run gets, so the two can be compared
number for number. Arrays in and out are numpy: images float32 `[N, C, H, W]` in `[0, 1]`, latents
float32 `[N, Z]`, token grids int64 `[N, h, w]`, MAE masks float32 `[N, L]` (1 = removed).

Only the stages a kind has are implemented; calling another raises `NotImplementedError`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from training.errors import UserError


@dataclass
class ModelInfo:
    """What evaluation needs to know about a model, whichever way it runs."""

    kind: str  # "vae" | "beta_vae" | "vqvae" | "mae"
    channels: int
    height: int
    width: int
    data: str | None  # the data spec it was trained on ("shapes", "photos", a folder), if recorded
    model_config: dict[str, Any]  # the model config dataclass as a dict (rebuilds the architecture)
    likelihood: str | None = None  # VAE kinds
    codebook_size: int | None = None  # VQ-VAE K
    downsample: int | None = None  # VQ-VAE input side / token grid side
    patch_size: int | None = None  # MAE p
    num_patches: int | None = None  # MAE L
    source: str = ""  # where it came from, for the report
    extra: dict[str, Any] = field(default_factory=dict)


class Backend:
    """Stages of one model on numpy arrays. Subclasses: `TorchBackend`, `OnnxBackend`."""

    info: ModelInfo

    # VAE, beta-VAE
    def encode(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """x [N, C, H, W] -> (mean [N, Z], logvar [N, Z]) of q(z|x)."""
        raise NotImplementedError

    def decode(self, z: np.ndarray) -> np.ndarray:
        """z [N, Z] -> mean image [N, C, H, W] of p(x|z)."""
        raise NotImplementedError

    def neg_elbo(self, x: np.ndarray, eps: np.ndarray) -> dict[str, np.ndarray]:
        """One-sample negative ELBO: always `bits_per_dim` [N]; torch also gives `nll`, `kl` [N] in nats."""
        raise NotImplementedError

    # VQ-VAE (any H, W that are multiples of info.downsample)
    def encode_tokens(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """x [N, C, H, W] -> (z_e [N, D, h, w] float32, tokens [N, h, w] int64)."""
        raise NotImplementedError

    def decode_tokens(self, tokens: np.ndarray) -> np.ndarray:
        """tokens [N, h, w] int64 -> image [N, C, H, W]."""
        raise NotImplementedError

    def decode_continuous(self, z_e: np.ndarray) -> np.ndarray:
        """z_e [N, D, h, w] -> image [N, C, H, W] (quantized first)."""
        raise NotImplementedError

    # MAE
    def reconstruct_masked(self, x: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """x [N, C, H, W], mask [N, L] -> the prediction of every patch, [N, C, H, W]."""
        raise NotImplementedError

    def embed(self, x: np.ndarray) -> np.ndarray:
        """x [N, C, H, W] -> embedding [N, E] (mean of the encoder's tokens, no masking)."""
        raise NotImplementedError


# ---------------------------------------------------------------------------------------------------
# torch


class TorchBackend(Backend):
    """A torch model on the CPU in eval mode, without gradients."""

    def __init__(self, model: nn.Module, info: ModelInfo) -> None:
        self.model: Any = model.float().cpu().eval()  # Any: its stages are per-kind methods
        self.info = info

    @classmethod
    def from_checkpoint(cls, path: Path) -> TorchBackend:
        """Load a checkpoint folder with `training.checkpoint.load_model`; UserError if it is not one."""
        from training.checkpoint import load_model

        path = Path(path)
        if not path.exists():
            raise UserError(f"checkpoint {path} does not exist")
        try:
            model, state = load_model(path)
        except UserError:
            raise
        except (FileNotFoundError, NotADirectoryError, KeyError, ValueError) as exc:
            raise UserError(f"{path} is not a readable checkpoint: {exc}") from exc
        return cls(model, model_info(model, data=_data_spec(state), source=f"checkpoint {path}"))

    def _run(self, fn: Any, *arrays: np.ndarray) -> Any:
        with torch.no_grad():
            return fn(*(torch.from_numpy(np.ascontiguousarray(a)) for a in arrays))

    def encode(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mean, logvar = self._run(self.model.encode, x)
        return mean.numpy(), logvar.numpy()

    def decode(self, z: np.ndarray) -> np.ndarray:
        return self._run(self.model.decode, z).numpy()

    def neg_elbo(self, x: np.ndarray, eps: np.ndarray) -> dict[str, np.ndarray]:
        return {k: v.numpy() for k, v in self._run(self.model.neg_elbo, x, eps).items()}

    def encode_tokens(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        z_e = self._run(self.model.encode, x)
        with torch.no_grad():
            _, tokens = self.model.quantize(z_e)
        return z_e.numpy(), tokens.numpy()

    def decode_tokens(self, tokens: np.ndarray) -> np.ndarray:
        return self._run(self.model.decode_tokens, tokens).numpy()

    def decode_continuous(self, z_e: np.ndarray) -> np.ndarray:
        return self._run(self.model.decode_continuous, z_e)[0].numpy()

    def reconstruct_masked(self, x: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return self._run(self.model.reconstruct, x, mask).numpy()

    def embed(self, x: np.ndarray) -> np.ndarray:
        return self._run(self.model.embed, x).numpy()


def model_info(model: Any, *, data: str | None, source: str) -> ModelInfo:
    """The ModelInfo of a torch model (an nn.Module of `models`), read from its config as export does."""
    cfg: Any = model.config
    kind = str(model.kind)
    info = ModelInfo(
        kind=kind, channels=cfg.channels, height=cfg.image_size, width=cfg.image_size, data=data,
        model_config=asdict(cfg), source=source,
    )
    if kind in ("vae", "beta_vae"):
        info.likelihood = cfg.likelihood
    elif kind == "vqvae":
        info.codebook_size = cfg.codebook_size
        with torch.no_grad():
            side = model.encode(torch.zeros(1, cfg.channels, cfg.image_size, cfg.image_size)).shape[-1]
        info.downsample = cfg.image_size // side
    elif kind == "mae":
        info.patch_size = cfg.patch_size
        info.num_patches = (cfg.image_size // cfg.patch_size) ** 2
    return info


def _data_spec(state: dict[str, Any]) -> str | None:
    data = state.get("data")
    if isinstance(data, dict):  # a recorded data config: its spec field
        data = data.get("spec") or data.get("name")
    return None if data is None else str(data)


# ---------------------------------------------------------------------------------------------------
# ONNX Runtime


class OnnxBackend(Backend):
    """The graphs of an artifact folder (docs/ARTIFACT.md) in ONNX Runtime on the CPU."""

    def __init__(self, folder: Path, *, threads: int = 0) -> None:
        import onnxruntime as ort

        self.folder = Path(folder)
        self.manifest = read_manifest(self.folder)
        m = self.manifest
        inp = m["input"]
        training = m.get("training") or {}
        data = training.get("data")
        info = ModelInfo(
            kind=m["kind"], channels=int(inp["channels"]), height=int(inp["height"]), width=int(inp["width"]),
            data=None if data is None else str(data), model_config=dict(training.get("model") or {}),
            likelihood=m.get("likelihood"), patch_size=m.get("patch_size"), num_patches=m.get("num_patches"),
            source=f"artifact {self.folder}",
        )
        latent = m.get("latent") or {}
        info.codebook_size = latent.get("codebook_size")
        info.downsample = latent.get("downsample") or inp.get("spatial_multiple")
        self.info = info
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = threads
        self.sessions: dict[str, Any] = {}
        self.input_names: dict[str, list[str]] = {}
        for name, spec in m["graphs"].items():
            path = self.folder / spec["file"]
            self.sessions[name] = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            self.input_names[name] = [t["name"] for t in spec["inputs"]]

    def _run(self, graph: str, *arrays: np.ndarray) -> list[np.ndarray]:
        if graph not in self.sessions:
            raise NotImplementedError(f"artifact {self.folder} has no {graph!r} graph")
        feeds = {n: np.ascontiguousarray(a) for n, a in zip(self.input_names[graph], arrays, strict=True)}
        return self.sessions[graph].run(None, feeds)  # outputs in the order docs/ARTIFACT.md lists them

    def encode(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mean, logvar = self._run("encoder", x.astype(np.float32))
        return mean, logvar

    def decode(self, z: np.ndarray) -> np.ndarray:
        return self._run("decoder", z.astype(np.float32))[0]

    def neg_elbo(self, x: np.ndarray, eps: np.ndarray) -> dict[str, np.ndarray]:
        return {"bits_per_dim": self._run("elbo", x.astype(np.float32), eps.astype(np.float32))[0]}

    def encode_tokens(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        z_e, tokens = self._run("encoder", x.astype(np.float32))
        return z_e, tokens

    def decode_tokens(self, tokens: np.ndarray) -> np.ndarray:
        return self._run("decoder", tokens.astype(np.int64))[0]

    def decode_continuous(self, z_e: np.ndarray) -> np.ndarray:
        return self._run("decoder_continuous", z_e.astype(np.float32))[0]

    def reconstruct_masked(self, x: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return self._run("reconstruct", x.astype(np.float32), mask.astype(np.float32))[0]

    def embed(self, x: np.ndarray) -> np.ndarray:
        return self._run("encoder", x.astype(np.float32))[0]


def read_manifest(folder: Path) -> dict[str, Any]:
    """Read and check an artifact's manifest.json as the service does (app.manifest: format version,
    field types), then every file it lists: each graph and each shared file (the weights) present and
    equal to its sha256.

    Raises UserError with a one-line reason. Returns the manifest as a plain dict (so `evaluate` can
    write it back with its metrics added and nothing else changed).
    """
    from app.manifest import ManifestError, verified_file
    from app.manifest import read_manifest as parse_manifest

    folder = Path(folder)
    if not (folder / "manifest.json").is_file():
        raise UserError(f"{folder} is not an artifact folder (no manifest.json)")
    try:
        m = parse_manifest(folder)
        if m.kind not in ("vae", "beta_vae", "vqvae", "mae") or m.channels not in (1, 3):
            raise ManifestError(f"unknown kind {m.kind!r} or channel count {m.channels!r}")
        if m.height < 1 or m.width < 1:
            raise ManifestError(f"input size {m.height}x{m.width} is not positive")
        for graph in m.graphs.values():
            verified_file(folder, graph.file, graph.sha256, f"graph {graph.name}")
        for name, entry in m.files.items():
            verified_file(folder, str(entry["file"]), str(entry["sha256"]), f"file {name}")
    except (ManifestError, KeyError, TypeError) as exc:
        raise UserError(f"artifact {folder}: {exc}") from exc
    return m.raw
