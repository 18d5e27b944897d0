"""Database engine and sessions. SQLite (WAL) by default, PostgreSQL for scale.

A session is one unit of work: `with sessions.begin() as session: ...` commits or rolls back.
"""

from __future__ import annotations

import secrets
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, bindparam, create_engine, event, select, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from tidings.errors import ConfigError, TidingsError
from tidings.models import AppSecret

MIGRATIONS = Path(__file__).with_name("migrations")
SQLITE_BUSY_TIMEOUT_MS = 30_000


def make_engine(url: str) -> Engine:
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ConfigError(f"TIDINGS_DATABASE_URL: cannot parse {url!r}") from exc
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(url)
    return create_engine(url, pool_pre_ping=True)


def _sqlite_engine(url: str) -> Engine:
    engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):  # type: ignore[no-untyped-def]
        # Let SQLAlchemy's "begin" hook below issue BEGIN itself (pysqlite's own is deferred).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        # SQLite's default page cache is 2 MB; 16 MB keeps the hot index pages of planning
        # and claiming at hand. More (or mmap) only grows a worker's memory with the size of
        # the file: bench/RESULTS.md, figures 4 and 5, measured both.
        cursor.execute("PRAGMA cache_size=-16384")  # 16 MB, per connection
        cursor.execute("PRAGMA temp_store=MEMORY")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):  # type: ignore[no-untyped-def]
        # IMMEDIATE takes the write lock up front: a transaction that reads then writes can
        # otherwise fail at once with "database is locked" when another process writes.
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def make_sessions(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


def alembic_config(url: str) -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    from alembic import command

    try:
        if url.startswith("sqlite:///"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        command.upgrade(alembic_config(url), revision)
    except (OperationalError, OSError) as exc:
        reason = getattr(exc, "orig", None) or exc
        raise TidingsError(f"cannot open the database {_safe_url(url)}: {reason}") from exc


def _safe_url(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "(unparsable URL)"


def check_schema(engine: Engine) -> None:
    """Refuse to work on a database the migrations have not brought up to date."""
    head = ScriptDirectory.from_config(alembic_config(str(engine.url))).get_current_head()
    try:
        with engine.connect() as conn:
            current = MigrationContext.configure(conn).get_current_revision()
    except OperationalError as exc:
        raise TidingsError(
            f"cannot open the database {_safe_url(str(engine.url))}: {exc.orig} "
            "(is the URL right? a new database is created with `tidings db upgrade`)"
        ) from exc
    if current != head:
        state = "is empty" if current is None else f"is at revision {current}"
        raise TidingsError(
            f"the database {engine.url.render_as_string(hide_password=True)} {state}, "
            f"this tidings needs {head}: run `tidings db upgrade`"
        )


def signing_key(session: Session, configured: str | None) -> str:
    """TIDINGS_SECRET_KEY if set, else a random key generated once and kept in the database."""
    if configured:
        return configured
    stored = session.scalar(select(AppSecret.value).where(AppSecret.name == "signing_key"))
    if stored:
        return stored
    try:
        with session.begin_nested():
            session.add(AppSecret(name="signing_key", value=secrets.token_urlsafe(32)))
    except IntegrityError:
        pass  # another process created it first
    return session.scalars(select(AppSecret.value).where(AppSecret.name == "signing_key")).one()


def update_by_id(session: Session, model: type, rows: Sequence[Mapping[str, Any]]) -> None:
    """UPDATE ... WHERE id = ... for many rows: one executemany per set of changed columns.

    Core statements, not the ORM's bulk update: on the send path this runs for every message,
    and the ORM's per-row bookkeeping costs more than the database does.
    """
    table = model.__table__  # type: ignore[attr-defined]
    groups: dict[tuple[str, ...], list[Mapping[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[tuple(sorted(k for k in row if k != "id"))].append(row)
    for columns, group in groups.items():
        statement = (
            update(table)
            .where(table.c.id == bindparam("row_id"))
            .values({c: bindparam(f"new_{c}", type_=table.c[c].type) for c in columns})
        )
        session.execute(
            statement, [{"row_id": r["id"], **{f"new_{c}": r[c] for c in columns}} for r in group]
        )
