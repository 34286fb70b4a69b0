"""Running the real `omoi-os` console script as a subprocess, for end-to-end tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.support.clocks import quiet_schedule

OMOI_OS = str(Path(sys.executable).parent / "omoi-os")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cli_env(home: Path, **settings: str) -> dict[str, str]:
    """A clean environment: no inherited OMOI_* settings, a private home, and a
    schedule that does not tick during the test unless the test gives one."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("OMOI_")}
    env |= {"HOME": str(home), "XDG_DATA_HOME": str(home / "data")}
    settings = {"consolidation_schedule": quiet_schedule()} | settings
    return env | {f"OMOI_{key.upper()}": value for key, value in settings.items()}


def run_cli(
    *args: str, env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [OMOI_OS, *args], env=env, capture_output=True, text=True, timeout=timeout
    )


def run_python(
    code: str, *, cwd: Path, home: Path, **settings: str
) -> subprocess.CompletedProcess[str]:
    """Run `code` in a fresh interpreter with a bare environment (no inherited OMOI_*)."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "XDG_DATA_HOME": str(home / "d")}
    env |= {f"OMOI_{key.upper()}": value for key, value in settings.items()}
    return subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )


class Server:
    """A running `omoi-os serve`; its output is drained continuously by a thread, so
    the process never blocks on a full pipe."""

    def __init__(self, process: subprocess.Popen[str], base_url: str) -> None:
        self.process = process
        self.base_url = base_url
        self._lines: list[str] = []
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.append(line)
        self.process.stdout.close()

    def output(self) -> str:
        return "".join(self._lines)

    def wait_for_output(self, text: str, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.output():
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} not in the output:\n{self.output()}")
            time.sleep(0.05)

    def stop(self, timeout: float = 30) -> float:
        """SIGTERM the server and wait for it; returns how long it took to exit."""
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout)
        return time.monotonic() - started

    def finish(self) -> None:
        self._reader.join(timeout=10)


@contextmanager
def serve(
    env: dict[str, str],
    *,
    startup_timeout: float = 30,
    check_exit: bool = True,
    command: str = OMOI_OS,
    cwd: Path | None = None,
) -> Iterator[Server]:
    """Start `omoi-os serve` (`command`) on a free port; SIGTERM it afterwards and
    (unless the test kills it on purpose: check_exit=False) require a clean exit."""
    port = free_port()
    process = subprocess.Popen(
        [command, "serve", "--port", str(port)],
        env=env,
        cwd=cwd,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    server = Server(process, f"http://127.0.0.1:{port}")
    try:
        _wait_healthy(server, startup_timeout)
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                raise AssertionError("omoi-os serve did not stop within 20 s of SIGTERM") from None
        server.finish()
    if not check_exit:
        return
    # Uvicorn re-raises SIGTERM after its graceful shutdown, so a clean stop ends
    # "killed by SIGTERM" (as systemd and Kubernetes expect), not with exit code 0.
    assert process.returncode in (0, -signal.SIGTERM), server.output()
    assert "Application shutdown complete" in server.output()


def _wait_healthy(server: Server, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise AssertionError(f"omoi-os serve exited early:\n{server.output()}")
        try:
            if httpx.get(f"{server.base_url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"omoi-os serve was not healthy within {timeout} s")
