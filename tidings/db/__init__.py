"""Database engine and sessions. SQLite (WAL) by default, PostgreSQL for scale.

A session is one unit of work: `with sessions.begin() as session: ...` commits or rolls back.
Work that only reads takes `read_sessions`: on SQLite it does not take the write lock (every
other transaction does, up front, with BEGIN IMMEDIATE), so a long report or a dry run never
holds up the web sign-ups or the scheduler; on PostgreSQL it runs READ ONLY.

Alembic is imported only by `upgrade`: every command checks the schema, and importing alembic
costs a fifth of a second.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from tidings.db.models import AppSecret
from tidings.errors import ConfigError, TidingsError

MIGRATIONS = Path(__file__).with_name("migrations")
# The newest migration: the schema this code needs (a test checks it is Alembic's head).
SCHEMA_HEAD = "0009"
SQLITE_BUSY_TIMEOUT_MS = 30_000
READ_ONLY = "tidings_read_only"  # execution option: this transaction only reads


def make_engine(url: str) -> Engine:
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ConfigError(f"TIDINGS_DATABASE_URL: cannot parse {url!r}") from exc
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(url)
    engine = create_engine(url, pool_pre_ping=True)

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        if conn.get_execution_options().get(READ_ONLY):
            conn.exec_driver_sql("SET TRANSACTION READ ONLY")

    return engine


def _sqlite_engine(url: str) -> Engine:
    engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" hook below issue BEGIN itself (pysqlite's own is deferred).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        # Deleted content is overwritten with zeros, not merely marked free: an erased
        # person's address must not stay readable in the file (tidings.subscribers.privacy).
        cursor.execute("PRAGMA secure_delete=ON")
        # SQLite's default page cache is 2 MB; 16 MB keeps the hot index pages of planning
        # and claiming at hand. More (or mmap) only grows a worker's memory with the size of
        # the file: bench/RESULTS.md, figures 4 and 5, measured both.
        cursor.execute("PRAGMA cache_size=-16384")  # 16 MB, per connection
        cursor.execute("PRAGMA temp_store=MEMORY")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        if conn.get_execution_options().get(READ_ONLY):
            # A reader in WAL mode sees a snapshot and blocks no writer.
            conn.exec_driver_sql("BEGIN")
            return
        # IMMEDIATE takes the write lock up front: a transaction that reads then writes can
        # otherwise fail at once with "database is locked" when another process writes.
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def make_sessions(engine: Engine, actor: str = "system") -> sessionmaker[Session]:
    """Units of work that write; `actor` is who they act for (the audit log, db/audit.py)."""
    return sessionmaker(engine, expire_on_commit=False, info={"actor": actor})


def make_read_sessions(engine: Engine) -> sessionmaker[Session]:
    """Sessions for work that only reads (see the module's docstring)."""
    return sessionmaker(engine.execution_options(**{READ_ONLY: True}), expire_on_commit=False)


def is_disconnect(exc: DBAPIError) -> bool:
    """True when the database connection was lost (SQLAlchemy's own judgement, per driver:
    it invalidates the connection) or could not be made at all (an OperationalError before
    any statement ran), not when a statement failed or SQLite was busy."""
    if exc.connection_invalidated:
        return True
    return isinstance(exc, OperationalError) and exc.statement is None


def upgrade(url: str, revision: str = "head") -> None:
    from alembic import command
    from alembic.config import Config as AlembicConfig

    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    try:
        if url.startswith("sqlite:///"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        command.upgrade(config, revision)
    except (OperationalError, OSError) as exc:
        reason = getattr(exc, "orig", None) or exc
        raise TidingsError(f"cannot open the database {safe_url(url)}: {reason}") from exc


def safe_url(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "(unparsable URL)"


def schema_revision(engine: Engine) -> str | None:
    """The migration the database is at (Alembic's own table), None for an empty database."""
    with engine.connect() as conn:
        if not engine.dialect.has_table(conn, "alembic_version"):
            return None
        return conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()


def check_schema(engine: Engine) -> None:
    """Refuse to work on a database the migrations have not brought up to date."""
    try:
        current = schema_revision(engine)
    except OperationalError as exc:
        raise TidingsError(
            f"cannot open the database {safe_url(str(engine.url))}: {exc.orig} "
            "(is the URL right? a new database is created with `tidings db upgrade`)"
        ) from exc
    if current != SCHEMA_HEAD:
        state = "is empty" if current is None else f"is at revision {current}"
        raise TidingsError(
            f"the database {safe_url(str(engine.url))} {state}, "
            f"this tidings needs {SCHEMA_HEAD}: run `tidings db upgrade`"
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
