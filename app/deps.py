"""FastAPI dependencies: the app's registry, settings and metrics, the API-key check, and the model
version every answer of a model's operation carries (X-Model-Version).

All of them are `async def` although none awaits: FastAPI runs a plain `def` dependency on a worker
thread, which would cost every request one thread hand-off per dependency for a dictionary lookup."""

import hmac
from collections.abc import Callable, Coroutine
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request, Response
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.errors import Unauthorized
from app.metrics import Metrics
from app.registry import Model, Registry
from app.settings import Settings


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_registry(request: Request) -> Registry:
    registry: Registry = request.app.state.registry
    return registry


async def get_metrics(request: Request) -> Metrics:
    metrics: Metrics = request.app.state.metrics
    return metrics


_bearer = HTTPBearer(auto_error=False, description="The API key (AESERVE_API_KEY), when one is set.")


async def require_api_key(
    settings: Annotated[Settings, Depends(get_settings)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """Pass when no key is configured, or when `Authorization: Bearer <key>` matches it."""
    if settings.api_key is None:
        return
    expected = settings.api_key.get_secret_value().encode()
    given = credentials.credentials.encode() if credentials is not None else b""
    if not hmac.compare_digest(given, expected):
        raise Unauthorized("missing or wrong API key (send Authorization: Bearer <key>)")


SettingsDep = Annotated[Settings, Depends(get_settings)]
RegistryDep = Annotated[Registry, Depends(get_registry)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]


MODEL_VERSION_HEADER = "X-Model-Version"


def serving(request: Request, registry: Registry, name: str) -> Model:
    """The model `name` as it is now; its version is noted for the answer's X-Model-Version."""
    model = registry.get(name)
    request.state.model_version = model.version
    return model


AnyResponse = TypeVar("AnyResponse", bound=Response)


def stamp_model_version(request: Request, response: AnyResponse) -> AnyResponse:
    """X-Model-Version on `response` when the request found its model (`serving`): the artifact's
    manifest digest, as GET /v1/models/{name} gives it, so a client can tell results of two versions
    apart across a hot reload. Error answers get it from the app's error handler."""
    version = getattr(request.state, "model_version", None)
    if version:
        response.headers[MODEL_VERSION_HEADER] = version
    return response


class VersionedRoute(APIRoute):
    """A route whose answers carry X-Model-Version (`stamp_model_version`)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            return stamp_model_version(request, await handler(request))

        return route
