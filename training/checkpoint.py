"""Checkpoints: a folder of safetensors and JSON (no pickle anywhere), enough to rebuild the model.

    RUN_DIR/checkpoint/
      model.safetensors      model.state_dict() (parameters and persistent buffers, e.g. the VQ codebook)
      optimizer.safetensors  the optimizer's tensors as "state.<param index>.<name>"; its other values
                             (param_groups, non-tensor state) as JSON in the file's metadata
      state.json             kind, model_config, train_config, data, step, epoch, seed, ...

`load_model(path)` needs nothing else: it reads the kind and the model config from state.json.
"""

import datetime
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file
from torch import nn

import models
from training.errors import UserError

CHECKPOINT_DIR = "checkpoint"
FORMAT_VERSION = 1
MODEL_FILE, OPTIMIZER_FILE, STATE_FILE = "model.safetensors", "optimizer.safetensors", "state.json"


def resolve_checkpoint(path: str | Path) -> Path:
    """The checkpoint folder for `path`: the folder itself or RUN_DIR/checkpoint. UserError if neither."""
    path = Path(path)
    for folder in (path, path / CHECKPOINT_DIR):
        if (folder / STATE_FILE).is_file():
            return folder
    raise UserError(f"no checkpoint at {str(path)!r} (expected {STATE_FILE} there or in {CHECKPOINT_DIR}/)")


def read_state(path: str | Path) -> dict[str, Any]:
    """state.json of the checkpoint at `path` (run folder or checkpoint folder)."""
    file = resolve_checkpoint(path) / STATE_FILE
    try:
        state = json.loads(file.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"cannot read {file}: {exc}") from exc
    if state.get("format_version") != FORMAT_VERSION or state.get("kind") not in models.KINDS:
        raise UserError(f"{file} is not a checkpoint this version can read")
    return state


def model_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict as standalone CPU tensors (cloned: safetensors refuses shared storage)."""
    return {name: t.detach().to("cpu", copy=True).contiguous() for name, t in model.state_dict().items()}


def weights_sha256(model: nn.Module) -> str:
    """sha256 over the state dict's names, dtypes, shapes and bytes (sorted by name): replica identity."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model_tensors(model).items()):
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.view(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def save_checkpoint(
    folder: Path, model: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]
) -> Path:
    """Write the checkpoint into `folder`, replacing the old one only once the new one is complete."""
    folder = Path(folder)
    tmp = folder.with_name(f".{folder.name}.tmp")
    old = folder.with_name(f".{folder.name}.old")
    for leftover in (tmp, old):
        shutil.rmtree(leftover, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(model_tensors(model), str(tmp / MODEL_FILE))
    tensors, extra = _flatten_optimizer(optimizer.state_dict())
    save_file(tensors, str(tmp / OPTIMIZER_FILE), metadata={"json": json.dumps(extra)})
    full_state = {
        "format_version": FORMAT_VERSION,
        "saved": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        **state,
    }
    (tmp / STATE_FILE).write_text(json.dumps(full_state, indent=2) + "\n")
    if folder.exists():
        os.replace(folder, old)
    os.replace(tmp, folder)
    shutil.rmtree(old, ignore_errors=True)
    return folder


def build_from_state(state: dict[str, Any]) -> nn.Module:
    """A fresh model of the checkpoint's kind and config (weights not loaded)."""
    try:
        config = models.config_from_dict(state["kind"], state["model_config"])
        return models.build_model(state["kind"], config)
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(f"checkpoint model config is unusable: {exc}") from exc


def load_weights(folder: Path, model: nn.Module) -> None:
    """Load model.safetensors from the checkpoint `folder` into `model` (strict: every name must match)."""
    try:
        tensors = load_file(str(folder / MODEL_FILE))
    except (OSError, SafetensorError) as exc:
        raise UserError(
            f"cannot load weights from {folder / MODEL_FILE}: {str(exc).splitlines()[0]}"
        ) from exc
    load_tensors(tensors, model, str(folder / MODEL_FILE))


def load_tensors(tensors: dict[str, torch.Tensor], model: nn.Module, source: str) -> None:
    """model.load_state_dict(tensors), strict; a UserError naming `source` and the first problem."""
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        # torch's message is a header line ending in ':' and then one line per problem; keep the first
        # line that names one (a missing key, or a shape that differs).
        lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
        detail = next((line for line in lines if not line.endswith(":")), lines[0] if lines else "")
        raise UserError(f"cannot load weights from {source}: {detail}") from exc


def artifact_state(path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(state, manifest) of the exported artifact at `path`, its files checked against their sha256:
    `state` holds the checkpoint fields a warm start reads (kind, model_config)."""
    from training.backends import read_manifest

    manifest = read_manifest(Path(path))
    try:
        return {"kind": manifest["kind"], "model_config": dict(manifest["training"]["model"])}, manifest
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(f"artifact {path}: its manifest has no training.model config ({exc})") from exc


def load_artifact_weights(path: str | Path, manifest: dict[str, Any], model: nn.Module) -> None:
    """Load the weights of the exported artifact at `path` (manifest from `artifact_state`) into `model`,
    built from the artifact's own model config, and check them against the graphs (for `--init-from`).

    Where each weight is found:
    - most are graph initializers under the model's own names (prefixed `model.`);
    - the exporter's constant folding stores a linear layer's weight transposed, under a generated name,
      as the second input of a MatMul node named after the layer (`/blocks.0/attn/qkv/MatMul`);
    - a weight still missing then is the one generated initializer left of its shape and dtype, if there is
      exactly one (the MAE's mask token, which the export feeds through an Identity);
    - a Bernoulli model's Gaussian scale is in no graph and no loss: it keeps its initial value;
    - the VQ-VAE's EMA statistics are in no graph: they stay unset (`initialized` false) for the caller
      to seed (`VectorQuantizer.seed_statistics`; k-means would replace the codes).
    Then each graph the manifest lists runs in ONNX Runtime beside the loaded model on the same inputs
    (the export's parity check, one batch of 2 at the model's size): a weight read into the wrong place
    fails here.
    """
    import onnx
    from google.protobuf.message import DecodeError

    from training.export import check_parity, kind_export

    folder = Path(path)
    expected = model.state_dict()
    try:
        tensors, loose = _graph_weights(folder, manifest, expected)
    except (OSError, ValueError, DecodeError, onnx.onnx_cpp2py_export.checker.ValidationError) as exc:
        raise UserError(f"cannot read the weights of artifact {folder}: {_first_line(exc)}") from exc
    unstored = {"log_sigma"} if manifest["training"]["model"].get("likelihood") == "bernoulli" else set()
    unstored |= {k for k in expected if k.startswith("quantizer.") and k != "quantizer.embed"}
    for key in unstored:
        tensors.setdefault(key, expected[key])
    missing = [k for k in expected if k not in tensors]
    for key in missing:
        shape, dtype = tuple(expected[key].shape), expected[key].dtype
        rivals = [k for k in missing if (tuple(expected[k].shape), expected[k].dtype) == (shape, dtype)]
        matches = {t.numpy().tobytes(): t for t in loose if (tuple(t.shape), t.dtype) == (shape, dtype)}
        if len(rivals) == 1 and len(matches) == 1:
            tensors[key] = next(iter(matches.values()))
    missing = sorted(set(expected) - set(tensors))
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise UserError(
            f"artifact {folder}: its {manifest['kind']} graphs do not hold every weight of the model "
            f"(missing {shown}); start from the run's checkpoint instead"
        )
    load_tensors(tensors, model, f"artifact {folder}")
    spec = kind_export(model)
    listed = manifest["graphs"]
    graphs = [g for g in spec.graphs if g.name in listed]  # an older artifact may lack an optional graph
    files = {name: entry["file"] for name, entry in listed.items()}
    try:
        check_parity(graphs, folder, spec.parity_sizes[:1], batches=(2,), files=files)
    except UserError as exc:
        raise UserError(
            f"artifact {folder}: the weights read from its graphs do not reproduce them ({exc})"
        ) from exc
    except _ort_errors() as exc:
        raise UserError(f"artifact {folder}: ONNX Runtime cannot run its graphs: {_first_line(exc)}") from exc


def _ort_errors() -> tuple[type[Exception], ...]:
    """ONNX Runtime's errors for a graph it cannot load or run (each derives from Exception directly)."""
    from onnxruntime.capi import onnxruntime_pybind11_state as state

    names = ("Fail", "InvalidArgument", "NoSuchFile", "NoModel", "InvalidProtobuf", "InvalidGraph",
             "RuntimeException", "NotImplemented")  # fmt: skip
    return tuple(getattr(state, name) for name in names)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _graph_weights(
    folder: Path, manifest: dict[str, Any], expected: dict[str, torch.Tensor]
) -> tuple[dict[str, torch.Tensor], list[torch.Tensor]]:
    """({model name: tensor} found in the artifact's graphs, [the graphs' other initializers])."""
    import onnx
    from onnx import numpy_helper

    tensors: dict[str, torch.Tensor] = {}
    loose: list[torch.Tensor] = []
    for graph in manifest["graphs"].values():
        proto = onnx.load(str(folder / graph["file"]), load_external_data=False)
        onnx.load_external_data_for_model(proto, str(folder))
        inits = {init.name: init for init in proto.graph.initializer}
        transposed = {
            node.input[1]: _layer_of(node.name) + ".weight"
            for node in proto.graph.node
            if node.op_type == "MatMul" and len(node.input) == 2 and node.input[1] in inits
        }
        for name, init in inits.items():
            value = torch.from_numpy(numpy_helper.to_array(init).copy())
            own, layer = name.removeprefix("model."), transposed.get(name, "").removeprefix("model.")
            if own in expected:
                tensors.setdefault(own, value)
            elif layer in expected and value.dim() == 2:
                tensors.setdefault(layer, value.T.contiguous())
            else:
                loose.append(value)
    return tensors, loose


def _layer_of(node_name: str) -> str:
    """The module a MatMul node named by torch's exporter belongs to: "/blocks.0/attn/qkv/MatMul" ->
    "blocks.0.attn.qkv". A scope inside a Sequential repeats its parent ("/blocks.0/mlp/mlp.0/MatMul"
    is blocks.0.mlp.0)."""
    parts: list[str] = []
    for part in node_name.strip("/").split("/")[:-1]:
        if parts and part.startswith(parts[-1] + "."):
            parts.pop()
        parts.append(part)
    return ".".join(parts)


def load_model(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model saved at `path` (run folder or its checkpoint/): (model, state).

    The model is on the CPU, in eval mode, in fp32.
    """
    folder = resolve_checkpoint(path)
    state = read_state(folder)
    model = build_from_state(state)
    load_weights(folder, model)
    return model.eval(), state


def load_optimizer(folder: Path, optimizer: torch.optim.Optimizer) -> None:
    """Restore optimizer.safetensors into `optimizer` (built over the same parameters, in the same order)."""
    file = folder / OPTIMIZER_FILE
    try:
        with safe_open(str(file), framework="pt") as handle:
            extra = json.loads((handle.metadata() or {})["json"])
        tensors = load_file(str(file))
        optimizer.load_state_dict(_unflatten_optimizer(tensors, extra))
    except (OSError, SafetensorError, KeyError, ValueError) as exc:
        raise UserError(f"cannot load optimizer state from {file}: {str(exc).splitlines()[0]}") from exc


def _flatten_optimizer(state_dict: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """{"state": {i: {name: value}}, "param_groups": [...]} -> (tensors "state.i.name", the rest)."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for index, entries in state_dict["state"].items():
        for name, value in entries.items():
            key = f"state.{index}.{name}"
            if isinstance(value, torch.Tensor):
                tensors[key] = value.detach().to("cpu", copy=True).contiguous()
            else:
                scalars[key] = value
    return tensors, {"param_groups": state_dict["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], extra: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in [*tensors.items(), *extra["scalars"].items()]:
        _, index, name = key.split(".", 2)
        state.setdefault(int(index), {})[name] = value
    groups = [
        {k: tuple(v) if k == "betas" else v for k, v in group.items()} for group in extra["param_groups"]
    ]
    return {"state": state, "param_groups": groups}
