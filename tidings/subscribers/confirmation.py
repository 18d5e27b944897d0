"""The two emails whose one link gives consent, compiled from templates/email/: the
confirmation of double opt-in (confirm.md) and the come-back email (comeback.md) sent to
someone who unsubscribed and whose address was entered in the form again."""

from __future__ import annotations

from pathlib import Path

from tidings.campaigns.definition import read_step_file
from tidings.config import Settings
from tidings.errors import CampaignError
from tidings.rendering.compile import (
    TEMPLATES_DIR,
    CampaignContext,
    CompiledStep,
    Sender,
    StepSource,
    compile_step,
)

CONFIRM_TEMPLATE = TEMPLATES_DIR / "email" / "confirm.md"
COMEBACK_TEMPLATE = TEMPLATES_DIR / "email" / "comeback.md"
WHY = {
    CONFIRM_TEMPLATE: "You are receiving this one email because this address was entered in "
    "our sign-up form.",
    COMEBACK_TEMPLATE: "You are receiving this one email because this address, which "
    "unsubscribed earlier, was entered in our sign-up form again.",
}


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
            "crisis": settings.crisis_line,
            "reason": WHY[template],
        },
        base_url=settings.public_base_url,
    )
    return compile_step(source, context, sender, confirmation=True)
