"""The two emails whose one link gives consent, compiled from templates/email/: the
confirmation of double opt-in (confirm.md) and the come-back email (comeback.md) sent to
someone who unsubscribed and whose address was entered in the form again.

Both are letters like the series' emails (greeting, a button, the crisis block), say how
long their link works (`link_valid_for`: TIDINGS_CONFIRM_TOKEN_MAX_AGE_SECONDS in words), and
show no preferences link: there are no preferences before the address is confirmed. The
unsubscribe link stays (and List-Unsubscribe with it)."""

from __future__ import annotations

from pathlib import Path

from tidings.campaigns.definition import read_step_file
from tidings.config import DEFAULT_CRISIS_LINE, Settings
from tidings.errors import CampaignError
from tidings.rendering.compile import (
    TEMPLATES_DIR,
    CampaignContext,
    CompiledStep,
    Sender,
    StepSource,
    compile_step,
)
from tidings.rendering.letter import duration_words

CONFIRM_TEMPLATE = TEMPLATES_DIR / "email" / "confirm.md"
COMEBACK_TEMPLATE = TEMPLATES_DIR / "email" / "comeback.md"
WHY = {
    CONFIRM_TEMPLATE: "You are receiving this one email because this address was entered in "
    "our sign-up form. If you did not ask for it, ignore it: we will not write to you again.",
    COMEBACK_TEMPLATE: "You are receiving this one email because this address, which "
    "unsubscribed earlier, was entered in our sign-up form again. If you did not ask for it, "
    "ignore it: you stay unsubscribed.",
}
# The default crisis line (TIDINGS_CRISIS_LINE) with its numbers and chat as links to tap;
# an operator's own text is used as written (Markdown).
LINKED_CRISIS_LINE = (
    "If you are struggling or in crisis, [call](tel:988) or [text 988](sms:988) or chat at "
    "[988lifeline.org](https://988lifeline.org/chat). If anyone is in immediate danger, call "
    "[911](tel:911)."
)
ABROAD = "Outside the US? Find a helpline at [findahelpline.com](https://findahelpline.com)."
LETTER = {"greeting": "Hello {first_name},", "greeting_fallback": "Hello,", "signoff": "Thank you,"}


def compile_confirmation(settings: Settings) -> CompiledStep:
    return compile_link_email(settings, CONFIRM_TEMPLATE)


def compile_comeback(settings: Settings) -> CompiledStep:
    return compile_link_email(settings, COMEBACK_TEMPLATE)


def compile_link_email(settings: Settings, template: Path) -> CompiledStep:
    problems: list[str] = []
    step = read_step_file(template, default_delay=0, problems=problems)
    if step is None:
        raise CampaignError(problems)
    source = StepSource(
        key=step.key,
        file=str(template),
        subject=step.subject,
        preheader=step.preheader,
        body=step.body,
        body_line=step.body_line,
        subject_line=step.subject_line,
        preheader_line=step.preheader_line,
        next_step=(step.next_step.text, step.next_step.url) if step.next_step else None,
        next_step_line=step.next_step_line,
    )
    sender = Sender(
        settings.organization,
        settings.postal_address,
        settings.from_name,
        settings.from_address,
        settings.reply_to,
    )
    context = CampaignContext(
        slug="confirm",
        name=f"{settings.organization} subscription",
        footer={
            "crisis": LINKED_CRISIS_LINE
            if settings.crisis_line == DEFAULT_CRISIS_LINE
            else settings.crisis_line,
            "abroad": ABROAD,
            "reason": WHY[template],
        },
        base_url=settings.public_base_url,
        letter={**LETTER, "signature": settings.organization},
        variables={"link_valid_for": duration_words(settings.confirm_token_max_age_seconds)},
        preferences_link=False,
    )
    return compile_step(source, context, sender, confirmation=True)
