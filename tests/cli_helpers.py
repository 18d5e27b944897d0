"""Driving the `tidings` command in-process with click's CliRunner, as a user would from a shell:
settings come only from TIDINGS_* environment variables, time from TIDINGS_CLOCK=fixed:..."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tidings.cli import cli
from tidings.config import load_settings
from tidings.db.models import (
    Campaign,
    ConsentEvent,
    Delivery,
    Enrollment,
    Step,
    Subscriber,
    Suppression,
)
from tidings.runtime import Runtime
from tidings.sending.devsmtp import free_port

BASE_URL = "https://news.example.org"
SECRET_KEY = "cli-test-secret-key-of-at-least-32-bytes"
FROM_ADDRESS = "kap@center.example.org"
POSTAL_ADDRESS = "100 Example Street, Springfield"
# Monday 2026-10-19, 08:00 UTC: an hour before the KAP send window (09:00-17:00) opens in UTC.
MONDAY_8 = datetime(2026, 10, 19, 8, 0, tzinfo=UTC)
MONDAY_9 = datetime(2026, 10, 19, 9, 0, tzinfo=UTC)


class Tidings:
    """`tidings` with its own environment. `tidings("subscribers", "list")` runs it once."""

    def __init__(self, database_url: str, smtp_url: str, when: datetime = MONDAY_8):
        # Nothing from the developer's own environment may leak in.
        self.env: dict[str, str | None] = {k: None for k in os.environ if k.startswith("TIDINGS_")}
        self.env.update(
            TIDINGS_DATABASE_URL=database_url,
            TIDINGS_TRANSPORT="smtp",
            TIDINGS_SMTP_URL=smtp_url,
            TIDINGS_SMTP_POOL_SIZE="2",
            TIDINGS_BASE_URL=BASE_URL,
            TIDINGS_SECRET_KEY=SECRET_KEY,
            TIDINGS_FROM_ADDRESS=FROM_ADDRESS,
            TIDINGS_FROM_NAME="Center for Counseling",
            TIDINGS_ORGANIZATION="Center for Counseling",
            TIDINGS_POSTAL_ADDRESS=POSTAL_ADDRESS,
        )
        self.at(when)
        self.runner = CliRunner()

    # ------------------------------------------------------------------ running

    def at(self, when: datetime) -> None:
        """Later commands run at this instant."""
        self.env["TIDINGS_CLOCK"] = "fixed:" + when.isoformat()

    def __call__(self, *args: str, input: str | bytes | None = None, **env: str | None) -> Result:
        return self.runner.invoke(
            cli, list(args), input=input, env={**self.env, **env}, catch_exceptions=True
        )

    def ok(self, *args: str, input: str | bytes | None = None, **env: str | None) -> Result:
        result = self(*args, input=input, **env)
        assert result.exit_code == 0, describe(args, result)
        return result

    def fails(
        self, *args: str, input: str | bytes | None = None, code: int = 1, **env: str | None
    ) -> str:
        """Runs a command that must fail cleanly: a message and an exit code, no traceback.
        Returns everything it printed (stdout and stderr)."""
        result = self(*args, input=input, **env)
        assert result.exit_code == code, describe(args, result)
        # CliRunner reports an uncaught exception (a crash with a traceback) as exit code 1
        # too; a handled error is a SystemExit raised by click.
        assert isinstance(result.exception, SystemExit), describe(args, result)
        assert "Traceback" not in result.output, describe(args, result)
        return result.output

    def json(self, *args: str) -> Any:
        return json.loads(self.ok(*args, "--json").stdout)

    # ------------------------------------------------------------------ what is stored

    def settings(self) -> Any:
        return load_settings({k: v for k, v in self.env.items() if v is not None})

    @contextmanager
    def session(self) -> Iterator[Session]:
        with Runtime.open(self.settings()) as runtime, runtime.sessions.begin() as session:
            yield session

    def counts(self) -> dict[str, int]:
        """How many rows each table holds."""
        models = {
            "subscribers": Subscriber,
            "consent_events": ConsentEvent,
            "suppressions": Suppression,
            "deliveries": Delivery,
            "enrollments": Enrollment,
            "campaigns": Campaign,
            "steps": Step,
        }
        with self.session() as session:
            return {
                name: session.scalar(select(func.count()).select_from(model)) or 0
                for name, model in models.items()
            }

    def campaign_snapshot(self, slug: str) -> dict[str, Any]:
        """Everything a load writes for one campaign, to check that a failed load wrote nothing."""
        with self.session() as session:
            campaign = session.scalars(select(Campaign).where(Campaign.slug == slug)).one()
            steps = session.scalars(
                select(Step).where(Step.campaign_id == campaign.id).order_by(Step.id)
            ).all()
            return {
                "campaign": (
                    campaign.name,
                    campaign.status,
                    campaign.content_sha256,
                    campaign.loaded_at,
                    campaign.definition,
                ),
                "steps": [
                    (s.id, s.key, s.position, s.subject, s.content_sha256, s.source, s.updated_at)
                    for s in steps
                ],
            }


def on_sqlite_copy(sqlite_template: Path, folder: Path) -> Tidings:
    """`tidings` on a fresh copy of a migrated SQLite file, with no mail server listening."""
    path = folder / "tidings.db"
    shutil.copy(sqlite_template, path)
    return Tidings(f"sqlite:///{path}", f"smtp://127.0.0.1:{free_port()}")


def sqlite_with_kap(sqlite_template: Path, folder: Path) -> Path:
    """A migrated SQLite file in which `tidings campaigns load kap-benefits` ran at MONDAY_8.

    Loading compiles sixteen emails (about half a second); tests that only need the campaign
    loaded copy this file instead of loading it again."""
    path = folder / "kap.db"
    shutil.copy(sqlite_template, path)
    Tidings(f"sqlite:///{path}", "smtp://127.0.0.1:25").ok("campaigns", "load", "kap-benefits")
    with sqlite3.connect(path) as conn:  # fold the write-ahead log into the file
        conn.execute("PRAGMA journal_mode=DELETE")
    conn.close()
    return path


def load_kap(tidings: Tidings, kap_sqlite: Callable[[], Path]) -> Tidings:
    """Load the shipped campaign, by copying a loaded SQLite file when the database is one."""
    url = tidings.env["TIDINGS_DATABASE_URL"] or ""
    if url.startswith("sqlite:///"):
        shutil.copy(kap_sqlite(), url.removeprefix("sqlite:///"))
    else:
        tidings.ok("campaigns", "load", "kap-benefits")
    return tidings


def describe(args: tuple[str, ...], result: Result) -> str:
    text = f"tidings {' '.join(args)} -> exit {result.exit_code}\n{result.output}"
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        text += "".join(traceback.format_exception(result.exception))
    return text
