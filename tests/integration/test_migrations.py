"""The Alembic migrations create exactly the schema `infra.db.models` declares."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine

from infra.db.migrate import upgrade
from infra.db.models import Base


def test_migrated_schema_matches_the_models(database_url: str) -> None:
    upgrade(database_url)
    upgrade(database_url)  # a second run is a no-op (the stack runs it at every start)
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            diff = compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()
    assert diff == [], f"models and migrations differ; write a migration for: {diff}"
