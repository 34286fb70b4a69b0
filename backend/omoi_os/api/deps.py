"""What routes depend on: the app's services (built once, in the lifespan)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request
from prometheus_client import CollectorRegistry

from omoi_os.config import AppSettings
from omoi_os.metrics import build_registry
from omoi_os.services.consolidation.trigger_service import ConsolidationTriggerService
from omoi_os.services.consolidation.worker import ConsolidationWorker
from omoi_os.services.database import DatabaseService
from omoi_os.services.memory import MemoryService
from omoi_os.services.projects import ProjectService
from omoi_os.services.task_queue import TaskQueueService


@dataclass
class Services:
    """The collaborators of one running app."""

    settings: AppSettings
    db: DatabaseService
    triggers: ConsolidationTriggerService
    queue: TaskQueueService
    projects: ProjectService
    memories: MemoryService
    worker: ConsolidationWorker
    metrics_registry: CollectorRegistry
    api_tokens: dict[str, str] = field(repr=False)

    @classmethod
    def build(cls, settings: AppSettings) -> Services:
        db = DatabaseService(settings=settings)
        queue = TaskQueueService(db)
        triggers = ConsolidationTriggerService(db, settings=settings, task_queue=queue)
        return cls(
            settings=settings,
            db=db,
            triggers=triggers,
            queue=queue,
            projects=ProjectService(db),
            memories=MemoryService(db, triggers),
            worker=ConsolidationWorker(db, settings=settings),
            metrics_registry=build_registry(db),
            api_tokens={
                name: token.get_secret_value() for name, token in settings.api_tokens.items()
            },
        )


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


AppServices = Annotated[Services, Depends(get_services)]
