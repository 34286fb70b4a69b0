"""The standalone app (`omoi-os serve`): one host of the consolidation runtime among
others. Its lifespan starts and stops the runtime; the API is under /api/v1 behind
bearer tokens, health and metrics at the root."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

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
    app.add_exception_handler(StarletteHTTPException, _http_error_handler(app))
    app.include_router(consolidation_router(runtime), prefix=API_PREFIX)
    app.include_router(ops_router(runtime))
    return app


def _http_error_handler(app: FastAPI) -> Callable[[Request, Exception], Awaitable[Response]]:
    """FastAPI's answer to an HTTP error, except that a 405 lists every method of the
    path in `Allow` (Starlette names only the first route that matched the path)."""
    documented = _DocumentedMethods(app)

    async def answer(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        methods = documented.of(request.url.path) if exc.status_code == 405 else []
        if not methods:  # not a 405, or a path outside the schema (/docs …): as FastAPI does
            return await http_exception_handler(request, exc)
        headers = {"Allow": ", ".join([*methods, "OPTIONS"])}
        if request.method == "OPTIONS":  # what may be done here: answered, not refused
            return Response(status_code=204, headers=headers)
        return JSONResponse({"detail": exc.detail}, status_code=405, headers=headers)

    return answer


class _DocumentedMethods:
    """The methods `app`'s OpenAPI schema documents for a path (HEAD goes with GET).

    The schema, not `app.routes`: it is what a client is told, and from FastAPI 0.137 on
    `app.routes` is a tree of included routers. Its paths are compiled once per schema;
    FastAPI keeps the schema it built (0.137 on: until a route is added).
    """

    def __init__(self, app: FastAPI) -> None:
        self._app = app
        self._compiled: tuple[object, list[tuple[re.Pattern[str], frozenset[str]]]] = (None, [])

    def of(self, path: str) -> list[str]:
        """The methods of `path`, sorted; none for a path outside the schema."""
        methods: set[str] = set()
        for pattern, documented in self._patterns():
            if pattern.fullmatch(path):
                methods |= documented
        if "GET" in methods:
            methods.add("HEAD")
        return sorted(methods)

    def _patterns(self) -> list[tuple[re.Pattern[str], frozenset[str]]]:
        schema = self._app.openapi()
        compiled_for, patterns = self._compiled
        if compiled_for is not schema:
            patterns = _path_patterns(schema["paths"])
            self._compiled = (schema, patterns)
        return patterns


def _path_patterns(paths: dict[str, Any]) -> list[tuple[re.Pattern[str], frozenset[str]]]:
    """Each documented path as a pattern (a `{parameter}` is one segment), with its
    methods."""
    return [
        (
            re.compile(re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template))),
            frozenset(method.upper() for method in operations),
        )
        for template, operations in paths.items()
    ]
