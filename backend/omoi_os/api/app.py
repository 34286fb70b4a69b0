"""The standalone app (`omoi-os serve`): one host of the consolidation runtime among
others. Its lifespan starts and stops the runtime; the API is under /api/v1 behind
bearer tokens, health and metrics at the root."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from omoi_os.api.router import consolidation_router, ops_router
from omoi_os.config import AppSettings, get_app_settings
from omoi_os.runtime import ConsolidationRuntime

logger = logging.getLogger(__name__)

API_PREFIX = "/api/v1"


def create_app(
    settings: AppSettings | None = None, *, runtime: ConsolidationRuntime | None = None
) -> FastAPI:
    """Build the app. Nothing touches the database until the lifespan starts."""
    runtime = runtime or ConsolidationRuntime(settings or get_app_settings())

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        try:
            async with runtime.lifespan():
                logger.info(
                    "omoi-os started on %s",
                    runtime.db.engine.url.render_as_string(),
                    extra={"action": "app_started"},
                )
                yield
        finally:
            runtime.db.dispose()
            logger.info("omoi-os stopped", extra={"action": "app_stopped"})

    app = FastAPI(
        title="omoi_os consolidation triggers",
        version="0.1.0",
        description="Decides when agent memories are consolidated; records each "
        "decision as a durable, queued job.",
        lifespan=lifespan,
    )
    app.state.runtime = runtime
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.include_router(consolidation_router(runtime), prefix=API_PREFIX)
    app.include_router(ops_router(runtime))
    return app


async def _http_error(request: Request, exc: Exception) -> Response:
    """FastAPI's answer, except that a 405 lists every method of the path in `Allow`
    (Starlette names only the first route that matched the path)."""
    assert isinstance(exc, StarletteHTTPException)
    methods = _methods_of(request.app, request.url.path) if exc.status_code == 405 else []
    if not methods:  # not a 405, or a path outside the schema (/docs …): as FastAPI does
        return await http_exception_handler(request, exc)
    headers = {"Allow": ", ".join([*methods, "OPTIONS"])}
    if request.method == "OPTIONS":  # what may be done here: answered, not refused
        return Response(status_code=204, headers=headers)
    return JSONResponse({"detail": exc.detail}, status_code=405, headers=headers)


def _methods_of(app: FastAPI, path: str) -> list[str]:
    """The methods the OpenAPI schema documents for `path` (HEAD goes with GET)."""
    methods: set[str] = set()
    for template, operations in app.openapi()["paths"].items():
        pattern = re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template))
        if re.fullmatch(pattern, path):
            methods |= {method.upper() for method in operations}
    if "GET" in methods:
        methods.add("HEAD")
    return sorted(methods)
