"""`ConsolidationRoute`, the route class of our routers: the body limit and its media
type, query parameters given once, HEAD answered as GET, and our errors answered.

All of it lives in the route class rather than in app-wide exception handlers or
middleware: inside a host's app it applies to our routes only, and the host's own
handlers keep answering for the host's routes.
"""

import json
from collections.abc import Callable, Coroutine, Iterator
from types import UnionType
from typing import Any, TypeVar, Union, get_args, get_origin

from fastapi import Request
from fastapi.dependencies.models import Dependant
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute, APIRouter

from omoi_os.api.body_limit import BodyTooLarge, SizeLimitedRequest
from omoi_os.api.errors import answer_to, error_response

T = TypeVar("T", bound=Callable[..., Any])

Handler = Callable[[Request], Coroutine[Any, Any, Response]]

_SEQUENCES = (list, set, frozenset, tuple)


class ConsolidationRoute(APIRoute):
    """Our routes: the body limit and its media type, query parameters given once, and
    our errors mapped to their answers."""

    def get_route_handler(self) -> Handler:
        handle = super().get_route_handler()
        single = _single_valued_query_parameters(self)
        takes_body = self.body_field is not None

        async def route(request: Request) -> Response:
            refused = _refuse_before_reading(request, single, takes_body)
            if refused is not None:
                return refused
            response = await _handled(handle, request)
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


async def _handled(handle: Handler, request: Request) -> Response:
    """The route's response, or our answer to what it raised (anything we do not
    answer propagates, to the host's handlers)."""
    try:
        return await handle(SizeLimitedRequest(request.scope, request.receive))
    except BodyTooLarge as exc:
        return error_response(exc.status_code, exc.detail)
    except RequestValidationError as exc:
        return _invalid_request(exc)
    except Exception as exc:
        answer = answer_to(request, exc)
        if answer is None:
            raise
        return answer


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


def _refuse_before_reading(request: Request, single: set[str], takes_body: bool) -> Response | None:
    """415 for a body that is not JSON; 422 for a one-value query parameter given more
    than once (FastAPI would silently keep the last)."""
    if takes_body and _has_body(request) and not _is_json(request.headers.get("content-type")):
        return error_response(415, "the body must be JSON (Content-Type: application/json)")
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


def _invalid_request(exc: RequestValidationError) -> Response:
    """FastAPI's 422, rendered ASCII-safe: the echoed input may hold a lone surrogate,
    which JSON can escape but UTF-8 cannot encode (FastAPI's own answer is a 500)."""
    body = json.dumps({"detail": jsonable_encoder(exc.errors())}, ensure_ascii=True)
    return Response(body, status_code=422, media_type="application/json")
