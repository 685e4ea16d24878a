"""Engine benchmark: every graph of every artifact through ONNX Runtime at batch 1..256, with the same
model in torch eager beside it (fp32; bf16 autocast on a GPU), and optionally the fp16 graphs.

The torch model is rebuilt from the artifact's manifest (`training.model`). The artifact holds no torch
weights: when `runs/<name>/checkpoint` exists and its sha256 matches the manifest, its weights are
loaded; otherwise the weights are random, which costs exactly the same time (same architecture, same
FLOPs). Each row says which. Inputs come from the export's own samplers (training.export.kind_export),
so torch and ONNX Runtime see tensors of the same shapes and dtypes.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_BATCHES = (1, 4, 16, 64, 256)


def measure(fn: Callable[[], Any], *, seconds: float, min_runs: int = 3, warmup: int = 1) -> list[float]:
    """Seconds per call of `fn`: `warmup` untimed calls, then calls until `seconds` have passed and at
    least `min_runs` were timed (one, when a single warm-up call already took longer than `seconds`:
    a batch of 256 on two cores takes seconds per run, and its spread is small)."""
    for _ in range(warmup):
        t0 = time.perf_counter()
        fn()
        if time.perf_counter() - t0 > seconds:
            min_runs = 1
    times: list[float] = []
    deadline = time.perf_counter() + seconds
    while len(times) < min_runs or time.perf_counter() < deadline:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def row(batch: int, times: Sequence[float], **labels: Any) -> dict[str, Any]:
    """One result row: median seconds per run -> images/s and latency in ms."""
    median = statistics.median(times)
    return {
        **labels,
        "batch": batch,
        "runs": len(times),
        "latency_ms": round(median * 1000, 3),
        "images_per_s": round(batch / median, 2),
    }


def artifact_folders(root: Path) -> list[Path]:
    """Every `<root>/<name>/` holding a manifest.json, sorted by name."""
    return sorted(p for p in root.iterdir() if (p / "manifest.json").is_file()) if root.is_dir() else []


@dataclass
class TorchModel:
    model: Any  # one of models' autoencoders, eval mode, CPU fp32
    weights: str  # where the weights came from (a checkpoint path, or "random init ...")


def torch_model(folder: Path, runs: Path) -> TorchModel:
    """The artifact's model in torch: the weights of the checkpoint under `runs/` (`runs/<name>` first,
    then every `runs/*/checkpoint`) whose sha256 is the manifest's `checkpoint_sha256`, else random
    weights of the same architecture."""
    import models
    from training.checkpoint import MODEL_FILE, load_model
    from training.export import sha256_file

    manifest = json.loads((folder / "manifest.json").read_text())
    training = manifest.get("training") or {}
    want = training.get("checkpoint_sha256")
    candidates = [runs / manifest["name"] / "checkpoint", *sorted(runs.glob("*/checkpoint"))]
    for ckpt in dict.fromkeys(c for c in candidates if (c / MODEL_FILE).is_file()):
        if want and sha256_file(ckpt / MODEL_FILE) == want:
            model, _ = load_model(ckpt)
            return TorchModel(model, f"checkpoint {ckpt} (sha256 matches the artifact)")
    note = f"random init (no checkpoint under {runs} matches the artifact; same architecture, same cost)"
    import torch

    torch.manual_seed(0)
    config = models.config_from_dict(manifest["kind"], training["model"])
    return TorchModel(models.build_model(manifest["kind"], config).eval(), note)


def graph_session(path: Path, provider: str, server_env: Mapping[str, str] | None = None) -> Any:
    """The service's own session wrapper (app.registry.GraphSession): same options, threads, IO binding.

    server_env: the AESERVE_* settings the service under test gets beyond the environment's (e.g.
    AESERVE_INTRA_OP_SPINNING=true), so the engine it is compared with runs with the same session options.
    """
    from app.registry import GraphSession, provider_plan
    from app.settings import Settings

    fields = {k.removeprefix("AESERVE_").lower(): v for k, v in (server_env or {}).items()}
    settings = Settings(**{**fields, "providers": provider})
    return GraphSession(path, settings, provider_plan(provider))


def bench_artifact(
    folder: Path,
    *,
    runs: Path,
    batches: Sequence[int],
    seconds: float,
    device: str,
    torch_dtypes: Sequence[str] = ("fp32",),
    fp16_graphs: dict[str, Path] | None = None,
) -> tuple[list[dict[str, Any]], str]:
    """Rows for every graph x runtime x batch of one artifact, and where the torch weights came from.

    device: "cpu" or "cuda" (ONNX Runtime provider and torch device). fp16_graphs: graph -> converted
    .onnx file, benchmarked as runtime "ort-fp16".
    """
    import torch

    from training.export import kind_export

    manifest = json.loads((folder / "manifest.json").read_text())
    name, height, width = manifest["name"], manifest["input"]["height"], manifest["input"]["width"]
    tm = torch_model(folder, runs)
    spec = kind_export(tm.model)
    # inputs first, on the CPU: some samplers run the model itself (the VQ-VAE's z_e)
    with torch.inference_mode():
        samples = {
            (g.name, b): g.sample(b, height, width, torch.Generator().manual_seed(b))
            for g in spec.graphs
            for b in batches
        }
    tdev = torch.device(device)
    tm.model.to(tdev)
    rows: list[dict[str, Any]] = []
    for graph in spec.graphs:
        if graph.name not in manifest["graphs"]:  # exported before this graph existed
            continue
        files = {"ort-fp32": folder / manifest["graphs"][graph.name]["file"]}
        if fp16_graphs and graph.name in fp16_graphs:
            files["ort-fp16"] = fp16_graphs[graph.name]
        sessions = {runtime: graph_session(path, device) for runtime, path in files.items()}
        for batch in batches:
            inputs = samples[graph.name, batch]
            feeds = {p.name: t.numpy() for p, t in zip(graph.inputs, inputs, strict=True)}
            labels = {"model": name, "kind": manifest["kind"], "graph": graph.name}
            for runtime, session in sessions.items():
                times = measure(partial(session.run, feeds), seconds=seconds)
                rows.append(row(batch, times, **labels, runtime=runtime, provider=session.provider))
            on_device = tuple(t.to(tdev) for t in inputs)
            for dtype in torch_dtypes:
                run = _torch_runner(graph.module, on_device, tdev, dtype)
                rows.append(
                    row(
                        batch,
                        measure(run, seconds=seconds),
                        **labels,
                        runtime=f"torch-{dtype}",
                        provider=str(tdev),
                    )
                )
    return rows, tm.weights


def _torch_runner(module: Any, inputs: tuple[Any, ...], device: Any, dtype: str) -> Callable[[], None]:
    """One eager forward (inference mode; bf16 autocast for dtype "bf16"), synchronized on CUDA."""
    import contextlib

    import torch

    def run() -> None:
        autocast = (
            torch.autocast(device.type, dtype=torch.bfloat16) if dtype == "bf16" else contextlib.nullcontext()
        )
        with torch.inference_mode(), autocast:
            module(*inputs)
        if device.type == "cuda":
            torch.cuda.synchronize()

    return run


def best(rows: Sequence[dict[str, Any]], **match: Any) -> dict[str, Any] | None:
    """The row with the most images/s among those matching every label given."""
    found = [r for r in rows if all(r.get(k) == v for k, v in match.items())]
    return max(found, key=lambda r: r["images_per_s"]) if found else None


def pick(rows: Sequence[dict[str, Any]], **match: Any) -> dict[str, Any] | None:
    """The single row matching every label given (None if there is none)."""
    found = [r for r in rows if all(r.get(k) == v for k, v in match.items())]
    return found[0] if found else None


def as_array(rows: Sequence[dict[str, Any]], key: str) -> np.ndarray:
    return np.array([r[key] for r in rows], dtype=np.float64)
