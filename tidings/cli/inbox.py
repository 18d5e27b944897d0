"""`tidings inbox ...`: mail that comes back (bounces, complaints, unsubscribe requests,
automatic answers, replies), read from IMAP, from files, or received by SMTP."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import click

from tidings.cli.common import State, pass_state, until_signalled, wait_for
from tidings.cli.output import output_options, say, write_object


@click.group("inbox")
def inbox_group() -> None:
    """Mail that comes back: bounces, complaints, unsubscribe requests, replies."""


@inbox_group.command("fetch")
@click.argument("url", required=False)
@output_options
@pass_state
def fetch(state: State, url: str | None, fmt: str) -> None:
    """Read an IMAP mailbox over TLS and act on what is in it: hard bounces and complaints
    stop the address, soft bounces are counted, unsubscribe requests (the mailto: of every
    email) unsubscribe. What was dealt with is moved to TIDINGS_INBOX_DONE_FOLDER; replies
    and anything a person should read stay where they are, unread. Nothing is deleted.

    URL is imaps://user:password@host/INBOX (default: TIDINGS_INBOX_URL, which keeps the
    password out of the process list). For a server whose certificate comes from a private
    CA, add ?cafile=/path/to/ca.pem.

    \b
    Example:
      TIDINGS_INBOX_URL='imaps://bounces:secret@mail.example.org/INBOX' tidings inbox fetch
    """
    from tidings.inbound.imap import fetch_inbox

    target = url or state.settings.inbox_url
    if not target:
        raise click.UsageError("give the mailbox: tidings inbox fetch imaps://user:pass@host/INBOX")
    report = fetch_inbox(state.runtime(), target)
    _print(
        report,
        fmt,
        f"moved {report.moved} to {report.done_folder}, left {report.left} in {report.mailbox}",
    )


@inbox_group.command("ingest")
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@output_options
@pass_state
def ingest(state: State, path: Path, fmt: str) -> None:
    """Read a Maildir, an mbox, an .eml file or a folder of them, and act on what is in it
    (as `inbox fetch` does). The files are only read: nothing is deleted or moved, running it
    again counts nothing twice, and messages for a person are listed.

    \b
    Example (the mailbox of TIDINGS_BOUNCE_ADDRESS):
      tidings inbox ingest /var/mail/bounces/Maildir
    """
    from tidings.inbound.ingest import ingest as ingest_messages

    runtime = state.runtime()
    secret = runtime.secret()
    with runtime.sessions.begin() as session:
        report = ingest_messages(session, path, runtime.settings, secret, runtime.clock.now())
    _print(report, fmt)


@inbox_group.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port", type=click.IntRange(1, 65535), default=2525, show_default=True, help="Port."
)
@click.option(
    "--keep",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="A Maildir for the messages a person should read (replies); without it they are "
    "refused, so their sender knows.",
)
@pass_state
def serve(state: State, host: str, port: int, keep: Path | None) -> None:
    """Receive the bounce and unsubscribe addresses' mail by SMTP, to put behind your MX.

    Only tidings' own addresses are accepted (TIDINGS_BOUNCE_ADDRESS and its VERP forms,
    TIDINGS_UNSUBSCRIBE_ADDRESS or else the From addresses); any other recipient gets 550,
    so it is never an open relay. Each message is acted on before it is acknowledged.

    \b
    Example (Postfix relays bounces.example.org here: transport_maps
    "bounces.example.org smtp:[127.0.0.1]:2525"):
      tidings inbox serve --port 2525
    """
    from tidings.inbound.listener import InboundServer

    runtime = state.runtime()
    with until_signalled("stopping...") as stop, InboundServer(runtime, host, port, keep) as server:
        addresses = ", ".join(sorted(server.handler.our_addresses()))
        click.echo(
            f"taking mail for {addresses} (and their + forms) at {host}:{server.port}; "
            "Ctrl-C to stop",
            err=True,
        )
        wait_for(stop)
    click.echo("stopped cleanly", err=True)


def _print(report: Any, fmt: str, where: str | None = None) -> None:
    if fmt != "table":
        write_object(dataclasses.asdict(report), fmt)
        return
    click.echo(
        f"read {report.read}: {report.hard} hard bounces, {report.soft} soft bounces, "
        f"{report.complaints} complaints, {report.unsubscribed} unsubscribed by email, "
        f"{report.automatic} automatic, {len(report.unrecognised)} for a person, "
        f"{len(report.unmatched)} unmatched, {report.already_seen} seen before"
    )
    if where:
        click.echo(where)
    for place, why in report.unmatched:
        say(f"unmatched, left in place: {place}: {why}", err=True)
    for place, why in report.unrecognised:
        say(f"not a report, left in place: {place}: {why}", err=True)
    for slug in report.paused:
        click.echo(
            f"campaign {slug} paused: too many hard bounces (see `tidings status`)", err=True
        )
