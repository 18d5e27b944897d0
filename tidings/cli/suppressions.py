"""`tidings suppressions ...`: the addresses never to be mailed (stored as keyed hashes)."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import click

from tidings.cli.common import State, each_address, pass_state
from tidings.cli.output import output_options, write_rows
from tidings.states import StopReason

if TYPE_CHECKING:
    from tidings.subscribers.importing import Reject

REASONS = [reason.value for reason in StopReason]

REASON_HELP = (
    "unsubscribe (they asked), hard-bounce (the address does not exist), "
    "complaint (marked as spam), manual (any other reason)"
)


@click.group("suppressions")
def suppressions_group() -> None:
    """The suppression list: addresses never mailed again, whatever else happens.

    Addresses are stored as hashes keyed with this installation's own key (HMAC-SHA256), so an
    entry survives the erasure of the person, and a copy of the database cannot be used to test
    whether a known address was ever on the list.
    """


@suppressions_group.command("list")
@click.option("--reason", type=click.Choice(REASONS), default=None, help="Only this reason.")
@click.option("--email", default=None, help="Only this address (is it suppressed, and why?).")
@output_options
@pass_state
def list_cmd(state: State, reason: str | None, email: str | None, fmt: str) -> None:
    """List suppressed addresses, oldest first. The email column shows the address when a
    subscriber still has it; erased and never-subscribed addresses show only as a hash.

    \b
    Examples:
      tidings suppressions list --reason hard-bounce
      tidings suppressions list --email ann@example.org --json
    """
    from tidings.subscribers.suppressions import suppression_rows

    runtime = state.runtime()
    with runtime.read_sessions.begin() as session:
        write_rows(
            suppression_rows(session, reason=reason, email=email),
            ["email", "reason", "detail", "created_at", "hash", "keyed"],
            fmt,
        )


@suppressions_group.command("add")
@click.argument("emails", nargs=-1, metavar="EMAIL... | -")
@click.option(
    "--reason",
    type=click.Choice(REASONS),
    default="manual",
    show_default=True,
    help=REASON_HELP,
)
@click.option("--detail", default=None, help="A note kept with the entry, e.g. a ticket number.")
@pass_state
def add_cmd(state: State, emails: tuple[str, ...], reason: str, detail: str | None) -> None:
    """Suppress addresses (- reads them from stdin, one per line). A subscriber who is still
    pending or active is stopped at once: enrollments end and queued emails are skipped.

    \b
    Examples:
      tidings suppressions add ann@example.org --reason complaint --detail "ticket 88"
      tidings suppressions add - --reason hard-bounce < bounced.txt
    """
    from tidings.subscribers.lifecycle import suppress_address

    if not emails:
        raise click.UsageError("give one or more addresses, or - to read them from stdin")
    runtime = state.runtime()

    def one(session: Any, raw: str) -> str:
        result = suppress_address(session, raw, reason, detail, runtime.clock.now())
        verb = "suppressed" if result.added else "was already suppressed"
        stopped = "; subscriber stopped" if result.stopped else ""
        return f"{result.email}: {verb} ({result.reason}){stopped}"

    each_address(state, emails, one, "suppressed")


@suppressions_group.command("remove")
@click.argument("email")
@click.option(
    "--reason",
    "why",
    required=True,
    help="Why this address may be mailed again (kept in the subscriber's consent history).",
)
@pass_state
def remove_cmd(state: State, email: str, why: str) -> None:
    """Take an address off the suppression list. Nothing is sent to it by itself: someone
    who unsubscribed comes back with `tidings subscribers resubscribe`.

    \b
    Example:
      tidings suppressions remove ann@example.org --reason "typo in a manual entry, ticket 91"
    """
    from tidings.subscribers.lifecycle import lift_suppression

    runtime = state.runtime()
    with runtime.sessions.begin() as session:
        was = lift_suppression(session, email, why, runtime.clock.now())
    click.echo(f"{email.strip().lower()}: no longer suppressed (was {was})")


@suppressions_group.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, allow_dash=True))
@click.option("--reason", type=click.Choice(REASONS), required=True, help=REASON_HELP)
@click.option("--detail", default=None, help="A note kept with every entry, e.g. the source.")
@click.option("--encoding", default="utf-8", show_default=True, help="The file's encoding.")
@pass_state
def import_cmd(state: State, file: str, reason: str, detail: str | None, encoding: str) -> None:
    """Suppress every address in a file (or - for stdin): one address per line, or a CSV
    whose header has an email column. Safe to run again. Invalid lines are listed on
    stderr and make the exit code 3; the valid ones are suppressed all the same.

    \b
    Examples:
      tidings suppressions import bounces-2026.txt --reason hard-bounce
      tidings suppressions import old-esp-unsubscribes.csv --reason unsubscribe
    """
    from tidings.subscribers.importing.suppressions import import_suppressions

    runtime = state.runtime()

    def report(reject: Reject) -> None:
        where = f"line {reject.line}" + (f", {reject.field}" if reject.field else "")
        click.echo(f"{where}: {reject.reason}", err=True)

    with click.open_file(file, "rb") as stream:
        result = import_suppressions(
            runtime.sessions, stream, reason, detail, runtime.clock, report, encoding=encoding
        )
    click.echo(
        f"suppressed {result.added}, already suppressed {result.already}, "
        f"subscribers stopped {result.stopped}, rejected {result.rejected}"
    )
    if result.rejected:
        sys.exit(3)
