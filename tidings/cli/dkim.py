"""`tidings dkim ...`: DKIM keys."""

from __future__ import annotations

from pathlib import Path

import click


@click.group("dkim")
def dkim_group() -> None:
    """DKIM keys: signatures that let receivers trust mail from your domain."""


@dkim_group.command("generate")
@click.option("--selector", required=True, help="Name of this key, e.g. s2026 (rotate by name).")
@click.option("--domain", required=True, help="The signing domain, your From address's domain.")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("dkim"),
    show_default=True,
    help="Folder for SELECTOR.private and SELECTOR.txt.",
)
@click.option("--force", is_flag=True, help="Replace an existing key of this selector.")
def generate(selector: str, domain: str, out_dir: Path, force: bool) -> None:
    """Make an RSA-2048 key pair, write it, and print the DNS TXT record to publish.

    \b
    Example:
      tidings dkim generate --selector s2026 --domain center.example.org
    """
    from tidings.rendering.dkim import generate_key, record_name, zone_file_line

    key = generate_key(selector, domain, out_dir, force=force)
    click.echo(f"wrote {key.private_path} (the private key: keep it secret) and {key.record_path}")
    click.echo(f"\nPublish this TXT record at {record_name(selector, domain)}:\n")
    click.echo(f"  {key.record}\n")
    click.echo("As a zone-file line (long records are split into quoted strings):\n")
    click.echo(f"  {zone_file_line(selector, domain, key.record)}\n")
    click.echo("Then sign every email with:\n")
    click.echo(f"  export TIDINGS_DKIM_SELECTOR={selector} TIDINGS_DKIM_DOMAIN={domain}")
    click.echo(f"  export TIDINGS_DKIM_PRIVATE_KEY={key.private_path.resolve()}")
    click.echo("\nand run `tidings check`.")
