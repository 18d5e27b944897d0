"""`tidings subscribers ...`: add, import, find, change, export and erase subscribers."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from tidings.cli.common import (
    State,
    confirm_on_terminal,
    each_address,
    pass_state,
)
from tidings.cli.output import json_text, output_file, output_options, write_object, write_rows
from tidings.cli.subscribers.importing import import_cmd
from tidings.states import SubscriberStatus

if TYPE_CHECKING:
    from tidings.subscribers.directory import SubscriberFilter

F = TypeVar("F", bound=Callable[..., Any])
STATUSES = [status.value for status in SubscriberStatus]
LIST_COLUMNS = ["email", "name", "timezone", "status", "created_at", "confirmed_at"]


@click.group("subscribers")
def subscribers_group() -> None:
    """Add, import, find, change, export and erase subscribers."""


def _send_confirmations(
    state: State, delivery_ids: list[int], what: str = "confirmation email"
) -> None:
    """Send the confirmation (or come-back) email at once rather than at the next pass."""
    from tidings.sending.oneoff import send_now

    if not delivery_ids:
        return
    if send_now(state.runtime(), delivery_ids).sent:
        click.echo(f"{what} sent")
    else:
        click.echo(
            f"{what} queued: it could not be sent now and will be "
            "retried by `tidings run` / `tidings send-due`",
            err=True,
        )


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
    from tidings.subscribers.lifecycle import Consent
    from tidings.subscribers.operators import add_by_operator

    if evidence and not confirmed:
        raise click.UsageError("--evidence goes with --confirmed")
    runtime = state.runtime()
    consent = Consent(source="cli", evidence=evidence)
    with runtime.sessions.begin() as session:
        added = add_by_operator(
            session,
            runtime.clock.now(),
            email,
            consent,
            name=name,
            timezone=timezone,
            confirmed=confirmed,
            message_domain=runtime.settings.sender_domain,
        )
    click.echo(f"{added.email}: added ({added.status})")
    _send_confirmations(state, added.waiting)


@subscribers_group.command("confirm")
@click.argument("email")
@pass_state
def confirm(state: State, email: str) -> None:
    """Confirm a pending subscriber (as if they clicked the link) and start their series.

    \b
    Example:
      tidings subscribers confirm ann@example.org
    """
    from tidings.subscribers.directory import find_subscriber
    from tidings.subscribers.lifecycle import Consent, activate

    runtime = state.runtime()
    with runtime.sessions.begin() as session:
        subscriber = find_subscriber(session, email)
        consent = Consent(source="cli", evidence="confirmed by an operator")
        joined = activate(session, subscriber, consent, runtime.clock.now())
        address = subscriber.email
    click.echo(f"{address}: active" + (f", enrolled in {', '.join(joined)}" if joined else ""))


@subscribers_group.command("unsubscribe")
@click.argument("emails", nargs=-1, metavar="EMAIL... | -")
@pass_state
def unsubscribe(state: State, emails: tuple[str, ...]) -> None:
    """Unsubscribe now: nothing more is sent, queued emails are skipped, the address is
    suppressed.

    Give one or more addresses, or - to read them from stdin, one per line (blank lines and
    lines starting with # are skipped). Every address is tried; the exit code is 1 if any
    could not be unsubscribed.

    \b
    Examples:
      tidings subscribers unsubscribe ann@example.org bob@example.org
      cut -d, -f1 complaints.csv | tidings subscribers unsubscribe -
    """
    from tidings.subscribers.lifecycle import unsubscribe_address

    if not emails:
        raise click.UsageError("give one or more addresses, or - to read them from stdin")
    runtime = state.runtime()

    def one(session: Any, raw: str) -> str:
        address, changed = unsubscribe_address(session, raw, "cli", runtime.clock.now())
        return f"{address}: " + ("unsubscribed" if changed else "was already unsubscribed")

    each_address(state, emails, one, "unsubscribed")


def filter_options(func: F) -> F:
    """--status, --campaign, --since, --search: which subscribers a command covers."""
    options = [
        click.option(
            "--status",
            "statuses",
            type=click.Choice(STATUSES),
            multiple=True,
            help="Only this status (repeat for several).",
        ),
        click.option("--campaign", default=None, help="Only those enrolled in this campaign."),
        click.option(
            "--since",
            default=None,
            help="Only those who joined since: a date (2026-10-01) or an age (7d, 12h).",
        ),
        click.option(
            "--search", default=None, help="Only those whose address or name contains TEXT."
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _filters(
    state: State, statuses: Any, campaign: Any, since: Any, search: Any
) -> SubscriberFilter:
    from tidings.subscribers.directory import SubscriberFilter, parse_since

    when = parse_since(since, state.runtime().clock.now()) if since else None
    return SubscriberFilter(statuses=statuses, campaign=campaign, since=when, search=search)


@subscribers_group.command("list")
@filter_options
@click.option("--limit", type=click.IntRange(1), default=None, help="At most N subscribers.")
@click.option("--no-pager", is_flag=True, help="Do not page the table on a terminal.")
@output_options
@pass_state
def list_cmd(
    state: State,
    statuses: tuple[str, ...],
    campaign: str | None,
    since: str | None,
    search: str | None,
    limit: int | None,
    no_pager: bool,
    fmt: str,
) -> None:
    """List subscribers, oldest first. On a terminal the table goes through a pager ($PAGER).

    \b
    Examples:
      tidings subscribers list --status pending
      tidings subscribers list --campaign kap-benefits --since 7d
      tidings subscribers list --search @example.org --csv > subscribers.csv
    """
    from tidings.subscribers.directory import subscriber_rows

    runtime = state.runtime()
    filters = _filters(state, statuses, campaign, since, search)
    with runtime.read_sessions.begin() as session:
        rows = subscriber_rows(session, filters, limit)
        write_rows(rows, LIST_COLUMNS, fmt, page=not no_pager)


@subscribers_group.command("show")
@click.argument("email")
@output_options
@pass_state
def show(state: State, email: str, fmt: str) -> None:
    """Everything about one subscriber: status, consent history, series position, deliveries.

    \b
    Examples:
      tidings subscribers show ann@example.org
      tidings subscribers show ann@example.org --json
    """
    from tidings.subscribers.directory import subscriber_details

    runtime = state.runtime()
    with runtime.read_sessions.begin() as session:
        info = subscriber_details(session, email)
    write_object(info, fmt)


# ----------------------------------------------------------------------------- export


@subscribers_group.command("export")
@filter_options
@output_options(default="csv")
@click.option(
    "--out",
    "out_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write to FILE (readable by its owner only) instead of stdout.",
)
@pass_state
def export(
    state: State,
    statuses: tuple[str, ...],
    campaign: str | None,
    since: str | None,
    search: str | None,
    fmt: str,
    out_path: str | None,
) -> None:
    """Export subscribers, streaming: any list size in constant memory.

    CSV columns: email, name, timezone, status, created_at, confirmed_at, unsubscribed_at,
    then one column per attribute. The CSV can be imported again (status and dates are
    ignored by the import). JSON: one object per subscriber, attributes as an object.

    \b
    Examples:
      tidings subscribers export --status active --out active.csv
      tidings subscribers export --campaign kap-benefits --json | jq length
    """
    from tidings.subscribers.directory import export_columns, export_rows

    runtime = state.runtime()
    filters = _filters(state, statuses, campaign, since, search)
    with runtime.read_sessions.begin() as session, output_file(out_path) as out:
        columns = export_columns(session, filters, flat=fmt != "json")
        write_rows(export_rows(session, filters, flat=fmt != "json"), columns, fmt, out)


# ----------------------------------------------------------------------------- change


@subscribers_group.command("update")
@click.argument("email")
@click.option("--name", default=None, help="New name ('' clears it).")
@click.option("--timezone", default=None, help="New IANA timezone, e.g. Europe/Paris.")
@click.option(
    "--attr",
    "attrs",
    multiple=True,
    metavar="KEY=VALUE",
    help="Set an attribute (repeatable); KEY= removes it.",
)
@pass_state
def update(
    state: State, email: str, name: str | None, timezone: str | None, attrs: tuple[str, ...]
) -> None:
    """Change a subscriber's name, timezone or attributes. A new timezone applies from the
    next email planned for them.

    \b
    Examples:
      tidings subscribers update ann@example.org --timezone America/Chicago
      tidings subscribers update ann@example.org --name "Ann Lee" --attr city=Lyon --attr ref=
    """
    from tidings.subscribers.directory import parse_attribute, update_subscriber

    if name is None and timezone is None and not attrs:
        raise click.UsageError("nothing to change: give --name, --timezone or --attr")
    attributes = [parse_attribute(a) for a in attrs]
    runtime = state.runtime()
    with runtime.sessions.begin() as session:
        result = update_subscriber(
            session, email, runtime.clock.now(), name=name, timezone=timezone, attributes=attributes
        )
    changes = "; ".join(result.changes) if result.changes else "nothing changed"
    click.echo(f"{result.email}: {changes}")


@subscribers_group.command("resubscribe")
@click.argument("email")
@click.option(
    "--evidence",
    default=None,
    help="How they asked to come back, e.g. 'phone call, 2026-11-02, ticket 88': active at once.",
)
@click.option(
    "--double-opt-in",
    is_flag=True,
    help="Send the come-back email instead; they are back when they press its button.",
)
@pass_state
def resubscribe(state: State, email: str, evidence: str | None, double_opt_in: bool) -> None:
    """Bring back someone who unsubscribed, with new consent: --evidence of how they asked,
    or --double-opt-in to send them the come-back email (they stay unsubscribed until they
    press its button). Their series resumes where it
    stopped. Bounced and complained addresses cannot come back this way.

    \b
    Examples:
      tidings subscribers resubscribe ann@example.org --evidence "asked by phone, 2026-11-02"
      tidings subscribers resubscribe ann@example.org --double-opt-in
    """
    from tidings.errors import InvalidInput
    from tidings.subscribers.importing import check_evidence
    from tidings.subscribers.lifecycle import Consent
    from tidings.subscribers.operators import bring_back

    if bool(evidence) == double_opt_in:
        raise click.UsageError(
            "coming back needs new consent: give --evidence TEXT or --double-opt-in (one of them)"
        )
    try:
        evidence = check_evidence(evidence) if evidence is not None else None
    except InvalidInput as exc:
        raise click.UsageError(str(exc)) from exc
    runtime = state.runtime()
    consent = Consent(source="cli", evidence=evidence)
    with runtime.sessions.begin() as session:
        back = bring_back(
            session,
            email,
            consent,
            runtime.clock.now(),
            runtime.settings.sender_domain,
            confirmed=not double_opt_in,
        )
    address, status, joined = back.email, back.status, back.campaigns
    if double_opt_in:
        click.echo(f"{address}: {status} until they press the button of the come-back email")
    else:
        click.echo(f"{address}: {status}" + (f", back in {', '.join(joined)}" if joined else ""))
    _send_confirmations(state, back.waiting, "come-back email")


# ----------------------------------------------------------------------------- data rights


@subscribers_group.command("export-data")
@click.argument("email")
@click.option(
    "--out",
    "out_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write to FILE (readable by its owner only) instead of stdout.",
)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation on a terminal.")
@pass_state
def export_data(state: State, email: str, out_path: str | None, yes: bool) -> None:
    """Everything stored about one person, as JSON (a right-of-access request): profile,
    attributes, suppression, consent events, enrollments and every email sent or planned.

    On a terminal it asks first, since the output is personal data.

    \b
    Examples:
      tidings subscribers export-data ann@example.org --out ann-data.json
      tidings subscribers export-data ann@example.org --yes | less
    """
    from tidings.subscribers.privacy import export_data as everything_about

    runtime = state.runtime()
    with runtime.read_sessions.begin() as session:
        data = everything_about(session, email, runtime.clock.now())
    question = (
        f"Write everything stored about {data['profile']['email']} to {out_path or 'stdout'}?"
    )
    confirm_on_terminal(question, yes)
    with output_file(out_path) as out:
        out.write(json_text(data, indent=2) + "\n")  # terminal-safe, the same data
    if out_path:
        click.echo(f"wrote {out_path}", err=True)


@subscribers_group.command("erase")
@click.argument("email")
@click.option("--yes", is_flag=True, help="Erase without asking (needed without a terminal).")
@click.option(
    "--note",
    default=None,
    help="Kept with the record of the erasure, e.g. a ticket number. Never the address.",
)
@pass_state
def erase(state: State, email: str, yes: bool, note: str | None) -> None:
    """Erase one person (right to erasure): their profile, consent history, enrollments and
    emails are deleted everywhere. Only a keyed hash of the address stays on the suppression
    list, so nothing is ever sent to it again, not even after a re-import; and a record that
    an erasure happened, without the address. This cannot be undone.

    On SQLite the deleted rows are overwritten and the write-ahead log is emptied, so no copy
    stays in the database's files. Copies outside tidings (your mail server's logs, backups,
    exports) are not touched.

    \b
    Examples:
      tidings subscribers erase ann@example.org
      tidings subscribers erase ann@example.org --yes --note "request #1234"
    """
    from tidings.subscribers.directory import find_subscriber
    from tidings.subscribers.privacy import erase_everywhere
    from tidings.subscribers.validation import normalize_email

    normalized = normalize_email(email)
    if not yes and not sys.stdin.isatty():
        raise click.UsageError("erasing cannot be undone: add --yes to erase without a terminal")
    runtime = state.runtime()
    with runtime.read_sessions.begin() as session:
        find_subscriber(session, normalized)  # unknown: say so before asking
    confirm_on_terminal(f"Erase everything stored about {normalized}? This cannot be undone", yes)
    report = erase_everywhere(
        runtime.sessions, normalized, runtime.clock.now(), source="cli", note=note
    )
    kept = "added to" if report.suppression_added else "kept on"
    click.echo(
        f"{report.email}: erased ({report.consent_events} consent events, "
        f"{report.enrollments} enrollments, {report.deliveries} emails); its hash is "
        f"{kept} the suppression list ({report.suppression_reason})"
    )
    if report.log_emptied is False:
        click.echo(
            "warning: another process was reading the database, so its write-ahead log (the "
            "-wal file beside it) could not be emptied: old copies of the erased data stay in "
            "that file until every tidings process using the database has stopped",
            err=True,
        )


# The import command lives beside this module: it is as long as the rest of the group.
subscribers_group.add_command(import_cmd)
