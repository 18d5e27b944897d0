"""`tidings bounces ...`: bounce and complaint reports that come back by email."""

from __future__ import annotations

from pathlib import Path

import click

from tidings.cli.common import State, pass_state
from tidings.cli.output import output_options, write_object


@click.group("bounces")
def bounces_group() -> None:
    """Bounce and complaint reports that come back by email."""


@bounces_group.command("ingest")
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@output_options
@pass_state
def ingest(state: State, path: Path, fmt: str) -> None:
    """Read bounces (RFC 3464) and complaints (RFC 5965) from a Maildir, an mbox, an .eml
    file or a folder of them, and act on them: hard bounces and complaints suppress the
    address, soft bounces are counted. Nothing is deleted; running it again counts nothing
    twice; messages it does not understand are listed and left in place.

    \b
    Example (the bounce mailbox of TIDINGS_BOUNCE_ADDRESS):
      tidings bounces ingest /var/mail/bounces/Maildir
    """
    from tidings.inbound.ingest import ingest as ingest_reports

    runtime = state.runtime()
    secret = runtime.secret()
    with runtime.sessions.begin() as session:
        report = ingest_reports(session, path, runtime.settings, secret, runtime.clock.now())
    if fmt != "table":
        write_object(report.__dict__, fmt)
        return
    click.echo(
        f"read {report.read}: {report.hard} hard bounces, {report.soft} soft bounces, "
        f"{report.complaints} complaints, {report.already_seen} seen before"
    )
    for where, why in report.unmatched:
        click.echo(f"unmatched {where}: {why}", err=True)
    for where, why in report.unrecognised:
        click.echo(f"not a report, left in place: {where}: {why}", err=True)
    for slug in report.paused:
        click.echo(
            f"campaign {slug} paused: too many hard bounces (see `tidings status`)", err=True
        )
