"""`tidings subscribers ...`: add, confirm, unsubscribe, list and inspect subscribers."""

from __future__ import annotations

from typing import Any

import click
from sqlalchemy import select

from tidings.cli import State, pass_state
from tidings.cli.output import emit_object, emit_rows, output_options
from tidings.dispatch import Dispatcher
from tidings.models import (
    Campaign,
    ConsentEvent,
    Delivery,
    Enrollment,
    Step,
    Subscriber,
    SubscriberStatus,
)
from tidings.subscribers.service import (
    Consent,
    activate,
    add_subscriber,
    find_subscriber,
    unsubscribe,
)

STATUSES = [
    SubscriberStatus.PENDING,
    SubscriberStatus.ACTIVE,
    SubscriberStatus.UNSUBSCRIBED,
    SubscriberStatus.BOUNCED,
    SubscriberStatus.COMPLAINED,
]


@click.group("subscribers")
def subscribers_group() -> None:
    """Add, confirm, unsubscribe, list and inspect subscribers."""


@subscribers_group.command("add")
@click.argument("email")
@click.option("--name", default="", help="The subscriber's name (optional).")
@click.option(
    "--timezone",
    default="UTC",
    show_default=True,
    help="IANA timezone, e.g. America/New_York: emails arrive in its daytime.",
)
@click.option(
    "--confirmed",
    is_flag=True,
    help="Consent was already given elsewhere (needs --evidence); no confirmation email.",
)
@click.option(
    "--evidence", default=None, help="Where and when they agreed, e.g. 'paper form, 2026 open day'."
)
@pass_state
def add(
    state: State, email: str, name: str, timezone: str, confirmed: bool, evidence: str | None
) -> None:
    """Add a subscriber. By default they get a confirmation email (double opt-in).

    \b
    Examples:
      tidings subscribers add ann@example.org --name Ann --timezone Europe/Paris
      tidings subscribers add bob@example.org --confirmed --evidence "signed form, 2026-11-02"
    """
    if evidence and not confirmed:
        raise click.UsageError("--evidence goes with --confirmed")
    runtime = state.runtime()
    now = runtime.clock.now()
    with runtime.sessions.begin() as session:
        subscriber = add_subscriber(
            session,
            now,
            email,
            Consent(source="cli", evidence=evidence),
            name=name,
            timezone=timezone,
            confirmed=confirmed,
            message_domain=runtime.settings.sender_domain,
        )
        address, status = subscriber.email, subscriber.status
        pending_ids = [
            d.id
            for d in session.scalars(
                select(Delivery).where(
                    Delivery.subscriber_id == subscriber.id, Delivery.kind == "confirmation"
                )
            )
        ]
    click.echo(f"{address}: added ({status})")
    if pending_ids:
        with runtime.transport() as transport:
            result = Dispatcher(
                runtime.sessions, runtime.clock, runtime.settings, transport
            ).run_pass(only_ids=pending_ids)
        if result.sent:
            click.echo("confirmation email sent")
        else:
            click.echo(
                "confirmation email queued: it could not be sent now and will be "
                "retried by `tidings run` / `tidings send-due`",
                err=True,
            )


@subscribers_group.command("confirm")
@click.argument("email")
@pass_state
def confirm(state: State, email: str) -> None:
    """Confirm a pending subscriber (as if they clicked the link) and start their series."""
    runtime = state.runtime()
    now = runtime.clock.now()
    with runtime.sessions.begin() as session:
        subscriber = find_subscriber(session, email)
        joined = activate(
            session, subscriber, Consent(source="cli", evidence="confirmed by an operator"), now
        )
        address = subscriber.email
    click.echo(f"{address}: active" + (f", enrolled in {', '.join(joined)}" if joined else ""))


@subscribers_group.command("unsubscribe")
@click.argument("email")
@pass_state
def unsubscribe_cmd(state: State, email: str) -> None:
    """Unsubscribe now: nothing more is sent, queued emails are skipped, the address is
    suppressed."""
    runtime = state.runtime()
    with runtime.sessions.begin() as session:
        subscriber = find_subscriber(session, email)
        changed = unsubscribe(session, subscriber, "cli", runtime.clock.now())
        address = subscriber.email
    click.echo(f"{address}: " + ("unsubscribed" if changed else "was already unsubscribed"))


@subscribers_group.command("list")
@click.option("--status", type=click.Choice(STATUSES), default=None, help="Only this status.")
@output_options
@pass_state
def list_cmd(state: State, status: str | None, fmt: str) -> None:
    """List subscribers.

    \b
    Examples:
      tidings subscribers list --status pending
      tidings subscribers list --csv > subscribers.csv
    """
    runtime = state.runtime()
    with runtime.sessions.begin() as session:
        query = select(Subscriber).order_by(Subscriber.id)
        if status:
            query = query.where(Subscriber.status == status)
        rows = [
            {
                "email": s.email,
                "name": s.name,
                "timezone": s.timezone,
                "status": s.status,
                "created_at": s.created_at,
                "confirmed_at": s.confirmed_at,
            }
            for s in session.scalars(query)
        ]
    emit_rows(rows, ["email", "name", "timezone", "status", "created_at", "confirmed_at"], fmt)


@subscribers_group.command("show")
@click.argument("email")
@output_options
@pass_state
def show(state: State, email: str, fmt: str) -> None:
    """Everything about one subscriber: status, consent history, series position, deliveries."""
    runtime = state.runtime()
    with runtime.sessions.begin() as session:
        subscriber = find_subscriber(session, email)
        info = subscriber_details(session, subscriber)
    emit_object(info, "json" if fmt == "json" else "table")


def subscriber_details(session: Any, subscriber: Subscriber) -> dict[str, Any]:
    consent = [
        {"at": e.created_at, "kind": e.kind, "source": e.source, "evidence": e.evidence}
        for e in session.scalars(
            select(ConsentEvent)
            .where(ConsentEvent.subscriber_id == subscriber.id)
            .order_by(ConsentEvent.id)
        )
    ]
    enrollments = [
        {
            "campaign": slug,
            "status": e.status,
            "next_step": e.next_position,
            "next_due_at": e.next_due_at,
        }
        for e, slug in session.execute(
            select(Enrollment, Campaign.slug)
            .join(Campaign, Campaign.id == Enrollment.campaign_id)
            .where(Enrollment.subscriber_id == subscriber.id)
            .order_by(Enrollment.id)
        )
    ]
    deliveries = [
        {
            "id": d.id,
            "kind": d.kind,
            "step": key,
            "status": d.status,
            "attempts": d.attempts,
            "sent_at": d.sent_at,
            "outcome": d.outcome,
        }
        for d, key in session.execute(
            select(Delivery, Step.key)
            .outerjoin(Step, Step.id == Delivery.step_id)
            .where(Delivery.subscriber_id == subscriber.id)
            .order_by(Delivery.id)
        )
    ]
    return {
        "email": subscriber.email,
        "name": subscriber.name,
        "timezone": subscriber.timezone,
        "status": subscriber.status,
        "created_at": subscriber.created_at,
        "confirmed_at": subscriber.confirmed_at,
        "unsubscribed_at": subscriber.unsubscribed_at,
        "consent": consent,
        "enrollments": enrollments,
        "deliveries": deliveries,
    }


def register(cli: click.Group) -> None:
    cli.add_command(subscribers_group)
