"""The FastAPI app: its lifespan starts and stops the database, the trigger service
and the consolidation worker; its routes are all under /api/v1, behind bearer auth
(health and metrics at the root)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, Depends, FastAPI, Response

from omoi_os import migrations
from omoi_os.api.auth import require_principal
from omoi_os.api.deps import Services
from omoi_os.api.errors import BodySizeLimit, error_responses, install_error_handlers
from omoi_os.api.routes import jobs, projects, system
from omoi_os.config import AppSettings, get_app_settings

logger = logging.getLogger(__name__)

API_PREFIX = "/api/v1"
SHUTDOWN_TIMEOUT_SECONDS = 10.0


def create_app(settings: AppSettings | None = None) -> FastAPI:
    """Build the app. Nothing touches the database until the lifespan starts."""
    app = FastAPI(
        title="omoi_os consolidation triggers",
        version="0.1.0",
        description="Decides when agent memories are consolidated; records each "
        "decision as a durable, queued job.",
        lifespan=_lifespan,
    )
    app.state.settings = settings or get_app_settings()
    install_error_handlers(app)
    app.add_middleware(BodySizeLimit)

    api = APIRouter(
        prefix=API_PREFIX,
        dependencies=[Depends(require_principal)],
        responses=error_responses(401, 413, 503),
    )
    api.include_router(projects.router)
    api.include_router(jobs.router)
    api.include_router(system.router, include_in_schema=True)
    app.include_router(api)
    app.add_api_route(
        "/healthz",
        system.health,
        methods=["GET"],
        tags=["system"],
        response_model=None,
        responses=system.HEALTH_RESPONSES,
    )
    app.add_api_route(
        "/metrics", system.metrics, methods=["GET"], tags=["system"], response_class=Response
    )
    return app


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: AppSettings = app.state.settings
    services = Services.build(settings)
    app.state.services = services
    try:
        await asyncio.to_thread(migrations.ensure_current, services.db.engine)
        services.triggers.start()
        if settings.worker_enabled:
            services.worker.start()
        logger.info("omoi-os started on %s", services.db.engine.url.render_as_string())
        yield
    finally:
        # The worker first: it hands back its job after the batch in progress.
        await asyncio.to_thread(services.worker.stop, SHUTDOWN_TIMEOUT_SECONDS)
        await asyncio.to_thread(services.triggers.stop, SHUTDOWN_TIMEOUT_SECONDS)
        await asyncio.to_thread(services.db.dispose)
        logger.info("omoi-os stopped")
