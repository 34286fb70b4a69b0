"""A host backend that embeds omoi_os consolidation: the shape of "Inside your
FastAPI app" in the README, small enough to read in one go, and run by the tests.

The host has its own engine (one pool for both), its own authentication (API keys),
its own lifespan state, its own error format, and its own route that writes a memory
and then runs our threshold check. Our routes go under its /consolidation prefix,
behind its authentication; our scheduler and worker run while its app runs.

    HOST_DATABASE_URL=sqlite:///host.db omoi-os migrate   # or migrations.upgrade(...)
    HOST_DATABASE_URL=sqlite:///host.db uvicorn examples.host_app:app
"""

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends, FastAPI, Header, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.orm import sessionmaker

from omoi_os import (
    AppSettings,
    ConsolidationRuntime,
    MemoryType,
    consolidation_router,
    create_database_engine,
    ops_router,
)
from omoi_os.models import TaskMemory

DATABASE_URL = os.environ.get("HOST_DATABASE_URL", "sqlite:///host.db")
API_KEYS = {"key-of-alice-0123456789": "alice", "key-of-bob-0123456789": "bob"}

# The host's own engine and sessions; the consolidation runtime shares the engine (one
# pool). On PostgreSQL sqlalchemy.create_engine(url) serves as well; on SQLite this one
# sets WAL, a busy timeout and one writer at a time, which concurrent threads need.
engine = create_database_engine(DATABASE_URL)
Session = sessionmaker(engine, expire_on_commit=False)
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
    async with consolidation.lifespan():  # our scheduler and worker, started and stopped
        yield


app = FastAPI(title="Agent platform", lifespan=lifespan)
app.include_router(
    consolidation_router(consolidation, principal=current_user), prefix="/consolidation"
)
app.include_router(ops_router(consolidation), prefix="/consolidation")


@app.exception_handler(RequestValidationError)
async def host_validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    """The host's own error format, for its own routes."""
    return JSONResponse({"error": "invalid request", "fields": len(exc.errors())}, 400)


class Lesson(BaseModel):
    summary: str
    kind: MemoryType = MemoryType.LEARNING


@app.post("/agents/{project_id}/lessons", status_code=201)
async def record_lesson(
    project_id: uuid.UUID, lesson: Lesson, user: Annotated[str, Depends(current_user)]
) -> dict[str, object]:
    """The host's own memory write, then our threshold check. The write commits first;
    a failing check is logged and reported, never raised: the lesson is kept."""
    with Session.begin() as session:
        memory = TaskMemory(
            project_id=project_id, memory_type=lesson.kind, execution_summary=lesson.summary
        )
        session.add(memory)
    check = await consolidation.memories.after_write(project_id)
    return {
        "lesson_id": memory.id,
        "recorded_by": user,
        "consolidation_job_id": check.triggered_job_id,
        "threshold_check_failed": check.failed,
    }


@app.get("/whoami")
def whoami(user: Annotated[str, Depends(current_user)]) -> dict[str, str]:
    return {"user": user, "started_by": app.state.started_by}
