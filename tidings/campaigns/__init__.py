"""Campaigns: folder format, loading into the database, send windows and sequencing."""

from pathlib import Path

SHIPPED_DIR = Path(__file__).parent


def shipped_campaign_dir(slug: str) -> Path | None:
    """The folder of a campaign that ships with tidings (e.g. kap-benefits), if there is one."""
    folder = SHIPPED_DIR / slug
    return folder if (folder / "campaign.toml").is_file() else None
