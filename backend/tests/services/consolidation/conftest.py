"""Fixtures of the consolidation tests (here and in triggers/)."""

from __future__ import annotations

from typing import Any

import pytest

from omoi_os.config import AppSettings
from omoi_os.services.consolidation.trigger_service import ConsolidationTriggerService
from omoi_os.services.database import DatabaseService
from tests.support.clocks import FakeClock
from tests.support.consolidation import MakeTriggers


@pytest.fixture
def make_triggers(db: DatabaseService, clock: FakeClock) -> MakeTriggers:
    """A trigger service on the test database; settings can be overridden."""

    def make(**settings: Any) -> ConsolidationTriggerService:
        defaults: dict[str, Any] = {"database_url": db.url, "consolidation_threshold": 10}
        return ConsolidationTriggerService(
            db, settings=AppSettings(**(defaults | settings)), clock=clock, stop_timeout=5
        )

    return make
