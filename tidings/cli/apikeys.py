"""`tidings apikeys ...`: keys for the API (a contact-form backend forwarding opt-ins)."""

from __future__ import annotations

import click

from tidings.cli.common import State, pass_state
from tidings.cli.output import output_options, write_rows


@click.group("apikeys")
def apikeys_group() -> None:
    """Keys for POST /api/subscribers (a contact-form backend forwarding opt-ins)."""


@apikeys_group.command("create")
@click.argument("name")
@pass_state
def create(state: State, name: str) -> None:
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
def list_cmd(state: State, fmt: str) -> None:
    """List keys: name, the first characters, when created, last used, revoked."""
    from tidings.subscribers.apikeys import api_key_rows

    runtime = state.runtime()
    with runtime.read_sessions.begin() as session:
        rows = api_key_rows(session)
    write_rows(rows, ["name", "prefix", "created_at", "last_used_at", "revoked_at"], fmt)


@apikeys_group.command("revoke")
@click.argument("name")
@pass_state
def revoke(state: State, name: str) -> None:
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
