"""Whole messages for a subscriber: which sender, which links, which headers, then the bytes.

Shared by the dispatcher (real sends), previews and test sends, so all three produce the
same message.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import cached_property, lru_cache

from tidings.config import Settings
from tidings.db.models import Campaign
from tidings.rendering.compile import CompiledStep, Sender
from tidings.rendering.dkim import DkimSigner
from tidings.rendering.mime import MessageHeaders, Recipient, skeleton
from tidings.subscribers.confirmation import compile_comeback, compile_confirmation
from tidings.subscribers.tokens import Links


@dataclass(frozen=True)
class Addressee:
    email: str
    name: str
    key: str  # the subscriber's random key, carried by link tokens


def stored_sender(settings: Settings, campaign: Campaign | None) -> Sender:
    """The sender a campaign was loaded with (settings for system emails)."""
    if campaign is not None and campaign.definition.get("sender"):
        return Sender(**campaign.definition["sender"])
    return Sender(
        settings.organization,
        settings.postal_address,
        settings.from_name,
        settings.from_address,
        settings.reply_to,
    )


class MessageBuilder:
    def __init__(self, settings: Settings, links: Links):
        self.settings = settings
        self.links = links
        # stored_sender, kept per campaign row (this runs for every message; the dispatcher
        # loads a claim's campaigns once).
        self.sender = lru_cache(maxsize=64)(self._stored_sender)
        # DKIM (TIDINGS_DKIM_*): the key is read here, once; every message is signed below.
        self.signer = DkimSigner.from_settings(settings)

    def step_message(
        self,
        campaign: Campaign,
        compiled: CompiledStep,
        to: Addressee,
        message_id: str,
        now: datetime,
    ) -> bytes:
        sender = self.sender(campaign)
        domain = _domain(sender.from_address)
        return self._build(
            compiled,
            sender,
            to,
            message_id,
            now,
            list_id=f"{campaign.slug}.{domain}",
            list_name=campaign.name,
            confirm_url="",
        )

    def confirmation_message(self, to: Addressee, message_id: str, now: datetime) -> bytes:
        sender = stored_sender(self.settings, None)
        return self._build(
            self._confirmation,
            sender,
            to,
            message_id,
            now,
            list_id=f"confirm.{_domain(sender.from_address)}",
            list_name=f"{sender.organization} subscription",
            confirm_url=self.links.confirm(to.key, now),
        )

    def comeback_message(self, to: Addressee, message_id: str, now: datetime) -> bytes:
        """The email to someone who left and whose address was entered in the form again: its
        link is the only way back."""
        sender = stored_sender(self.settings, None)
        return self._build(
            self._comeback,
            sender,
            to,
            message_id,
            now,
            list_id=f"confirm.{_domain(sender.from_address)}",
            list_name=f"{sender.organization} subscription",
            confirm_url=self.links.comeback(to.key, now),
        )

    def _build(
        self,
        compiled: CompiledStep,
        sender: Sender,
        to: Addressee,
        message_id: str,
        now: datetime,
        list_id: str,
        list_name: str,
        confirm_url: str,
    ) -> bytes:
        recipient = Recipient(
            email=to.email,
            name=to.name,
            unsubscribe_url=self.links.unsubscribe(to.key),
            preferences_url=self.links.preferences(to.key),
            confirm_url=confirm_url,
        )
        mailto = self.settings.unsubscribe_address or sender.from_address
        headers = MessageHeaders(
            from_name=sender.from_name,
            from_address=sender.from_address,
            message_id=message_id,
            date=now,
            list_id=list_id,
            list_name=list_name,
            unsubscribe_mailto=f"mailto:{mailto}?subject=unsubscribe%20{to.key}",
            reply_to=sender.reply_to,
        )
        data = skeleton(compiled).render(recipient, headers)
        return self.signer.sign(data) if self.signer is not None else data

    @cached_property
    def _confirmation(self) -> CompiledStep:
        return compile_confirmation(self.settings)

    @cached_property
    def _comeback(self) -> CompiledStep:
        return compile_comeback(self.settings)

    def _stored_sender(self, campaign: Campaign) -> Sender:
        return stored_sender(self.settings, campaign)


def _domain(address: str) -> str:
    return address.rpartition("@")[2] or "localhost"
