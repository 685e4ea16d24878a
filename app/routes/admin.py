"""Operator actions behind the API key: POST /v1/admin/reload (SIGHUP does the same)."""

import logging
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from pydantic import BaseModel, Field

from app.deps import require_api_key
from app.errors import NotReady, error_responses
from app.metrics import Metrics
from app.registry import Registry, ReloadReport

log = logging.getLogger("app.admin")

router = APIRouter(
    prefix="/v1/admin",
    tags=["admin"],
    dependencies=[Depends(require_api_key)],
    responses=error_responses(401, 503),
)


class ReloadResult(BaseModel):
    """What a reload did, by model name."""

    loaded: list[str] = Field(description="New or changed models, now serving their new version")
    unchanged: list[str] = Field(description="Same manifest: the running version is kept")
    rejected: dict[str, str] = Field(
        description="Cannot load (reason); the running version, if any, keeps serving"
    )
    removed: list[str] = Field(description="Folder gone: no longer served")


def publish(registry: Registry, metrics: Metrics) -> None:
    """Readiness and providers of the registry's current models as metrics."""
    metrics.publish_models(
        {m.name: m.ready for m in registry.models.values()},
        {g.v2_name: g.provider for g in registry.graphs.values()},
    )


async def reload_models(app: FastAPI) -> ReloadReport:
    """Reload the app's registry (atomic swap, bad versions rejected), then publish and log the outcome."""
    registry: Registry | None = getattr(app.state, "registry", None)
    if registry is None or not registry.started:
        raise NotReady("the service is starting")
    report = await registry.reload()
    publish(registry, app.state.metrics)
    log.info(
        "reload: loaded %s, unchanged %s, rejected %s, removed %s",
        report.loaded,
        report.unchanged,
        report.rejected,
        report.removed,
    )
    return report


@router.post("/reload", summary="Reload the models from the model folder")
async def reload(request: Request) -> ReloadResult:
    """New and changed artifact folders load and warm up while the current models serve, then swap in
    at once; a model whose new version cannot load keeps serving its old one (listed in `rejected`)."""
    report = await reload_models(request.app)
    fields: dict[str, Any] = vars(report)
    return ReloadResult(**fields)
