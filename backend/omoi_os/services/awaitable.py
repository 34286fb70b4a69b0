"""The naming rule of every public service method: the plain name is awaitable, and its
synchronous twin ends in `_sync`.

The services' database work is synchronous SQLAlchemy on worker threads; `awaitable`
makes the plain-named twin of a `_sync` method, which runs it through
`asyncio.to_thread`, so a host's event loop never waits on the database.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from typing import Any, Concatenate, ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")
S = TypeVar("S")


def awaitable(
    method: Callable[Concatenate[S, P], R],
) -> Callable[Concatenate[S, P], Coroutine[Any, Any, R]]:
    """The awaitable twin of the method `name_sync`, to be bound as `name`."""
    sync_name, name = method.__name__, method.__name__.removesuffix("_sync")

    @functools.wraps(method)
    async def twin(self: S, /, *args: P.args, **kwargs: P.kwargs) -> R:
        # Looked up on the instance at each call: a subclass's (or a test's) own
        # `name_sync` is what the awaitable form runs too.
        sync: Callable[P, R] = getattr(self, sync_name)
        return await asyncio.to_thread(sync, *args, **kwargs)

    twin.__name__ = name
    twin.__qualname__ = method.__qualname__.removesuffix("_sync")
    twin.__doc__ = (
        f"{method.__doc__ or ''}\n\nAwaitable; `{method.__name__}` is its synchronous twin."
    )
    return twin
