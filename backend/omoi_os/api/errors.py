"""The one place domain errors become HTTP responses, and the request-size limit."""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from omoi_os.api.schemas import ConflictBody, ErrorBody
from omoi_os.services.consolidation.errors import (
    ConsolidationAlreadyActive,
    JobNotFound,
    ProjectInactive,
    ProjectNotFound,
)

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024
DATABASE_RETRY_AFTER_SECONDS = 5

_ERROR_DOCS: dict[int, tuple[str, type[BaseModel]]] = {
    400: ("The body is not JSON", ErrorBody),
    401: ("Missing or wrong bearer token", ErrorBody),
    404: ("No such project or job", ErrorBody),
    409: ("The project is inactive, or already has an active job", ConflictBody),
    413: (f"Request body over {MAX_BODY_BYTES} bytes", ErrorBody),
    503: ("The database is unavailable", ErrorBody),
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for the error statuses a route can answer with."""
    return {
        code: {"description": _ERROR_DOCS[code][0], "model": _ERROR_DOCS[code][1]} for code in codes
    }


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(ProjectNotFound, _not_found)
    app.add_exception_handler(JobNotFound, _not_found)
    app.add_exception_handler(ProjectInactive, _conflict)
    app.add_exception_handler(ConsolidationAlreadyActive, _already_active)
    app.add_exception_handler(OperationalError, _database_unavailable)
    app.add_exception_handler(PoolTimeout, _database_unavailable)


async def _invalid_request(_: Request, exc: Exception) -> Response:
    """FastAPI's 422, rendered ASCII-safe: the echoed input may hold a lone surrogate,
    which JSON can escape but UTF-8 cannot encode (FastAPI's own answer is a 500)."""
    assert isinstance(exc, RequestValidationError)
    body = json.dumps({"detail": jsonable_encoder(exc.errors())}, ensure_ascii=True)
    return Response(body, status_code=422, media_type="application/json")


async def _http_error(request: Request, exc: Exception) -> Response:
    """FastAPI's answer, except that a 405 lists every method of the path in `Allow`
    (Starlette names only the first route that matched the path)."""
    assert isinstance(exc, StarletteHTTPException)
    methods = _methods_of(request.app, request.url.path) if exc.status_code == 405 else []
    if not methods:  # not a 405, or a path outside the schema (/docs …): as FastAPI does
        return await http_exception_handler(request, exc)
    headers = {"Allow": ", ".join(methods)}
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


async def _not_found(_: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=404)


async def _conflict(_: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(exc), "active_job_id": None}, status_code=409)


async def _already_active(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ConsolidationAlreadyActive)
    body = {"detail": str(exc), "active_job_id": exc.active_job_id}
    return JSONResponse(body, status_code=409)


async def _database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    # Only connection-level failures mean "unavailable"; anything else is a bug (500).
    if isinstance(exc, DBAPIError) and not _is_connection_failure(exc):
        raise exc
    logger.warning(
        "database unavailable during %s %s: %s",
        request.method,
        request.url.path,
        exc.__class__.__name__,
    )
    return JSONResponse(
        {"detail": "the database is unavailable; retry shortly"},
        status_code=503,
        headers={"Retry-After": str(DATABASE_RETRY_AFTER_SECONDS)},
    )


def _is_connection_failure(exc: DBAPIError) -> bool:
    return bool(exc.connection_invalidated) or isinstance(exc, OperationalError)


class BodySizeLimit:
    """Answer 413 to any request whose body exceeds `limit` bytes, declared or streamed,
    before the route runs. The body (at most `limit` bytes) is read first and then
    handed to the app, so a route never sees half a body."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._reject(scope, send)
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            body += message.get("body", b"")
            if len(body) > self.limit:
                await self._reject(scope, send)
                return
            if not message.get("more_body", False):
                break
        await self.app(scope, _replay(bytes(body), receive), send)

    async def _reject(self, scope: Scope, send: Send) -> None:
        response = JSONResponse(
            {"detail": f"request body larger than {self.limit} bytes"}, status_code=413
        )
        await response(scope, _disconnected, send)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that first returns the whole buffered body, then defers to the client."""
    delivered = False

    async def replay() -> Message:
        nonlocal delivered
        if delivered:
            return await receive()
        delivered = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


async def _disconnected() -> Message:
    return {"type": "http.disconnect"}
