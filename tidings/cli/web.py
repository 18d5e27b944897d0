"""Commands for the contact channel on the web: serve, form-snippet."""

from __future__ import annotations

from pathlib import Path

import click

from tidings.cli.common import (
    State,
    host_option,
    pass_state,
    port_option,
    until_signalled,
    wait_for,
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
    from tidings.web.server import start_web

    state.settings.check_secret_key()  # the pages sign and check every link
    runtime = state.runtime(service=True)
    with until_signalled("finishing the requests in progress...") as stop:
        server = start_web(runtime, host, port)
        try:
            click.echo(
                f"serving {runtime.settings.public_base_url} at {server.url}; Ctrl-C to stop",
                err=True,
            )
            wait_for(stop)
        finally:
            server.stop()
    click.echo("stopped cleanly", err=True)


@click.command("form-snippet")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
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
    from tidings.files import write_public
    from tidings.web.snippet import render_snippet

    html = render_snippet(state.settings)
    if out is None:
        click.echo(html, nl=False)
    else:
        write_public(out, html)
        click.echo(f"wrote {out}", err=True)
