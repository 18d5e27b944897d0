"""The wiring of one tidings process: settings, clock, database, the ways out (lanes). No
globals: the CLI builds a Runtime and hands it down; tests build their own."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from tidings.clock import Clock, clock_from_spec
from tidings.config import Settings
from tidings.db import check_schema, make_engine, make_read_sessions, make_sessions, signing_key
from tidings.subscribers.tokens import Links

if TYPE_CHECKING:
    from tidings.sending.routing import Lane


@dataclass
class Runtime:
    settings: Settings
    clock: Clock
    engine: Engine
    sessions: sessionmaker[Session]  # units of work that write
    read_sessions: sessionmaker[Session]  # units of work that only read (no write lock)
    _secret: str | None = field(default=None, repr=False)

    @classmethod
    def open(
        cls,
        settings: Settings,
        clock: Clock | None = None,
        check: bool = True,
        actor: str = "system",
    ) -> Runtime:
        """`actor`: who this process's changes are made for, in the audit log (db/audit.py)."""
        engine = make_engine(settings.database_url)
        if check:
            try:
                check_schema(engine)
            except Exception:
                engine.dispose()
                raise
        return cls(
            settings=settings,
            clock=clock or clock_from_spec(settings.clock),
            engine=engine,
            sessions=make_sessions(engine, actor),
            read_sessions=make_read_sessions(engine),
        )

    def secret(self) -> str:
        """The key that signs the links in emails (TIDINGS_SECRET_KEY, or one kept in the
        database, made on first use)."""
        if self._secret is None and self.settings.secret_key:
            self._secret = self.settings.secret_key
        if self._secret is None:
            with self.sessions.begin() as session:
                self._secret = signing_key(session, self.settings.secret_key)
        return self._secret

    def links(self) -> Links:
        return Links(self.settings.public_base_url, self.secret())

    def lanes(self) -> list[Lane]:
        """Every way out, for a dispatcher to route among: each SMTP server of the settings
        (with its weight and caps), or the maildir. The one factory of transports: whatever
        sends (the scheduler, a test send, a confirmation sent at once) goes through these."""
        from tidings.sending.routing import lanes_from_settings  # the sending stack, on demand

        return lanes_from_settings(self.settings)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
