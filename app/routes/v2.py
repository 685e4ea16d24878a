"""The Open Inference Protocol v2 (KServe / Triton REST) over the raw graphs.

A v2 model is one graph, named `<model>_<graph>` (Triton names cannot hold '.'), e.g. vqvae_encoder.
Tensors come as JSON `data` or through the binary tensor extension (Inference-Header-Content-Length,
parameters binary_data_size / binary_data / binary_data_output). Datatypes FP32 and INT64. Inference
goes through the same batchers as v1. Errors are {"error": "<message>"}.
"""

import json
from collections.abc import Callable
from typing import Any

import numpy as np
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from app import version
from app.batching import INLINE_MAX_VALUES, off_loop
from app.deps import MetricsDep, RegistryDep, SettingsDep, require_api_key
from app.errors import (
    InvalidInput,
    ModelNotFound,
    NotReady,
    PayloadTooLarge,
    error_responses,
)
from app.manifest import TensorSpec
from app.metrics import GraphStats, Metrics
from app.registry import Graph, Model
from app.settings import Settings
from app.uploads import LARGE_JSON_BYTES, check_json_lists, inflated_body, json_numbers

DATATYPES: dict[str, np.dtype[Any]] = {"FP32": np.dtype(np.float32), "INT64": np.dtype(np.int64)}
_BY_DTYPE = {"float32": "FP32", "int64": "INT64"}

health = APIRouter(prefix="/v2/health", tags=["v2"], responses=error_responses(503, v2=True))
router = APIRouter(
    prefix="/v2",
    tags=["v2"],
    dependencies=[Depends(require_api_key)],
    responses=error_responses(400, 401, 404, 413, 415, 429, 500, 503, v2=True),
)


@health.get("/live", summary="Liveness")
async def live() -> dict[str, bool]:
    return {"live": True}


@health.get("/ready", summary="Readiness: every graph loaded and warmed up")
async def ready(request: Request) -> dict[str, bool]:
    registry = getattr(request.app.state, "registry", None)
    problem = "the service is starting" if registry is None else registry.not_ready()
    if problem is not None:
        raise NotReady(problem)
    return {"ready": True}


@router.get("", summary="Server metadata")
async def server_metadata() -> dict[str, Any]:
    return {"name": "aeserve", "version": version(), "extensions": ["binary_tensor_data", "statistics"]}


def _tensor_meta(t: TensorSpec) -> dict[str, Any]:
    return {
        "name": t.name,
        "datatype": _BY_DTYPE.get(t.dtype, t.dtype.upper()),
        "shape": [d if isinstance(d, int) else -1 for d in t.shape],
    }


VERSION = "1"  # every graph has one version; an artifact's identity is its manifest's (GET /v1/models/{name})


def _graph(registry: Any, graph: str, version: str | None = None) -> Graph:
    found: Graph = registry.graph(graph)
    if version is not None and version != VERSION:
        raise ModelNotFound(f"{graph} has no version {version!r}; its only version is {VERSION!r}")
    return found


def _stats(metrics: Metrics, g: Graph) -> dict[str, Any]:
    return metrics.graph_stats.get(g.v2_name, GraphStats()).as_triton(g.v2_name, VERSION)


# Declared before /models/{graph}, which would otherwise take "stats" for a graph's name.
@router.get("/models/stats", summary="Inference statistics of every graph (Triton's statistics extension)")
async def all_stats(registry: RegistryDep, metrics: MetricsDep) -> dict[str, Any]:
    """Per graph since the server started: inference (items) and execution (runs) counts, and per request
    the count and total nanoseconds of success, fail, queue, compute_input, compute_infer and
    compute_output; batch_stats gives the phases per batch size. As tritonclient's
    get_inference_statistics() reads them."""
    return {"model_stats": [_stats(metrics, g) for g in registry.graphs.values()]}


@router.get("/models/{graph}/stats", summary="Inference statistics of one graph")
@router.get("/models/{graph}/versions/{version}/stats", include_in_schema=False)
async def graph_stats(
    graph: str, registry: RegistryDep, metrics: MetricsDep, version: str | None = None
) -> dict[str, Any]:
    return {"model_stats": [_stats(metrics, _graph(registry, graph, version))]}


@router.post("/repository/index", summary="Every graph and its state (Triton's model repository extension)")
async def repository_index(
    request: Request, registry: RegistryDep, settings: SettingsDep
) -> list[dict[str, Any]]:
    """Graphs as READY (or UNAVAILABLE while not started), and each unavailable model as UNAVAILABLE
    with its reason (its graphs are unknown when its manifest did not load). A body {"ready": true} keeps
    the ready ones only. Loading and unloading through the repository API are not offered: the service
    serves its model directory (POST /v1/admin/reload picks up changes); load and unload answer 400."""
    body = await inflated_body(request, settings.max_body_bytes)
    if len(body) > 4096:
        raise InvalidInput(
            f"the index request is {len(body)} bytes; it is a small JSON object (4096 at most)"
        )
    try:
        options = json.loads(body) if body.strip() else {}
    except (ValueError, RecursionError) as exc:
        raise InvalidInput(f"the index request is not valid JSON: {exc}") from exc
    if not isinstance(options, dict) or not isinstance(options.get("ready", False), bool):
        raise InvalidInput('the index request must be a JSON object, with "ready" true or false if given')

    def entry(name: str, reason: str) -> dict[str, Any]:
        state = "UNAVAILABLE" if reason else "READY"
        return {"name": name, "version": VERSION, "state": state, "reason": reason}

    entries = []
    for model in registry.models.values():
        if not model.ready:
            entries.append(entry(model.name, model.reason or "not loaded"))
            continue
        entries += [entry(g.v2_name, "" if g.batcher else "not started") for g in model.graphs.values()]
    return [e for e in entries if e["state"] == "READY"] if options.get("ready") else entries


@router.post("/repository/models/{name}/load", summary="Not offered: the service serves its model directory")
@router.post(
    "/repository/models/{name}/unload", summary="Not offered: the service serves its model directory"
)
async def model_control(name: str) -> None:
    """Triton answers explicit load and unload with an error unless started with explicit model control;
    here the model directory is the source of truth, and a reload picks up its changes."""
    raise InvalidInput(
        f"explicit model load / unload is not offered ({name!r}): the service serves its model directory; "
        "change the directory, then POST /v1/admin/reload (or send SIGHUP) to load what changed"
    )


@router.get("/models/{graph}", summary="Graph metadata")
@router.get("/models/{graph}/versions/{version}", include_in_schema=False)
async def model_metadata(graph: str, registry: RegistryDep, version: str | None = None) -> dict[str, Any]:
    """Name, platform, and each input and output: name, datatype (FP32/INT64), shape (-1 = dynamic)."""
    g = _graph(registry, graph, version)
    return {
        "name": g.v2_name,
        "versions": [VERSION],
        "platform": "onnxruntime_onnx",
        "inputs": [_tensor_meta(t) for t in g.spec.inputs],
        "outputs": [_tensor_meta(t) for t in g.spec.outputs],
    }


@router.get("/models/{graph}/config", summary="Graph configuration, in Triton's model configuration form")
@router.get("/models/{graph}/versions/{version}/config", include_in_schema=False)
async def model_config(
    graph: str, registry: RegistryDep, settings: SettingsDep, version: str | None = None
) -> dict[str, Any]:
    """What Triton's GET .../config gives and its tools (perf_analyzer) read: the platform, the largest
    batch one request may carry (max_batch_size: AESERVE_MAX_IMAGES; dims then leave the batch axis out,
    -1 = dynamic), and dynamic batching: the batcher merges requests into runs of up to
    AESERVE_MAX_BATCH_SIZE items (preferred_batch_size), and a larger request runs on its own."""
    g = _graph(registry, graph, version)

    def tensor(t: TensorSpec) -> dict[str, Any]:
        dims = [d if isinstance(d, int) else -1 for d in t.shape[1:]]
        entry: dict[str, Any] = {
            "name": t.name,
            "data_type": "TYPE_" + _BY_DTYPE.get(t.dtype, t.dtype.upper()),
            "dims": dims,
        }
        if not dims:  # a per-sample scalar: Triton needs a dim, so [1] reshaped to [] (as export --triton)
            entry |= {"dims": [1], "reshape": {"shape": []}}
        return entry

    return {
        "name": g.v2_name,
        "platform": "onnxruntime_onnx",
        "backend": "onnxruntime",
        "version_policy": {"latest": {"num_versions": 1}},
        "max_batch_size": settings.max_images,
        "input": [tensor(t) for t in g.spec.inputs],
        "output": [tensor(t) for t in g.spec.outputs],
        "dynamic_batching": {
            "preferred_batch_size": [min(settings.max_batch_size, settings.max_images)],
            "max_queue_delay_microseconds": int(settings.max_delay_ms * 1000),
        },
    }


@router.get("/models/{graph}/ready", summary="Graph readiness")
@router.get("/models/{graph}/versions/{version}/ready", include_in_schema=False)
async def model_ready(graph: str, registry: RegistryDep, version: str | None = None) -> dict[str, Any]:
    g = _graph(registry, graph, version)
    if g.batcher is None:
        raise NotReady(f"{graph} is not started")
    return {"name": g.v2_name, "ready": True}


def _parameters(item: dict[str, Any], where: str) -> dict[str, Any]:
    params = item.get("parameters")
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise InvalidInput(f"{where}: parameters must be an object")
    return params


def _check_size(model: Model | None, spec: TensorSpec, shape: list[int], settings: Settings) -> None:
    """The request limits and the sides the graph can run, from the shape alone (before any tensor is
    built or run)."""
    if shape[0] > settings.max_images:
        raise PayloadTooLarge(
            f"input {spec.name!r} has a batch of {shape[0]}; the limit is {settings.max_images}"
        )
    if model is not None and model.manifest is not None and model.adapter is not None:
        problem = model.adapter.spatial_problem(model.manifest, spec.name, shape)
        if problem is not None:
            raise InvalidInput(f"input {spec.name!r} of shape {shape}: {problem}")
        pixels = model.adapter.pixels(model.manifest, spec.name, shape)
        if pixels > settings.max_pixels:
            raise PayloadTooLarge(
                f"input {spec.name!r} of shape {shape} stands for {pixels} image pixels; "
                f"the limit is {settings.max_pixels}"
            )


def _input_array(
    item: dict[str, Any],
    spec: TensorSpec,
    binary: bytes,
    offset: int,
    check: Callable[[TensorSpec, list[int]], None],
) -> tuple[np.ndarray, int]:
    """One request tensor as an array checked against the graph's input; returns it and the new offset.
    `check(spec, shape)` enforces the size limits once the shape is known to be well formed."""
    name = spec.name
    datatype = item.get("datatype")
    dtype = DATATYPES.get(datatype) if isinstance(datatype, str) else None
    if dtype is None or dtype != np.dtype(spec.dtype):
        raise InvalidInput(f"input {name!r} must have datatype {_BY_DTYPE.get(spec.dtype)}, got {datatype!r}")
    shape = item.get("shape")
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise InvalidInput(f"input {name!r} needs a shape of non-negative integers")
    if len(shape) != len(spec.shape) or any(
        isinstance(s, int) and s != d for s, d in zip(spec.shape, shape, strict=True)
    ):
        expected = [d if isinstance(d, int) else -1 for d in spec.shape]
        raise InvalidInput(f"input {name!r} has shape {shape}; the graph expects {expected}")
    if shape[0] < 1:
        raise InvalidInput(f"input {name!r} needs a batch of at least 1")
    check(spec, shape)
    count = int(np.prod(shape))
    size = _parameters(item, f"input {name!r}").get("binary_data_size")
    if size is not None:
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise InvalidInput(f"input {name!r}: binary_data_size must be a non-negative integer")
        if size != count * dtype.itemsize or offset + size > len(binary):
            raise InvalidInput(
                f"input {name!r}: binary_data_size {size} does not fit shape {shape} or the body"
            )
        array = np.frombuffer(binary, dtype=dtype.newbyteorder("<"), count=count, offset=offset)
        offset += size
    else:
        try:
            parsed = json_numbers(item.get("data"))  # no booleans, no strings
            # JSON integers for integer tensors (0.5 is not a token id), numbers for float ones (object
            # arrays: integers beyond int64, converted or refused by astype)
            if dtype.kind in "iu" and parsed.dtype.kind == "f" and parsed.size:
                raise TypeError(f"JSON values of numpy kind {parsed.dtype.kind!r}")
            array = parsed.astype(dtype)
        except (TypeError, ValueError, OverflowError) as exc:
            raise InvalidInput(f"input {name!r}: data is not a list of {datatype} values") from exc
        if array.size != count:
            raise InvalidInput(f"input {name!r}: {array.size} values for shape {shape}")
    if dtype == np.float32 and not np.all(np.isfinite(array)):
        raise InvalidInput(f"input {name!r} contains NaN or infinite values")
    return array.reshape(shape).astype(dtype), offset


def _check_values(model: Model | None, feeds: dict[str, np.ndarray]) -> None:
    """Values a well-formed tensor may still not hold. Token ids (the INT64 inputs of a model with a
    codebook) must lie in [0, K): out of range, the graph's codebook lookup would fail inside ONNX
    Runtime, a client's error reported as a server's. Then whatever the kind's adapter refuses
    (`feeds_problem`: an MAE mask other than 0 and 1)."""
    if model is None:
        return
    if model.codebook is not None:
        k = len(model.codebook)
        for name, array in feeds.items():
            if array.dtype == np.int64 and array.size and (array.min() < 0 or array.max() >= k):
                raise InvalidInput(f"input {name!r} holds token ids outside [0, {k})")
    if model.manifest is not None and model.adapter is not None:
        problem = model.adapter.feeds_problem(model.manifest, feeds)
        if problem is not None:
            raise InvalidInput(problem)


def _parse(body: bytes, header_length: str | None) -> tuple[dict[str, Any], bytes]:
    if header_length is not None:
        # ASCII digits only ("²" is a digit to str.isdigit, and int() refuses 4,300 digits and more)
        digits = header_length.isascii() and header_length.isdigit() and len(header_length) <= 19
        if not digits or int(header_length) > len(body):
            raise InvalidInput("Inference-Header-Content-Length does not fit the body")
        json_part, binary = body[: int(header_length)], body[int(header_length) :]
    else:
        json_part, binary = body, b""
    check_json_lists(json_part, "the inference request")
    try:
        doc = json.loads(json_part)
    except (ValueError, RecursionError) as exc:
        raise InvalidInput(f"the inference request is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("inputs"), list):
        raise InvalidInput("the inference request needs an 'inputs' list")
    _parameters(doc, "the request")
    if "id" in doc and not isinstance(doc["id"], str):
        raise InvalidInput("'id' must be a string")
    for key in ("inputs", "outputs"):
        tensors = doc.get(key) or []
        if not isinstance(tensors, list) or not all(
            isinstance(t, dict) and isinstance(t.get("name"), str) for t in tensors
        ):
            raise InvalidInput(f"'{key}' must be a list of objects, each with a string 'name'")
        names = [t["name"] for t in tensors]
        if len(set(names)) != len(names):
            raise InvalidInput(f"'{key}' names a tensor twice")
        for t in tensors:
            _parameters(t, f"{key[:-1]} {t['name']!r}")
    return doc, binary


_INFER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["inputs"],
    "properties": {
        "id": {"type": "string"},
        "parameters": {"type": "object", "properties": {"binary_data_output": {"type": "boolean"}}},
        "inputs": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name", "shape", "datatype"],
                "properties": {
                    "name": {"type": "string"},
                    "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
                    "datatype": {"type": "string", "enum": sorted(DATATYPES)},
                    "data": {"type": "array", "items": {}},
                    "parameters": {"type": "object"},
                },
            },
        },
        "outputs": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name"],
                "properties": {"name": {"type": "string"}, "parameters": {"type": "object"}},
            },
        },
    },
}
_TENSOR_OUT = {
    "type": "object",
    "required": ["name", "datatype", "shape"],
    "properties": {
        "name": {"type": "string"},
        "datatype": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer"}},
        "data": {"type": "array", "items": {}},
        "parameters": {"type": "object"},
    },
}
_INFER_RESPONSE = {
    "type": "object",
    "required": ["model_name", "outputs"],
    "properties": {
        "model_name": {"type": "string"},
        "model_version": {"type": "string"},
        "id": {"type": "string"},
        "outputs": {"type": "array", "items": _TENSOR_OUT},
    },
}


@router.post(
    "/models/{graph}/infer",
    summary="Run a graph (JSON or binary tensors)",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": _INFER_SCHEMA},
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            },
        }
    },
    responses={
        200: {
            "description": "JSON outputs, or the JSON header then raw output bytes (binary_data)",
            "content": {
                "application/json": {"schema": _INFER_RESPONSE},
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            },
        }
    },
)
@router.post("/models/{graph}/versions/{version}/infer", include_in_schema=False)
async def infer(
    graph: str, request: Request, registry: RegistryDep, settings: SettingsDep, version: str | None = None
) -> Response:
    """Inputs are checked by name, datatype and shape against the graph, batched with other requests,
    and the outputs returned as JSON data or, when asked (binary_data / binary_data_output), as raw
    little-endian bytes after the JSON header. A body may come compressed (Content-Encoding gzip or
    deflate, as tritonclient's request_compression_algorithm sends it)."""
    g = _graph(registry, graph, version)
    if g.batcher is None:
        raise NotReady(f"{graph} is not started")
    model = registry.models.get(g.model)  # with the graph: a reload while the body arrives swaps both
    body = await inflated_body(request, settings.max_body_bytes)
    header_length = request.headers.get("inference-header-content-length")

    def check(spec: TensorSpec, shape: list[int]) -> None:
        _check_size(model, spec, shape, settings)

    def parse() -> tuple[dict[str, Any], dict[str, np.ndarray], list[tuple[str, bool]]]:
        doc, binary = _parse(body, header_length)
        items = {i["name"]: i for i in doc["inputs"]}
        specs = {t.name: t for t in g.spec.inputs}
        unknown = sorted(set(items) - set(specs))
        missing = sorted(set(specs) - set(items))
        if unknown or missing:
            raise InvalidInput(f"{graph} takes inputs {sorted(specs)}; unknown {unknown}, missing {missing}")
        feeds: dict[str, np.ndarray] = {}
        offset = 0
        for item in doc["inputs"]:  # binary chunks follow the order of the inputs
            feeds[item["name"]], offset = _input_array(item, specs[item["name"]], binary, offset, check)
        if offset != len(binary):
            raise InvalidInput(f"{len(binary) - offset} bytes follow the last binary input; none may")
        _check_values(model, feeds)
        # outputs the graph lacks, or bad output parameters: refused before the run
        return doc, feeds, _wanted(g, doc)

    # Parsing megabytes of JSON, and writing outputs as JSON lists, take seconds
    doc, feeds, wanted = await off_loop(len(body), LARGE_JSON_BYTES, parse)
    outputs = await g.batcher.submit(feeds)
    return await off_loop(
        sum(a.size for a in outputs.values()), INLINE_MAX_VALUES, _response, g, doc, wanted, outputs
    )


def _flag(params: dict[str, Any], key: str, default: bool, where: str) -> bool:
    value = params.get(key, default)
    if not isinstance(value, bool):
        raise InvalidInput(f"{where}: {key} must be true or false, not {value!r}")
    return value


def _wanted(g: Graph, doc: dict[str, Any]) -> list[tuple[str, bool]]:
    """(output name, as binary data) for each output the request asks for, all of them by default."""
    default = _flag(_parameters(doc, "the request"), "binary_data_output", False, "the request")
    names = [t.name for t in g.spec.outputs]
    wanted = []
    for out in doc.get("outputs") or [{"name": n} for n in names]:
        name = out["name"]
        if name not in names:
            raise InvalidInput(f"{g.v2_name} has no output {name!r}; outputs: {sorted(names)}")
        params = _parameters(out, f"output {name!r}")
        if "classification" in params:
            raise InvalidInput(
                f"output {name!r}: classification (class_count) is not supported; outputs are images, "
                "latents, tokens and scores"
            )
        wanted.append((name, _flag(params, "binary_data", default, f"output {name!r}")))
    return wanted


def _response(
    g: Graph, doc: dict[str, Any], wanted: list[tuple[str, bool]], outputs: dict[str, np.ndarray]
) -> Response:
    results: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for name, binary in wanted:
        array = outputs[name]
        meta: dict[str, Any] = {
            "name": name,
            "datatype": _BY_DTYPE[str(array.dtype)],
            "shape": list(array.shape),
        }
        if binary:
            blob = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
            meta["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            # JSON has no NaN or infinity (RFC 8259 section 6); binary data carries them as IEEE values
            if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
                raise InvalidInput(
                    f"output {name!r} holds NaN or infinite values, which JSON cannot carry (the inputs "
                    "lie far outside what the model was trained on); ask for it as binary_data"
                )
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
