"""Commands that run the engine: demo, run, worker, send-due, status."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from tidings.cli.common import (
    State,
    host_option,
    pass_state,
    port_option,
    started,
    until_signalled,
    wait_for,
)
from tidings.cli.output import output_options, say, write_object

if TYPE_CHECKING:
    from tidings.runtime import Runtime
    from tidings.scheduler import Worker

tick_option = click.option(
    "--tick",
    "tick_seconds",
    type=float,
    default=None,
    help="Seconds between passes (default: TIDINGS_TICK_SECONDS, 5).",
)


def _worker(state: State) -> Worker:
    """A worker for this process, after the checks that sending must pass first (a secret key
    long enough to sign links; a postal address, as CAN-SPAM requires; a readable DKIM key)."""
    from tidings.ops.preflight import check_before_sending
    from tidings.scheduler import Worker

    state.settings.check_secret_key()
    check_before_sending(state.settings)
    return Worker(state.runtime(service=True))


def _run_until_signalled(
    worker: Worker,
    tick_seconds: float | None,
    what: str,
    also_running: str = "",
    on_stop: Callable[[], None] | None = None,
) -> None:
    """Start the scheduler and wait for Ctrl-C or SIGTERM; then finish the message in flight,
    give back the rest of the claim, run `on_stop` (what else the command started)."""
    with until_signalled("finishing the message in flight...") as stop:
        try:
            worker.start(tick_seconds)
            every = tick_seconds or worker.runtime.settings.tick_seconds
            click.echo(
                f"{what} is running (a pass every {every:g}s{also_running}); Ctrl-C to stop",
                err=True,
            )
            wait_for(stop)
        finally:
            try:
                worker.shutdown()
            finally:
                if on_stop is not None:
                    on_stop()
    click.echo("stopped cleanly", err=True)


@click.command("run")
@tick_option
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
    worker = _worker(state)
    if no_web:
        _run_until_signalled(worker, tick_seconds, "tidings")
        return
    from tidings.web.server import start_web

    web = start_web(
        state.runtime(service=True), host, port
    )  # before the worker: a busy port fails early
    _run_until_signalled(
        worker, tick_seconds, "tidings", f"; web pages at {web.url}", on_stop=web.stop
    )


@click.command("worker")
@tick_option
@pass_state
def worker(state: State, tick_seconds: float | None) -> None:
    """Plan and send, without the web pages: start one on every machine you like.

    On PostgreSQL any number of workers share the queue (row locks: each email is claimed by
    one worker). On SQLite only one dispatcher may run; a second one says so and exits.

    \b
    Example (three workers on one PostgreSQL database):
      export TIDINGS_DATABASE_URL=postgresql+psycopg://tidings@db/tidings
      tidings worker & tidings worker & tidings worker &
    """
    _run_until_signalled(_worker(state), tick_seconds, "tidings worker")


@click.command("send-due")
@pass_state
def send_due(state: State) -> None:
    """Plan and send everything due now, once, then exit (for cron).

    \b
    Example crontab line, every 5 minutes:
      */5 * * * * tidings send-due
    """
    from tidings.scheduler import DispatcherBusy

    try:
        with _worker(state) as engine:
            result = engine.tick()
    except DispatcherBusy as busy:
        # An overlapping cron run on SQLite: the other process is sending; nothing to do.
        click.echo(f"skipped: {busy}", err=True)
        return
    d = result.dispatched
    click.echo(
        f"planned {result.planned.planned}, sent {d.sent}, retrying {d.retried}, "
        f"failed {d.failed}, bounced {d.bounced}, skipped {d.skipped}"
    )


@click.command("status")
@output_options
@pass_state
def status(state: State, fmt: str) -> None:
    """The queue, the send rate, retries and failures, paused campaigns and why, and each
    SMTP server's use of its caps.

    \b
    Example:
      tidings status --json | jq .queue
    """
    from tidings.ops.status import collect_status

    info = collect_status(state.runtime())
    if fmt != "table":
        write_object(info, fmt)
        return
    _print_status(info)


def _print_status(info: dict[str, Any]) -> None:
    q, sent, day = info["queue"], info["sent"], info["last_day"]
    click.echo(
        f"queue: {q['due_now']} due now, {q['queued']} queued, {q['sending']} sending, "
        f"{q['retrying']} waiting to retry ({q['retries_due']} due)"
    )
    if q["oldest_due_since"]:
        click.echo(f"       oldest due since {q['oldest_due_since']:%Y-%m-%d %H:%M} UTC")
    click.echo(
        f"sent:  {sent['last_minute']} in the last minute, {sent['last_hour']} in the "
        f"last hour, {sent['last_day']} in the last day"
    )
    click.echo(
        f"last day: {day['failed']} failed, {day['bounced']} bounced, "
        f"{day['complaints']} complaints"
    )
    for c in info["campaigns"]:
        say(f"campaign {c['slug']}: {c['status']}" + (f" ({c['why']})" if c["why"] else ""))
    for s in info["servers"]:
        windows = ", ".join(f"{w['used']}/{w['cap']} per {w['per']}" for w in s["windows"])
        line = f"server {s['name']} (weight {s['weight']:g}): {s['state']}"
        if windows:
            line += f", {windows}"
        if s["last_error"]:
            line += f" - {s['last_error']}"
        say(line)  # the server's own words


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
@click.option(
    "--start",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    default=None,
    help="First simulated day, YYYY-MM-DD (readers confirm at 12:00 UTC). Default: the latest "
    "1 December, so the series crosses Christmas and New Year.",
)
@click.option(
    "--serve",
    is_flag=True,
    help="Then keep the staff console open (printed address and login) until Ctrl-C.",
)
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)
def demo(
    directory: Path,
    count: int,
    day_seconds: float,
    start: datetime | None,
    serve: bool,
    port: int,
) -> None:
    """Run the whole KAP series for demo subscribers, weeks in a minute.

    Starts a local SMTP server that stores what it receives in DIR/outbox, and runs the real
    scheduler and SMTP delivery on a scaled clock. With --serve, the staff console then shows
    what was sent to whom, at a printed address with a printed demo login.

    \b
    Example:
      tidings demo --subscribers 5 --day-seconds 1
      tidings demo --start 2027-06-28      # across the 4th of July
      tidings demo --serve                 # then browse http://127.0.0.1:8000/staff/
    """
    from tidings.ops.demo import DEMO_START_HOUR, run_demo

    started()
    first = start.replace(hour=DEMO_START_HOUR, tzinfo=UTC) if start else None
    summary = run_demo(
        directory,
        count,
        day_seconds,
        echo=click.echo,
        start=first,
        serve=(lambda runtime: _serve_console(runtime, port)) if serve else None,
        base_url=f"http://127.0.0.1:{port}",
    )
    if not summary.finished:
        raise click.ClickException(summary.message)


def _serve_console(runtime: Runtime, port: int) -> None:
    """The demo's staff console, with an admin account made for it, until Ctrl-C."""
    from tidings.ops.demo import open_demo_console

    with until_signalled("closing the console...") as stop:
        server, login, password = open_demo_console(runtime, port)
        click.echo(
            f"\nStaff console: {server.url}/staff/\n  sign in as {login}\n  password {password}"
            "\n(Ctrl-C to stop)"
        )
        try:
            wait_for(stop)
        finally:
            server.stop()
