"""Commands for the contact channel on the web: serve, apikeys, form-snippet."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import click

from tidings.cli import State, pass_state
from tidings.cli.output import emit_rows, output_options
from tidings.runtime import Runtime

if TYPE_CHECKING:
    from tidings.web.server import WebServer


def start_web(runtime: Runtime, host: str | None, port: int | None) -> WebServer:
    """Build the app and listen (at once: a busy port is an error now, not later)."""
    # Flask is imported here, not at the top: `tidings --help` and the other commands stay fast.
    from tidings.web import WebServer, create_app

    settings = runtime.settings
    server = WebServer(
        create_app(runtime),
        host or settings.web_host,
        settings.web_port if port is None else port,
        threads=settings.web_threads,
    )
    return server.start()


@contextmanager
def until_signalled(stopping: str) -> Iterator[threading.Event]:
    """Yields an event set by SIGTERM or SIGINT (Ctrl-C); handlers are restored afterwards."""
    stop = threading.Event()

    def _stop(signum: int, _frame: object) -> None:
        click.echo(f"{signal.Signals(signum).name}: {stopping}", err=True)
        stop.set()

    previous = {sig: signal.signal(sig, _stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


host_option = click.option(
    "--host",
    default=None,
    help="Address to listen on (default: TIDINGS_WEB_HOST, 127.0.0.1; behind a reverse proxy "
    "keep it on loopback).",
)
port_option = click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Port to listen on (default: TIDINGS_WEB_PORT, 8000; 0 picks a free one).",
)


@click.command("serve")
@host_option
@port_option
@pass_state
def serve(state: State, host: str | None, port: int | None) -> None:
    """Serve the web pages only (sign-up form, confirm, unsubscribe, preferences, the API),
    with waitress. Emails are sent by `tidings run --no-web` (or cron `tidings send-due`).

    Ctrl-C or SIGTERM stops it after the requests in progress.

    \b
    Example, behind a reverse proxy that terminates HTTPS:
      TIDINGS_BASE_URL=https://news.example.org TIDINGS_TRUSTED_PROXIES=1 \\
        tidings serve --host 127.0.0.1 --port 8000
    """
    runtime = state.runtime()
    with until_signalled("finishing the requests in progress...") as stop:
        server = start_web(runtime, host, port)
        try:
            click.echo(
                f"serving {runtime.settings.public_base_url} at {server.url}; Ctrl-C to stop",
                err=True,
            )
            while not stop.wait(0.5):
                pass
        finally:
            server.stop()
    click.echo("stopped cleanly", err=True)


# ----------------------------------------------------------------------------- apikeys


@click.group("apikeys")
def apikeys_group() -> None:
    """Keys for POST /api/subscribers (a contact-form backend forwarding opt-ins)."""


@apikeys_group.command("create")
@click.argument("name")
@pass_state
def apikeys_create(state: State, name: str) -> None:
    """Create a key and print it, once: only its hash is stored.

    \b
    Example:
      tidings apikeys create contact-form
    """
    from tidings.subscribers.apikeys import create_api_key

    runtime = state.runtime()
    with runtime.sessions.begin() as session:
        row, key = create_api_key(session, name, runtime.clock.now())
        stored_name = row.name
    click.echo(key)
    click.echo(
        f"API key {stored_name!r} created. It is shown only this once: keep it in your "
        "contact-form backend's secrets and send it as 'Authorization: Bearer <key>'.",
        err=True,
    )


@apikeys_group.command("list")
@output_options
@pass_state
def apikeys_list(state: State, fmt: str) -> None:
    """List keys: name, the first characters, when created, last used, revoked."""
    from tidings.subscribers.apikeys import list_api_keys

    runtime = state.runtime()
    with runtime.sessions.begin() as session:
        rows = [
            {
                "name": k.name,
                "prefix": k.prefix,
                "created_at": k.created_at,
                "last_used_at": k.last_used_at,
                "revoked_at": k.revoked_at,
            }
            for k in list_api_keys(session)
        ]
    emit_rows(rows, ["name", "prefix", "created_at", "last_used_at", "revoked_at"], fmt)


@apikeys_group.command("revoke")
@click.argument("name")
@pass_state
def apikeys_revoke(state: State, name: str) -> None:
    """Revoke a key by name: it stops working at once.

    \b
    Example:
      tidings apikeys revoke contact-form
    """
    from tidings.subscribers.apikeys import revoke_api_key

    runtime = state.runtime()
    with runtime.sessions.begin() as session:
        changed = revoke_api_key(session, name, runtime.clock.now())
    click.echo(f"API key {name!r} " + ("revoked" if changed else "was already revoked"))


# ----------------------------------------------------------------------------- form-snippet


@click.command("form-snippet")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    default=None,
    help="Write it to this file instead of printing it.",
)
@pass_state
def form_snippet(state: State, out: Path | None) -> None:
    """Print an HTML sign-up form to paste into your website. It posts to this tidings'
    /subscribe (TIDINGS_BASE_URL) and loads no third-party script.

    Add your site to TIDINGS_FORM_ORIGINS (e.g. https://www.example.org) so that the form is
    accepted at once; otherwise people confirm it once more on the tidings page.

    \b
    Example:
      TIDINGS_BASE_URL=https://news.example.org tidings form-snippet --out signup.html
    """
    from tidings.web.snippet import render_snippet

    html = render_snippet(state.settings)
    if out is None:
        click.echo(html, nl=False)
    else:
        out.write_text(html, encoding="utf-8")
        click.echo(f"wrote {out}", err=True)


def register(cli: click.Group) -> None:
    cli.add_command(serve)
    cli.add_command(apikeys_group)
    cli.add_command(form_snippet)
