"""Alembic environment: synchronous psycopg connection, metadata from infra.db.models."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

from infra.db.models import Base

config = context.config
url = config.get_main_option("sqlalchemy.url")
assert url, "sqlalchemy.url must be set by infra.db.migrate.alembic_config"

engine = create_engine(url, poolclass=pool.NullPool)
with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=Base.metadata, compare_type=True)
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
