"""The ASGI application: ``uvicorn rhythmd.app:app`` or ``create_app()`` for tests."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.routing import Match

from rhythmd import __version__
from rhythmd.api import analysis, metrics, recommendations, runs, timeline, tokens
from rhythmd.api.deps import ServiceDep
from rhythmd.api.docs import add_security, install_docs
from rhythmd.api.encoding import RhythmdJSONResponse
from rhythmd.api.header_timeout import install_header_timeout
from rhythmd.api.limits import BodyLimitMiddleware
from rhythmd.api.origin import WriteGuardMiddleware
from rhythmd.api.schemas import Health, MetricBatchIn
from rhythmd.api.security import LoopbackOnlyMiddleware, principal_of
from rhythmd.api.startup import StartingGate, StartupState, open_with_retry
from rhythmd.auth import ALL, Decision, bind_host_from_process, check_exposure
from rhythmd.config import Settings
from rhythmd.core.ingest_queue import IngestQueue
from rhythmd.errors import (
    ConfigurationError,
    ConflictError,
    InvalidInputError,
    NotFoundError,
    StoreUnavailableError,
    TooLargeError,
)
from rhythmd.observability import CONTENT_TYPE, REJECTED, configure_logging, render_metrics
from rhythmd.service import Service
from rhythmd.store import Store
from rhythmd.store.runs import LostRule
from rhythmd.web import pages
from rhythmd.webhooks import AlertConfig, WebhookDispatcher

log = logging.getLogger("rhythmd")
RETRY_AFTER_S = 5


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the daemon. The database is opened (and the schema checked) at startup."""
    settings = settings or Settings()

    startup = StartupState()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            check_exposure(settings.auth == "required", settings.insecure,
                           bind_host_from_process())
        except ConfigurationError as exc:
            log.error("rhythmd cannot start: %s", exc)
            raise
        try:
            where = make_url(settings.database_url).render_as_string(hide_password=True)
        except ArgumentError:
            where = "(malformed URL)"
        running: list[WebhookDispatcher | None] = []
        startup.ready, startup.reason = False, "starting"

        def open_store() -> Store:
            store = Store(settings.database_url, pool_size=settings.db_pool_size)
            store.open()
            return store

        def on_ready(store: Store) -> None:
            running.append(_start_service(app, settings, store))

        retry: asyncio.Task[None] | None = None
        try:
            on_ready(await run_in_threadpool(open_store))
            startup.ready = True
        except StoreUnavailableError as exc:
            startup.reason = f"starting: {exc}"
            log.warning("database %s unreachable (%s): serving /healthz as \"starting\" and "
                        "retrying with backoff", where, exc)
            retry = asyncio.create_task(open_with_retry(startup, open_store, on_ready, where))
        except ConfigurationError as exc:
            log.error("rhythmd cannot start: %s", exc)
            raise
        try:
            yield
        finally:
            if retry is not None:
                retry.cancel()
                with suppress(asyncio.CancelledError):
                    await retry
            if running:
                if running[0] is not None:
                    await run_in_threadpool(running[0].stop)
                await run_in_threadpool(app.state.ingest_queue.close)
                await run_in_threadpool(app.state.service.close)
                await run_in_threadpool(app.state.store.close)

    app = FastAPI(
        title="rhythmd",
        version=__version__,
        summary="Training-rhythm debugger for PyTorch: metric streams, diagnoses, LR fixes.",
        description=(
            "Non-finite floats in responses are the strings `NaN`, `Infinity` and `-Infinity`. "
            "Steps are optimizer steps; LRs are absolute values; recommended LR changes are "
            "factors relative to each param group's LR when applied."
        ),
        lifespan=lifespan,
        default_response_class=RhythmdJSONResponse,
        docs_url=None,  # served from the package below, not from a CDN
        redoc_url=None,
    )
    install_docs(app, "rhythmd")
    configure_logging(settings.log_level, settings.log_format == "json")
    install_header_timeout(settings.header_timeout)
    app.state.settings = settings
    app.add_middleware(WriteGuardMiddleware, public_url=settings.public_url)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)  # 413 first
    app.add_middleware(StartingGate, state=startup)
    app.add_middleware(LoopbackOnlyMiddleware,
                       enabled=settings.auth != "required" and not settings.insecure)
    _install_error_handlers(app)
    app.include_router(runs.router)
    app.include_router(metrics.router)
    app.include_router(recommendations.router)
    app.include_router(analysis.router)
    app.include_router(timeline.router)
    app.include_router(tokens.router)
    app.include_router(pages.router)

    @app.get("/healthz", response_model=Health, tags=["health"],
             responses={503: {"model": Health, "description": "Database unreachable, or "
                                                          "not reached yet (starting)."}})
    def healthz(service: ServiceDep) -> Response:
        """Liveness, and whether the database answers."""
        body: dict[str, Any] = {"status": "ok", "database": "ok",
                                "schema_version": service.store.schema_version,
                                "version": __version__}
        try:
            service.store.ping()
        except StoreUnavailableError as exc:
            body.update(status="unavailable", database=str(exc))
            return RhythmdJSONResponse(body, status_code=503,
                                       headers={"Retry-After": str(RETRY_AFTER_S)})
        return RhythmdJSONResponse(body)

    @app.get("/metrics", tags=["health"], include_in_schema=True,
             response_class=Response, responses={200: {"content": {CONTENT_TYPE: {}},
                                                         "description": "Prometheus text."}})
    def metrics_endpoint(service: ServiceDep, request: Request) -> Response:
        """Prometheus metrics: points, batches, duplicates, rejected requests by reason, ingest
        and analysis time, open diagnoses by kind, recommendations by action and status,
        active runs. With authentication, needs a read token for every project ("*")."""
        principal = principal_of(request)
        if principal is not None and principal.decide(ALL, "read") is not Decision.ALLOW:
            raise HTTPException(403, 'metrics need a read token for every project ("*")')
        return Response(render_metrics(service), media_type=CONTENT_TYPE)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, summary=app.summary,
                                 description=app.description, routes=app.routes)
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            body_schema = MetricBatchIn.model_json_schema(
                ref_template="#/components/schemas/{model}")
            for name, sub in body_schema.pop("$defs", {}).items():
                components.setdefault(name, sub)
            components.setdefault("MetricBatchIn", body_schema)
            add_security(schema, auth_required=settings.auth == "required")
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def _start_service(app: FastAPI, settings: Settings, store: Store) -> WebhookDispatcher | None:
    """Build the service over an open store; returns the webhook dispatcher (if any)."""
    app.state.store = store
    alerts = (AlertConfig(settings.webhook_min_severity, settings.public_url)
              if settings.webhook_url else None)
    app.state.service = Service(
        store, analysis=settings.analysis, alerts=alerts,
        lost_rule=LostRule(settings.lost_after_intervals, settings.lost_min_seconds))
    # every HTTP batch is stored through the queue, in worker threads (bound to this loop)
    app.state.ingest_queue = IngestQueue(
        app.state.service.ingestor, concurrency=settings.ingest_concurrency,
        max_group=settings.ingest_group_max)
    dispatcher = None
    if settings.webhook_url:
        dispatcher = WebhookDispatcher(store, settings.webhook_url,
                                       max_attempts=settings.webhook_max_attempts)
        dispatcher.start()
    # Everything loaded so far lives as long as the process: keep it out of the cyclic
    # garbage collector's full passes, which otherwise stall every request now and then.
    gc.collect()
    gc.freeze()
    if settings.gc_threshold:
        # the default (700) means a young collection every few requests and, under a
        # sustained load, frequent full ones that stop the whole process
        _, gen1, gen2 = gc.get_threshold()
        gc.set_threshold(settings.gc_threshold, gen1, gen2)
    log.info("rhythmd %s serving on %s (schema v%s)", __version__,
             store.engine.url.render_as_string(hide_password=True), store.schema_version)
    return dispatcher


def _install_error_handlers(app: FastAPI) -> None:
    def detail(status: int, message: Any, headers: dict[str, str] | None = None) -> Response:
        return RhythmdJSONResponse({"detail": message}, status_code=status, headers=headers)

    def rejected(request: Request, reason: str, message: Any) -> None:
        REJECTED.labels(reason).inc()
        log.info("rejected %s %s: %s", request.method, request.url.path, reason,
                 extra={"run_id": request.path_params.get("run_id"), "status": reason,
                        "detail": str(message)[:300]})

    @app.exception_handler(NotFoundError)
    async def _not_found(request: Request, exc: NotFoundError) -> Response:
        rejected(request, "not_found", exc)
        return detail(404, str(exc))

    @app.exception_handler(InvalidInputError)
    async def _invalid(request: Request, exc: InvalidInputError) -> Response:
        rejected(request, "invalid", exc.detail())
        return detail(422, exc.detail())

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        errors = [_error_item(e) for e in exc.errors()]
        rejected(request, "invalid", errors)
        return detail(422, _jsonable(errors))

    @app.exception_handler(TooLargeError)
    async def _too_large(request: Request, exc: TooLargeError) -> Response:
        rejected(request, "too_large", exc)
        return detail(413, str(exc))

    @app.exception_handler(ConflictError)
    async def _conflict(request: Request, exc: ConflictError) -> Response:
        rejected(request, "conflict", exc)
        return detail(409, str(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        # FastAPI answers 400 to a JSON body it cannot decode (not UTF-8); malformed input is
        # 422 everywhere else (docs/api.md), and 400 is in no operation's schema.
        if exc.status_code == 400:
            return detail(422, [{"type": "json_invalid", "loc": ["body"], "msg": str(exc.detail)}])
        if exc.status_code == 405:
            return detail(405, exc.detail, {"Allow": ", ".join(_allowed_methods(app, request))})
        return await http_exception_handler(request, exc)

    @app.exception_handler(StoreUnavailableError)
    async def _unavailable(request: Request, exc: StoreUnavailableError) -> Response:
        rejected(request, "unavailable", exc)
        log.warning("503: %s", exc)
        return detail(503, f"{exc}; retry later", {"Retry-After": str(RETRY_AFTER_S)})


def _allowed_methods(app: FastAPI, request: Request) -> list[str]:
    """Every method some route serves on this path (Starlette names the first route's)."""
    allowed = []
    for method in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"):
        scope = {**request.scope, "method": method}
        if any(route.matches(scope)[0] is Match.FULL for route in app.router.routes):
            allowed.append(method)
    return allowed


def _error_item(error: dict[str, Any]) -> dict[str, Any]:
    """A validation error as answered: type, loc, msg (with the parser's reason), input."""
    item = {k: v for k, v in error.items() if k in ("type", "loc", "msg", "input")}
    reason = (error.get("ctx") or {}).get("error")
    if error.get("type") == "json_invalid" and reason:
        item["loc"] = ["body"]
        item["msg"] = f"the body is not valid JSON: {reason}"
    return item


def _jsonable(obj: Any) -> Any:
    """Plain JSON types only (validation errors may carry bytes or exotic inputs)."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    if isinstance(obj, bytes):
        return obj.decode("utf-8", "replace")[:200]
    return repr(obj)[:200]


def __getattr__(name: str) -> Any:
    # `uvicorn rhythmd.app:app`: the app is built on first access, from RHYTHMD_* settings.
    if name == "app":
        application = create_app()
        globals()["app"] = application
        return application
    raise AttributeError(name)
