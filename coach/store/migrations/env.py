"""Alembic environment for coach's storage, driven from `coach.store.migrate` (no alembic.ini).

`coach.store.migrate` passes an open connection (inside the transaction that holds the
migration lock) in `config.attributes["connection"]`. Without one, this connects to the
configured `sqlalchemy.url` through the same locked path; `--sql` (offline) mode prints SQL.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from coach.store.migrate import VERSION_TABLE, run_locked
from coach.store.schema import metadata

config = context.config
version_table = config.get_main_option("version_table") or VERSION_TABLE


def run_on(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table=version_table,
        compare_type=True,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite cannot ALTER much
    )
    with context.begin_transaction():
        context.run_migrations()


def run_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=metadata,
        version_table=version_table,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        run_on(connection)
        return
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no connection and no sqlalchemy.url: use coach.store.migrate")
    asyncio.run(run_locked(url, run_on))


if context.is_offline_mode():
    run_offline()
else:
    run_online()
