"""Our HTTP API as routers a host application includes in its own app.

    app.include_router(consolidation_router(runtime, principal=host_user_name),
                       prefix="/agent-memory")
    app.include_router(ops_router(runtime), prefix="/agent-memory")  # optional

`consolidation_router` carries the projects, memories, jobs and schedule routes
(their paths relative to the host's prefix: /agent-memory/projects, …);
`principal` is the host's FastAPI dependency that authenticates the caller and
returns its name (recorded as `triggered_by`); without it, bearer tokens from
`OMOI_API_TOKENS` are required. `ops_router` carries `/healthz` and `/metrics` (no
authentication), for hosts that want ours rather than registering
`runtime.metrics.collector()` in their own registry.
"""

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends

from omoi_os.api.auth import bearer_principal
from omoi_os.api.deps import bind_principal, bind_runtime
from omoi_os.api.errors import error_responses
from omoi_os.api.routes import jobs, memories, projects, system
from omoi_os.api.routes import memory_writes as memory_writes_routes
from omoi_os.runtime import ConsolidationRuntime


def consolidation_router(
    runtime: ConsolidationRuntime,
    *,
    principal: Callable[..., Any] | None = None,
    memory_writes: bool = True,
) -> APIRouter:
    """The API routes, served by `runtime`, behind `principal` (default: bearer tokens).
    Their paths are relative to the prefix the host includes the router under.
    `memory_writes=False` leaves out `POST /projects/{id}/memories`, for a host that
    writes memories with its own code (`runtime.memories.add`)."""
    if principal is None:
        tokens = {
            name: token.get_secret_value() for name, token in runtime.settings.api_tokens.items()
        }
        principal = bearer_principal(tokens)
    router = APIRouter(
        dependencies=[Depends(bind_runtime(runtime)), Depends(bind_principal(principal))],
        responses=error_responses(401, 413, 503),
    )
    router.include_router(projects.router)
    router.include_router(memories.router)
    if memory_writes:
        router.include_router(memory_writes_routes.router)
    router.include_router(jobs.router)
    router.include_router(system.router)
    return router


def ops_router(runtime: ConsolidationRuntime) -> APIRouter:
    """`GET /healthz` and `GET /metrics` of `runtime`, without authentication."""
    router = APIRouter(dependencies=[Depends(bind_runtime(runtime))])
    router.include_router(system.ops_router)
    return router
