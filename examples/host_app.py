"""A host backend that embeds omoi_os consolidation: the shape of "Inside your
FastAPI app" in the README, small enough to read in one go, and run by the tests.

The host has its own async engine and sessions, its own table of lessons, its own
authentication (API keys), its own lifespan state and error format. Its workspaces
are our projects, keyed by the workspace's name (`projects.ensure`); its lesson route
writes its own row and ours in one transaction of its own (`memories.add`), then runs
our threshold check once committed (`memories.after_write`), and reads back what
consolidation decided (`memories.list`). Our routes go under its /memory prefix,
behind its authentication, without our memory-write route; our scheduler and worker
run while its app runs. Our tables may live in a schema of their own
(OMOI_DATABASE_SCHEMA=omoi on PostgreSQL), beside tables of the host's named like ours.

    omoi-os migrate                                  # our tables (OMOI_DATABASE_URL)
    HOST_DATABASE_URL=sqlite+aiosqlite:///host.db uvicorn examples.host_app:app
"""

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

import sqlalchemy as sa
from fastapi import Depends, FastAPI, Header, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from omoi_os import (
    AppSettings,
    ConsolidationRuntime,
    MemoryTier,
    MemoryType,
    NewMemory,
    consolidation_router,
    ops_router,
)

DATABASE_URL = os.environ.get("HOST_DATABASE_URL", "sqlite+aiosqlite:///host.db")
API_KEYS = {"key-of-alice-0123456789": "alice", "key-of-bob-0123456789": "bob"}

# The host's own table (its migrations would make it; here its lifespan does).
host_metadata = sa.MetaData()
lessons = sa.Table(
    "lessons",
    host_metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("workspace", sa.String(100), nullable=False),
    sa.Column("summary", sa.Text, nullable=False),
)

# The host's own async engine and sessions. Our scheduler and worker threads get a
# small pool of their own on the same database (an async engine's connections belong
# to its event loop); our memory rows are written in the host's sessions.
engine = create_async_engine(DATABASE_URL)
Session = async_sessionmaker(engine, expire_on_commit=False)
consolidation = ConsolidationRuntime(
    AppSettings(consolidation_threshold=10, consolidation_cooldown=0), engine=engine
)


def current_user(x_api_key: Annotated[str | None, Header()] = None) -> str:
    """The host's authentication: an API key names the user."""
    if x_api_key not in API_KEYS:
        raise HTTPException(status_code=403, detail="unknown API key")
    return API_KEYS[x_api_key]


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    app.state.started_by = "host lifespan"  # the host's own state
    async with engine.begin() as connection:
        await connection.run_sync(host_metadata.create_all)
    async with consolidation.lifespan():  # our scheduler and worker, started and stopped
        yield
    await engine.dispose()


app = FastAPI(title="Agent platform", lifespan=lifespan)
app.include_router(
    consolidation_router(consolidation, principal=current_user, memory_writes=False),
    prefix="/memory",
)
app.include_router(ops_router(consolidation), prefix="/memory")


@app.exception_handler(RequestValidationError)
async def host_validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    """The host's own error format, for its own routes."""
    return JSONResponse({"error": "invalid request", "fields": len(exc.errors())}, 400)


class Lesson(BaseModel):
    summary: str
    kind: MemoryType = MemoryType.LEARNING


@app.post("/workspaces/{workspace}/lessons", status_code=201)
async def record_lesson(
    workspace: str, lesson: Lesson, user: Annotated[str, Depends(current_user)]
) -> dict[str, object]:
    """The host's own write and our memory in one transaction of the host's, then our
    threshold check. A failing check is logged and reported, never raised."""
    project = await consolidation.projects.ensure(workspace, name=f"workspace {workspace}")
    async with Session.begin() as session:
        inserted = await session.execute(
            lessons.insert()
            .values(workspace=workspace, summary=lesson.summary)
            .returning(lessons.c.id)
        )
        lesson_id = inserted.scalar_one()
        memory = NewMemory(
            memory_type=lesson.kind,
            execution_summary=lesson.summary,
            metadata={"lesson_id": lesson_id},
        )
        memory_id = await consolidation.memories.add(session, project.id, memory)
    check = await consolidation.memories.after_write(project.id)  # after the commit
    return {
        "lesson_id": lesson_id,
        "memory_id": memory_id,
        "project_id": str(project.id),
        "recorded_by": user,
        "consolidation_job_id": check.triggered_job_id,
        "threshold_check_failed": check.failed,
    }


@app.get("/workspaces/{workspace}/hot")
async def hot_lessons(
    workspace: str, _: Annotated[str, Depends(current_user)]
) -> list[dict[str, object]]:
    """What consolidation decided: the workspace's hot memories, best first, mapped
    back to the host's own lessons through their metadata."""
    project = await consolidation.projects.ensure(workspace)
    page = await consolidation.memories.list(
        project.id, tier=MemoryTier.HOT, order="score", limit=10
    )
    return [
        {"lesson_id": (memory.metadata or {}).get("lesson_id"), "score": memory.score}
        for memory in page.items
    ]


@app.get("/whoami")
def whoami(user: Annotated[str, Depends(current_user)]) -> dict[str, str]:
    return {"user": user, "started_by": app.state.started_by}
