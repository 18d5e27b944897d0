"""`tidings campaigns ...`: write, check, preview and control campaigns."""

from __future__ import annotations

import secrets
import sys
from pathlib import Path
from typing import Any

import click
from sqlalchemy import func, select

from tidings.campaigns.importtext import write_campaign
from tidings.campaigns.sequencing import active_steps, enroll, message_id
from tidings.campaigns.store import (
    find_step,
    get_campaign,
    list_campaigns,
    load_campaign,
    resolve_campaign_dir,
    set_status,
)
from tidings.cli import State, pass_state
from tidings.cli.output import emit_object, emit_rows, output_options
from tidings.db import signing_key
from tidings.delivery import OutgoingMessage
from tidings.errors import CampaignError, TidingsError
from tidings.messages import Addressee, MessageBuilder, stored_sender
from tidings.models import Campaign, Delivery, DeliveryStatus, Enrollment, Step, Subscriber
from tidings.rendering import CompiledStep, Recipient, personalize_html, personalize_text
from tidings.subscribers.service import find_subscriber
from tidings.subscribers.tokens import Links
from tidings.subscribers.validation import normalize_email

SAMPLE = Addressee(email="alex.sample@example.org", name="Alex Sample", key="sample-key")


@click.group("campaigns")
def campaigns_group() -> None:
    """Write, check, preview, schedule and pause campaigns."""


@campaigns_group.command("import-text")
@click.argument("file", type=click.File("r", encoding="utf-8-sig"))
@click.option("--slug", required=True, help="Campaign slug, e.g. kap-benefits.")
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder to create the campaign in.",
)
@click.option("--name", default=None, help="Human name of the campaign (default: the slug).")
def import_text(file: Any, slug: str, out_dir: Path, name: str | None) -> None:
    """Turn a text of heading + paragraph pairs into a campaign folder (FILE or - for stdin).

    Text before the first heading becomes a welcome email, text after the last pair a
    closing email. Review the result, then `tidings campaigns load DIR`.

    \b
    Example:
      tidings campaigns import-text benefits.txt --slug kap-benefits --out campaigns/kap
    """
    written = write_campaign(file.read(), slug, out_dir, name=name)
    for path in written:
        click.echo(f"wrote {path}")
    click.echo(f"next: review the files, then `tidings campaigns load {out_dir}`")


@campaigns_group.command("load")
@click.argument("source")
@pass_state
def load(state: State, source: str) -> None:
    """Validate, compile and store a campaign folder (or a shipped campaign's slug).

    Nothing is stored if any email has an error. Reloading an edited campaign keeps every
    subscriber at their place: a step inserted before it is not sent to them.

    \b
    Examples:
      tidings campaigns load kap-benefits
      tidings campaigns load ./campaigns/spring-newsletter
    """
    runtime = state.runtime()
    folder = resolve_campaign_dir(source)
    try:
        with runtime.sessions.begin() as session:
            report = load_campaign(session, folder, runtime.settings, runtime.clock.now())
    except CampaignError as exc:
        raise click.ClickException(
            f"{folder}: not loaded, nothing was stored:\n  " + "\n  ".join(exc.problems)
        ) from exc
    verb = "created" if report.created else "updated"
    click.echo(
        f"{report.slug}: {verb}, {len(report.added) + len(report.changed) + len(report.unchanged)} "
        f"steps ({len(report.added)} new, {len(report.changed)} changed, "
        f"{len(report.removed)} removed)"
    )
    if report.enrollments_moved:
        click.echo(f"  kept {report.enrollments_moved} enrolled subscribers at their place")
    for warning in report.warnings:
        click.echo(f"warning: {warning}", err=True)


@campaigns_group.command("list")
@output_options
@pass_state
def list_cmd(state: State, fmt: str) -> None:
    """List loaded campaigns with their status and counts."""
    runtime = state.runtime()
    with runtime.sessions.begin() as session:
        rows = [_campaign_row(session, c) for c in list_campaigns(session)]
    emit_rows(rows, ["slug", "kind", "status", "steps", "enrolled", "sent", "name"], fmt)


def _campaign_row(session: Any, campaign: Campaign) -> dict[str, Any]:
    def count(query: Any) -> int:
        return session.scalar(query) or 0

    return {
        "slug": campaign.slug,
        "name": campaign.name,
        "kind": campaign.kind,
        "status": campaign.status,
        "steps": count(
            select(func.count())
            .select_from(Step)
            .where(Step.campaign_id == campaign.id, Step.position.is_not(None))
        ),
        "enrolled": count(
            select(func.count())
            .select_from(Enrollment)
            .where(Enrollment.campaign_id == campaign.id, Enrollment.status == "active")
        ),
        "sent": count(
            select(func.count())
            .select_from(Delivery)
            .where(Delivery.campaign_id == campaign.id, Delivery.status == DeliveryStatus.SENT)
        ),
    }


@campaigns_group.command("show")
@click.argument("slug")
@output_options
@pass_state
def show(state: State, slug: str, fmt: str) -> None:
    """Show a campaign: settings, schedule and every step with its counts."""
    runtime = state.runtime()
    with runtime.sessions.begin() as session:
        campaign = get_campaign(session, slug)
        info = _campaign_row(session, campaign)
        info.update(
            trigger=campaign.trigger,
            status_reason=campaign.status_reason,
            loaded_at=campaign.loaded_at,
            source=campaign.source_path,
        )
        window = campaign.definition.get("window", {})
        days = "".join("MTWTFSS"[d] if d in window.get("days", []) else "-" for d in range(7))
        info["window"] = f"{window.get('start', '')[:5]}-{window.get('end', '')[:5]} {days}"
        sent_by_step = dict(
            session.execute(
                select(Delivery.step_id, func.count())
                .where(Delivery.campaign_id == campaign.id, Delivery.status == DeliveryStatus.SENT)
                .group_by(Delivery.step_id)
            ).all()
        )
        info["steps"] = [
            {
                "position": s.position,
                "key": s.key,
                "delay": _delay(s.delay_seconds),
                "subject": s.subject,
                "sent": sent_by_step.get(s.id, 0),
            }
            for s in active_steps(session, campaign.id)
        ]
        if campaign.kind == "broadcast":
            from tidings.campaigns.broadcasts import broadcast_info

            info["broadcast"] = broadcast_info(session, campaign)
    if fmt == "csv":
        emit_rows(info["steps"], ["position", "key", "delay", "subject", "sent"], "csv")
    else:
        emit_object(info, fmt)


def _delay(seconds: int) -> str:
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    parts = [
        f"{days}d" if days else "",
        f"{hours}h" if hours else "",
        f"{rest // 60}m" if rest // 60 else "",
    ]
    return "".join(parts) or "0"


@campaigns_group.command("preview")
@click.argument("slug")
@click.option("--step", "step_key", default=None, help="Step key or position (default: first).")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["html", "text", "eml"]),
    default="html",
    show_default=True,
    help="The html part, the text part, or the whole message.",
)
@click.option("--out", type=click.File("wb"), default="-", help="Write to FILE (default: stdout).")
@click.option(
    "--dir",
    "folder",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Write every email (html and text) to this folder, with an index.html.",
)
@click.option(
    "--open",
    "open_it",
    is_flag=True,
    help="Write every email to a folder (--dir, or a new temporary one) and open its index "
    "in the browser.",
)
@pass_state
def preview(
    state: State,
    slug: str,
    step_key: str | None,
    fmt: str,
    out: Any,
    folder: Path | None,
    open_it: bool,
) -> None:
    """Render one email as a sample subscriber (Alex Sample) would receive it, or every
    email to a folder with an index page (--dir, --open).

    \b
    Examples:
      tidings campaigns preview kap-benefits --step 4 --out email.html
      tidings campaigns preview kap-benefits --format text
      tidings campaigns preview kap-benefits --format eml > email.eml
      tidings campaigns preview kap-benefits --open
    """
    if folder is not None or open_it:
        from tidings.cli.staff import preview_folder

        preview_folder(state, slug, folder, open_it)
        return
    runtime = state.runtime()
    with runtime.sessions.begin() as session:
        campaign = get_campaign(session, slug)
        step = find_step(session, campaign, step_key)
        compiled = CompiledStep.from_stored(step.compiled)
        builder = _builder(state, session)
        if fmt == "eml":
            data = builder.step_message(
                campaign,
                compiled,
                SAMPLE,
                message_id(runtime.settings.sender_domain),
                runtime.clock.now(),
            )
        else:
            recipient = Recipient(
                SAMPLE.email,
                SAMPLE.name,
                builder.links.unsubscribe(SAMPLE.key),
                builder.links.preferences(SAMPLE.key),
            )
            render = personalize_html if fmt == "html" else personalize_text
            data = render(compiled, recipient).encode("utf-8")
    out.write(data)


def _builder(state: State, session: Any) -> MessageBuilder:
    settings = state.settings
    return MessageBuilder(
        settings, Links(settings.public_base_url, signing_key(session, settings.secret_key))
    )


@campaigns_group.command("test-send")
@click.argument("slug")
@click.option("--to", "to_address", required=True, help="Address to send the test to.")
@click.option(
    "--step",
    "step_key",
    default=None,
    help="Step key or position (default: first); 'all' sends every step.",
)
@pass_state
def test_send(state: State, slug: str, to_address: str, step_key: str | None) -> None:
    """Send one step (or all) to an address now, through the configured transport.

    Test sends are not recorded in the ledger and their links belong to no subscriber.

    \b
    Example:
      tidings campaigns test-send kap-benefits --to me@example.org --step all
    """
    runtime = state.runtime()
    address = normalize_email(to_address, field="--to")
    to = Addressee(address, "Test Recipient", "test-" + secrets.token_urlsafe(8))
    with runtime.sessions.begin() as session:
        campaign = get_campaign(session, slug)
        steps = (
            active_steps(session, campaign.id)
            if step_key == "all"
            else [find_step(session, campaign, step_key)]
        )
        builder = _builder(state, session)
        envelope_from = stored_sender(runtime.settings, campaign).from_address
        messages = [
            OutgoingMessage(
                i,
                envelope_from,
                address,
                builder.step_message(
                    campaign,
                    CompiledStep.from_stored(s.compiled),
                    to,
                    message_id(runtime.settings.sender_domain),
                    runtime.clock.now(),
                ),
            )
            for i, s in enumerate(steps)
        ]
    with runtime.transport() as transport:
        results = transport.send_messages(messages)
    failed = 0
    for step, result in zip(steps, results, strict=True):
        click.echo(f"{step.key}: {result.outcome} ({result.reply})")
        failed += result.outcome != "sent"
    if failed:
        raise click.ClickException(f"{failed} of {len(results)} test emails were not sent")


@campaigns_group.command("pause")
@click.argument("slug")
@pass_state
def pause(state: State, slug: str) -> None:
    """Stop sending a campaign now. Nothing is lost: resume picks up where it stopped."""
    runtime = state.runtime()
    with runtime.sessions.begin() as session:
        set_status(session, slug, "paused", "paused by an operator")
    click.echo(f"{slug}: paused")


@campaigns_group.command("resume")
@click.argument("slug")
@pass_state
def resume(state: State, slug: str) -> None:
    """Resume a paused campaign. Nothing already sent is sent again."""
    runtime = state.runtime()
    with runtime.sessions.begin() as session:
        set_status(session, slug, "active", None)
    click.echo(f"{slug}: active")


@campaigns_group.command("enroll")
@click.argument("slug")
@click.argument("emails", nargs=-1)
@click.option("--all-active", is_flag=True, help="Enroll every active subscriber.")
@pass_state
def enroll_cmd(state: State, slug: str, emails: tuple[str, ...], all_active: bool) -> None:
    """Start a sequence for subscribers who confirmed before it was loaded.

    EMAILS may be given as arguments or, with -, one per line on stdin.

    \b
    Examples:
      tidings campaigns enroll kap-benefits --all-active
      tidings campaigns enroll kap-benefits ann@example.org bob@example.org
    """
    if not emails and not all_active:
        raise click.UsageError("give EMAILS, - for stdin, or --all-active")
    if emails == ("-",):
        emails = tuple(line.strip() for line in sys.stdin if line.strip())
    runtime = state.runtime()
    now = runtime.clock.now()
    with runtime.sessions.begin() as session:
        campaign = get_campaign(session, slug)
        if campaign.kind != "sequence":
            raise TidingsError(f"{slug} is a {campaign.kind}; only sequences take enrollments")
        if all_active:
            subscribers = list(
                session.scalars(select(Subscriber).where(Subscriber.status == "active"))
            )
        else:
            subscribers = [find_subscriber(session, e) for e in emails]
        for subscriber in subscribers:
            if subscriber.status != "active":
                raise TidingsError(
                    f"{subscriber.email} is {subscriber.status}; only active "
                    "subscribers can be enrolled"
                )
        added = sum(enroll(session, s, campaign, now) is not None for s in subscribers)
    click.echo(f"{slug}: enrolled {added} subscriber(s), {len(subscribers) - added} already were")


def register(cli: click.Group) -> None:
    cli.add_command(campaigns_group)
