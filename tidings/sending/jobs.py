"""Jobs: a claimed delivery made ready to send, with the message built for its reader.

The pipeline (`dispatch`) hands each claimed row to a `JobMaker`, which builds its message:
a campaign's step (its compiled form fetched once per step version, bounded), a come-back
email or a confirmation, with the envelope sender the settings ask for (a VERP address
when bounces come back to us). The key that signs the links is read on first use.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from tidings.config import Settings
from tidings.db import signing_key
from tidings.db.models import Campaign
from tidings.rendering.compile import CompiledStep
from tidings.rendering.message import Addressee, MessageBuilder
from tidings.sending import ledger
from tidings.sending.transports import OutgoingMessage
from tidings.states import DeliveryKind
from tidings.subscribers.tokens import Links, verp_address

COMPILED_STEPS_KEPT = 256


@dataclass
class Job:
    """A claimed delivery on its way: who it is for and the message built for them."""

    delivery_id: int
    subscriber_id: int
    campaign_id: int | None
    email: str
    queued_at: datetime
    attempts: int
    message: OutgoingMessage


class JobMaker:
    """Builds the job of each claimed row (`ledger.load_claimed`'s rows)."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        read_sessions: sessionmaker[Session],
        settings: Settings,
    ):
        self.sessions = sessions
        self.read_sessions = read_sessions
        self.settings = settings
        self._builder: MessageBuilder | None = None
        # Each step version's compiled form, fetched once per process (bounded: versions
        # accumulate over months of edits).
        self._compiled = lru_cache(maxsize=COMPILED_STEPS_KEPT)(self._fetch_compiled)

    def builder(self) -> MessageBuilder:
        """The message builder; the first call reads the signing key (making it on first
        use), so call it before opening a read transaction."""
        if self._builder is None:
            with self.sessions.begin() as session:  # the key is made on first use
                secret = signing_key(session, self.settings.secret_key)
            self._builder = MessageBuilder(
                self.settings, Links(self.settings.public_base_url, secret)
            )
        return self._builder

    def job(self, row: Any, campaign: Campaign | None, now: datetime) -> Job:
        builder = self.builder()
        to = Addressee(row.email, row.name, row.key)
        if campaign is not None and row.step_id is not None:
            compiled = self._compiled(row.step_id, row.step_version)
            data = builder.step_message(campaign, compiled, to, row.message_id, now)
        elif row.kind == DeliveryKind.COMEBACK:
            data = builder.comeback_message(to, row.message_id, now)
        else:
            data = builder.confirmation_message(to, row.message_id, now)
        if self.settings.bounce_address:
            envelope = verp_address(self.settings.bounce_address, builder.links.secret, row.id)
        elif campaign is not None:
            envelope = builder.sender(campaign).from_address
        else:
            envelope = self.settings.from_address
        message = OutgoingMessage(row.id, envelope, row.email, data)
        return Job(
            row.id, row.sid, row.campaign_id, row.email, row.created_at, row.attempts, message
        )

    def _fetch_compiled(self, step_id: int, version: str) -> CompiledStep:
        """A step's compiled form. `version` is only part of the cache key, so that an edited
        step is fetched again."""
        with self.read_sessions.begin() as session:
            return CompiledStep.from_stored(ledger.compiled_step(session, step_id))
