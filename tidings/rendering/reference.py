"""The naive path: everything per reader, the obvious way. Kept as the reference the fast path
(`mime`) must match byte for byte in meaning, and as the benchmark's baseline."""

from __future__ import annotations

from email import policy as email_policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime

from tidings.rendering.compile import CampaignContext, Sender, StepSource, render_parts
from tidings.rendering.mime import MessageHeaders, Recipient, clean_header_text, format_address


def render_message_naive(
    step: StepSource,
    campaign: CampaignContext,
    sender: Sender,
    recipient: Recipient,
    headers: MessageHeaders,
    confirmation: bool = False,
) -> bytes:
    """Everything per reader, the obvious way: Jinja, Markdown, premailer and the stdlib's
    EmailMessage for every single message. Far too slow to send with (milliseconds each);
    kept as the reference the fast path must match, and as the benchmark's baseline."""
    subject, _, html_part, text_part = render_parts(
        step, campaign, sender, confirmation, personal=recipient.values()
    )
    message = EmailMessage(policy=email_policy.SMTP.clone(max_line_length=998))
    message["From"] = Address(clean_header_text(headers.from_name), addr_spec=headers.from_address)
    message["To"] = Address(clean_header_text(recipient.name), addr_spec=recipient.email)
    message["Subject"] = subject
    message["Date"] = format_datetime(headers.date)
    message["Message-ID"] = f"<{headers.message_id}>"
    message["List-Id"] = format_address(headers.list_name, headers.list_id)
    message["List-Unsubscribe"] = f"<{recipient.unsubscribe_url}>, <{headers.unsubscribe_mailto}>"
    message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    if headers.reply_to:
        message["Reply-To"] = headers.reply_to
    message.set_content(text_part, cte="quoted-printable")
    message.add_alternative(html_part, subtype="html", cte="quoted-printable")
    return message.as_bytes()
