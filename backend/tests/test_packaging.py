"""The built wheel, installed into a fresh virtualenv with no source tree, migrates
and serves from an empty directory, on both databases, and leaves a host's own
Alembic history alone.

The fresh virtualenv gets the wheel alone (`--no-deps`); its dependencies are lent by
this run's environment through a path entry, which does not activate the editable
install living there, so every `omoi_os` module, and every migration script, comes
from the wheel. No subprocess inherits PYTHONPATH (which may name a source tree), so
nothing but the wheel can be imported as `omoi_os`. `pip check` then proves the
wheel's declared dependencies are met.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from setuptools import find_packages
from sqlalchemy import text

from omoi_os import migrations
from omoi_os.services.database import DatabaseService
from tests.support.servers import cli_env, serve

pytestmark = pytest.mark.packaging

REPOSITORY = Path(__file__).resolve().parents[2]
_IGNORE = {"ignore": shutil.ignore_patterns("__pycache__", "*.egg-info", "tests")}


@pytest.fixture(scope="module")
def installed_wheel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh virtualenv with the wheel installed; yields its bin directory."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"  # a copy: building leaves build/ and egg-info behind
    source.mkdir()
    for part in ("pyproject.toml", "README.md", "backend"):
        copy = shutil.copytree if (REPOSITORY / part).is_dir() else shutil.copy
        copy(REPOSITORY / part, source / part, **_IGNORE if part == "backend" else {})
    _run(
        sys.executable, "-m", "pip", "wheel", str(source), "--no-deps",
        "--no-build-isolation", "--quiet", "-w", str(work / "dist"),
    )  # fmt: skip
    (wheel,) = (work / "dist").glob("omoi_os-*.whl")
    venv = work / "venv"
    _run(sys.executable, "-m", "venv", str(venv))
    python = venv / "bin" / "python"
    _run(str(python), "-m", "pip", "install", "--quiet", "--no-deps", str(wheel))
    site_packages = _run(
        str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    )
    (Path(site_packages.strip()) / "lent-dependencies.pth").write_text(
        sysconfig.get_paths()["purelib"] + "\n"
    )
    yield venv / "bin"


def _without_pythonpath(env: dict[str, str]) -> dict[str, str]:
    """`env` without PYTHONPATH: a source tree on it would shadow the installed wheel."""
    return {key: value for key, value in env.items() if key != "PYTHONPATH"}


def _run(*command: str, cwd: Path | None = None) -> str:
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
        env=_without_pythonpath(dict(os.environ)),
    )
    assert result.returncode == 0, f"{command}: {result.stdout}\n{result.stderr}"
    return result.stdout


def test_the_wheel_carries_every_package_and_the_migrations(installed_wheel: Path) -> None:
    (wheel,) = (installed_wheel.parents[1] / "dist").glob("omoi_os-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for package in find_packages(REPOSITORY / "backend", include=["omoi_os*"]):
        assert f"{package.replace('.', '/')}/__init__.py" in names, package
    assert "omoi_os/alembic/env.py" in names
    assert "omoi_os/alembic/script.py.mako" in names
    for script in sorted((REPOSITORY / "backend" / "migrations" / "versions").glob("*.py")):
        assert f"omoi_os/alembic/versions/{script.name}" in names, script.name
    assert "omoi_os/alembic/versions/0002_cooldown_and_deferred_crossings.py" in names

    where = _run(
        str(installed_wheel / "python"),
        "-c",
        "import omoi_os, omoi_os.migrations as m; print(omoi_os.__file__); print(m.scripts_dir())",
    ).split()
    assert all(str(installed_wheel.parent) in path for path in where), where
    assert "No broken requirements" in _run(str(installed_wheel / "python"), "-m", "pip", "check")


def test_migrate_then_serve_from_an_empty_directory(
    installed_wheel: Path, empty_database_url: str, tmp_path: Path
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    env = _without_pythonpath(
        cli_env(tmp_path, database_url=empty_database_url, api_tokens="ops:" + "t" * 24)
    )
    migrate = subprocess.run(
        [str(installed_wheel / "omoi-os"), "migrate"],
        env=env, cwd=empty, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert migrate.returncode == 0, migrate.stderr
    assert migrate.stdout.strip() == f"database migrated to {migrations.head_revision()}"

    with serve(env, command=str(installed_wheel / "omoi-os"), cwd=empty) as server:
        health = httpx.get(f"{server.base_url}/healthz", timeout=10)

    assert (health.status_code, health.json()["status"]) == (200, "ok")
    assert list(empty.iterdir()) == []  # nothing written beside the user's files


def test_our_migrate_leaves_a_hosts_alembic_version_as_it_was(
    installed_wheel: Path, empty_database_url: str, tmp_path: Path
) -> None:
    host = DatabaseService(empty_database_url)
    with host.transaction() as session:
        session.execute(text("CREATE TABLE alembic_version (version_num VARCHAR(32) PRIMARY KEY)"))
        session.execute(text("INSERT INTO alembic_version VALUES ('host_3c9d1e')"))
    env = _without_pythonpath(cli_env(tmp_path, database_url=empty_database_url))

    result = subprocess.run(
        [str(installed_wheel / "omoi-os"), "migrate"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    with host.read() as session:
        assert session.execute(text("SELECT version_num FROM alembic_version")).all() == [
            ("host_3c9d1e",)
        ]
    assert migrations.current_revision(host.engine) == migrations.head_revision()
    host.dispose()


HOST_FILE = """
import uuid

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from omoi_os import (
    AppSettings,
    ConsolidationRuntime,
    MemoryType,
    NewMemory,
    ProjectNotFound,
    ThresholdCheck,
    consolidation_router,
)

engine = create_async_engine("postgresql+psycopg_async://host/db")
runtime = ConsolidationRuntime(AppSettings(database_schema="omoi"), engine=engine)
app = FastAPI()
app.include_router(consolidation_router(runtime, memory_writes=False), prefix="/memory")


async def record(session: AsyncSession, workspace: str) -> int | None:
    project = await runtime.projects.ensure(workspace, name=workspace)
    project_id: uuid.UUID = project.id
    try:
        memory_id: int = await runtime.memories.add(
            session, project_id, NewMemory(memory_type=MemoryType.LEARNING, execution_summary="x")
        )
    except ProjectNotFound as missing:
        print(missing.project_id)
        return None
    check: ThresholdCheck = await runtime.memories.after_write(project_id)
    print(memory_id, check.unknown_project)
    return check.triggered_job_id
"""


def test_a_host_type_checks_against_the_installed_wheel(
    installed_wheel: Path, tmp_path: Path
) -> None:
    """`mypy --strict` on a host file, against the wheel (py.typed): a correct host
    passes, and a wrong one is caught (our annotations are read, not taken as Any)."""
    mypy = [sys.executable, "-m", "mypy", "--strict", "--no-incremental"]
    mypy += ["--python-executable", str(installed_wheel / "python")]
    good = tmp_path / "host.py"
    good.write_text(HOST_FILE)
    _run(*mypy, str(good), cwd=tmp_path)

    wrong = tmp_path / "wrong_host.py"
    wrong.write_text(HOST_FILE.replace("check: ThresholdCheck =", "check: str ="))
    result = subprocess.run(
        [*mypy, str(wrong)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
        env=_without_pythonpath(dict(os.environ)),
    )
    assert result.returncode == 1, result.stdout
    assert (
        'Incompatible types in assignment (expression has type "ThresholdCheck", '
        'variable has type "str")' in result.stdout
    )
