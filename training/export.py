"""Export a checkpoint to an artifact folder (docs/ARTIFACT.md): one ONNX graph per stage + manifest.json.

`python -m training export CHECKPOINT --out DIR [--name NAME]` writes the artifact; `--triton DIR` (with a
CHECKPOINT, or with `--from-artifact ART` instead) also writes a Triton model repository (training/triton.py).

Each graph is a thin wrapper (`_Stage`) around one stage of the model, exported with the TorchScript exporter
in eval mode. Per-kind differences live in one adapter function per kind (`_vae_graphs`, `_vqvae_graphs`,
`_mae_graphs`): which stages, their inputs/outputs, and how to draw realistic inputs for the parity check.
The export checks itself: ONNX Runtime (CPU) must match PyTorch on every output, or nothing is written.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import json
import re
import shlex
import shutil
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import Tensor, nn

from models import MAE, VAE, VQVAE
from training.checkpoint import MODEL_FILE, load_model, resolve_checkpoint
from training.errors import OneLineParser, UserError

if TYPE_CHECKING:
    from training.triton import TritonOptions

FORMAT_VERSION = 1
OPSET = 17
PARITY_BATCHES = (1, 3, 8)
IMAGE_ATOL = 1e-4  # max abs error allowed on float outputs (images in [0, 1], latents)
WEIGHTS_FILE = "weights.bin"  # the weights every graph of an artifact shares (ONNX external data)
MIN_TOKEN_AGREEMENT = 0.999  # fraction of int64 outputs (VQ tokens) that must agree (equal or tied)
# Two codes count as tied for a vector z when their squared distances to z differ by less than this
# fraction of ||z||^2 + ||e||^2: far above the fp32 rounding of the expanded distance (either runtime may
# pick either code), far below the gap between distinct codes.
TIE_RTOL = 1e-5
_NP_DTYPE = {"float32": np.float32, "int64": np.int64}
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


@dataclass(frozen=True)
class Port:
    """One graph input or output. `shape`: ints for fixed axes, strings (axis names) for dynamic ones."""

    name: str
    dtype: str  # "float32" or "int64"
    shape: tuple[int | str, ...]
    # Parity for a float output: images and latents must agree to IMAGE_ATOL absolutely; a score that can
    # be large (the ELBO in bits/dim of an image the model finds unlikely) to IMAGE_ATOL x max(1, |value|),
    # since fp32 sums of thousands of terms differ in their last bits whatever the runtime.
    relative: bool = False

    def manifest(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}


# Draws one input tuple for a graph: (batch, height, width, generator) -> tensors in the order of `inputs`.
Sampler = Callable[[int, int, int, torch.Generator], tuple[Tensor, ...]]


@dataclass
class Graph:
    """One exported stage: the torch module to trace, its ports, and a sampler of realistic inputs."""

    name: str
    module: nn.Module
    inputs: tuple[Port, ...]
    outputs: tuple[Port, ...]
    sample: Sampler
    # For int64 outputs: (inputs, torch outputs, ONNX tokens) -> bool mask of the positions where ONNX picked
    # another code that is exactly as near (a tie within rounding); those count as agreeing.
    ties: Callable[[tuple[Tensor, ...], tuple[Tensor, ...], np.ndarray], np.ndarray] | None = None

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        return {
            p.name: {i: axis for i, axis in enumerate(p.shape) if isinstance(axis, str)}
            for p in (*self.inputs, *self.outputs)
        }


@dataclass
class KindExport:
    """What one kind contributes: its graphs, the manifest's kind-specific fields, extra files, sizes."""

    graphs: list[Graph]
    input: dict[str, Any]  # manifest "input" minus the fixed keys (layout, dtype, ...)
    latent: dict[str, Any]
    likelihood: str | None = None
    patch_size: int | None = None
    num_patches: int | None = None
    arrays: dict[str, np.ndarray] | None = None  # extra files: name -> float32 array, saved as <name>.npy
    parity_sizes: tuple[tuple[int, int], ...] = ()


class _Stage(nn.Module):
    """One stage of a model as its own graph: forward(*inputs) = fn(model, *inputs)."""

    def __init__(self, model: nn.Module, fn: Callable[..., Any]) -> None:
        super().__init__()
        self.model = model
        self.fn = fn

    def forward(self, *inputs: Tensor) -> Any:
        return self.fn(self.model, *inputs)


def _rand_images(c: int) -> Sampler:
    return lambda n, h, w, g: (torch.rand(n, c, h, w, generator=g),)


# --- per-kind adapters ------------------------------------------------------------------------------------
def _vae_graphs(model: VAE) -> KindExport:
    cfg = model.config
    c, s, z = cfg.channels, cfg.image_size, cfg.latent_dim
    image = Port("image", "float32", ("batch", c, s, s))
    graphs = [
        Graph("encoder", _Stage(model, lambda m, x: m.encode(x)), (image,),
              (Port("mean", "float32", ("batch", z)), Port("logvar", "float32", ("batch", z))),
              _rand_images(c)),
        Graph("decoder", _Stage(model, lambda m, latent: m.decode(latent)),
              (Port("latent", "float32", ("batch", z)),), (image,),
              lambda n, h, w, g: (torch.randn(n, z, generator=g),)),
        # encoder mean -> decoder in one run: what the service's reconstruct does, one queue hop fewer
        Graph("reconstruct", _Stage(model, lambda m, x: m.decode(m.encode(x)[0])), (image,),
              (Port("reconstruction", "float32", ("batch", c, s, s)),), _rand_images(c)),
        Graph("elbo", _Stage(model, lambda m, x, eps: m.neg_elbo(x, eps)["bits_per_dim"]),
              (image, Port("eps", "float32", ("batch", z))),
              (Port("bits_per_dim", "float32", ("batch",), relative=True),),
              # binary images for a Bernoulli model, so the ELBO is evaluated on data it could have seen
              lambda n, h, w, g: (
                  _binary_or_uniform(torch.rand(n, c, h, w, generator=g), cfg.likelihood),
                  torch.randn(n, z, generator=g),
              )),
    ]
    return KindExport(
        graphs=graphs,
        input={"height": s, "width": s, "channels": c, "spatial_multiple": None},
        latent={"shape": [z], "codebook_size": None, "code_dim": None, "downsample": None,
                "lookup": None},
        likelihood=cfg.likelihood,
        parity_sizes=((s, s),),
    )


def _binary_or_uniform(x: Tensor, likelihood: str) -> Tensor:
    return (x > 0.5).float() if likelihood == "bernoulli" else x


def _vqvae_graphs(model: VQVAE) -> KindExport:
    cfg = model.config
    c, s = cfg.channels, cfg.image_size
    codebook = model.codebook.detach().float().cpu()  # [K, D]
    k, d = codebook.shape
    with torch.no_grad():
        hh, ww = model.encode(torch.zeros(1, c, s, s)).shape[2:]
    f = s // hh  # downsampling factor of the encoder
    image = Port("image", "float32", ("batch", c, "height", "width"))
    z_e = Port("z_e", "float32", ("batch", d, "h", "w"))
    tokens = Port("tokens", "int64", ("batch", "h", "w"))

    def encoder(m: VQVAE, x: Tensor) -> tuple[Tensor, Tensor]:
        z = m.encode(x)
        return z, m.quantize(z)[1]

    graphs = [
        Graph("encoder", _Stage(model, encoder), (image,), (z_e, tokens), _rand_images(c),
              ties=lambda inputs, out, other: near_ties(codebook, out[0], out[1], other)),
        Graph("decoder", _Stage(model, lambda m, t: m.decode_tokens(t)), (tokens,), (image,),
              lambda n, h, w, g: (torch.randint(0, k, (n, h // f, w // f), generator=g),)),
        Graph("decoder_continuous", _Stage(model, lambda m, z: m.decode_continuous(z)),
              (z_e,), (image, tokens),
              # z_e as the encoder makes it, so the quantizer sees realistic distances
              lambda n, h, w, g: (model.encode(torch.rand(n, c, h, w, generator=g)),),
              ties=lambda inputs, out, other: near_ties(codebook, inputs[0], out[1], other)),
    ]
    def reconstruct(m: VQVAE, x: Tensor) -> tuple[Tensor, Tensor]:
        return m.decode_continuous(m.encode(x))

    def reconstruct_ties(inputs: tuple[Tensor, ...], out: tuple[Tensor, ...], other: np.ndarray
                         ) -> np.ndarray:
        with torch.no_grad():
            return near_ties(codebook, model.encode(inputs[0]), out[1], other)

    # encode -> quantise -> decode in one run (the service's reconstruct: one queue hop fewer)
    graphs.append(
        Graph("reconstruct", _Stage(model, reconstruct), (image,),
              (Port("reconstruction", "float32", ("batch", c, "height", "width")), tokens),
              _rand_images(c), ties=reconstruct_ties)
    )
    side = (s * 3 // 2) // f * f  # a second size, ~1.5x, on the encoder's grid
    return KindExport(
        graphs=graphs,
        input={"height": s, "width": s, "channels": c, "spatial_multiple": f},
        latent={"shape": [d, hh, ww], "codebook_size": k, "code_dim": d, "downsample": f,
                "lookup": "cosine" if model.config.normalize else "euclidean"},
        arrays={"codebook": codebook.numpy().astype(np.float32)},
        parity_sizes=((s, s), (side, side)),
    )


def _mae_graphs(model: MAE) -> KindExport:
    cfg = model.config
    c, s, p = cfg.channels, cfg.image_size, cfg.patch_size
    num_patches = (s // p) ** 2
    with torch.no_grad():
        e = model.embed(torch.zeros(1, c, s, s)).shape[1]
    image = Port("image", "float32", ("batch", c, s, s))

    def images_and_masks(n: int, h: int, w: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
        # a different random mask per sample, alternating two ratios, so one batch mixes visible counts
        ratios = [0.75 if i % 2 == 0 else 0.5 for i in range(n)]
        mask = torch.cat([model.random_mask(1, r, g) for r in ratios]).float()
        return torch.rand(n, c, h, w, generator=g), mask

    # ONNX names every value once, so the output cannot also be called "image" (docs/ARTIFACT.md's table)
    reconstruction = Port("reconstruction", "float32", image.shape)
    graphs = [
        Graph("reconstruct", _Stage(model, lambda m, x, mask: m.reconstruct(x, mask)),
              (image, Port("mask", "float32", ("batch", num_patches))), (reconstruction,), images_and_masks),
        Graph("encoder", _Stage(model, lambda m, x: m.embed(x)), (image,),
              (Port("embedding", "float32", ("batch", e)),), _rand_images(c)),
    ]
    return KindExport(
        graphs=graphs,
        input={"height": s, "width": s, "channels": c, "spatial_multiple": None},
        latent={"shape": [e], "codebook_size": None, "code_dim": None, "downsample": None,
                "lookup": None},
        patch_size=p,
        num_patches=num_patches,
        parity_sizes=((s, s),),
    )


_ADAPTERS: dict[str, Callable[[Any], KindExport]] = {
    "vae": _vae_graphs,
    "beta_vae": _vae_graphs,
    "vqvae": _vqvae_graphs,
    "mae": _mae_graphs,
}


def kind_export(model: nn.Module) -> KindExport:
    """The graphs and manifest fields of `model` (put in eval mode here: no dropout, no EMA updates)."""
    model.eval()
    kind = str(model.kind)
    if kind not in _ADAPTERS:
        raise UserError(f"cannot export a model of kind {kind!r}; known kinds: {', '.join(_ADAPTERS)}")
    return _ADAPTERS[kind](model)


# --- ONNX ---------------------------------------------------------------------------------------------------
def export_graph(graph: Graph, path: Path, height: int, width: int) -> None:
    """Trace `graph.module` on a batch of 2 and write it to `path` (opset OPSET, dynamic axes by name)."""
    example = graph.sample(2, height, width, torch.Generator().manual_seed(0))
    with warnings.catch_warnings(), torch.no_grad():
        # the TorchScript exporter is deprecated in favour of dynamo; its warnings say only that
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*TorchScript-based ONNX export.*")
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        torch.onnx.export(
            graph.module, example, str(path), dynamo=False, opset_version=OPSET, do_constant_folding=True,
            input_names=[p.name for p in graph.inputs], output_names=[p.name for p in graph.outputs],
            dynamic_axes=graph.dynamic_axes(),
        )
    # The exporter renames an input silently when a name clashes; the manifest's names are the contract.
    proto = onnx.load(str(path))
    names = ([v.name for v in proto.graph.input], [v.name for v in proto.graph.output])
    wanted = ([p.name for p in graph.inputs], [p.name for p in graph.outputs])
    if names != wanted:
        raise RuntimeError(f"graph {graph.name!r} was exported with inputs/outputs {names}, not {wanted}")
    # Tracing leaves some fixed output axes unnamed-symbolic ("Slicemean_dim_1"); declare the ports' shapes
    # so the graph says what the manifest says (the parity check then runs against these declarations).
    for port, value in zip((*graph.inputs, *graph.outputs), (*proto.graph.input, *proto.graph.output),
                           strict=True):
        dims = value.type.tensor_type.shape.dim
        if len(dims) != len(port.shape):
            raise RuntimeError(f"graph {graph.name!r}: {port.name} rank {len(dims)} != {len(port.shape)}")
        for dim, axis in zip(dims, port.shape, strict=True):
            if isinstance(axis, str):
                dim.dim_param = axis
            else:
                dim.dim_value = axis
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, str(path))


def share_weights(graph_files: Sequence[Path], weights: Path, *, min_bytes: int = 1024) -> None:
    """Move the weights of the graphs into one file they all reference.

    The graphs of an artifact are stages of one model, so most weights appear in several of them (the
    fused `reconstruct` and the `elbo` graph each hold an encoder and a decoder). Every initializer of at
    least `min_bytes` goes to `weights` once, by content, as ONNX external data (location, offset,
    length; offsets aligned to 4096 so a runtime can map them); smaller ones stay inside their graph.
    ONNX Runtime resolves the location next to the graph file. Each graph is rewritten in place.
    """
    written: dict[bytes, tuple[int, int]] = {}  # content digest -> (offset, length)
    with weights.open("wb") as out:
        for path in graph_files:
            proto = onnx.load(str(path))
            for tensor in proto.graph.initializer:
                data = numpy_helper.to_array(tensor).tobytes()
                if len(data) < min_bytes:
                    continue
                key = hashlib.sha256(f"{tensor.data_type}:{list(tensor.dims)}:".encode() + data).digest()
                if key not in written:
                    out.seek(-out.tell() % 4096, 1)  # pad to the next multiple of 4096
                    written[key] = (out.tell(), len(data))
                    out.write(data)
                offset, length = written[key]
                tensor.ClearField("raw_data")
                for field in ("float_data", "int32_data", "int64_data", "double_data"):
                    tensor.ClearField(field)
                tensor.data_location = onnx.TensorProto.EXTERNAL
                del tensor.external_data[:]
                for k, v in (("location", weights.name), ("offset", offset), ("length", length)):
                    entry = tensor.external_data.add()
                    entry.key, entry.value = k, str(v)
            onnx.save(proto, str(path))


def _ort_session(path: Path) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # keep shape-inference chatter out of the CLI output
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


@dataclass
class ParityRow:
    """Worst disagreement of one graph output at one batch size and input size."""

    graph: str
    output: str
    batch: int
    size: tuple[int, int]
    max_abs_error: float | None  # float outputs
    agreement: float | None  # int64 outputs: fraction of equal elements


def check_parity(
    graphs: Sequence[Graph],
    folder: Path,
    sizes: Sequence[tuple[int, int]],
    *,
    batches: Sequence[int] = PARITY_BATCHES,
    atol: float = IMAGE_ATOL,
    min_agreement: float = MIN_TOKEN_AGREEMENT,
    seed: int = 0,
    files: Mapping[str, str] | None = None,
) -> list[ParityRow]:
    """Run every graph `<folder>/<name>.onnx` (or `<folder>/<files[name]>`) in ONNX Runtime (CPU) and its
    torch module on the same inputs.

    Raises UserError naming the graph, output, batch and error at the first output outside tolerance.
    Float outputs are compared on the samples whose int64 outputs agree completely: one flipped token
    changes a decoded patch by design, and the token agreement already accounts for it.
    """
    rows: list[ParityRow] = []
    for graph in graphs:
        session = _ort_session(folder / (files or {}).get(graph.name, f"{graph.name}.onnx"))
        for h, w in sizes:
            for batch in batches:
                g = torch.Generator().manual_seed(seed + batch)
                with torch.no_grad():
                    inputs = graph.sample(batch, h, w, g)
                    expected = _as_tuple(graph.module(*inputs))
                feeds = {p.name: t.numpy() for p, t in zip(graph.inputs, inputs, strict=True)}
                got = session.run(None, feeds)
                rows += _compare(graph, batch, (h, w), inputs, expected, got, atol, min_agreement)
    return rows


def _as_tuple(out: Any) -> tuple[Tensor, ...]:
    return tuple(out) if isinstance(out, (tuple, list)) else (out,)


def near_ties(codebook: Tensor, z_e: Tensor, tokens: Tensor, other: np.ndarray) -> np.ndarray:
    """Where code `other` is as near to z_e as code `tokens` within TIE_RTOL, in float64.

    codebook [K, D]; z_e [N, D, h, w]; tokens [N, h, w] (torch's choice); other [N, h, w] (ONNX's).
    """
    z = z_e.double().permute(0, 2, 3, 1)  # [N, h, w, D]
    codes = codebook.double()
    mine, theirs = codes[tokens], codes[torch.from_numpy(other)]
    gap = ((z - theirs) ** 2).sum(-1) - ((z - mine) ** 2).sum(-1)
    scale = (z**2).sum(-1) + (mine**2).sum(-1)
    return (gap.abs() <= TIE_RTOL * scale).numpy()


def _compare(
    graph: Graph, batch: int, size: tuple[int, int], inputs: tuple[Tensor, ...], expected: tuple[Tensor, ...],
    got: list[np.ndarray], atol: float, min_agreement: float,
) -> list[ParityRow]:
    where = f"graph {graph.name!r} output {{!r}} at batch {batch}, input {size[0]}x{size[1]}"
    same_rows = np.ones(batch, dtype=bool)  # samples whose int outputs are all equal
    rows: dict[str, ParityRow] = {}
    for port, ref, out in zip(graph.outputs, expected, got, strict=True):
        ref_np = ref.numpy()
        if out.shape != ref_np.shape or out.dtype != _NP_DTYPE[port.dtype]:
            raise UserError(f"parity check failed: {where.format(port.name)}: ONNX gives {out.dtype}"
                            f"{list(out.shape)}, torch gives {ref_np.dtype}{list(ref_np.shape)}")
        if port.dtype == "int64":
            equal = out == ref_np
            same_rows &= equal.reshape(batch, -1).all(axis=1)
            agree = equal | graph.ties(inputs, expected, out) if graph.ties is not None else equal
            agreement = float(agree.mean())
            rows[port.name] = ParityRow(graph.name, port.name, batch, size, None, agreement)
            if agreement < min_agreement:
                raise UserError(f"parity check failed: {where.format(port.name)}: {agreement:.2%} of tokens "
                                f"equal or tied, need {min_agreement:.2%}")
    for port, ref, out in zip(graph.outputs, expected, got, strict=True):
        if port.dtype != "float32":
            continue
        ref_np = ref.numpy()[same_rows]
        gap = np.abs(out[same_rows] - ref_np)
        if port.relative:
            gap = gap / np.maximum(1.0, np.abs(ref_np))
        err = float(gap.max(initial=0.0))
        if not np.isfinite(out[same_rows]).all():
            err = float("inf")
        rows[port.name] = ParityRow(graph.name, port.name, batch, size, err, None)
        if not err <= atol:
            what = "max error relative to max(1, |value|)" if port.relative else "max abs error"
            raise UserError(f"parity check failed: {where.format(port.name)}: {what} {err:.3g} > {atol:g}")
    return [rows[p.name] for p in graph.outputs]  # in the graph's output order, for the table


def parity_table(rows: Sequence[ParityRow]) -> str:
    """One line per graph output: the worst error (or lowest token agreement) per batch size."""
    batches = sorted({r.batch for r in rows})
    lines = [f"{'graph':<20} {'output':<14} " + " ".join(f"{'batch ' + str(b):>12}" for b in batches)]
    keys = list(dict.fromkeys((r.graph, r.output) for r in rows))
    for graph, output in keys:
        cells = []
        for b in batches:
            mine = [r for r in rows if (r.graph, r.output, r.batch) == (graph, output, b)]
            if mine[0].agreement is not None:
                cells.append(f"{min(r.agreement or 0.0 for r in mine):>8.2%} tok")
            else:
                cells.append(f"{max(r.max_abs_error or 0.0 for r in mine):>12.2e}")
        lines.append(f"{graph:<20} {output:<14} " + " ".join(cells))
    return "\n".join(lines)


# --- the artifact -----------------------------------------------------------------------------------------
def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def export_artifact(
    checkpoint: Path,
    out_dir: Path,
    name: str | None = None,
    *,
    atol: float = IMAGE_ATOL,
    min_agreement: float = MIN_TOKEN_AGREEMENT,
    export_command: str | None = None,
    log: Callable[[str], None] | None = print,
) -> Path:
    """Export the checkpoint at `checkpoint` (run folder or its checkpoint/) to the artifact `out_dir`.

    Writes into a temporary sibling folder and moves it into place only after the parity check passed, so a
    failed export leaves no folder that looks valid. An existing artifact at `out_dir` is replaced; any other
    non-empty folder there is refused. Returns `out_dir`.
    """
    ckpt = resolve_checkpoint(checkpoint)
    out_dir = Path(out_dir)
    _check_target(out_dir)
    name = name or out_dir.name
    if not _NAME.fullmatch(name):
        raise UserError(f"artifact name {name!r} must be letters, digits, '_', '-' or '.' (it names models)")
    model, state = load_model(ckpt)
    model = model.float().cpu()
    spec = kind_export(model)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with _staging(out_dir) as tmp:
        checkpoint_sha256 = sha256_file(ckpt / MODEL_FILE)
        manifest, rows = write_artifact(
            spec, str(model.kind), tmp, name, state, checkpoint_sha256, atol=atol, min_agreement=min_agreement
        )
        (tmp / "README.md").write_text(model_card(manifest, state, ckpt, export_command))
    if log is not None:
        sizes = ", ".join(f"{h}x{w}" for h, w in spec.parity_sizes)
        log(f"parity, ONNX Runtime (CPU) vs torch at {sizes}: max abs error (scores: relative to "
            "max(1, |value|)), or % of tokens equal or tied")
        log(parity_table(rows))
        log(f"wrote {out_dir} ({model.kind}, {len(spec.graphs)} graphs)")
    return out_dir


def write_artifact(
    spec: KindExport,
    kind: str,
    folder: Path,
    name: str,
    state: dict[str, Any],
    checkpoint_sha256: str,
    *,
    atol: float = IMAGE_ATOL,
    min_agreement: float = MIN_TOKEN_AGREEMENT,
) -> tuple[dict[str, Any], list[Any]]:
    """The artifact's files in `folder` (graphs, their shared weights, arrays, manifest), after the
    parity check; returns the manifest and the parity rows. `spec` is `kind_export(model)` of a model of
    that `kind`."""
    height, width = spec.input["height"], spec.input["width"]
    for graph in spec.graphs:
        export_graph(graph, folder / f"{graph.name}.onnx", height, width)
    share_weights([folder / f"{graph.name}.onnx" for graph in spec.graphs], folder / WEIGHTS_FILE)
    rows = check_parity(spec.graphs, folder, spec.parity_sizes, atol=atol, min_agreement=min_agreement)
    for array_name, array in (spec.arrays or {}).items():
        np.save(folder / f"{array_name}.npy", array, allow_pickle=False)
    manifest = build_manifest(name, kind, spec, folder, state, checkpoint_sha256)
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest, rows


def _check_target(out_dir: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--out {out_dir} is a file, not a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / "manifest.json").is_file():
        raise UserError(f"--out {out_dir} is a non-empty folder that is not an artifact; not replacing it")


@contextlib.contextmanager
def _staging(out_dir: Path) -> Iterator[Path]:
    """A temporary folder next to `out_dir`, renamed to `out_dir` if the block succeeds, removed if not."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".partial", dir=out_dir.parent))
    try:
        yield tmp
        tmp.chmod(0o755)  # mkdtemp makes it private; an artifact is read by the service's own user
        if out_dir.exists():
            old = out_dir.with_name(f".{out_dir.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            out_dir.rename(old)
            tmp.rename(out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def build_manifest(
    name: str, kind: str, spec: KindExport, folder: Path, state: dict[str, Any], checkpoint_sha256: str,
) -> dict[str, Any]:
    """manifest.json per docs/ARTIFACT.md; hashes the graph and array files already written in `folder`."""
    graphs = {
        g.name: {
            "file": f"{g.name}.onnx",
            "sha256": sha256_file(folder / f"{g.name}.onnx"),
            "inputs": [p.manifest() for p in g.inputs],
            "outputs": [p.manifest() for p in g.outputs],
        }
        for g in spec.graphs
    }
    files = {
        array_name: {"file": f"{array_name}.npy", "sha256": sha256_file(folder / f"{array_name}.npy"),
                     "shape": list(array.shape), "dtype": str(array.dtype)}
        for array_name, array in (spec.arrays or {}).items()
    }
    files["weights"] = {"file": WEIGHTS_FILE, "sha256": sha256_file(folder / WEIGHTS_FILE),
                        "bytes": (folder / WEIGHTS_FILE).stat().st_size}
    return {
        "format_version": FORMAT_VERSION,
        "name": name,
        "kind": kind,
        "created": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "input": {
            "height": spec.input["height"], "width": spec.input["width"], "channels": spec.input["channels"],
            "layout": "NCHW", "dtype": "float32", "range": [0.0, 1.0],
            "normalization": "inside the graph; feed [0, 1]",
            "spatial_multiple": spec.input["spatial_multiple"],
        },
        "latent": spec.latent,
        "likelihood": spec.likelihood,
        "patch_size": spec.patch_size,
        "num_patches": spec.num_patches,
        "opset": OPSET,
        "graphs": graphs,
        "files": files,
        "training": {
            "model": state.get("model_config"),
            "train": state.get("train_config"),
            "data": state.get("data"),
            "step": state.get("step"),
            "checkpoint_sha256": checkpoint_sha256,
        },
        "metrics": {},
        "model_card": "README.md",
    }


def model_card(
    manifest: dict[str, Any], state: dict[str, Any], checkpoint: Path, export_command: str | None
) -> str:
    """README.md skeleton; `python -m training evaluate` appends its figures below."""
    kind, training = manifest["kind"], manifest["training"]
    inp = manifest["input"]
    train_command = state.get("command")
    if isinstance(train_command, list):
        train_command = shlex.join(train_command)
    export_command = export_command or f"python -m training export {checkpoint} --out {manifest['name']}"
    lines = [
        f"# {manifest['name']}",
        "",
        f"- kind: `{kind}`",
        f"- input: {inp['channels']} x {inp['height']} x {inp['width']}, float32 NCHW in [0, 1]",
        f"- latent: {manifest['latent']['shape']}",
        f"- data: `{training['data']}`",
        f"- trained for {training['step']} steps" if training.get("step") is not None else "- steps: unknown",
        f"- graphs: {', '.join(f'`{g}`' for g in manifest['graphs'])} (ONNX opset {manifest['opset']})",
        "",
        "## How it was made",
        "",
        "```",
        train_command or "# the training command was not recorded in the checkpoint",
        export_command,
        "```",
        "",
        "## Figures",
        "",
        "Filled in by `python -m training evaluate --artifact <this folder>`.",
        "",
    ]
    return "\n".join(lines)


# --- command line -----------------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python -m training export",
                description="Export a checkpoint to an ONNX artifact folder and/or a Triton model repository")
    p.add_argument("checkpoint", nargs="?", type=Path, help="run folder or its checkpoint/ folder")
    p.add_argument("--out", type=Path, help="artifact folder to write (artifacts/<name>)")
    p.add_argument("--name", help="artifact name in the manifest (default: the --out folder's name)")
    p.add_argument("--from-artifact", type=Path, help="with --triton: an existing artifact folder as source")
    p.add_argument("--triton", type=Path, help="also write a Triton model repository into this folder")
    p.add_argument("--max-batch-size", type=int, default=256, help="Triton max_batch_size (default 256)")
    p.add_argument("--max-queue-delay-us", type=int, default=1000,
                   help="Triton dynamic batching: longest wait to fill a batch, microseconds (default 1000)")
    p.add_argument("--instances", type=int, default=1, help="Triton model instances per GPU (default 1)")
    return p


def main(argv: list[str]) -> int:
    """`python -m training export ...`; returns the exit code (UserError -> exit 2 in training/__main__)."""
    args = _parser().parse_args(argv)
    if args.triton is not None:
        _triton_options(args)  # its errors before any export work
    if args.from_artifact is not None:
        if args.checkpoint is not None or args.out is not None:
            raise UserError("export: --from-artifact takes no CHECKPOINT and no --out")
        if args.triton is None:
            raise UserError("export: --from-artifact needs --triton DIR")
        return _write_triton(args.from_artifact, args)
    if args.checkpoint is None:
        raise UserError("export: give a CHECKPOINT (or --from-artifact ART --triton DIR)")
    if args.out is None and args.triton is None:
        raise UserError("export: give --out DIR and/or --triton DIR")
    command = shlex.join(["python", "-m", "training", "export", *argv])
    if args.out is not None:
        artifact = export_artifact(args.checkpoint, args.out, args.name, export_command=command)
        return _write_triton(artifact, args) if args.triton is not None else 0
    with tempfile.TemporaryDirectory() as tmp:  # Triton only: the artifact is a stepping stone
        ckpt = resolve_checkpoint(args.checkpoint)
        name = args.name or (ckpt.parent.name if ckpt.name == "checkpoint" else ckpt.name)
        artifact = export_artifact(args.checkpoint, Path(tmp) / name, name, export_command=command)
        return _write_triton(artifact, args)


def _triton_options(args: argparse.Namespace) -> TritonOptions:
    from training.triton import TritonOptions

    return TritonOptions(max_batch_size=args.max_batch_size, max_queue_delay_us=args.max_queue_delay_us,
                         instances=args.instances)


def _write_triton(artifact: Path, args: argparse.Namespace) -> int:
    from training.triton import write_model_repository

    models = write_model_repository(artifact, args.triton, _triton_options(args))
    print(f"wrote {len(models)} Triton models to {args.triton}: {', '.join(m.name for m in models)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
