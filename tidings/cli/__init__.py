"""The `tidings` command. Verbs are grouped by noun (campaigns, subscribers, db); each
command is a thin layer over the library, and library errors become one-line messages with
a non-zero exit code here, at the boundary."""

from __future__ import annotations

import logging
import sys
from typing import Any

import click

from tidings import __version__
from tidings.config import Settings, load_settings
from tidings.errors import TidingsError
from tidings.runtime import Runtime


class State:
    """What every command may need, built on first use (so --help needs no database)."""

    def __init__(self, config_file: str | None):
        self.config_file = config_file
        self._settings: Settings | None = None
        self._runtime: Runtime | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(config_file=self.config_file)
        return self._settings

    def runtime(self) -> Runtime:
        if self._runtime is None:
            self._runtime = Runtime.open(self.settings)
        return self._runtime

    def close(self) -> None:
        if self._runtime is not None:
            self._runtime.close()


class TidingsGroup(click.Group):
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


pass_state = click.make_pass_decorator(State)


def main() -> None:
    cli(prog_name="tidings")


from tidings.cli import admin as _admin  # noqa: E402
from tidings.cli import campaigns as _campaigns  # noqa: E402
from tidings.cli import engine as _engine  # noqa: E402
from tidings.cli import ops as _ops  # noqa: E402
from tidings.cli import staff as _staff  # noqa: E402
from tidings.cli import subscribers as _subscribers  # noqa: E402
from tidings.cli import suppressions as _suppressions  # noqa: E402
from tidings.cli import web as _web  # noqa: E402

for _module in (_campaigns, _engine, _ops, _subscribers, _suppressions, _admin, _web, _staff):
    _module.register(cli)
