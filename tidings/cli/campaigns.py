"""`tidings campaigns ...`: write, check, look at, schedule and control campaigns."""

from __future__ import annotations

import sys
import tempfile
import webbrowser
from pathlib import Path
from typing import Any

import click

from tidings.cli.common import State, lines_of, pass_state
from tidings.cli.output import output_options, say, write_object, write_rows


@click.group("campaigns")
def campaigns_group() -> None:
    """Write, check, preview, schedule and pause campaigns."""


# ----------------------------------------------------------------------------- writing


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
    from tidings.campaigns.importtext import write_campaign

    for path in write_campaign(file.read(), slug, out_dir, name=name):
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
    from tidings.campaigns.loading import load_campaign, resolve_campaign_dir
    from tidings.errors import CampaignError

    runtime = state.runtime()
    folder = resolve_campaign_dir(source)
    try:
        with runtime.sessions.begin() as session:
            report = load_campaign(session, folder, runtime.settings, runtime.clock.now())
    except CampaignError as exc:
        raise click.ClickException(
            f"{folder}: not loaded, nothing was stored:\n  " + "\n  ".join(exc.problems)
        ) from exc
    steps = len(report.added) + len(report.changed) + len(report.unchanged)
    click.echo(
        f"{report.slug}: {'created' if report.created else 'updated'}, {steps} steps "
        f"({len(report.added)} new, {len(report.changed)} changed, {len(report.removed)} removed)"
    )
    if report.enrollments_moved:
        click.echo(f"  kept {report.enrollments_moved} enrolled subscribers at their place")
    for warning in report.warnings:
        click.echo(f"warning: {warning}", err=True)


@campaigns_group.command("lint")
@click.argument("source", metavar="SLUG|DIR")
@output_options
@pass_state
def lint(state: State, source: str, fmt: str) -> None:
    """Check a campaign against the content rules (../shared/CONTENT.md): subjects, the
    footer every email carries, wording about suicide, unsupported claims, links, images,
    tracking, size. Exits 1 on any error; `campaigns load` runs the same check.

    A phrase the rules flag can be accepted in campaign.toml: [lint] allow = ["..."].

    \b
    Examples:
      tidings campaigns lint kap-benefits
      tidings campaigns lint ./campaigns/winter-news --json
    """
    from tidings.campaigns.lint import errors, lint_folder
    from tidings.campaigns.loading import resolve_campaign_dir

    folder = resolve_campaign_dir(source, lambda: state.runtime().read_sessions)
    findings = lint_folder(folder, state.settings)
    if fmt == "table":
        for finding in findings:
            click.echo(str(finding))
        failed = len(errors(findings))
        click.echo(f"{folder}: {failed} error(s), {len(findings) - failed} warning(s)")
    else:
        columns = ["severity", "rule", "file", "line", "message"]
        write_rows((f.__dict__ for f in findings), columns, fmt)
    if errors(findings):
        sys.exit(1)


# ----------------------------------------------------------------------------- reading


@campaigns_group.command("list")
@output_options
@pass_state
def list_cmd(state: State, fmt: str) -> None:
    """List loaded campaigns with their status and counts."""
    from tidings.campaigns.store import campaign_summaries

    runtime = state.runtime()
    with runtime.read_sessions.begin() as session:
        rows = campaign_summaries(session)
    write_rows(rows, ["slug", "kind", "status", "steps", "enrolled", "sent", "name"], fmt)


@campaigns_group.command("show")
@click.argument("slug")
@output_options
@pass_state
def show(state: State, slug: str, fmt: str) -> None:
    """Show a campaign: settings, schedule and every step with its counts."""
    from tidings.campaigns.store import campaign_details

    runtime = state.runtime()
    with runtime.read_sessions.begin() as session:
        info = campaign_details(session, slug)
    write_object(info, fmt, rows="steps")


@campaigns_group.command("preview")
@click.argument("slug")
@click.option("--step", "step_key", default=None, help="Step key or position (default: first).")
@click.option(
    "--format",
    "part",
    type=click.Choice(["html", "text", "eml"]),
    default="html",
    show_default=True,
    help="The html part, the text part, or the whole message.",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, allow_dash=True),
    default="-",
    help="Write to FILE (readable by its owner only; default: stdout).",
)
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
    help="Write every email to a folder (--dir, or a new temporary one) and open its index.",
)
@pass_state
def preview(
    state: State,
    slug: str,
    step_key: str | None,
    part: str,
    out: str,
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
    from tidings.ops.previews import preview_folder, preview_step

    runtime = state.runtime()
    if folder is None and not open_it:
        email = preview_step(runtime, slug, step_key)
        data = {"html": email.html, "text": email.text}.get(part)
        content = email.message if data is None else data.encode("utf-8")
        if out == "-":
            sys.stdout.buffer.write(content)
        else:
            from tidings.files import write_private

            write_private(out, content)  # a sample reader, but the campaign's own links
        return
    folder = folder or Path(tempfile.mkdtemp(prefix=f"tidings-preview-{slug}-"))
    count, index = preview_folder(runtime, slug, folder)
    click.echo(f"wrote {count} email(s) to {folder}")
    click.echo(f"index: {index.resolve()}")
    if open_it and not webbrowser.open(index.resolve().as_uri()):
        click.echo("(no browser to open here: open the index above)", err=True)


@campaigns_group.command("spamcheck")
@click.argument("slug")
@click.option(
    "--max",
    "max_score",
    type=float,
    default=5.0,
    show_default=True,
    help="Exit 1 if an email scores above this.",
)
@pass_state
def spamcheck(state: State, slug: str, max_score: float) -> None:
    """Score every email of a loaded campaign with SpamAssassin (network tests off), as the
    sample reader would get it (DKIM-signed when configured), and list the rules that fired.

    Needs Debian's spamassassin package (apt-get install spamassassin; no daemon).

    \b
    Example:
      tidings campaigns spamcheck kap-benefits --max 1.0
    """
    from tidings.ops.spamcheck import THRESHOLD, score_campaign

    worst = 0.0
    for email, score in score_campaign(state.runtime(), slug):
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
    default="/usr/bin/chromium",
    show_default=True,
    help="The Chromium (or Chrome) program to drive.",
)
@pass_state
def screenshot(state: State, slug: str, out_dir: Path, chromium: str) -> None:
    """Render every email in headless Chromium at desktop (1280 px) and phone (375 px)
    width and save full-page PNGs: DIR/01-welcome-desktop.png, DIR/01-welcome-phone.png...

    Needs Playwright, an optional extra: pip install -e '.[screenshots]' (it drives the
    system's Chromium, apt-get install chromium; it downloads no browser).

    \b
    Example:
      tidings campaigns screenshot kap-benefits --out shots/
    """
    from tidings.ops.previews import screenshot_campaign

    for path in screenshot_campaign(state.runtime(), slug, out_dir, chromium):
        click.echo(f"wrote {path}")


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
    """Send one step (or all) to an address now, through the configured SMTP servers and
    within their caps.

    Test sends are not recorded in the ledger and their links belong to no subscriber.

    \b
    Example:
      tidings campaigns test-send kap-benefits --to me@example.org --step all
    """
    from tidings.sending.oneoff import send_tests
    from tidings.states import SendOutcome

    runtime = state.runtime()
    with runtime.sessions.begin() as session:  # for the audit entry, written after the sends
        now = runtime.clock.now()
        sent = send_tests(runtime, session, now, slug, [to_address], step_key, field="--to")
    sends = [send for _, send in sent]
    for send in sends:
        say(f"{send.step_key}: {send.result.outcome} ({send.result.reply})")
    failed = sum(send.result.outcome != SendOutcome.SENT for send in sends)
    if failed:
        raise click.ClickException(f"{failed} of {len(sends)} test emails were not sent")


# ----------------------------------------------------------------------------- controlling


@campaigns_group.command("pause")
@click.argument("slug")
@click.option("--reason", default="paused by an operator", help="Why (shown in the console).")
@pass_state
def pause(state: State, slug: str, reason: str) -> None:
    """Stop sending a campaign now. Nothing is lost: resume picks up where it stopped."""
    from tidings.campaigns.store import pause as pause_campaign

    runtime = state.runtime()
    with runtime.sessions.begin() as session:
        pause_campaign(session, runtime.clock.now(), slug, reason)
    click.echo(f"{slug}: paused")


@campaigns_group.command("resume")
@click.argument("slug")
@pass_state
def resume(state: State, slug: str) -> None:
    """Resume a paused campaign. Nothing already sent is sent again."""
    from tidings.campaigns.store import resume as resume_campaign

    runtime = state.runtime()
    with runtime.sessions.begin() as session:
        resume_campaign(session, runtime.clock.now(), slug)
    click.echo(f"{slug}: active")


@campaigns_group.command("enroll")
@click.argument("slug")
@click.argument("emails", nargs=-1)
@click.option("--all-active", is_flag=True, help="Enroll every active subscriber.")
@pass_state
def enroll(state: State, slug: str, emails: tuple[str, ...], all_active: bool) -> None:
    """Start a sequence for subscribers who confirmed before it was loaded.

    EMAILS may be given as arguments or, with -, one per line on stdin.

    \b
    Examples:
      tidings campaigns enroll kap-benefits --all-active
      tidings campaigns enroll kap-benefits ann@example.org bob@example.org
    """
    from tidings.campaigns.sequencing import enroll_addresses

    if bool(emails) == all_active:
        raise click.UsageError("give EMAILS (or - for stdin), or --all-active")
    addresses = None if all_active else list(lines_of(emails))
    runtime = state.runtime()
    with runtime.sessions.begin() as session:
        done = enroll_addresses(session, slug, addresses, runtime.clock.now())
    click.echo(f"{slug}: enrolled {done.added} subscriber(s), {done.already} already were")


@campaigns_group.command("schedule")
@click.argument("slug")
@click.option("--at", "when", required=True, help="Date and time, 'YYYY-MM-DD HH:MM' (or 'now').")
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
@click.option("--enrolled", metavar="SLUG", help="Only subscribers in (or done with) SLUG.")
@click.option("--not-enrolled", metavar="SLUG", help="Only subscribers never in sequence SLUG.")
@pass_state
def schedule(
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
    from tidings.campaigns.audience import audience_from_options
    from tidings.campaigns.broadcasts import schedule_broadcast

    try:
        audience = audience_from_options(where, timezones, enrolled, not_enrolled)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    runtime = state.runtime()
    with runtime.sessions.begin() as session:
        report = schedule_broadcast(
            session, slug, when, runtime.clock.now(), tz, local_time, audience
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
def unschedule(state: State, slug: str) -> None:
    """Take a newsletter off the schedule: nothing more goes out, and emails queued but not
    yet sent are taken back. It can be scheduled again (nobody gets it twice).

    \b
    Example:
      tidings campaigns unschedule winter-news
    """
    from tidings.campaigns.broadcasts import unschedule_broadcast

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
def cancel(state: State, slug: str) -> None:
    """Cancel a newsletter for good: nothing more goes out, queued emails are skipped (and
    kept in the ledger). `pause` / `resume` stop it for a while instead.

    \b
    Example:
      tidings campaigns cancel winter-news
    """
    from tidings.campaigns.broadcasts import cancel_broadcast

    runtime = state.runtime()
    with runtime.sessions.begin() as session:
        report = cancel_broadcast(session, slug, runtime.clock.now())
    click.echo(
        f"{slug}: cancelled; {report.skipped} queued email(s) skipped, {report.sent} were sent"
    )
