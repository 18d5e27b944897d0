"""The wiring of one tidings process: settings, clock, database, transport. No globals:
the CLI builds a Runtime and hands it down; tests build their own."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from tidings.clock import Clock, clock_from_spec
from tidings.config import Settings
from tidings.db import check_schema, make_engine, make_sessions
from tidings.delivery import Transport, make_transport
from tidings.routing import Lane, lanes_from_settings, single_lane


@dataclass
class Runtime:
    settings: Settings
    clock: Clock
    engine: Engine
    sessions: sessionmaker[Session]
    transport_factory: Callable[[Settings], Transport] = field(default=make_transport)

    @classmethod
    def open(
        cls,
        settings: Settings,
        clock: Clock | None = None,
        transport_factory: Callable[[Settings], Transport] | None = None,
        check: bool = True,
    ) -> Runtime:
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
            sessions=make_sessions(engine),
            transport_factory=transport_factory or make_transport,
        )

    def transport(self) -> Transport:
        """One transport (the first SMTP server, or the maildir), for one-off sends."""
        return self.transport_factory(self.settings)

    def lanes(self) -> list[Lane]:
        """Every way out, for the dispatcher to route among (each SMTP server, or the
        maildir). A transport_factory given by a caller (tests) makes a single lane."""
        if self.transport_factory is not make_transport:
            return single_lane(self.transport_factory(self.settings))
        return lanes_from_settings(self.settings)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
