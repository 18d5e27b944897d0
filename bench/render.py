"""Figure 1: the cost of one personalized, MIME-complete message, fast path vs naive path.

Both render the same KAP email for the same readers. The fast path is what the dispatcher
does per recipient (MessageBuilder.step_message: link tokens, headers, the two encoded parts
filled into the step's MIME skeleton); the naive path is Jinja + Markdown + premailer +
EmailMessage for every message. CPU time on one core (time.process_time).
"""

from __future__ import annotations

import email
import time
from email import policy

from common import MONDAY, QUICK, report

from tidings.campaigns import SHIPPED_DIR
from tidings.campaigns.definition import read_campaign
from tidings.campaigns.loading import campaign_sender, compile_campaign
from tidings.config import Settings
from tidings.db.models import Campaign
from tidings.rendering.compile import CampaignContext
from tidings.rendering.message import Addressee, MessageBuilder
from tidings.rendering.mime import MessageHeaders, Recipient
from tidings.rendering.reference import render_message_naive
from tidings.subscribers.tokens import Links

SETTINGS = Settings(
    postal_address="1 Main St, Springfield",
    base_url="https://news.example.org",
    from_address="kap@center.example.org",
    secret_key="bench",
)
NAMES = ["Ann Example", "José Ñúñez", 'Ann "Nan" O\'Brien', "Kenji Watanabe"]


def main() -> None:
    definition = read_campaign(SHIPPED_DIR / "kap-benefits")
    source, compiled = compile_campaign(definition, SETTINGS)[3]
    sender = campaign_sender(SETTINGS, definition.sender)
    campaign = Campaign(
        slug=definition.slug, name=definition.name, definition={"sender": sender.__dict__}
    )
    links = Links(SETTINGS.public_base_url, "bench")
    builder = MessageBuilder(SETTINGS, links)
    readers = [
        Addressee(f"reader{i}@example.org", NAMES[i % len(NAMES)], f"key{i:019d}")
        for i in range(2000)
    ]

    fast_n = 20_000 if QUICK else 200_000
    builder.step_message(campaign, compiled, readers[0], "warm@x", MONDAY)  # build the skeleton
    started = time.process_time()
    for i in range(fast_n):
        data = builder.step_message(campaign, compiled, readers[i % 2000], f"{i}@center", MONDAY)
    fast_us = (time.process_time() - started) / fast_n * 1e6

    context = CampaignContext(
        definition.slug, definition.name, definition.footer, {}, SETTINGS.public_base_url
    )
    naive_n = 20 if QUICK else 100
    started = time.process_time()
    for i in range(naive_n):
        reader = readers[i]
        recipient = Recipient(
            reader.email, reader.name, links.unsubscribe(reader.key), links.preferences(reader.key)
        )
        headers = MessageHeaders(
            sender.from_name,
            sender.from_address,
            f"{i}@center",
            MONDAY,
            "kap-benefits.center.example.org",
            definition.name,
            "mailto:kap@center.example.org?subject=unsubscribe",
        )
        naive = render_message_naive(source, context, sender, recipient, headers)
    naive_us = (time.process_time() - started) / naive_n * 1e6

    # Same content both ways (the equivalence tests check this thoroughly).
    fast_msg = email.message_from_bytes(data, policy=policy.default)
    naive_msg = email.message_from_bytes(naive, policy=policy.default)
    assert fast_msg["Subject"] == naive_msg["Subject"]
    ratio = naive_us / fast_us
    report(
        "1. render, us/message (CPU)",
        round(fast_us, 1),
        round(naive_us, 1),
        round(ratio, 1),
        "<= 50 us and >= 100x",
        fast_us <= 50 and ratio >= 100,
        "us",
        f"{len(data)} bytes per message",
    )


if __name__ == "__main__":
    main()
