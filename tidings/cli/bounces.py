"""`tidings bounces ...`: the older name of `tidings inbox`; `bounces ingest` is
`inbox ingest`, the same command with the same output."""

from __future__ import annotations

import click

from tidings.cli.inbox import ingest


@click.group("bounces")
def bounces_group() -> None:
    """Bounce and complaint reports that come back by email (see `tidings inbox`)."""


bounces_group.add_command(ingest, "ingest")
