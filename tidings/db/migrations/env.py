"""Alembic environment: runs tidings' migrations against the URL `tidings db upgrade` passes."""

from alembic import context

from tidings.db import make_engine
from tidings.db.models import Base

config = context.config


def run_migrations_online() -> None:
    connectable = config.attributes.get("connection")
    if connectable is not None:
        _run(connectable)
        return
    engine = make_engine(config.get_main_option("sqlalchemy.url"))
    try:
        with engine.connect() as connection:
            _run(connection)
    finally:
        engine.dispose()


def _run(connection) -> None:  # type: ignore[no-untyped-def]
    if connection.dialect.name == "sqlite":
        # SQLite alters a table by copying it and dropping the original; with foreign keys on,
        # dropping `subscribers` would cascade to consent events, deliveries... PRAGMA
        # foreign_keys only takes effect outside a transaction: set it on the raw connection
        # before the migration's transaction begins (the pool's connect hook sets it on again
        # for the next user of this connection).
        connection.connection.dbapi_connection.execute("PRAGMA foreign_keys=OFF")
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=True,  # SQLite can only ALTER TABLE by copying it
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise SystemExit("tidings migrations run online only: use `tidings db upgrade`")
run_migrations_online()
