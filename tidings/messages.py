"""Whole messages for a subscriber: which sender, which links, which headers, then the bytes.

Shared by the dispatcher (real sends), previews and test sends, so all three produce the
same message. Keeps one MIME skeleton per step version.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from tidings.config import Settings
from tidings.dkim import DkimSigner
from tidings.models import Campaign
from tidings.rendering import CompiledStep, MessageHeaders, MessageSkeleton, Recipient, Sender
from tidings.subscribers.confirmation import compile_confirmation
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
        self._skeletons: dict[str, MessageSkeleton] = {}
        self._senders: dict[tuple[int, str], Sender] = {}
        self._confirmation: CompiledStep | None = None
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
        if self._confirmation is None:
            self._confirmation = compile_confirmation(self.settings)
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
        data = self._skeleton(compiled).render(recipient, headers)
        return self.signer.sign(data) if self.signer is not None else data

    def sender(self, campaign: Campaign) -> Sender:
        """stored_sender, kept per campaign version (this runs for every message)."""
        key = (campaign.id, campaign.content_sha256)
        sender = self._senders.get(key)
        if sender is None:
            sender = self._senders[key] = stored_sender(self.settings, campaign)
        return sender

    def _skeleton(self, compiled: CompiledStep) -> MessageSkeleton:
        skeleton = self._skeletons.get(compiled.content_sha256)
        if skeleton is None:
            skeleton = self._skeletons[compiled.content_sha256] = MessageSkeleton(compiled)
        return skeleton


def _domain(address: str) -> str:
    return address.rpartition("@")[2] or "localhost"
