"""What bounces mean for sending: a campaign whose recent sends bounce too often pauses
itself, before mailbox providers start treating everything from the sender as spam.

The rule, pure: `ledger.pause_if_bouncing` counts the bounces and pauses the campaign.
"""

from __future__ import annotations

from datetime import datetime

from tidings.config import Settings


def pause_reason(bounced: int, settings: Settings, now: datetime) -> str | None:
    """Why a campaign pauses when `bounced` of its last `settings.bounce_pause_sends` sends
    are hard bounces, or None when it goes on. Measured against the full window, so a
    handful of early sends cannot trip it."""
    window = settings.bounce_pause_sends
    if bounced / window < settings.bounce_pause_ratio:
        return None
    return (
        f"paused automatically {now:%Y-%m-%d %H:%M} UTC: {bounced} hard bounces in the "
        f"last {window} sends ({bounced / window:.0%}, the limit is "
        f"{settings.bounce_pause_ratio:.0%}); check the list, then `tidings campaigns resume`"
    )
