"""Operational routes: /healthz, /readyz (no key), /metrics and /v1/version (key when set)."""

import os
import platform
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from app import version
from app.deps import MetricsDep, RegistryDep, SettingsDep, require_api_key
from app.errors import ErrorBody, NotReady, error_responses
from app.metrics import CONTENT_TYPE_LATEST

health = APIRouter(tags=["health"], responses=error_responses(503))
router = APIRouter(
    tags=["operations"], dependencies=[Depends(require_api_key)], responses=error_responses(401)
)


@health.get("/healthz", summary="Liveness (no API key)")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@health.get("/readyz", summary="Readiness (no API key): models loaded and warmed up")
async def readyz(request: Request) -> Any:
    registry = getattr(request.app.state, "registry", None)
    if registry is None or not registry.started:
        raise NotReady("the service is starting")
    models = {name: "ready" if m.ready else "unavailable" for name, m in registry.models.items()}
    problem = registry.not_ready()
    if problem is not None:  # the error body, plus each model's status
        body = ErrorBody(NotReady.code, problem).v1()
        return JSONResponse({**body, "status": "not_ready", "models": models}, status_code=503)
    return {"status": "ready", "models": models}


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}}},
)
async def metrics(m: MetricsDep) -> Response:
    return Response(m.render(), media_type=CONTENT_TYPE_LATEST)


@cache
def _git_revision() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=2,
            check=True,
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


@router.get("/v1/version", summary="Versions, git revision and providers", tags=["models"])
async def version_info(registry: RegistryDep, settings: SettingsDep) -> dict[str, Any]:
    """The git revision comes from AESERVE_GIT_REVISION (set at image build), else `git rev-parse`."""
    return {
        "version": version(),
        "git_revision": settings.git_revision or os.environ.get("AESERVE_GIT_REVISION") or _git_revision(),
        "runtime": {
            "onnxruntime": ort.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
        },
        "providers": {
            "available": registry.available_providers,
            "requested": settings.providers,
            "in_use": {g.v2_name: g.provider for g in registry.graphs.values()},
        },
    }
