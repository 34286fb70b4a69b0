"""The backend's tables. Importing this package registers all of them on Base.metadata."""

from omoi_os.models.base import Base
from omoi_os.models.consolidation_job import (
    ACTIVE_JOB_STATUSES,
    ConsolidationJob,
    ConsolidationTick,
    JobStatus,
    SchedulePause,
    TriggerType,
    is_active_job,
)
from omoi_os.models.project import Project
from omoi_os.models.task_memory import MemoryTier, MemoryType, TaskMemory
from omoi_os.models.task_queue import QueuedTask, TaskState

__all__ = [
    "ACTIVE_JOB_STATUSES",
    "Base",
    "ConsolidationJob",
    "ConsolidationTick",
    "JobStatus",
    "MemoryTier",
    "MemoryType",
    "Project",
    "QueuedTask",
    "SchedulePause",
    "TaskMemory",
    "TaskState",
    "TriggerType",
    "is_active_job",
]
