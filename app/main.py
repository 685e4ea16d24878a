"""The application: `create_app(settings)`; `app` for `uvicorn app.main:app`.

Models load in the lifespan (never at import); with no configuration the bundled models in
`<repo>/artifacts/` are served, and an empty or missing folder serves none.
"""

import asyncio
import importlib.util
import logging
import re
import signal
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from PIL import Image
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app import logs, version
from app.admission import CLIENT_GONE, DisconnectMiddleware, Inflight, InflightLimitMiddleware
from app.deps import MODEL_VERSION_HEADER, stamp_model_version
from app.errors import ErrorBody, ServiceError, StartupError, error_response
from app.metrics import Metrics
from app.registry import Registry
from app.routes import admin, infer, models, ops, v2
from app.settings import Settings, missing_docs_assets
from app.uploads import BodyLimitMiddleware

log = logging.getLogger("app.main")

# The playground (plain files, no build): index.html at "/", the rest under /static/, no API key.
STATIC_DIR = Path(__file__).resolve().parent / "static"

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

DESCRIPTION = """Image autoencoders (VAE, β-VAE, VQ-VAE, MAE) exported to ONNX and served with ONNX Runtime.

* **/v1**: models and their operations (reconstruct, encode, decode, interpolate, inpaint, tokens,
  codebook, sample, traverse, score). Images go as a multipart field or a raw image body.
* **/v2**: the Open Inference Protocol (KServe / Triton REST) over the raw graphs, `<model>_<graph>`.
* Errors: `{"error": {"code", "message", "field"}}` (v2: `{"error": "..."}`).
* Auth: `Authorization: Bearer <key>` when `AESERVE_API_KEY` is set (health routes are open).
* Admin: `POST /v1/admin/reload` (or SIGHUP) reloads the models; a version that cannot load is rejected.
"""


# The playground keeps an API key in sessionStorage: no script but its own may run beside it.
_PAGE_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' data: blob:; object-src 'none'; base-uri 'none'; "
        b"form-action 'none'; frame-ancestors 'none'",
    ),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
]


# every API route, in the order they match
ROUTERS = (models.router, infer.router, v2.health, v2.router, ops.health, ops.router, admin.router)


class UnexpectedErrorMiddleware:
    """A bug (an exception no handler maps) answers 500 in its API's JSON error shape, naming the request
    id the traceback is logged under. The innermost middleware, so the answer leaves through the others
    (request id, security headers, CORS) like any other and the connection stays open; Starlette's own
    last resort is a plain-text 500 outside all of them."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watch(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except Exception:
            if started:  # part of an answer is out: nothing to do but end the connection
                raise
            rid = logs.request_id.get() or ""
            log.exception("internal error in request %s", rid)
            body = ErrorBody(
                "internal_error", f"internal error in request {rid}; the server log has the details"
            )
            content = body.v2() if scope["path"].startswith("/v2") else body.v1()
            await JSONResponse(content, status_code=500)(scope, receive, send)


class RequestContextMiddleware:
    """X-Request-ID in and out, one access log line and the request metrics per HTTP request."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        rid = incoming if _REQUEST_ID.match(incoming) else uuid.uuid4().hex
        token = logs.request_id.set(rid)
        started = time.perf_counter()
        status = 500

        page = scope["path"] == "/" or scope["path"].startswith("/static/")
        extra = [(b"x-request-id", rid.encode()), (b"x-content-type-options", b"nosniff")]
        if page:  # the playground: its own scripts and styles only, never inside another site's frame
            extra += _PAGE_HEADERS

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], *extra]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - started
            if scope.get(CLIENT_GONE):
                status = 499  # client closed the request (nginx's code): no response was sent
            route, params = _route_of(scope)
            model = _model_label(scope, params)
            self.metrics.observe_request(route, model, status, seconds)
            log.info(
                "request",
                extra={
                    "method": scope["method"],
                    "path": scope["path"],
                    "status": status,
                    "duration_ms": round(seconds * 1000, 2),
                    "model": model,
                },
            )
            logs.request_id.reset(token)


def _route_of(scope: Scope) -> tuple[str, dict[str, Any]]:
    """The route template a request matched, and its path parameters. A request answered before routing
    (413 for its body, 429 for the in-flight limit) is matched here, so that its status counts under its
    route and model like any other."""
    route = scope.get("route")
    if route is not None:
        return str(getattr(route, "path", "unmatched")), scope.get("path_params") or {}
    for router in ROUTERS:
        for candidate in router.routes:
            match, child = candidate.matches(scope)
            if match == Match.FULL:
                return str(getattr(candidate, "path", "unmatched")), child.get("path_params") or {}
    return "unmatched", {}


def _model_label(scope: Scope, params: dict[str, Any]) -> str:
    """The model a request named, only when the registry knows it (bounded label values)."""
    registry = getattr(getattr(scope.get("app"), "state", None), "registry", None)
    if registry is None:
        return ""
    if params.get("name") in registry.models:
        return str(params["name"])
    graph = registry.graphs.get(params.get("graph", ""))
    return graph.model if graph is not None else ""


def _field_of(loc: tuple[Any, ...]) -> str | None:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or None


def install_error_handlers(app: FastAPI) -> None:
    """Every error leaves in one JSON shape (v1: {"error": {...}}, v2: {"error": "..."})."""

    @app.exception_handler(ServiceError)
    async def service_error(request: Request, exc: ServiceError) -> JSONResponse:
        # the model's version too, when the operation had found its model before failing
        return stamp_model_version(request, error_response(exc, request.url.path))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        field = _field_of(tuple(first.get("loc", ())))
        message = f"{field}: {first.get('msg')}" if field else str(first.get("msg"))
        body = ErrorBody("invalid_input", message, field)
        if request.url.path.startswith("/v2"):
            return JSONResponse(body.v2(), status_code=400)
        return JSONResponse(body.v1(), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized", 400: "bad_request"}
        body = ErrorBody(codes.get(exc.status_code, "http_error"), str(exc.detail))
        content = body.v2() if request.url.path.startswith("/v2") else body.v1()
        return JSONResponse(content, status_code=exc.status_code, headers=getattr(exc, "headers", None))


def _reload_on_sighup(app: FastAPI, started: asyncio.Event) -> Callable[[], None]:
    """SIGHUP reloads the models as POST /v1/admin/reload does, once `started` is set (one that comes
    while the models load waits for them); returns the undo. Only the main thread's loop takes signals
    (uvicorn's, not a test client's), and a signal without a handler would end the process."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGHUP"):
        return lambda: None
    loop = asyncio.get_running_loop()
    running: set[asyncio.Task[None]] = set()

    async def reload() -> None:
        await started.wait()
        try:
            await admin.reload_models(app)
        except ServiceError as exc:  # the operator's to fix (a missing model folder): one line
            log.warning("reload on SIGHUP refused: %s", exc)
        except Exception:
            log.exception("reload on SIGHUP failed")

    def on_hup() -> None:
        if running and not started.is_set():  # a reload already waits for the start: it will do
            return
        task = loop.create_task(reload())
        running.add(task)  # keep a reference until done
        task.add_done_callback(running.discard)

    def undo() -> None:
        loop.remove_signal_handler(signal.SIGHUP)
        for task in running:  # a reload still waiting for a start-up that failed
            task.cancel()

    loop.add_signal_handler(signal.SIGHUP, on_hup)
    return undo


# uvicorn's own start-up failure status: with --workers N the supervisor stops on it, where any other exit
# of a worker is a crash it restarts (a bad setting would be re-read forever).
STARTUP_FAILURE = 3


def settings_from_environment() -> Settings:
    """The `AESERVE_*` settings; a bad value ends the process with one line naming each bad variable
    (exit status 3), not a validation traceback."""
    try:
        return Settings()
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            name = "AESERVE_" + "_".join(str(part) for part in error["loc"]).upper()
            shown = "" if "api_key" in error["loc"] else f" (got {error.get('input')!r})"
            problems.append(f"{name}: {error['msg']}{shown}")
        print(f"aeserve: bad setting: {'; '.join(problems)}", file=sys.stderr)
        raise SystemExit(STARTUP_FAILURE) from None


def installed_docs_assets() -> Path | None:
    """The Swagger UI files the fastapi-offline package ships (found without importing it), if they are
    all there: /docs then works on networks without internet access."""
    spec = importlib.util.find_spec("fastapi_offline")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "static"
    return None if missing_docs_assets(folder) else folder


def _serve_local_docs(app: FastAPI, assets: Path) -> None:
    """/docs (and /redoc where its script is there too) with their scripts and styles from `assets`."""
    app.mount("/docs-assets", StaticFiles(directory=assets), name="docs-assets")
    # swagger-ui-dist names its icon favicon-32x32.png, fastapi-offline favicon.png
    found = [name for name in ("favicon-32x32.png", "favicon.png") if (assets / name).is_file()]
    icon = f"/docs-assets/{found[0]}" if found else None

    def root(request: Request) -> str:
        return str(request.scope.get("root_path", "")).rstrip("/")

    @app.get("/docs", include_in_schema=False)
    async def docs(request: Request) -> HTMLResponse:
        prefix = root(request)
        return get_swagger_ui_html(
            openapi_url=f"{prefix}{app.openapi_url}",
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{prefix}/docs-assets/swagger-ui-bundle.js",
            swagger_css_url=f"{prefix}/docs-assets/swagger-ui.css",
            swagger_favicon_url=f"{prefix}{icon}" if icon else "data:,",
        )

    if (assets / "redoc.standalone.js").is_file():

        @app.get("/redoc", include_in_schema=False)
        async def redoc(request: Request) -> HTMLResponse:
            prefix = root(request)
            page = get_redoc_html(
                openapi_url=f"{prefix}{app.openapi_url}",
                title=f"{app.title} - ReDoc",
                redoc_js_url=f"{prefix}/docs-assets/redoc.standalone.js",
                redoc_favicon_url=f"{prefix}{icon}" if icon else "data:,",
                with_google_fonts=False,
            )
            # ReDoc's script draws its attribution logo from its CDN, with no option to stop it: images
            # from this server only keep the browser from asking (the logo then hides itself)
            page.headers["Content-Security-Policy"] = "img-src 'self' data:"
            return page


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the service; models load when the lifespan starts (raising StartupError to refuse)."""
    settings = settings or settings_from_environment()
    metrics = Metrics()
    inflight = Inflight()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        logs.configure(settings.log_format, settings.log_level)
        Image.MAX_IMAGE_PIXELS = settings.max_pixels  # Pillow's own bomb guard, behind ours
        started = asyncio.Event()
        # before the models load: a SIGHUP would otherwise end the process while they do
        undo_sighup = _reload_on_sighup(app, started)
        try:
            registry = await asyncio.to_thread(Registry.load, settings)
            admin.publish(registry, metrics)
            registry.start(metrics, demand=lambda: inflight.count)
        except BaseException as exc:
            undo_sighup()
            if isinstance(exc, StartupError):
                log.error("start-up refused: %s", exc)
            raise
        inflight.on_release = registry.demand_dropped
        app.state.registry = registry
        if settings.api_key is None:
            log.warning(
                "no API key is set (AESERVE_API_KEY): every route, /v1/admin/reload included, is open to "
                "anyone who can reach this server"
            )
        log.info(
            "ready: %d models (%s)",
            len(registry.models),
            ", ".join(f"{m.name}={'ready' if m.ready else 'unavailable'}" for m in registry.models.values()),
        )
        started.set()
        try:
            yield
        finally:
            undo_sighup()
            inflight.on_release = None
            await registry.stop()

    docs_assets = settings.docs_assets or installed_docs_assets()
    local_docs = docs_assets is not None
    app = FastAPI(
        title="aeserve",
        version=version(),
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None if local_docs else "/docs",
        redoc_url=None if local_docs else "/redoc",
    )
    app.state.settings = settings
    app.state.metrics = metrics
    install_error_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/", include_in_schema=False)
    async def playground() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")

    if docs_assets is not None:
        _serve_local_docs(app, docs_assets)

    app.add_middleware(UnexpectedErrorMiddleware)  # first added, innermost
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["*"],
            allow_headers=["*"],
            expose_headers=["X-Request-ID", "X-Image-Fit", MODEL_VERSION_HEADER, "Retry-After"],
        )
    app.add_middleware(
        BodyLimitMiddleware,
        limit=settings.max_body_bytes,
        respond=lambda scope, error: error_response(error, scope["path"]),
    )
    app.add_middleware(DisconnectMiddleware)
    app.add_middleware(
        InflightLimitMiddleware,
        limit=settings.max_inflight,
        retry_after_s=settings.retry_after_s,
        respond=lambda scope, error: error_response(error, scope["path"]),
        counter=inflight,
    )
    app.add_middleware(RequestContextMiddleware, metrics=metrics)
    return app


app = create_app()
