"""What frames every email as a letter from people: the greeting by first name, the contact
line, and how a length of time is said in words. Pure functions, shared by compiling, the
per-reader fast path (mime.py) and the reference path, so all of them say the same."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

FIRST_NAME = "{first_name}"
DEFAULT_FALLBACK = "Hello,"


def greeting_for(greeting: str, fallback: str, first_name: str) -> str:
    """[letter] greeting ("Dear {first_name},") for one reader; the fallback ("Hello,") when
    the reader gave no name. Empty when the campaign has no greeting."""
    if not greeting:
        return ""
    if FIRST_NAME not in greeting:
        return greeting
    if first_name:
        return greeting.replace(FIRST_NAME, first_name)
    return fallback or DEFAULT_FALLBACK


@dataclass(frozen=True)
class ContactLine:
    """ "Questions? Call <phone> (<office hours>) or visit <website>." from [contact]; only
    the parts that are set."""

    phone: str = ""
    tel: str = ""  # the phone as a tel: link
    office_hours: str = ""
    website: str = ""
    website_label: str = ""  # the website as people say it: center.example.org

    @property
    def text(self) -> str:
        """The line of the text part: the website after a colon, never followed by a dot."""
        if self.phone:
            hours = f" ({self.office_hours})" if self.office_hours else ""
            start = f"Questions? Call {self.phone}{hours}"
            return f"{start} or visit our website: {self.website}" if self.website else start + "."
        return f"Questions? Visit our website: {self.website}" if self.website else ""


def contact_line(contact: Mapping[str, str]) -> ContactLine | None:
    phone = contact.get("phone", "").strip()
    website = contact.get("website", "").strip()
    if not phone and not website:
        return None
    label = re.sub(r"^https?://(www\.)?", "", website).rstrip("/")
    return ContactLine(
        phone=phone,
        tel=tel_link(phone) if phone else "",
        office_hours=contact.get("office_hours", "").strip() if phone else "",
        website=website,
        website_label=label,
    )


def tel_link(phone: str) -> str:
    """tel:+15555550142 from "+1 (555) 555-0142": the digits and a leading plus."""
    digits = re.sub(r"[^\d+]", "", phone)
    return "tel:" + (digits[:1] + digits[1:].replace("+", ""))


def duration_words(seconds: float) -> str:
    """7 days, 36 hours, 1 hour: how long a link works, as people say it."""
    if seconds >= 86400 and seconds % 86400 == 0:
        days = int(seconds // 86400)
        return f"{days} day{'s' if days != 1 else ''}"
    hours = max(1, round(seconds / 3600))
    return f"{hours} hour{'s' if hours != 1 else ''}"
