"""A Triton Inference Server model repository from an artifact folder (docs/ARTIFACT.md).

Every graph of the artifact becomes one Triton model `<artifact>_<graph>/` holding `1/model.onnx` (the
graph, byte for byte, with the artifact's `weights.bin` beside it: the ONNX Runtime backend resolves the
graph's external data there) and `config.pbtxt` for the ONNX Runtime backend: inputs and outputs from the
manifest with the batch axis stripped (Triton adds it back through `max_batch_size`), -1 for dynamic
spatial axes, dynamic batching, GPU instances and the CUDA execution provider's options.

The config is written as protobuf text by hand, so exporting needs no Triton package; the tests parse it
with Triton's own `model_config.proto` (from `tritonclient`) to prove it is valid.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.errors import UserError, check_folder_path

TRITON_DTYPES = {"float32": "TYPE_FP32", "int64": "TYPE_INT64"}
# onnxruntime_backend's older numbering of the cuDNN convolution search: 0 exhaustive, 1 heuristic, 2 default
_CONV_SEARCH_CODES = {"EXHAUSTIVE": "0", "HEURISTIC": "1", "DEFAULT": "2"}


@dataclass(frozen=True)
class TritonOptions:
    """Serving settings shared by every model of the repository."""

    max_batch_size: int = 256  # largest batch Triton forms; the graphs' batch axis is dynamic
    preferred_batch_sizes: tuple[int, ...] = (8, 32, 64, 128)  # capped at max_batch_size when written
    max_queue_delay_us: int = 1000  # how long a request may wait for others to fill a batch
    instances: int = 1  # model instances per GPU
    # HEURISTIC: the VQ-VAE's spatial axes are dynamic, and the default EXHAUSTIVE search benchmarks every
    # convolution algorithm again for each new input shape, stalling the first request of every size.
    cudnn_conv_algo_search: str = "HEURISTIC"

    def __post_init__(self) -> None:
        if self.max_batch_size < 1:
            raise UserError(f"Triton max_batch_size must be >= 1, got {self.max_batch_size}")
        if self.max_queue_delay_us < 0:
            raise UserError(f"Triton max queue delay must be >= 0 us, got {self.max_queue_delay_us}")
        if self.instances < 1:
            raise UserError(f"Triton instance count must be >= 1, got {self.instances}")
        if self.cudnn_conv_algo_search not in _CONV_SEARCH_CODES:
            raise UserError(f"cudnn_conv_algo_search must be one of {', '.join(_CONV_SEARCH_CODES)}")


@dataclass(frozen=True)
class TritonModel:
    """One written model: its Triton name and folder."""

    name: str
    path: Path


def _tensor(port: dict[str, Any]) -> str:
    """One `input`/`output` entry; the manifest shape's axis 0 is the batch axis Triton adds itself."""
    dims = [d if isinstance(d, int) else -1 for d in port["shape"][1:]]
    lines = ["  {", f'    name: "{port["name"]}"', f"    data_type: {TRITON_DTYPES[port['dtype']]}"]
    if dims:
        lines.append(f"    dims: [ {', '.join(str(d) for d in dims)} ]")
    else:
        # a per-sample scalar ([N] in the graph): Triton needs at least one dim, so [1] reshaped to []
        lines += ["    dims: [ 1 ]", "    reshape: { shape: [ ] }"]
    return "\n".join([*lines, "  }"])


def model_config(name: str, graph: dict[str, Any], options: TritonOptions) -> str:
    """config.pbtxt text for one graph of a manifest (`graph` = manifest["graphs"][<graph>])."""
    preferred = sorted({min(b, options.max_batch_size) for b in options.preferred_batch_sizes})
    search = options.cudnn_conv_algo_search
    legacy_search = _CONV_SEARCH_CODES[search]
    return "\n".join([
        f'name: "{name}"',
        'platform: "onnxruntime_onnx"',
        'backend: "onnxruntime"',
        f"max_batch_size: {options.max_batch_size}",
        "input [",
        ",\n".join(_tensor(p) for p in graph["inputs"]),
        "]",
        "output [",
        ",\n".join(_tensor(p) for p in graph["outputs"]),
        "]",
        "dynamic_batching {",
        f"  preferred_batch_size: [ {', '.join(str(b) for b in preferred)} ]",
        f"  max_queue_delay_microseconds: {options.max_queue_delay_us}",
        "}",
        "instance_group [",
        "  {",
        f"    count: {options.instances}",
        "    kind: KIND_GPU",
        "  }",
        "]",
        "optimization {",
        "  execution_accelerators {",
        "    gpu_execution_accelerator: [",
        "      {",
        '        name: "cuda"',
        f'        parameters {{ key: "cudnn_conv_algo_search" value: "{search}" }}',
        '        parameters { key: "do_copy_in_default_stream" value: "1" }',
        "      }",
        "    ]",
        "  }",
        "}",
        # The backend's older top-level form of the same option. Once a config has any top-level
        # `parameters`, the backend resets the search to EXHAUSTIVE unless it is named here too, so it is
        # written in both places and stays right if someone adds e.g. intra_op_thread_count later.
        f'parameters {{ key: "cudnn_conv_algo_search" value: {{ string_value: "{legacy_search}" }} }}',
        "",
    ])


def write_model_repository(
    artifact: Path, out_dir: Path, options: TritonOptions | None = None
) -> list[TritonModel]:
    """Write `<out_dir>/<artifact>_<graph>/{config.pbtxt, 1/model.onnx, 1/weights.bin}` per graph.

    Models already in `out_dir` under other names are left alone; ours are replaced whole (each is built in
    a temporary folder and renamed into place).
    """
    from training.backends import read_manifest

    options = options or TritonOptions()
    artifact, out_dir = Path(artifact), Path(out_dir)
    manifest = read_manifest(artifact)
    check_folder_path(out_dir, "--triton")
    out_dir.mkdir(parents=True, exist_ok=True)
    models = []
    for graph_name, graph in manifest["graphs"].items():
        name = f"{manifest['name']}_{graph_name}"
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".partial", dir=out_dir))
        try:
            (tmp / "1").mkdir()
            shutil.copyfile(artifact / graph["file"], tmp / "1" / "model.onnx")
            shared = manifest.get("files", {}).get("weights")
            if shared:  # the graph's external data, found by ONNX Runtime next to model.onnx
                shutil.copyfile(artifact / shared["file"], tmp / "1" / shared["file"])
            (tmp / "config.pbtxt").write_text(model_config(name, graph, options))
            target = out_dir / name
            shutil.rmtree(target, ignore_errors=True)
            tmp.rename(target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        models.append(TritonModel(name, target))
    return models
