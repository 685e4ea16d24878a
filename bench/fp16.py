"""fp16 graphs, as an option, behind a parity gate.

`convert(src, dst)` writes an fp16 copy of an fp32 graph with ONNX Runtime's own converter
(onnxruntime.transformers.float16): inputs and outputs stay float32 (callers are unchanged), and the VQ
codebook lookup stays float32: every node between the encoder's last convolution and the ArgMin that
picks the token (z_e's normalisation, the distances ||z||^2 - 2 z.e + ||e||^2, and the argmin itself).
In fp16 near-equal distances round to ties and flip tokens, and a flipped token changes a whole decoded
patch.

`gate(folder, fp16_files)` runs the model's reconstruction and tokens with the fp16 graphs beside the fp32
ones on the model's own kind of images; the fp16 graphs pass when the PSNR (against the input) drops by
at most 0.1 dB and at least 99.5% of tokens are equal, and when every graph passes on its own
(`graph_parity`: each served graph on the inputs the service's operations give it, image outputs by the
same PSNR rule, tokens by the same share, latents and scores within 1% of max(1, |value|)).

`gated(folder, ...)` tries the policies in order (POLICIES): `lookup` keeps only the codebook lookup in
float32; when a VQ-VAE fails the token gate with it, `token-path` keeps every node the token depends on
(the whole encoder) in float32 too, so tokens are computed exactly as in fp32 and only the decoder runs in
fp16. The first policy that passes is kept; every attempt is reported.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

MAX_PSNR_DROP_DB = 0.1
MIN_EQUAL_TOKENS = 0.995
MAX_REL_DIFF = 0.01  # latents, scores and features: of max(1, |fp32 value|)
POLICIES = ("lookup", "token-path")  # what stays float32, least first
_CONVOLUTIONS = ("Conv", "ConvTranspose")


def fp32_nodes(model: Any, policy: str = "lookup") -> list[str]:
    """Names of the nodes that must stay float32, found by structure (not by tensor names, so a fused
    graph whose z_e is internal is treated like the encoder whose z_e is an output).

    `lookup`: every ancestor of an ArgMin that is not part of a convolution stack, i.e. not a convolution
    or an ancestor of one: what runs after the encoder's last convolution (z_e's normalisation, the
    distances ||z||^2 - 2 z.e + ||e||^2, codebook-only terms) and the ArgMin. `token-path`: every ancestor
    of an ArgMin, the encoder included. Under either policy, a per-sample score (an output of rank 0 or
    1, such as the ELBO's bits/dim) is computed in float32 from the convolution stacks' outputs on: its
    ancestors that are not a convolution or an ancestor of one (the likelihood and KL terms and their
    sums; in fp16 the ELBO was 4.9% off)."""
    nodes = list(model.graph.node)
    producer = {out: n for n in nodes for out in n.output}

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

    def after_convolutions(node: Any) -> set[str]:
        path = ancestors(node)
        for conv in [n for n in path.values() if n.op_type in _CONVOLUTIONS]:
            for name in ancestors(conv):
                path.pop(name, None)
        return set(path)

    keep: set[str] = set()
    for argmin in (n for n in nodes if n.op_type == "ArgMin"):
        keep |= after_convolutions(argmin) if policy == "lookup" else set(ancestors(argmin))
    for out in model.graph.output:
        if len(out.type.tensor_type.shape.dim) <= 1 and out.name in producer:
            keep |= after_convolutions(producer[out.name])
    return sorted(keep)


def convert(src: Path, dst: Path, policy: str = "lookup") -> list[str]:
    """Write the fp16 graph of `src` to `dst`; returns the nodes kept in float32."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(src))
    for i, node in enumerate(model.graph.node):  # the block list matches names: give every node one
        node.name = node.name or f"{node.op_type}_{i}"
    keep = fp32_nodes(model, policy)
    _own_fp32_initializers(model, set(keep))
    fp16 = convert_float_to_float16(model, keep_io_types=True, node_block_list=keep)
    _drop_round_trips(fp16)
    dst.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(fp16, str(dst))
    return keep


def _own_fp32_initializers(model: Any, keep: set[str]) -> int:
    """Give the float32 nodes their own copy of every initializer they share with nodes that go fp16.
    The converter stores a shared initializer in fp16 and casts it back for the float32 consumer, so the
    codebook that the fused graphs both look codes up in (kept float32) and gather from (fp16) reached
    the lookup rounded, and 0.7% of tokens flipped. Returns how many initializers were copied."""
    import copy

    consumers: dict[str, list[Any]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    copied = 0
    for init in list(model.graph.initializer):
        users = consumers.get(init.name, [])
        if not any(n.name in keep for n in users) or all(n.name in keep for n in users):
            continue
        twin = copy.deepcopy(init)
        twin.name = f"{init.name}.fp32"
        model.graph.initializer.append(twin)
        for node in (n for n in users if n.name in keep):
            node.input[:] = [twin.name if i == init.name else i for i in node.input]
        copied += 1
    return copied


def _drop_round_trips(model: Any) -> int:
    """Remove the fp32 -> fp16 -> fp32 Cast pairs the converter puts on every edge between two nodes it
    was told to keep in float32 (it types every intermediate tensor fp16 and casts around blocked nodes),
    which would round the kept chain to fp16 at each step. The second Cast becomes an Identity of the
    first one's fp32 input; a first Cast nobody reads any more is removed. Returns how many pairs."""
    from onnx import TensorProto

    def cast_to(node: Any) -> int | None:
        return next((a.i for a in node.attribute if a.name == "to"), None) if node.op_type == "Cast" else None

    nodes = list(model.graph.node)
    producer = {out: n for n in nodes for out in n.output}
    dropped = 0
    for node in nodes:
        first = producer.get(node.input[0]) if node.input else None
        if cast_to(node) == TensorProto.FLOAT and first is not None and cast_to(first) == TensorProto.FLOAT16:
            node.op_type = "Identity"
            del node.attribute[:]
            node.input[0] = first.input[0]
            dropped += 1
    read = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
    for node in [n for n in model.graph.node if cast_to(n) == TensorProto.FLOAT16]:
        if node.output[0] not in read:
            model.graph.node.remove(node)
    return dropped


def convert_artifact(
    folder: Path, out: Path, policy: str = "lookup"
) -> tuple[dict[str, Path], dict[str, list[str]]]:
    """fp16 copies of every graph of an artifact under `out/<name>/`: graph -> file, graph -> fp32 nodes."""
    import json

    manifest = json.loads((folder / "manifest.json").read_text())
    files, kept = {}, {}
    for graph, spec in manifest["graphs"].items():
        dst = out / manifest["name"] / f"{graph}.fp16.onnx"
        kept[graph] = convert(folder / spec["file"], dst, policy)
        files[graph] = dst
    return files, kept


def gated(
    folder: Path, out: Path, x: np.ndarray, provider: str
) -> tuple[dict[str, Path], dict[str, list[str]], dict[str, Any]]:
    """fp16 copies of an artifact under the first policy that passes the gate (else the last one tried):
    (graph -> file, graph -> fp32 nodes, the gate's result with `policy` and every attempt)."""
    attempts = []
    for policy in POLICIES:
        files, kept = convert_artifact(folder, out / policy, policy)
        result = {"policy": policy, **gate(folder, files, x, provider)}
        attempts.append(result)
        has_tokens = any(kept.values()) and "equal_tokens" in result
        if result["passed"] or not has_tokens:  # without a codebook the policies are the same graph
            break
    return files, kept, {**result, "attempts": attempts}


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
    result["graphs"] = graph_parity(ref, half, x)
    result["failing_graphs"] = sorted(g for g, r in result["graphs"].items() if not r["passed"])
    result["passed"] = bool(passed) and not result["failing_graphs"]
    return result


class _Recorder:
    """A runner that records every (graph, feeds) the kind's operations send it."""

    def __init__(self, runner: Any) -> None:
        self.runner, self.calls = runner, []  # type: ignore[var-annotated]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.runner, name)

    async def run(self, graph: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.calls.append((graph, feeds))
        return await self.runner.run(graph, feeds)


def graph_parity(ref: Any, half: Any, x: np.ndarray) -> dict[str, dict[str, Any]]:
    """Every served graph, fp16 against fp32, on the inputs the service's own operations give it for the
    images x (encode, decode the codes, reconstruct, score): an image output (x's shape) may lose at most
    MAX_PSNR_DROP_DB of PSNR against x, tokens must agree on MIN_EQUAL_TOKENS of them, and any other
    output (latents, z_e, scores, features) may differ by at most MAX_REL_DIFF of max(1, |fp32 value|)."""
    import asyncio

    rec = _Recorder(ref)
    adapter, loop = ref.adapter, asyncio.new_event_loop()
    run = loop.run_until_complete
    try:
        run(adapter.reconstruct(rec, x))
        encoded = run(adapter.encode(rec, x))
        if "decode" in adapter.operations:  # latents (or z_e) back to images
            run(adapter.from_latent(rec, run(adapter.to_latent(rec, x))))
        if hasattr(adapter, "decode_tokens"):
            run(adapter.decode_tokens(rec, encoded["tokens"]))
        if "score" in adapter.operations:
            run(adapter.score(rec, x, samples=1, seed=0))
    finally:
        loop.close()
    results: dict[str, dict[str, Any]] = {}
    for graph, feeds in rec.calls:
        if graph in results:
            continue
        a, b = ref.sessions[graph].run(feeds), half.sessions[graph].run(feeds)
        checks: dict[str, Any] = {}
        passed = True
        for name, want in a.items():
            got = b[name]
            if want.dtype.kind in "iu":
                checks[f"{name}_equal"] = round(float((want == got).mean()), 5)
                passed &= checks[f"{name}_equal"] >= MIN_EQUAL_TOKENS
            elif want.shape == x.shape:
                checks[f"{name}_psnr_drop_db"] = round(psnr(x, want) - psnr(x, got), 4)
                passed &= checks[f"{name}_psnr_drop_db"] <= MAX_PSNR_DROP_DB
            else:
                scale = np.maximum(1.0, np.abs(want.astype(np.float64)))
                checks[f"{name}_max_rel_diff"] = float((np.abs(want - got.astype(np.float64)) / scale).max())
                passed &= checks[f"{name}_max_rel_diff"] <= MAX_REL_DIFF
        results[graph] = {"passed": bool(passed), **checks}
    return results
