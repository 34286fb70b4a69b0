"""The one place our errors become HTTP answers, and the request-size limit.

Both live in `ConsolidationRoute`, the route class of our routers, rather than in
app-wide exception handlers or middleware: inside a host's app they apply to our
routes only, and the host's own handlers keep answering for the host's routes.
"""

import json
import logging
from collections.abc import Callable, Coroutine, Iterator
from types import UnionType
from typing import Any, TypeVar, Union, get_args, get_origin

from fastapi import HTTPException, Request
from fastapi.dependencies.models import Dependant
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute, APIRouter
from pydantic import BaseModel
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from omoi_os.api.schemas import ConflictBody, ErrorBody
from omoi_os.errors import (
    ConsolidationAlreadyActive,
    JobNotFound,
    JobStateConflict,
    ProjectInactive,
    ProjectNotFound,
)

logger = logging.getLogger(__name__)

T = TypeVar("T", bound=Callable[..., Any])

# Above the largest body the schema admits, however it is escaped: 20,000 characters
# of execution_summary, each at most 12 bytes as JSON (a \\uXXXX\\uXXXX pair), plus the
# other fields. A valid request is never refused for its size.
MAX_BODY_BYTES = 256 * 1024
DATABASE_RETRY_AFTER_SECONDS = 5

_ERROR_DOCS: dict[int, tuple[str, type[BaseModel]]] = {
    400: ("The body is not JSON", ErrorBody),
    401: ("Missing or wrong credentials", ErrorBody),
    404: ("No such project or job", ErrorBody),
    409: (
        "The project is inactive or already has an active job, or the job's status does "
        "not allow it",
        ConflictBody,
    ),
    413: (f"Request body over {MAX_BODY_BYTES} bytes", ErrorBody),
    415: ("The body is not JSON (Content-Type must be application/json)", ErrorBody),
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
    """Our routes: the body limit and its media type, query parameters given once, and
    our errors mapped to their answers."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()
        single = _single_valued_query_parameters(self)
        takes_body = self.body_field is not None

        async def route(request: Request) -> Response:
            refused = _refuse_before_reading(request, single, takes_body)
            if refused is not None:
                return refused
            try:
                response = await handle(_SizeLimitedRequest(request.scope, request.receive))
            except Exception as exc:
                answer = _answer(request, exc)
                if answer is None:
                    raise
                response = answer
            if request.method == "HEAD":  # GET's headers (Content-Length too), no body
                response.body = b""
            return response

        return route


def get_and_head(router: APIRouter, path: str, **options: Any) -> Callable[[T], T]:
    """Register an endpoint for GET (documented) and for HEAD (answered as GET is,
    without a body: load balancers probe with HEAD)."""

    def register(endpoint: T) -> T:
        router.add_api_route(path, endpoint, methods=["GET"], **options)
        router.add_api_route(path, endpoint, methods=["HEAD"], include_in_schema=False, **options)
        return endpoint

    return register


def _single_valued_query_parameters(route: APIRoute) -> set[str]:
    """The query parameters of `route` that take one value (not a list)."""
    return {
        field.alias
        for field in _query_fields(route.dependant)
        if not _takes_many(field.field_info.annotation)
    }


def _query_fields(dependant: Dependant) -> Iterator[Any]:
    yield from dependant.query_params
    for dependency in dependant.dependencies:
        yield from _query_fields(dependency)


def _takes_many(annotation: Any) -> bool:
    options = get_args(annotation) if get_origin(annotation) in (Union, UnionType) else ()
    return any(
        get_origin(option) in _SEQUENCES or option in _SEQUENCES
        for option in (options or (annotation,))
    )


_SEQUENCES = (list, set, frozenset, tuple)


def _refuse_before_reading(request: Request, single: set[str], takes_body: bool) -> Response | None:
    """415 for a body that is not JSON; 422 for a one-value query parameter given more
    than once (FastAPI would silently keep the last)."""
    if takes_body and _has_body(request) and not _is_json(request.headers.get("content-type")):
        return _error(415, "the body must be JSON (Content-Type: application/json)")
    repeated = sorted(name for name in single if len(request.query_params.getlist(name)) > 1)
    if repeated:
        errors = [
            {"type": "repeated", "loc": ["query", name], "msg": "given more than once"}
            for name in repeated
        ]
        return JSONResponse({"detail": errors}, status_code=422)
    return None


def _has_body(request: Request) -> bool:
    length = request.headers.get("content-length")
    return "transfer-encoding" in request.headers or (length is not None and length != "0")


def _is_json(content_type: str | None) -> bool:
    if content_type is None:  # no type given: read as JSON, as FastAPI does
        return True
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


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
        return JSONResponse({"detail": str(exc), "active_job_id": exc.active_job_id}, 409)
    if isinstance(exc, JobStateConflict):
        return JSONResponse({"detail": str(exc), "status": exc.status}, 409)
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
