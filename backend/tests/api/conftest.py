"""Fixtures of the API tests (here and in routes/): the app on the test database,
with alice's and bob's tokens, and a client of it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from omoi_os.api import create_app
from omoi_os.config import AppSettings
from tests.support.api import BOB_TOKEN, TOKEN


@pytest.fixture
def settings(database_url: str) -> AppSettings:
    return AppSettings(
        database_url=database_url,
        api_tokens=f"alice:{TOKEN},bob:{BOB_TOKEN}",  # type: ignore[arg-type]
        consolidation_threshold=10,
        worker_enabled=False,  # jobs stay pending, so every answer is deterministic
    )


@pytest.fixture
def client(settings: AppSettings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client
