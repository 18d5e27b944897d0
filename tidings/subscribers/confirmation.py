"""The confirmation email of double opt-in, compiled from templates/email/confirm.md."""

from __future__ import annotations

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


def compile_confirmation(settings: Settings) -> CompiledStep:
    problems: list[str] = []
    step = read_step_file(CONFIRM_TEMPLATE, default_delay=0, problems=problems)
    if step is None:
        raise CampaignError(problems)
    source = StepSource(
        key=step.key,
        file=str(CONFIRM_TEMPLATE),
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
            "reason": "You are receiving this one email because this address was entered "
            "in our sign-up form.",
        },
        base_url=settings.public_base_url,
    )
    return compile_step(source, context, sender, confirmation=True)
