"""`tidings db ...`: the database schema."""

from __future__ import annotations

import click

from tidings.cli.common import State, pass_state


@click.group("db")
def db_group() -> None:
    """The database schema (Alembic migrations)."""


@db_group.command("upgrade")
@pass_state
def upgrade(state: State) -> None:
    """Create the tables, or bring them up to date. Safe to run at every deploy.

    \b
    Example:
      TIDINGS_DATABASE_URL=postgresql+psycopg://tidings@db/tidings tidings db upgrade
    """
    from tidings.db import upgrade as migrate

    migrate(state.settings.database_url)
    click.echo("database is up to date")
