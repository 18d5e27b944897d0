"""Operating checks and results: `tidings check`, `tidings stats`, `tidings prune`."""

from __future__ import annotations

import sys
from typing import Any

import click

from tidings.cli.common import State, confirm_on_terminal, pass_state
from tidings.cli.output import output_options, write_object


@click.command("check")
@click.option(
    "--dkim-record",
    default=None,
    metavar="TEXT",
    help="The DKIM TXT record as published (e.g. from your DNS provider), to compare.",
)
@pass_state
def check(state: State, dkim_record: str | None) -> None:
    """Check the set-up before a real send, line by line: sender, postal address, the
    public web address and its unsubscribe page, each SMTP server (EHLO, STARTTLS, login),
    the DKIM key, and the SPF/DMARC records to publish. Exits 1 if anything is a blocker.

    \b
    Example:
      tidings check
    """
    from tidings.ops.preflight import FAIL, preflight

    checks = preflight(state.settings, state.runtime, dkim_record)
    for line in checks:
        click.echo(str(line))
    blockers = sum(c.status == FAIL for c in checks)
    if blockers:
        raise click.ClickException(f"{blockers} blocker(s): fix them before sending")
    click.echo("ready to send")


@click.command("stats")
@click.argument("campaign", required=False)
@click.option(
    "--days",
    type=click.IntRange(1, 3660),
    default=30,
    show_default=True,
    help="How many days of sends per day, today included.",
)
@output_options
@pass_state
def stats(state: State, campaign: str | None, days: int, fmt: str) -> None:
    """Results: for each step of each campaign (or of CAMPAIGN), how many emails were sent,
    are queued (waiting or retrying), failed, bounced or were skipped, and how many people
    unsubscribed after that step (it was the last email they got before leaving); the
    subscribers by status; emails sent per day (UTC).

    With CAMPAIGN, the subscribers and sends counted are that campaign's only.

    \b
    Examples:
      tidings stats
      tidings stats kap-benefits --json | jq '.campaigns[0].steps'
    """
    from tidings.ops.stats import stats as results

    runtime = state.runtime()
    with runtime.read_sessions.begin() as session:
        result = results(session, runtime.clock.now(), campaign, days)
    if fmt != "table":
        write_object(result, fmt)
        return
    _print_stats(result, days)


def _print_stats(result: dict[str, Any], days: int) -> None:
    from tidings.ops.stats import STEP_COLUMNS

    by_status = ", ".join(f"{status} {n}" for status, n in result["subscribers"].items())
    click.echo(f"Subscribers: {by_status}")
    headers = ["#", "step", "sent", "queued", "failed", "bounced", "skipped", "unsub after"]
    for campaign in result["campaigns"]:
        enrolled = campaign["enrolled"]
        click.echo("")
        click.echo(
            f"{campaign['slug']} ({campaign['status']}): enrolled "
            f"{sum(enrolled.values())} (active {enrolled['active']}, completed "
            f"{enrolled['completed']}, exited {enrolled['exited']}); unsubscribed before the "
            f"first email: {campaign['unsubscribed_before_first_email']}"
        )
        rows = [
            [str(s["position"] if s["position"] is not None else "-"), s["key"]]
            + [str(s[c]) for c in STEP_COLUMNS]
            for s in campaign["steps"]
        ]
        widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]

        def line(cells: list[str], widths: list[int] = widths) -> str:
            return "  " + "  ".join(
                c.ljust(w) if i == 1 else c.rjust(w)
                for i, (c, w) in enumerate(zip(cells, widths, strict=True))
            )

        click.echo(line(headers))
        for row in rows:
            click.echo(line(row))
    sent_days = [d for d in result["sends_per_day"] if d["sent"]]
    click.echo("")
    if not sent_days:
        click.echo(f"No emails sent in the last {days} days.")
        return
    click.echo(f"Sent per day (UTC), last {days} days:")
    for day in sent_days:
        click.echo(f"  {day['date']}  {day['sent']}")


@click.command("prune")
@click.option(
    "--pending-older-than",
    "age",
    required=True,
    metavar="AGE",
    help="Delete pending subscribers who asked longer ago than this (e.g. 30d, 2w) and never "
    "confirmed.",
)
@click.option("--dry-run", is_flag=True, help="Count what would be deleted; delete nothing.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation on a terminal.")
@pass_state
def prune(state: State, age: str, dry_run: bool, yes: bool) -> None:
    """Delete sign-up requests nobody confirmed: pending subscribers older than AGE with
    their request events and confirmation emails. Run it from cron to keep only what is
    needed. Someone pending because they asked to come back after leaving is kept.

    \b
    Examples:
      tidings prune --pending-older-than 30d --dry-run
      0 3 * * * tidings prune --pending-older-than 30d
    """
    from tidings.subscribers.directory import parse_age
    from tidings.subscribers.privacy import prune_pending

    older_than = parse_age(age, "--pending-older-than")
    runtime = state.runtime()
    now = runtime.clock.now()
    if not dry_run and not yes and sys.stdin.isatty():
        with runtime.sessions.begin() as session:
            preview = prune_pending(session, older_than, now, dry_run=True)
        if not preview.subscribers:
            click.echo("nothing to prune")
            return
        confirm_on_terminal(
            f"Delete {preview.subscribers} pending subscribers who asked before "
            f"{preview.cutoff:%Y-%m-%d %H:%M} UTC and never confirmed?",
            yes,
        )
    with runtime.sessions.begin() as session:
        report = prune_pending(session, older_than, now, dry_run=dry_run)
    verb = "would delete" if dry_run else "deleted"
    click.echo(
        f"{verb} {report.subscribers} pending subscribers who asked before "
        f"{report.cutoff:%Y-%m-%d %H:%M} UTC and never confirmed "
        f"({report.consent_events} consent events, {report.deliveries} confirmation emails)"
    )
