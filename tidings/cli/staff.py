"""What staff do before and while sending: schedule newsletters, check content, score it
with SpamAssassin, look at it (screenshots), sign it (DKIM), and check the set-up.

    tidings campaigns schedule|unschedule|cancel SLUG      newsletters (broadcasts)
    tidings campaigns lint SLUG|DIR                        the content rules (CONTENT.md)
    tidings campaigns spamcheck SLUG                       SpamAssassin scores
    tidings campaigns screenshot SLUG --out DIR            PNGs at desktop and phone width
    tidings dkim generate --selector S --domain D          a key pair and its DNS record
    tidings check                                          preflight, line by line
"""

from __future__ import annotations

import json
import sys
import tempfile
import webbrowser
from pathlib import Path
from typing import Any

import click

from tidings.campaigns import shipped_campaign_dir
from tidings.campaigns.audience import Audience
from tidings.campaigns.broadcasts import (
    cancel_broadcast,
    schedule_broadcast,
    unschedule_broadcast,
)
from tidings.campaigns.definition import read_campaign
from tidings.campaigns.lint import ERROR, Finding, lint_campaign
from tidings.campaigns.store import compile_campaign, get_campaign
from tidings.cli import State, pass_state
from tidings.cli.campaigns import _builder, campaigns_group
from tidings.dkim import generate_key, record_name, zone_file_line
from tidings.errors import CampaignError, TidingsError
from tidings.models import Campaign
from tidings.preflight import FAIL, run_checks, stored_facts
from tidings.previews import CHROMIUM, render_campaign, screenshot, write_folder
from tidings.spamcheck import THRESHOLD, score_messages

# ----------------------------------------------------------------------------- broadcasts


def _audience_from_options(
    where: tuple[str, ...],
    timezones: tuple[str, ...],
    enrolled: str | None,
    not_enrolled: str | None,
) -> Audience | None:
    if not (where or timezones or enrolled or not_enrolled):
        return None  # the campaign's own [audience], or everyone
    attributes: dict[str, list[str]] = {}
    for item in where:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint="--where")
        attributes.setdefault(key.strip(), []).append(value.strip())
    try:
        return Audience.parse(
            {
                "timezones": list(timezones),
                "attributes": attributes,
                **({"enrolled": enrolled} if enrolled else {}),
                **({"not_enrolled": not_enrolled} if not_enrolled else {}),
            }
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc


@campaigns_group.command("schedule")
@click.argument("slug")
@click.option(
    "--at",
    "when",
    required=True,
    help="Date and time, 'YYYY-MM-DD HH:MM' (or 'now').",
)
@click.option("--tz", default=None, help="Timezone of --at (IANA name; default UTC).")
@click.option(
    "--local-time",
    is_flag=True,
    help="Send at --at in each subscriber's own timezone (Tokyo first, Hawaii last).",
)
@click.option(
    "--where",
    multiple=True,
    metavar="KEY=VALUE",
    help="Only subscribers whose attribute KEY is VALUE (repeat: any of the values).",
)
@click.option(
    "--timezone",
    "timezones",
    multiple=True,
    metavar="PATTERN",
    help="Only subscribers in this timezone; * matches any text (America/*). Repeatable.",
)
@click.option(
    "--enrolled", metavar="SLUG", help="Only subscribers in (or done with) sequence SLUG."
)
@click.option("--not-enrolled", metavar="SLUG", help="Only subscribers never in sequence SLUG.")
@pass_state
def schedule_cmd(
    state: State,
    slug: str,
    when: str,
    tz: str | None,
    local_time: bool,
    where: tuple[str, ...],
    timezones: tuple[str, ...],
    enrolled: str | None,
    not_enrolled: str | None,
) -> None:
    """Schedule a newsletter (a campaign of kind "broadcast") for one moment, or for a
    wall-clock time in each subscriber's timezone.

    The audience is every active subscriber, the [audience] of campaign.toml, or what the
    options say (they replace campaign.toml's). It is read when the email is due, so people
    who subscribe until then get it. Scheduling again never sends anything twice: who has
    it already is skipped, and queued emails of the earlier schedule are taken back.

    \b
    Examples:
      tidings campaigns schedule winter-news --at "2026-12-03 10:00" --tz Europe/Paris
      tidings campaigns schedule winter-news --at "2026-12-03 10:00" --local-time
      tidings campaigns schedule winter-news --at now --where clinic=portland
    """
    audience = _audience_from_options(where, timezones, enrolled, not_enrolled)
    runtime = state.runtime()
    with runtime.sessions.begin() as session:
        report = schedule_broadcast(
            session,
            slug,
            when,
            runtime.clock.now(),
            tz=tz,
            local_time=local_time,
            audience=audience,
        )
    if report.unchanged:
        click.echo(f"{slug}: already scheduled for {report.when}; nothing changed")
        return
    click.echo(f"{slug}: scheduled for {report.when}")
    click.echo(f"  to {report.audience}: {report.matching} subscriber(s) match now")
    if report.already:
        click.echo(f"  {report.already} subscriber(s) already have it: they will not get it again")
    if report.removed:
        click.echo(f"  took back {report.removed} queued email(s) of the earlier schedule")
    for note in report.notes:
        click.echo(f"  note: {note}")


@campaigns_group.command("unschedule")
@click.argument("slug")
@pass_state
def unschedule_cmd(state: State, slug: str) -> None:
    """Take a newsletter off the schedule: nothing more goes out, and emails queued but not
    yet sent are taken back. It can be scheduled again (nobody gets it twice).

    \b
    Example:
      tidings campaigns unschedule winter-news
    """
    runtime = state.runtime()
    with runtime.sessions.begin() as session:
        report = unschedule_broadcast(session, slug, runtime.clock.now())
    click.echo(
        f"{slug}: unscheduled; {report.removed} queued email(s) taken back, "
        f"{report.sent} sent stay sent"
    )


@campaigns_group.command("cancel")
@click.argument("slug")
@pass_state
def cancel_cmd(state: State, slug: str) -> None:
    """Cancel a newsletter for good: nothing more goes out, queued emails are skipped (and
    kept in the ledger). `pause` / `resume` stop it for a while instead.

    \b
    Example:
      tidings campaigns cancel winter-news
    """
    runtime = state.runtime()
    with runtime.sessions.begin() as session:
        report = cancel_broadcast(session, slug, runtime.clock.now())
    click.echo(
        f"{slug}: cancelled; {report.skipped} queued email(s) skipped, {report.sent} were sent"
    )


# ----------------------------------------------------------------------------- lint


def _campaign_folder(state: State, source: str) -> Path:
    """A folder, a shipped campaign's slug, or the folder a loaded campaign came from."""
    path = Path(source)
    if path.is_dir():
        return path
    shipped = shipped_campaign_dir(source)
    if shipped is not None:
        return shipped
    runtime = state.runtime()
    with runtime.sessions.begin() as session:
        campaign = get_campaign(session, source)
        if not campaign.source_path or not Path(campaign.source_path).is_dir():
            raise TidingsError(
                f"{source}: its folder {campaign.source_path!r} is gone; give the folder"
            )
        return Path(campaign.source_path)


@campaigns_group.command("lint")
@click.argument("source", metavar="SLUG|DIR")
@click.option("--json", "as_json", is_flag=True, help="Output the findings as JSON.")
@pass_state
def lint_cmd(state: State, source: str, as_json: bool) -> None:
    """Check a campaign against the content rules (../shared/CONTENT.md): subjects, the
    footer every email carries, wording about suicide, unsupported claims, links, images,
    tracking, size. Exits 1 on any error; `campaigns load` runs the same check.

    A phrase the rules flag can be accepted in campaign.toml: [lint] allow = ["..."].

    \b
    Examples:
      tidings campaigns lint kap-benefits
      tidings campaigns lint ./campaigns/winter-news --json
    """
    folder = _campaign_folder(state, source)
    try:
        definition = read_campaign(folder)
        compiled = compile_campaign(definition, state.settings)
    except CampaignError as exc:
        findings = [_problem_finding(p) for p in exc.problems]
    else:
        findings = lint_campaign(definition, state.settings, compiled)
    errors = sum(f.severity == ERROR for f in findings)
    if as_json:
        click.echo(json.dumps([f.__dict__ for f in findings], indent=2))
    else:
        for finding in findings:
            click.echo(str(finding))
        click.echo(f"{folder}: {errors} error(s), {len(findings) - errors} warning(s)")
    if errors:
        sys.exit(1)


def _problem_finding(problem: str) -> Finding:
    """A problem of read_campaign / compile ('file:line: message') as a lint error."""
    where, _, message = problem.partition(": ")
    file, _, line = where.rpartition(":")
    if not line.isdigit():
        file, line = where, "1"
    return Finding(ERROR, "invalid", file, int(line), message)


# ----------------------------------------------------------------------------- looking at it


def _rendered(state: State, slug: str) -> tuple[Campaign, list[Any]]:
    runtime = state.runtime()
    with runtime.sessions.begin() as session:
        campaign = get_campaign(session, slug)
        emails = render_campaign(
            session,
            campaign,
            _builder(state, session),
            runtime.settings.sender_domain,
            runtime.clock.now(),
        )
        session.expunge(campaign)
    return campaign, emails


def preview_folder(state: State, slug: str, folder: Path | None, open_it: bool) -> None:
    """`campaigns preview --dir/--open`: every email to a folder with an index page."""
    campaign, emails = _rendered(state, slug)
    if folder is None:
        folder = Path(tempfile.mkdtemp(prefix=f"tidings-preview-{slug}-"))
    index = write_folder(campaign, emails, folder)
    click.echo(f"wrote {len(emails)} email(s) to {folder}")
    click.echo(f"index: {index.resolve()}")
    if open_it and not webbrowser.open(index.resolve().as_uri()):
        click.echo("(no browser to open here: open the index above)", err=True)


@campaigns_group.command("spamcheck")
@click.argument("slug")
@click.option(
    "--max",
    "max_score",
    type=float,
    default=THRESHOLD,
    show_default=True,
    help="Exit 1 if an email scores above this.",
)
@pass_state
def spamcheck_cmd(state: State, slug: str, max_score: float) -> None:
    """Score every email of a loaded campaign with SpamAssassin (network tests off), as the
    sample reader would get it (DKIM-signed when configured), and list the rules that fired.

    Needs Debian's spamassassin package (apt-get install spamassassin; no daemon).

    \b
    Example:
      tidings campaigns spamcheck kap-benefits --max 1.0
    """
    _, emails = _rendered(state, slug)
    scores = score_messages([(e.stem, e.message) for e in emails])
    worst = 0.0
    for email, score in zip(emails, scores, strict=True):
        worst = max(worst, score.score)
        click.echo(f"{score.score:5.1f}  {email.stem}  {email.subject}")
        for rule in score.rules:
            if rule.points:
                click.echo(f"         {rule.points:+.1f} {rule.name}: {rule.description}")
    click.echo(f"highest score {worst:.1f} (SpamAssassin calls {THRESHOLD:.1f} spam)")
    if worst > max_score:
        raise click.ClickException(f"an email scores {worst:.1f}, above --max {max_score:.1f}")


@campaigns_group.command("screenshot")
@click.argument("slug")
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for the PNGs (created).",
)
@click.option(
    "--chromium",
    default=CHROMIUM,
    show_default=True,
    help="The Chromium (or Chrome) program to drive.",
)
@pass_state
def screenshot_cmd(state: State, slug: str, out_dir: Path, chromium: str) -> None:
    """Render every email in headless Chromium at desktop (1280 px) and phone (375 px)
    width and save full-page PNGs: DIR/01-welcome-desktop.png, DIR/01-welcome-phone.png...

    Needs Playwright, an optional extra: pip install -e '.[screenshots]' (it drives the
    system's Chromium, apt-get install chromium; it downloads no browser).

    \b
    Example:
      tidings campaigns screenshot kap-benefits --out shots/
    """
    _, emails = _rendered(state, slug)
    written = screenshot(emails, out_dir, chromium=chromium)
    for path in written:
        click.echo(f"wrote {path}")


# ----------------------------------------------------------------------------- dkim, check


@click.group("dkim")
def dkim_group() -> None:
    """DKIM keys: signatures that let receivers trust mail from your domain."""


@dkim_group.command("generate")
@click.option("--selector", required=True, help="Name of this key, e.g. s2026 (rotate by name).")
@click.option("--domain", required=True, help="The signing domain, your From address's domain.")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("dkim"),
    show_default=True,
    help="Folder for SELECTOR.private and SELECTOR.txt.",
)
@click.option("--force", is_flag=True, help="Replace an existing key of this selector.")
def dkim_generate(selector: str, domain: str, out_dir: Path, force: bool) -> None:
    """Make an RSA-2048 key pair, write it, and print the DNS TXT record to publish.

    \b
    Example:
      tidings dkim generate --selector s2026 --domain center.example.org
    """
    key = generate_key(selector, domain, out_dir, force=force)
    click.echo(f"wrote {key.private_path} (the private key: keep it secret) and {key.record_path}")
    click.echo(f"\nPublish this TXT record at {record_name(selector, domain)}:\n")
    click.echo(f"  {key.record}\n")
    click.echo("As a zone-file line (long records are split into quoted strings):\n")
    click.echo(f"  {zone_file_line(selector, domain, key.record)}\n")
    click.echo("Then sign every email with:\n")
    click.echo(f"  export TIDINGS_DKIM_SELECTOR={selector} TIDINGS_DKIM_DOMAIN={domain}")
    click.echo(f"  export TIDINGS_DKIM_PRIVATE_KEY={key.private_path.resolve()}")
    click.echo("\nand run `tidings check`.")


@click.command("check")
@click.option(
    "--dkim-record",
    default=None,
    metavar="TEXT",
    help="The DKIM TXT record as published (e.g. from your DNS provider), to compare.",
)
@pass_state
def check_cmd(state: State, dkim_record: str | None) -> None:
    """Check the set-up before a real send, line by line: sender, postal address, the
    public web address and its unsubscribe page, each SMTP server (EHLO, STARTTLS, login),
    the DKIM key, and the SPF/DMARC records to publish. Exits 1 if anything is a blocker.

    \b
    Example:
      tidings check
    """
    settings = state.settings
    try:
        runtime = state.runtime()
    except Exception as exc:  # unreachable, not migrated...: a blocker, and check the rest
        click.echo(f"{FAIL:<4}  {'database':<12} {str(exc).splitlines()[0]}")
        checks = run_checks(settings, None, dkim_record)
        blockers = 1
    else:
        with runtime.sessions.begin() as session:
            facts = stored_facts(session, settings)
        checks = run_checks(settings, facts, dkim_record)  # outside the transaction
        blockers = 0
    for check in checks:
        click.echo(str(check))
    blockers += sum(c.status == FAIL for c in checks)
    if blockers:
        raise click.ClickException(f"{blockers} blocker(s): fix them before sending")
    click.echo("ready to send")


def register(cli: click.Group) -> None:
    # The campaigns commands above are registered on campaigns_group by their decorators.
    cli.add_command(dkim_group)
    cli.add_command(check_cmd)
