"""The one place our errors become HTTP answers: a service's refusal (no such project,
job or memory, an inactive project, a job already active, a status that does not
allow it) and a database that cannot be reached. `ConsolidationRoute` applies it to
our routes only; `error_responses` documents the answers in the OpenAPI schema.
"""

import logging
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from omoi_os.api.body_limit import MAX_BODY_BYTES
from omoi_os.api.schemas import ConflictBody, ErrorBody
from omoi_os.errors import (
    ConsolidationAlreadyActive,
    JobAlreadyRetried,
    JobNotFound,
    JobStateConflict,
    MemoryNotFound,
    ProjectInactive,
    ProjectKeyTaken,
    ProjectNotFound,
)

logger = logging.getLogger(__name__)

DATABASE_RETRY_AFTER_SECONDS = 5

_ERROR_DOCS: dict[int, tuple[str, type[BaseModel]]] = {
    400: ("The body is not JSON", ErrorBody),
    401: ("Missing or wrong credentials", ErrorBody),
    404: ("No such project, job or memory", ErrorBody),
    409: (
        "The project is inactive or already has an active job, the job's status does "
        "not allow it, or the external key is another project's",
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


def answer_to(request: Request, exc: Exception) -> Response | None:
    """Our answer to `exc`, or None to let it propagate (to the host's handlers)."""
    if isinstance(exc, ProjectNotFound | JobNotFound | MemoryNotFound):
        return error_response(404, str(exc))
    if isinstance(exc, ConsolidationAlreadyActive | ProjectInactive):
        return JSONResponse({"detail": str(exc), "active_job_id": exc.active_job_id}, 409)
    if isinstance(exc, ProjectKeyTaken):
        return JSONResponse({"detail": str(exc), "project_id": str(exc.project_id)}, 409)
    if isinstance(exc, JobAlreadyRetried):
        body = {"detail": str(exc), "status": exc.status, "retry_job_id": exc.retry_job_id}
        return JSONResponse(body, 409)
    if isinstance(exc, JobStateConflict):
        return JSONResponse({"detail": str(exc), "status": exc.status}, 409)
    # Only connection-level failures mean "unavailable"; any other database error is
    # a bug (500).
    if isinstance(exc, OperationalError | PoolTimeout):
        return _database_unavailable(request, exc)
    return None


def error_response(status: int, detail: str) -> JSONResponse:
    """The answer `{"detail": detail}` with `status`."""
    return JSONResponse({"detail": detail}, status_code=status)


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
