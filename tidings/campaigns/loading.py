"""Loading a campaign: a folder (or a shipped campaign's slug) read, compiled, linted and
stored, in one transaction; nothing is stored unless everything passes."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tidings.campaigns import shipped_campaign_dir
from tidings.campaigns.definition import CampaignDefinition, read_campaign, toml_line
from tidings.campaigns.lint import ERROR, lint_campaign
from tidings.campaigns.sequencing import remap_positions
from tidings.campaigns.store import get_campaign
from tidings.config import Settings
from tidings.db import audit
from tidings.db.models import Campaign, Step
from tidings.errors import CampaignError, Conflict, NotFound
from tidings.rendering.compile import (
    CampaignContext,
    CompiledStep,
    Sender,
    StepSource,
    TemplateProblem,
    compile_step,
)
from tidings.states import CampaignStatus


def resolve_campaign_dir(
    dir_or_slug: str, loaded: Callable[[], sessionmaker[Session]] | None = None
) -> Path:
    """A folder path, the slug of a campaign shipped with tidings, or (given a way to reach
    the database, used only then) the folder a loaded campaign was read from."""
    path = Path(dir_or_slug)
    if path.is_dir():
        return path
    shipped = shipped_campaign_dir(dir_or_slug)
    if shipped is not None:
        return shipped
    if loaded is not None:
        with loaded().begin() as session:
            source = get_campaign(session, dir_or_slug).source_path
        if source and Path(source).is_dir():
            return Path(source)
        raise NotFound(f"{dir_or_slug}: its folder {source!r} is gone; give the folder")
    raise NotFound(f"{dir_or_slug!r} is neither a campaign folder nor a shipped campaign")


def campaign_sender(settings: Settings, overrides: dict[str, str]) -> Sender:
    return Sender(
        organization=overrides.get("organization", settings.organization),
        postal_address=overrides.get("postal_address", settings.postal_address),
        from_name=overrides.get("from_name", settings.from_name),
        from_address=overrides.get("from_address", settings.from_address),
        reply_to=overrides.get("reply_to", settings.reply_to),
    )


def campaign_context(definition: CampaignDefinition, settings: Settings) -> CampaignContext:
    """What every email of a campaign shares when it is compiled: footer, letter, contact."""
    raw = definition.raw_toml
    return CampaignContext(
        slug=definition.slug,
        name=definition.name,
        footer=definition.footer,
        footer_lines={k: toml_line(raw, k) for k in definition.footer},
        base_url=settings.public_base_url,
        letter=definition.letter,
        contact=definition.contact,
        letter_lines={k: toml_line(raw, k) for k in definition.letter},
        step_keys=tuple(step.key for step in definition.steps),
    )


def compile_campaign(
    definition: CampaignDefinition, settings: Settings
) -> list[tuple[StepSource, CompiledStep]]:
    """Compile every step. Raises CampaignError listing every template problem found."""
    sender = campaign_sender(settings, definition.sender)
    context = campaign_context(definition, settings)
    problems: list[str] = []
    compiled = []
    total = len(definition.steps)
    for number, step in enumerate(definition.steps, start=1):
        source = StepSource(
            key=step.key,
            file=step.file,
            subject=step.subject,
            preheader=step.preheader,
            body=step.body,
            body_line=step.body_line,
            crisis_at_top=step.crisis_at_top,
            number=number,
            total=total,
            subject_line=step.subject_line,
            preheader_line=step.preheader_line,
            research=step.research,
            research_line=step.research_line,
            next_step=(step.next_step.text, step.next_step.url) if step.next_step else None,
            next_step_line=step.next_step_line,
        )
        try:
            compiled.append((source, compile_step(source, context, sender)))
        except TemplateProblem as exc:
            problems.append(str(exc))
    if problems:
        raise CampaignError(sorted(set(problems), key=problems.index))
    return compiled


@dataclass
class LoadReport:
    slug: str
    created: bool
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    enrollments_moved: int = 0
    warnings: list[str] = field(default_factory=list)


def load_campaign(session: Session, folder: Path, settings: Settings, now: datetime) -> LoadReport:
    """Validate, compile and store a campaign folder, in the caller's transaction.

    Nothing is written unless every step compiles. Reloading keeps each enrolled subscriber
    at their place in the sequence (see sequencing.remap_positions).
    """
    definition = read_campaign(folder)
    compiled = compile_campaign(definition, settings)
    # The content lint (CONTENT.md): its errors block the load, its warnings are reported.
    findings = lint_campaign(definition, settings, compiled)
    if any(f.severity == ERROR for f in findings):
        raise CampaignError([str(f) for f in findings if f.severity == ERROR])
    sender = campaign_sender(settings, definition.sender)
    campaign = session.scalar(select(Campaign).where(Campaign.slug == definition.slug))
    report = LoadReport(slug=definition.slug, created=campaign is None)
    if not sender.postal_address:
        report.warnings.append(
            "no postal address: set TIDINGS_POSTAL_ADDRESS (the law requires one in "
            "marketing email), then load the campaign again"
        )
    report.warnings += [str(f) for f in findings if f.rule != "postal-address"]
    if campaign is None:
        campaign = Campaign(slug=definition.slug, status=CampaignStatus.ACTIVE, created_at=now)
        session.add(campaign)
    elif campaign.kind != definition.kind:
        raise Conflict(
            f"campaign {definition.slug!r} is a {campaign.kind}; it cannot become a "
            f"{definition.kind} (use a new slug)"
        )
    stored_definition = definition.as_stored()
    stored_definition["sender"] = sender.__dict__
    digest = hashlib.sha256(definition.raw_toml.encode())
    for _, step in compiled:
        digest.update(step.content_sha256.encode())
    campaign.name = definition.name
    campaign.kind = definition.kind
    campaign.trigger = definition.trigger
    campaign.definition = stored_definition
    campaign.content_sha256 = digest.hexdigest()
    campaign.source_path = definition.folder
    campaign.loaded_at = now
    session.flush()
    _store_steps(session, campaign, definition, compiled, report, now)
    audit.record(
        session,
        now,
        "campaign.load",
        definition.slug,
        {
            "created": report.created,
            "added": len(report.added),
            "changed": len(report.changed),
            "removed": len(report.removed),
        },
    )
    return report


def _store_steps(
    session: Session,
    campaign: Campaign,
    definition: CampaignDefinition,
    compiled: list[tuple[StepSource, CompiledStep]],
    report: LoadReport,
    now: datetime,
) -> None:
    """Each step by its key: new, changed or unchanged; a step no longer in the folder loses
    its position but stays (the ledger refers to it). Enrolled subscribers keep their place."""
    existing = {
        s.key: s for s in session.scalars(select(Step).where(Step.campaign_id == campaign.id))
    }
    placed = sorted((s for s in existing.values() if s.position is not None), key=_position)
    old_keys = [s.key for s in placed]
    new_keys = [source.key for source, _ in compiled]
    for position, ((source, email), step) in enumerate(
        zip(compiled, definition.steps, strict=True), start=1
    ):
        row = existing.get(source.key)
        if row is None:
            row = Step(campaign_id=campaign.id, key=source.key, created_at=now)
            session.add(row)
            report.added.append(source.key)
        elif row.content_sha256 != email.content_sha256 or row.position is None:
            report.changed.append(source.key)
        else:
            report.unchanged.append(source.key)
        row.position = position
        row.delay_seconds = step.delay_seconds
        row.send_window = step.send_window
        row.subject = email.subject
        row.preheader = email.preheader
        row.source = step.source
        row.source_file = step.file
        row.compiled = email.as_stored()
        row.content_sha256 = email.content_sha256
        row.updated_at = now
    for key, row in existing.items():
        if key not in new_keys and row.position is not None:
            row.position = None
            row.updated_at = now
            report.removed.append(key)
    session.flush()
    if not report.created:
        report.enrollments_moved = remap_positions(session, campaign.id, old_keys, new_keys, now)


def _position(step: Step) -> int:
    return step.position or 0
