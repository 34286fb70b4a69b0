"""What routes depend on: the runtime that serves them and the caller's name.

A router is bound to one runtime when it is built (`consolidation_router(runtime)`),
so a host can include routers of two runtimes side by side. The binding is a
router-level dependency that runs before each route's own and leaves both values on
the request; the routes read them back through `Runtime` and `Principal`.
"""

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, Request

from omoi_os.runtime import ConsolidationRuntime

_RUNTIME = "omoi_os_runtime"
_PRINCIPAL = "omoi_os_principal"


def bind_runtime(runtime: ConsolidationRuntime) -> Callable[[Request], None]:
    """A dependency that makes `runtime` the one serving the request."""

    def bind(request: Request) -> None:
        setattr(request.state, _RUNTIME, runtime)

    return bind


def bind_principal(principal: Callable[..., Any]) -> Callable[..., None]:
    """A dependency that runs the host's `principal` dependency and keeps its answer
    (the caller's name, recorded as `triggered_by`)."""

    def bind(request: Request, name: Annotated[str, Depends(principal)]) -> None:
        setattr(request.state, _PRINCIPAL, name)

    return bind


def current_runtime(request: Request) -> ConsolidationRuntime:
    runtime: ConsolidationRuntime = getattr(request.state, _RUNTIME)
    return runtime


def current_principal(request: Request) -> str:
    return str(getattr(request.state, _PRINCIPAL))


Runtime = Annotated[ConsolidationRuntime, Depends(current_runtime)]
Principal = Annotated[str, Depends(current_principal)]
