"""Hostile input against the app's own OpenAPI schema (schemathesis), on both
databases: no answer is a 5xx, and every answer matches the schema."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings

from omoi_os.api import create_app
from omoi_os.config import AppSettings

TOKEN = "fuzzing-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
# Bounded so CI stays fast: ten operations, two databases.
EXAMPLES_PER_OPERATION = 40

# One app object: schemathesis reads its schema and sends it the requests; each test
# points it at that test's database and runs its lifespan (see the fixture).
APP = create_app(AppSettings(database_url="sqlite://", api_tokens=f"fuzzer:{TOKEN}"))  # type: ignore[arg-type]
schema = schemathesis.openapi.from_dict(APP.openapi())  # without starting the app
schema.app = APP


@pytest.fixture(autouse=True)
def app_on_the_test_database(database_url: str) -> Iterator[None]:
    APP.state.settings = AppSettings(
        database_url=database_url,
        api_tokens=f"fuzzer:{TOKEN}",  # type: ignore[arg-type]
        worker_enabled=False,
        consolidation_threshold=10,
    )
    with TestClient(APP):  # the lifespan: database, scheduler
        yield


@schema.parametrize()
@settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_no_5xx_and_every_answer_matches_the_schema(case: Any) -> None:
    case.call_and_validate(headers=AUTH)
