"""omoi_os consolidation: decides when agent memories are consolidated, records each
decision as a durable job, queues it and runs it — inside your FastAPI backend.

    from omoi_os import AppSettings, ConsolidationRuntime, consolidation_router

    runtime = ConsolidationRuntime(AppSettings(...), engine=your_engine)
    app.include_router(consolidation_router(runtime, principal=your_auth), prefix="/memory")
    # in your lifespan:   async with runtime.lifespan(): yield
    # after your memory write commits:   await runtime.memories.after_write(project_id)

Importing this package has no side effects: nothing connects, starts, registers a
metric globally or configures logging until you build and start a runtime.
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

# Where each public name lives. Imported on first use (PEP 562), so that `import
# omoi_os.models` or the command line's --help does not load FastAPI and the rest.
_EXPORTS = {
    "AppSettings": "omoi_os.config",
    "AsyncDriverUnsupported": "omoi_os.services.database",
    "ConsolidationAlreadyActive": "omoi_os.errors",
    "ConsolidationError": "omoi_os.errors",
    "ConsolidationRuntime": "omoi_os.runtime",
    "ConsolidationScope": "omoi_os.services.consolidation.scope",
    "JobAlreadyRetried": "omoi_os.errors",
    "JobNotCancellable": "omoi_os.errors",
    "JobNotFound": "omoi_os.errors",
    "JobNotRetryable": "omoi_os.errors",
    "JobStateConflict": "omoi_os.errors",
    "JobStatus": "omoi_os.models",
    "MemoryNotFound": "omoi_os.errors",
    "MemoryTier": "omoi_os.models",
    "MemoryType": "omoi_os.models",
    "MemoryView": "omoi_os.services.memory",
    "NewMemory": "omoi_os.services.memory",
    "ProjectInactive": "omoi_os.errors",
    "ProjectKeyTaken": "omoi_os.errors",
    "ProjectNotFound": "omoi_os.errors",
    "SchemaCollision": "omoi_os.migrations",
    "SchemaNotCurrent": "omoi_os.migrations",
    "SchemaUnsupported": "omoi_os.database_schema",
    "StoredMemory": "omoi_os.services.memory",
    "ThresholdCheck": "omoi_os.services.memory",
    "TriggerType": "omoi_os.models",
    "consolidation_router": "omoi_os.api.router",
    "create_app": "omoi_os.api.app",
    "create_database_engine": "omoi_os.services.database",
    "ops_router": "omoi_os.api.router",
}

__all__ = [
    "AppSettings",
    "AsyncDriverUnsupported",
    "ConsolidationAlreadyActive",
    "ConsolidationError",
    "ConsolidationRuntime",
    "ConsolidationScope",
    "JobAlreadyRetried",
    "JobNotCancellable",
    "JobNotFound",
    "JobNotRetryable",
    "JobStateConflict",
    "JobStatus",
    "MemoryNotFound",
    "MemoryTier",
    "MemoryType",
    "MemoryView",
    "NewMemory",
    "ProjectInactive",
    "ProjectKeyTaken",
    "ProjectNotFound",
    "SchemaCollision",
    "SchemaNotCurrent",
    "SchemaUnsupported",
    "StoredMemory",
    "ThresholdCheck",
    "TriggerType",
    "consolidation_router",
    "create_app",
    "create_database_engine",
    "ops_router",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'omoi_os' has no attribute {name!r}")
    value = getattr(import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


if TYPE_CHECKING:
    from omoi_os.api.app import create_app
    from omoi_os.api.router import (
        consolidation_router,
        ops_router,
    )
    from omoi_os.config import AppSettings
    from omoi_os.database_schema import SchemaUnsupported
    from omoi_os.errors import (
        ConsolidationAlreadyActive,
        ConsolidationError,
        JobAlreadyRetried,
        JobNotCancellable,
        JobNotFound,
        JobNotRetryable,
        JobStateConflict,
        MemoryNotFound,
        ProjectInactive,
        ProjectKeyTaken,
        ProjectNotFound,
    )
    from omoi_os.migrations import (
        SchemaCollision,
        SchemaNotCurrent,
    )
    from omoi_os.models import (
        JobStatus,
        MemoryTier,
        MemoryType,
        TriggerType,
    )
    from omoi_os.runtime import ConsolidationRuntime
    from omoi_os.services.consolidation.scope import ConsolidationScope
    from omoi_os.services.database import (
        AsyncDriverUnsupported,
        create_database_engine,
    )
    from omoi_os.services.memory import (
        MemoryView,
        NewMemory,
        StoredMemory,
        ThresholdCheck,
    )
