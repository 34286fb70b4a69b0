"""The one place our errors become HTTP answers, and the request-size limit.

Both live in `ConsolidationRoute`, the route class of our routers, rather than in
app-wide exception handlers or middleware: inside a host's app they apply to our
routes only, and the host's own handlers keep answering for the host's routes.
"""

import json
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from omoi_os.api.schemas import ConflictBody, ErrorBody
from omoi_os.errors import (
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
    401: ("Missing or wrong credentials", ErrorBody),
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


class BodyTooLarge(HTTPException):
    """Raised while reading the body. An HTTPException, because FastAPI turns any other
    exception raised there into a 400 before our route sees it."""

    def __init__(self) -> None:
        super().__init__(413, f"request body larger than {MAX_BODY_BYTES} bytes")


class _SizeLimitedRequest(Request):
    """A request whose body is read no further than `MAX_BODY_BYTES`, declared or
    streamed: a route never sees half a body, and a huge one is never buffered."""

    async def body(self) -> bytes:
        if not hasattr(self, "_body"):
            declared = self.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
                raise BodyTooLarge
            body = bytearray()
            async for chunk in self.stream():
                body += chunk
                if len(body) > MAX_BODY_BYTES:
                    raise BodyTooLarge
            self._body = bytes(body)
        return self._body


class ConsolidationRoute(APIRoute):
    """Our routes: the body limit, and our errors mapped to their answers."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handle(_SizeLimitedRequest(request.scope, request.receive))
            except Exception as exc:
                answer = _answer(request, exc)
                if answer is None:
                    raise
                return answer

        return route


def _answer(request: Request, exc: Exception) -> Response | None:
    """Our answer to `exc`, or None to let it propagate (to the host's handlers)."""
    if isinstance(exc, BodyTooLarge):
        return _error(exc.status_code, exc.detail)
    if isinstance(exc, RequestValidationError):
        return _invalid_request(exc)
    if isinstance(exc, ProjectNotFound | JobNotFound):
        return _error(404, str(exc))
    if isinstance(exc, ConsolidationAlreadyActive):
        return JSONResponse({"detail": str(exc), "active_job_id": exc.active_job_id}, 409)
    if isinstance(exc, ProjectInactive):
        return JSONResponse({"detail": str(exc), "active_job_id": None}, 409)
    if isinstance(exc, OperationalError | PoolTimeout) and _is_connection_failure(exc):
        return _database_unavailable(request, exc)
    return None


def _error(status: int, detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status)


def _invalid_request(exc: RequestValidationError) -> Response:
    """FastAPI's 422, rendered ASCII-safe: the echoed input may hold a lone surrogate,
    which JSON can escape but UTF-8 cannot encode (FastAPI's own answer is a 500)."""
    body = json.dumps({"detail": jsonable_encoder(exc.errors())}, ensure_ascii=True)
    return Response(body, status_code=422, media_type="application/json")


def _is_connection_failure(exc: Exception) -> bool:
    # Only connection-level failures mean "unavailable"; anything else is a bug (500).
    if isinstance(exc, PoolTimeout):
        return True
    return isinstance(exc, OperationalError) or (
        isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)
    )


def _database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    logger.warning(
        "database unavailable during %s %s: %s",
        request.method,
        request.url.path,
        exc.__class__.__name__,
        extra={"action": "database_unavailable", "path": request.url.path},
    )
    return JSONResponse(
        {"detail": "the database is unavailable; retry shortly"},
        status_code=503,
        headers={"Retry-After": str(DATABASE_RETRY_AFTER_SECONDS)},
    )
