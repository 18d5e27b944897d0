"""Operating the engine: `tidings worker`, `tidings status`, `tidings bounces ingest`."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from tidings.bounces import ingest
from tidings.cli import State, pass_state
from tidings.cli.output import emit_object, output_options
from tidings.db import signing_key
from tidings.preflight import check_before_sending
from tidings.routing import RateLimiter
from tidings.scheduler import Worker
from tidings.status import collect_status


def run_until_signalled(
    worker: Worker,
    tick_seconds: float | None,
    what: str,
    also_running: str = "",
    on_stop: Callable[[], None] | None = None,
) -> None:
    """Start the scheduler and wait for Ctrl-C or SIGTERM; then finish the message in flight,
    give back the rest of the claim, run `on_stop` (what else the command started) and
    return. `also_running` is added to the banner."""
    stop = threading.Event()

    def _stop(signum: int, _frame: object) -> None:
        click.echo(f"{signal.Signals(signum).name}: finishing the message in flight...", err=True)
        stop.set()

    previous = {sig: signal.signal(sig, _stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        worker.start(tick_seconds)
        every = tick_seconds or worker.runtime.settings.tick_seconds
        click.echo(
            f"{what} is running (a pass every {every:g}s{also_running}); Ctrl-C to stop",
            err=True,
        )
        while not stop.wait(0.5):
            pass
    finally:
        try:
            worker.shutdown()
        finally:
            if on_stop is not None:
                on_stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    click.echo("stopped cleanly", err=True)


@click.command("worker")
@click.option(
    "--tick",
    "tick_seconds",
    type=float,
    default=None,
    help="Seconds between passes (default: TIDINGS_TICK_SECONDS, 5).",
)
@pass_state
def worker_cmd(state: State, tick_seconds: float | None) -> None:
    """Plan and send, without the web pages: start one on every machine you like.

    On PostgreSQL any number of workers share the queue (row locks: each email is claimed by
    one worker). On SQLite only one dispatcher may run; a second one says so and exits.

    \b
    Example (three workers on one PostgreSQL database):
      export TIDINGS_DATABASE_URL=postgresql+psycopg://tidings@db/tidings
      tidings worker & tidings worker & tidings worker &
    """
    check_before_sending(state.settings)  # postal address (CAN-SPAM), DKIM key
    run_until_signalled(Worker(state.runtime()), tick_seconds, "tidings worker")


@click.command("status")
@output_options
@pass_state
def status_cmd(state: State, fmt: str) -> None:
    """The queue, the send rate, retries and failures, paused campaigns and why, and each
    SMTP server's use of its caps.

    \b
    Example:
      tidings status --json | jq .queue
    """
    runtime = state.runtime()
    lanes = runtime.lanes()
    limiter = RateLimiter(runtime.sessions, runtime.clock)
    with runtime.sessions.begin() as session:
        info = collect_status(session, limiter, lanes)
    if fmt == "json":
        emit_object(info, "json")
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
        line = f"campaign {c['slug']}: {c['status']}"
        click.echo(line + (f" ({c['why']})" if c["why"] else ""))
    for s in info["servers"]:
        windows = ", ".join(f"{w['used']}/{w['cap']} per {w['per']}" for w in s["windows"])
        line = f"server {s['name']} (weight {s['weight']:g}): {s['state']}"
        if windows:
            line += f", {windows}"
        if s["last_error"]:
            line += f" - {s['last_error']}"
        click.echo(line)


@click.group("bounces")
def bounces_group() -> None:
    """Bounce and complaint reports that come back by email."""


@bounces_group.command("ingest")
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@output_options
@pass_state
def ingest_cmd(state: State, path: Path, fmt: str) -> None:
    """Read bounces (RFC 3464) and complaints (RFC 5965) from a Maildir, an mbox, an .eml
    file or a folder of them, and act on them: hard bounces and complaints suppress the
    address, soft bounces are counted. Nothing is deleted; running it again counts nothing
    twice; messages it does not understand are listed and left in place.

    \b
    Example (the bounce mailbox of TIDINGS_BOUNCE_ADDRESS):
      tidings bounces ingest /var/mail/bounces/Maildir
    """
    runtime = state.runtime()
    now = runtime.clock.now()
    with runtime.sessions.begin() as session:
        secret = signing_key(session, runtime.settings.secret_key)
        report = ingest(session, path, runtime.settings, secret, now)
    if fmt == "json":
        emit_object(report.__dict__, "json")
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


def register(cli: click.Group) -> None:
    cli.add_command(worker_cmd)
    cli.add_command(status_cmd)
    cli.add_command(bounces_group)
