"""Serving an app in this process, on a real socket, for tests that need what a
subprocess cannot take: an injected clock, the runtime's own objects. Uvicorn runs
the app's lifespan as `omoi-os serve` does; requests go over TCP with real timeouts."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from fastapi import FastAPI

from tests.support.polling import wait_for
from tests.support.servers import free_port


class AppServer:
    """A running uvicorn server on 127.0.0.1, in a thread of this process."""

    def __init__(self, server: uvicorn.Server, thread: threading.Thread, port: int) -> None:
        self._server = server
        self._thread = thread
        self.base_url = f"http://127.0.0.1:{port}"

    @property
    def running(self) -> bool:
        return self._thread.is_alive() and not self._server.should_exit


@contextmanager
def serve_app(app: FastAPI, *, startup_timeout: float = 30) -> Iterator[AppServer]:
    """Serve `app` (its lifespan started) until the block ends, then shut it down
    as SIGTERM would: the lifespan's shutdown runs before this returns."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    try:
        wait_for(
            lambda: server.started or not thread.is_alive(),
            timeout=startup_timeout,
            what="the app to start",
        )
        if not server.started:
            raise AssertionError("the app did not start (its lifespan failed?)")
        yield AppServer(server, thread, port)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        if thread.is_alive():
            raise AssertionError("the app did not shut down within 30 s")
