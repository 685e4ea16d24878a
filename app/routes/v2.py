"""The Open Inference Protocol v2 (KServe / Triton REST) over the raw graphs.

A v2 model is one graph, named `<model>_<graph>` (Triton names cannot hold '.'), e.g. vqvae_encoder.
Tensors come as JSON `data` or through the binary tensor extension (Inference-Header-Content-Length,
parameters binary_data_size / binary_data / binary_data_output). Datatypes FP32 and INT64. Inference
goes through the same batchers as v1. Errors are {"error": "<message>"}.
"""

import json
from typing import Any

import numpy as np
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from app import version
from app.deps import RegistryDep, require_api_key
from app.errors import InvalidInput, NotReady
from app.manifest import TensorSpec
from app.registry import Graph

DATATYPES: dict[str, np.dtype[Any]] = {"FP32": np.dtype(np.float32), "INT64": np.dtype(np.int64)}
_BY_DTYPE = {"float32": "FP32", "int64": "INT64"}

health = APIRouter(prefix="/v2/health", tags=["v2"])
router = APIRouter(prefix="/v2", tags=["v2"], dependencies=[Depends(require_api_key)])


@health.get("/live", summary="Liveness")
async def live() -> dict[str, bool]:
    return {"live": True}


@health.get("/ready", summary="Readiness: every graph loaded and warmed up")
async def ready(request: Request) -> dict[str, bool]:
    registry = getattr(request.app.state, "registry", None)
    if registry is None or not registry.started:
        raise NotReady("the service is starting")
    return {"ready": True}


@router.get("", summary="Server metadata")
async def server_metadata() -> dict[str, Any]:
    return {"name": "aeserve", "version": version(), "extensions": ["binary_tensor_data"]}


def _tensor_meta(t: TensorSpec) -> dict[str, Any]:
    return {
        "name": t.name,
        "datatype": _BY_DTYPE.get(t.dtype, t.dtype.upper()),
        "shape": [d if isinstance(d, int) else -1 for d in t.shape],
    }


def _graph(registry: Any, graph: str) -> Graph:
    found: Graph = registry.graph(graph)
    return found


@router.get("/models/{graph}", summary="Graph metadata")
@router.get("/models/{graph}/versions/{version}", include_in_schema=False)
async def model_metadata(graph: str, registry: RegistryDep) -> dict[str, Any]:
    """Name, platform, and each input and output: name, datatype (FP32/INT64), shape (-1 = dynamic)."""
    g = _graph(registry, graph)
    return {
        "name": g.v2_name,
        "versions": ["1"],
        "platform": "onnxruntime_onnx",
        "inputs": [_tensor_meta(t) for t in g.spec.inputs],
        "outputs": [_tensor_meta(t) for t in g.spec.outputs],
    }


@router.get("/models/{graph}/ready", summary="Graph readiness")
@router.get("/models/{graph}/versions/{version}/ready", include_in_schema=False)
async def model_ready(graph: str, registry: RegistryDep) -> dict[str, Any]:
    g = _graph(registry, graph)
    if g.batcher is None:
        raise NotReady(f"{graph} is not started")
    return {"name": g.v2_name, "ready": True}


def _input_array(
    item: dict[str, Any], spec: TensorSpec, binary: bytes, offset: int
) -> tuple[np.ndarray, int]:
    """One request tensor as an array checked against the graph's input; returns it and the new offset."""
    name = spec.name
    datatype = item.get("datatype")
    if datatype not in DATATYPES or DATATYPES[datatype] != np.dtype(spec.dtype):
        raise InvalidInput(f"input {name!r} must have datatype {_BY_DTYPE.get(spec.dtype)}, got {datatype!r}")
    dtype = DATATYPES[datatype]
    shape = item.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise InvalidInput(f"input {name!r} needs a shape of non-negative integers")
    if len(shape) != len(spec.shape) or any(
        isinstance(s, int) and s != d for s, d in zip(spec.shape, shape, strict=True)
    ):
        expected = [d if isinstance(d, int) else -1 for d in spec.shape]
        raise InvalidInput(f"input {name!r} has shape {shape}; the graph expects {expected}")
    if shape[0] < 1:
        raise InvalidInput(f"input {name!r} needs a batch of at least 1")
    count = int(np.prod(shape))
    size = (item.get("parameters") or {}).get("binary_data_size")
    if size is not None:
        if size != count * dtype.itemsize or offset + size > len(binary):
            raise InvalidInput(
                f"input {name!r}: binary_data_size {size} does not fit shape {shape} or the body"
            )
        array = np.frombuffer(binary, dtype=dtype.newbyteorder("<"), count=count, offset=offset)
        return array.reshape(shape).astype(dtype), offset + size
    try:
        array = np.asarray(item.get("data"), dtype=dtype)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"input {name!r}: data is not a list of {datatype} values") from exc
    if array.size != count:
        raise InvalidInput(f"input {name!r}: {array.size} values for shape {shape}")
    if dtype == np.float32 and not np.all(np.isfinite(array)):
        raise InvalidInput(f"input {name!r} contains NaN or infinite values")
    return array.reshape(shape), offset


def _parse(body: bytes, header_length: str | None) -> tuple[dict[str, Any], bytes]:
    if header_length is not None:
        if not header_length.isdigit() or int(header_length) > len(body):
            raise InvalidInput("Inference-Header-Content-Length does not fit the body")
        json_part, binary = body[: int(header_length)], body[int(header_length) :]
    else:
        json_part, binary = body, b""
    try:
        doc = json.loads(json_part)
    except ValueError as exc:
        raise InvalidInput(f"the inference request is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("inputs"), list):
        raise InvalidInput("the inference request needs an 'inputs' list")
    return doc, binary


@router.post(
    "/models/{graph}/infer",
    summary="Run a graph (JSON or binary tensors)",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"type": "object"}},
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            },
        }
    },
)
@router.post("/models/{graph}/versions/{version}/infer", include_in_schema=False)
async def infer(graph: str, request: Request, registry: RegistryDep) -> Response:
    """Inputs are checked by name, datatype and shape against the graph, batched with other requests,
    and the outputs returned as JSON data or, when asked (binary_data / binary_data_output), as raw
    little-endian bytes after the JSON header."""
    g = _graph(registry, graph)
    if g.batcher is None:
        raise NotReady(f"{graph} is not started")
    doc, binary = _parse(await request.body(), request.headers.get("inference-header-content-length"))
    items = {str(i.get("name")): i for i in doc["inputs"] if isinstance(i, dict)}
    specs = {t.name: t for t in g.spec.inputs}
    unknown = sorted(set(items) - set(specs))
    missing = sorted(set(specs) - set(items))
    if unknown or missing:
        raise InvalidInput(f"{graph} takes inputs {sorted(specs)}; unknown {unknown}, missing {missing}")
    feeds: dict[str, np.ndarray] = {}
    offset = 0
    for item in doc["inputs"]:  # binary chunks follow the order of the inputs
        feeds[item["name"]], offset = _input_array(item, specs[item["name"]], binary, offset)
    outputs = await g.batcher.submit(feeds)
    return _response(g, doc, outputs)


def _response(g: Graph, doc: dict[str, Any], outputs: dict[str, np.ndarray]) -> Response:
    default_binary = bool((doc.get("parameters") or {}).get("binary_data_output", False))
    wanted = doc.get("outputs") or [{"name": n} for n in outputs]
    results: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for out in wanted:
        name = out.get("name") if isinstance(out, dict) else None
        if name not in outputs:
            raise InvalidInput(f"{g.v2_name} has no output {name!r}; outputs: {sorted(outputs)}")
        array = outputs[name]
        meta: dict[str, Any] = {
            "name": name,
            "datatype": _BY_DTYPE[str(array.dtype)],
            "shape": list(array.shape),
        }
        if bool((out.get("parameters") or {}).get("binary_data", default_binary)):
            blob = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
            meta["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            meta["data"] = array.reshape(-1).tolist()
        results.append(meta)
    body: dict[str, Any] = {"model_name": g.v2_name, "model_version": "1", "outputs": results}
    if "id" in doc:
        body["id"] = doc["id"]
    header = json.dumps(body).encode()
    if not blobs:
        return Response(header, media_type="application/json")
    return Response(
        header + b"".join(blobs),
        media_type="application/octet-stream",
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
