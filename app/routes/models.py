"""GET /v1/models, /v1/models/{name} and /v1/models/{name}/codebook."""

import io
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response

from app.deps import RegistryDep, VersionedRoute, require_api_key, serving
from app.errors import error_responses
from app.registry import Model

router = APIRouter(
    route_class=VersionedRoute,  # the codebook names the version it came from, as the operations do
    prefix="/v1",
    tags=["models"],
    dependencies=[Depends(require_api_key)],
    responses=error_responses(401, 404, 422, 503),
)


def model_info(model: Model) -> dict[str, Any]:
    """Everything a client needs to call a model: kind, operations, sizes, providers, status, card."""
    m = model.manifest
    info: dict[str, Any] = {
        "name": model.name,
        "kind": model.kind,
        "status": "ready" if model.ready else "unavailable",
        "reason": model.reason,
        "version": model.version,
        "operations": list(model.adapter.operations) if model.adapter else [],
    }
    if m is None:
        return info
    latent = dict(m.latent)
    if model.codebook is not None:
        latent.setdefault("codebook_size", int(model.codebook.shape[0]))
    info |= {
        "input": {
            "height": m.height,
            "width": m.width,
            "channels": m.channels,
            "spatial_multiple": m.spatial_multiple,
        },
        "latent": latent,
        "likelihood": m.likelihood,
        "patch_size": m.patch_size,
        "num_patches": m.num_patches,
        "graphs": {g.name: {"provider": g.provider, "v2_name": g.v2_name} for g in model.graphs.values()},
        "metrics": m.metrics,
        "created": m.raw.get("created"),
        "model_card": model.model_card,
    }
    return info


@router.get("/models", summary="List the models and their status")
async def list_models(registry: RegistryDep) -> dict[str, list[dict[str, Any]]]:
    """Every artifact folder found, ready or unavailable (with the reason)."""
    return {"models": [model_info(m) for m in registry.models.values()]}


@router.get("/models/{name}", summary="Describe one model")
async def get_model(name: str, registry: RegistryDep) -> dict[str, Any]:
    """Kind, supported operations, input size and channels, latent shape or codebook size, the
    provider each graph runs on, status (ready/unavailable + reason), metrics and model card."""
    return model_info(registry.get(name))


@router.get(
    "/models/{name}/codebook",
    summary="The VQ-VAE codebook",
    responses={
        200: {
            "content": {"application/x-npy": {}, "application/json": {}},
            "description": 'float32 [K, D] as .npy (default) or JSON {"codebook": [[...]]}',
        }
    },
)
async def codebook(
    name: str,
    request: Request,
    registry: RegistryDep,
    format: Annotated[Literal["npy", "json"], Query(description="npy (float32 [K, D]) or json")] = "npy",
) -> Response:
    model = serving(request, registry, name)
    model.require("codebook")
    cb = model.codebook if model.codebook is not None else np.zeros((0, 0), np.float32)
    if format == "json":
        return JSONResponse({"codebook": cb.tolist(), "shape": list(cb.shape)})
    buf = io.BytesIO()
    np.save(buf, cb, allow_pickle=False)
    return Response(buf.getvalue(), media_type="application/x-npy")
