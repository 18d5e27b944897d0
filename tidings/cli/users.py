"""`tidings users ...`: the staff console's accounts, and `tidings audit`: what was done."""

from __future__ import annotations

import sys

import click

from tidings.cli.common import State, pass_state
from tidings.cli.output import output_options, write_rows
from tidings.states import StaffRole

ROLES = click.Choice([r.value for r in StaffRole])


@click.group("users")
def users_group() -> None:
    """Staff accounts for the console at /staff/ (admin, editor, reviewer, viewer)."""


def _link(state: State, token: str) -> str:
    return f"{state.settings.public_base_url}/staff/set-password/{token}"


@users_group.command("add")
@click.argument("email")
@click.option("--role", type=ROLES, required=True, help="What the account may do.")
@click.option("--name", default="", help="The person's name, shown in the console.")
@click.option(
    "--password-stdin", is_flag=True, help="Read the password from standard input (one line)."
)
@pass_state
def add(state: State, email: str, role: str, name: str, password_stdin: bool) -> None:
    """Add an account. Without --password-stdin, prints a one-time link (24 hours) where the
    person sets their own password.

    \b
    Examples:
      tidings users add ann@center.example --role editor --name "Ann Lee"
      printf '%s\\n' "$PASS" | tidings users add ops@center.example --role admin --password-stdin
    """
    from tidings.staff.accounts import add_user

    password = sys.stdin.readline().rstrip("\r\n") if password_stdin else None
    runtime = state.runtime()
    with runtime.sessions.begin() as session:
        account = add_user(
            session, runtime.clock.now(), runtime.secret(), email, role, name, password
        )
        address, token = account.user.email, account.set_password_token
    click.echo(f"{address}: added as {role}")
    if token:
        click.echo(f"Set-password link (works once, for 24 hours): {_link(state, token)}")


@users_group.command("list")
@output_options
@pass_state
def list_cmd(state: State, fmt: str) -> None:
    """Every account: address, name, role, two-factor, last sign-in, disabled."""
    from tidings.staff.accounts import list_users

    runtime = state.runtime()
    with runtime.read_sessions.begin() as session:
        rows = [
            {
                "email": u.email,
                "name": u.name,
                "role": u.role,
                "two_factor": "on" if u.totp_enabled else "off",
                "password": "set" if u.password_hash else "not set",
                "last_login_at": u.last_login_at,
                "disabled_at": u.disabled_at,
            }
            for u in list_users(session)
        ]
    columns = ["email", "name", "role", "two_factor", "password", "last_login_at", "disabled_at"]
    write_rows(rows, columns, fmt)


@users_group.command("set-role")
@click.argument("email")
@click.argument("role", type=ROLES)
@pass_state
def set_role_cmd(state: State, email: str, role: str) -> None:
    """Change what an account may do (takes effect at its next page)."""
    from tidings.staff.accounts import set_role

    runtime = state.runtime()
    with runtime.sessions.begin() as session:
        address = set_role(session, runtime.clock.now(), email, role).email
    click.echo(f"{address}: {role}")


@users_group.command("disable")
@click.argument("email")
@pass_state
def disable_cmd(state: State, email: str) -> None:
    """Stop an account from signing in; its open sessions end now. `users reset` brings it
    back with a new password."""
    from tidings.staff.accounts import disable

    runtime = state.runtime()
    with runtime.sessions.begin() as session:
        address = disable(session, runtime.clock.now(), email).email
    click.echo(f"{address}: disabled, signed out everywhere")


@users_group.command("reset")
@click.argument("email")
@pass_state
def reset_cmd(state: State, email: str) -> None:
    """Forget an account's password and two-factor setup, sign it out everywhere, and print
    a new one-time set-password link (24 hours)."""
    from tidings.staff.accounts import reset

    runtime = state.runtime()
    with runtime.sessions.begin() as session:
        token = reset(session, runtime.clock.now(), runtime.secret(), email)
    click.echo(f"Set-password link (works once, for 24 hours): {_link(state, token)}")


@click.command("audit")
@click.option("--since", help="Only entries since: a date (2026-12-01, UTC) or an age (7d, 12h).")
@click.option("--user", "actor", help="Only entries by this actor (part of it: 'ann@', 'cli:').")
@click.option("--action", help="Only these actions (a prefix: 'campaign.', 'user.add').")
@click.option("--limit", type=click.IntRange(1, 100_000), default=200, show_default=True)
@output_options
@pass_state
def audit_cmd(
    state: State, since: str | None, actor: str | None, action: str | None, limit: int, fmt: str
) -> None:
    """What staff, operators, API keys and the system did, newest first: when, who, what,
    on what (subscribers by masked address). Append-only: nothing can change it.

    \b
    Examples:
      tidings audit --since 2026-12-01 --user cli:
      tidings audit --action campaign. --format csv > campaign-changes.csv
    """
    from tidings.db.audit import entries
    from tidings.subscribers.directory import parse_since

    runtime = state.runtime()
    start = parse_since(since, runtime.clock.now()) if since else None
    with runtime.read_sessions.begin() as session:
        rows = [
            {
                "at": e.at,
                "actor": e.actor,
                "action": e.action,
                "target": e.target,
                "detail": e.detail or "",
                "note": e.note or "",
            }
            for e in entries(session, since=start, actor=actor, action=action, limit=limit)
        ]
    write_rows(rows, ["at", "actor", "action", "target", "detail", "note"], fmt)
