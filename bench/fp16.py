"""fp16 graphs, as an option, behind a parity gate.

`convert(src, dst)` writes an fp16 copy of an fp32 graph with ONNX Runtime's own converter
(onnxruntime.transformers.float16): inputs and outputs stay float32 (callers are unchanged), and the VQ
codebook lookup stays float32: every node on a path from `z_e` to the ArgMin that picks the token (the
distances ||z||^2 - 2 z.e + ||e||^2, and the argmin itself). In fp16 near-equal distances round to ties
and flip tokens, and a flipped token changes a whole decoded patch.

`gate(folder, fp16_files)` runs the model's reconstruction and tokens with the fp16 graphs beside the fp32
ones on photo crops; the fp16 graphs pass when the PSNR (against the input) drops by at most 0.1 dB and at
least 99.5% of tokens are equal.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

MAX_PSNR_DROP_DB = 0.1
MIN_EQUAL_TOKENS = 0.995
QUANTIZER_INPUT = "z_e"  # the VQ graphs' continuous latent (docs/ARTIFACT.md): where the distances start


def fp32_nodes(model: Any) -> list[str]:
    """Names of the nodes that must stay float32: those on a path from QUANTIZER_INPUT to an ArgMin,
    the ArgMin, and the ArgMin's ancestors that depend on no graph input (codebook-only terms)."""
    nodes = list(model.graph.node)
    producer = {out: n for n in nodes for out in n.output}
    graph_inputs = {i.name for i in model.graph.input}

    def ancestors(node: Any) -> dict[str, Any]:
        seen: dict[str, Any] = {}
        stack = [node]
        while stack:
            n = stack.pop()
            if n.name in seen:
                continue
            seen[n.name] = n
            stack += [producer[i] for i in n.input if i in producer]
        return seen

    def depends_on(node: Any, values: set[str], memo: dict[str, bool]) -> bool:
        if node.name not in memo:
            memo[node.name] = False  # graphs are acyclic; this only guards the recursion
            memo[node.name] = any(
                i in values or (i in producer and depends_on(producer[i], values, memo)) for i in node.input
            )
        return memo[node.name]

    keep: set[str] = set()
    for argmin in (n for n in nodes if n.op_type == "ArgMin"):
        from_z, from_inputs = {}, {}  # type: ignore[var-annotated]
        for name, n in ancestors(argmin).items():
            on_path = (
                n is argmin or depends_on(n, {QUANTIZER_INPUT}, from_z) or n.output[0] == QUANTIZER_INPUT
            )
            # the encoder computes z_e itself: the nodes *making* z_e are not on the path, only those after
            makes_z = QUANTIZER_INPUT in n.output
            constant = not depends_on(n, graph_inputs, from_inputs)
            if (on_path and not makes_z) or constant:
                keep.add(name)
    return sorted(keep)


def convert(src: Path, dst: Path) -> list[str]:
    """Write the fp16 graph of `src` to `dst`; returns the nodes kept in float32."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(src))
    for i, node in enumerate(model.graph.node):  # the block list matches names: give every node one
        node.name = node.name or f"{node.op_type}_{i}"
    keep = fp32_nodes(model)
    fp16 = convert_float_to_float16(model, keep_io_types=True, node_block_list=keep)
    dst.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(fp16, str(dst))
    return keep


def convert_artifact(folder: Path, out: Path) -> tuple[dict[str, Path], dict[str, list[str]]]:
    """fp16 copies of every graph of an artifact under `out/<name>/`: graph -> file, graph -> fp32 nodes."""
    import json

    manifest = json.loads((folder / "manifest.json").read_text())
    files, kept = {}, {}
    for graph, spec in manifest["graphs"].items():
        dst = out / manifest["name"] / f"{graph}.fp16.onnx"
        kept[graph] = convert(folder / spec["file"], dst)
        files[graph] = dst
    return files, kept


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB (peak 1) over whole batches of images in [0, 1]."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else float(10 * np.log10(1.0 / mse))


def gate(folder: Path, fp16_files: dict[str, Path], x: np.ndarray, provider: str) -> dict[str, Any]:
    """The parity gate on images x [N, C, H, W]: reconstruction PSNR fp32 vs fp16 (and token equality for
    VQ-VAE), with the verdict. A graph ONNX Runtime cannot run in fp16 fails the gate with its error."""
    from bench.pipeline import DirectRunner, operation

    ref = DirectRunner(folder, provider)
    try:
        half = DirectRunner(folder, provider, files=fp16_files)
    except Exception as exc:  # onnxruntime raises its own exception types for missing fp16 kernels
        return {"passed": False, "error": str(exc).strip().splitlines()[0][:300]}
    recon32, recon16 = operation(ref, "reconstruct")(x), operation(half, "reconstruct")(x)
    result: dict[str, Any] = {
        "psnr_fp32_db": round(psnr(x, recon32), 4),
        "psnr_fp16_db": round(psnr(x, recon16), 4),
        "max_abs_diff": float(np.abs(recon32 - recon16).max()),
    }
    result["psnr_drop_db"] = round(result["psnr_fp32_db"] - result["psnr_fp16_db"], 4)
    passed = result["psnr_drop_db"] <= MAX_PSNR_DROP_DB
    if "tokens" in ref.adapter.operations:
        t32, t16 = operation(ref, "tokens")(x), operation(half, "tokens")(x)
        result["equal_tokens"] = round(float((t32 == t16).mean()), 5)
        passed = passed and result["equal_tokens"] >= MIN_EQUAL_TOKENS
    result["passed"] = bool(passed)
    return result
