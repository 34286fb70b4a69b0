"""A failure's one line: what a job records and the API serves, on both databases."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from omoi_os.failures import MAX_FAILURE_LENGTH, describe_failure
from omoi_os.services.database import DatabaseService
from tests.support.factories import Factories


def test_a_constraint_violation_names_the_table_and_not_the_statement(
    db: DatabaseService, factories: Factories
) -> None:
    project = factories.project()
    with pytest.raises(DBAPIError) as raised, db.transaction() as session:
        session.execute(
            text(
                "INSERT INTO task_memories (project_id, memory_type, execution_summary, "
                "success, reused_count, learned_at, is_consolidated) VALUES "
                "(:project, 'learning', :summary, true, -1, '2026-01-01', false)"
            ),
            {"project": project.id.hex, "summary": "SECRET lesson text"},
        )

    line = describe_failure(raised.value)

    assert "INSERT" not in line and "SECRET" not in line and "\n" not in line
    assert "reused_count_not_negative" in line  # the database's own message
    if db.dialect == "postgresql":
        assert line.startswith("CheckViolation: ") and line.endswith("(table task_memories)")
    else:
        assert line.startswith("IntegrityError: CHECK constraint failed")


def test_any_other_error_is_its_kind_and_first_line_cut_to_length() -> None:
    assert describe_failure(RuntimeError("disk full\nsecond line")) == "RuntimeError: disk full"
    long = describe_failure(ValueError("x" * 1000))
    assert len(long) == MAX_FAILURE_LENGTH and long.endswith("…")
    assert describe_failure(KeyError()) == "KeyError: KeyError()"
