"""The `tidings` command. Verbs are grouped by noun (campaigns, subscribers, suppressions...);
each command is a thin layer over one library function, and library errors become one-line
messages with a non-zero exit code here, at the boundary.

Commands load lazily: `tidings --version` imports no command at all, `tidings --help` the
command modules only (they import the library inside each command), and a command imports
what it uses. So the command starts fast, and Flask, premailer or alembic are loaded only by
the commands that need them.
"""

from __future__ import annotations

import gc
import importlib
import logging
import sys
from typing import Any

import click

from tidings import __version__
from tidings.cli.common import State
from tidings.errors import TidingsError

# Each command: "module:attribute", imported when the command (or the help) needs it.
COMMANDS = {
    "demo": "tidings.cli.engine:demo",
    "run": "tidings.cli.engine:run",
    "worker": "tidings.cli.engine:worker",
    "send-due": "tidings.cli.engine:send_due",
    "status": "tidings.cli.engine:status",
    "db": "tidings.cli.db:db_group",
    "serve": "tidings.cli.web:serve",
    "form-snippet": "tidings.cli.web:form_snippet",
    "apikeys": "tidings.cli.apikeys:apikeys_group",
    "campaigns": "tidings.cli.campaigns:campaigns_group",
    "subscribers": "tidings.cli.subscribers:subscribers_group",
    "suppressions": "tidings.cli.suppressions:suppressions_group",
    "bounces": "tidings.cli.bounces:bounces_group",
    "inbox": "tidings.cli.inbox:inbox_group",
    "dkim": "tidings.cli.dkim:dkim_group",
    "check": "tidings.cli.ops:check",
    "stats": "tidings.cli.ops:stats",
    "prune": "tidings.cli.ops:prune",
    "users": "tidings.cli.users:users_group",
    "audit": "tidings.cli.users:audit_cmd",
}


class TidingsGroup(click.Group):
    """Loads its commands on demand, and turns library errors into clean messages."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module, _, attribute = target.partition(":")
        command: click.Command = getattr(importlib.import_module(module), attribute)
        return command

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except TidingsError as exc:
            raise click.ClickException(str(exc)) from exc


@click.group(cls=TidingsGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_file",
    envvar="TIDINGS_CONFIG",
    type=click.Path(dir_okay=False),
    help="TOML settings file (default: $TIDINGS_CONFIG). Env vars TIDINGS_* win.",
)
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.version_option(__version__, prog_name="tidings")
@click.pass_context
def cli(ctx: click.Context, config_file: str | None, verbose: int) -> None:
    """tidings: email newsletters and drip campaigns, self-hosted.

    \b
    Start with the demo:     tidings demo
    Set up a database:       tidings db upgrade
    Load the KAP series:     tidings campaigns load kap-benefits
    Add a subscriber:        tidings subscribers add ann@example.org --timezone Europe/Paris
    Send on a schedule:      tidings run
    """
    level = logging.WARNING - 10 * verbose
    logging.basicConfig(
        level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    state = State(config_file)
    ctx.obj = state
    ctx.call_on_close(state.close)


def main() -> None:
    # No garbage collection while the command loads: importing the engine allocates a great
    # many objects that live as long as the process, and collecting among them costs a tenth
    # of a short command's run. State.runtime() turns it back on (see started()).
    gc.disable()
    cli(prog_name="tidings")
