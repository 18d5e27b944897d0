"""Commands that run the engine: db upgrade, run, send-due, demo."""

from __future__ import annotations

from pathlib import Path

import click

from tidings.cli import State, pass_state
from tidings.cli.ops import run_until_signalled
from tidings.cli.web import host_option, port_option, start_web
from tidings.db import upgrade
from tidings.preflight import check_before_sending
from tidings.scheduler import DispatcherBusy, Worker


@click.group("db")
def db_group() -> None:
    """The database schema (Alembic migrations)."""


@db_group.command("upgrade")
@pass_state
def db_upgrade(state: State) -> None:
    """Create the tables, or bring them up to date. Safe to run at every deploy.

    \b
    Example:
      TIDINGS_DATABASE_URL=postgresql+psycopg://tidings@db/tidings tidings db upgrade
    """
    upgrade(state.settings.database_url)
    click.echo("database is up to date")


@click.command("send-due")
@pass_state
def send_due(state: State) -> None:
    """Plan and send everything due now, once, then exit (for cron).

    \b
    Example crontab line, every 5 minutes:
      */5 * * * * tidings send-due
    """
    check_before_sending(state.settings)  # postal address (CAN-SPAM), DKIM key
    runtime = state.runtime()
    worker = Worker(runtime)
    try:
        with worker:
            result = worker.tick()
    except DispatcherBusy as busy:
        # An overlapping cron run on SQLite: the other process is sending; nothing to do.
        click.echo(f"skipped: {busy}", err=True)
        return
    d = result.dispatched
    click.echo(
        f"planned {result.planned.planned}, sent {d.sent}, retrying {d.retried}, "
        f"failed {d.failed}, bounced {d.bounced}, skipped {d.skipped}"
    )


@click.command("run")
@click.option(
    "--tick",
    "tick_seconds",
    type=float,
    default=None,
    help="Seconds between scheduler passes (default: TIDINGS_TICK_SECONDS, 5).",
)
@click.option(
    "--no-web",
    is_flag=True,
    help="Only plan and send; serve the web pages elsewhere (`tidings serve`).",
)
@host_option
@port_option
@pass_state
def run(
    state: State, tick_seconds: float | None, no_web: bool, host: str | None, port: int | None
) -> None:
    """Run the scheduler in the foreground: plan due emails, send them, reclaim leases; and
    serve the web pages (sign-up form, confirm, unsubscribe, preferences, API) in the same
    process, unless --no-web.

    Ctrl-C or SIGTERM finishes the message in flight and exits cleanly.

    \b
    Example:
      TIDINGS_SMTP_URL='smtp://user:pass@mail.example.org:587?starttls=1' tidings run --port 8000
    """
    check_before_sending(state.settings)  # postal address (CAN-SPAM), DKIM key
    runtime = state.runtime()
    worker = Worker(runtime)
    if no_web:
        run_until_signalled(worker, tick_seconds, "tidings")
        return
    web = start_web(runtime, host, port)  # before the worker: a busy port fails early
    run_until_signalled(
        worker, tick_seconds, "tidings", f"; web pages at {web.url}", on_stop=web.stop
    )


@click.command("demo")
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("tidings-demo"),
    show_default=True,
    help="Folder for the demo's database and outbox (recreated each run).",
)
@click.option(
    "--subscribers",
    "count",
    type=click.IntRange(1, 1000),
    default=3,
    show_default=True,
    help="How many demo subscribers.",
)
@click.option(
    "--day-seconds",
    type=click.FloatRange(0.05, 3600),
    default=2.0,
    show_default=True,
    help="Real seconds per simulated day.",
)
def demo(directory: Path, count: int, day_seconds: float) -> None:
    """Run the whole KAP series for demo subscribers, weeks in a minute.

    Starts a local SMTP server that stores what it receives in DIR/outbox, and runs the real
    scheduler and SMTP delivery on a scaled clock.

    \b
    Example:
      tidings demo --subscribers 5 --day-seconds 1
    """
    from tidings.demo import run_demo

    summary = run_demo(directory, count, day_seconds, echo=click.echo)
    if not summary.finished:
        raise click.ClickException(summary.message)


def register(cli: click.Group) -> None:
    cli.add_command(db_group)
    cli.add_command(send_due)
    cli.add_command(run)
    cli.add_command(demo)
