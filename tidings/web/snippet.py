"""`tidings form-snippet`: a plain HTML sign-up form for the center's own website.

It posts to TIDINGS_BASE_URL/subscribe, carries the version of the consent text it shows (so a
form left over from an older wording is caught, and the hash recorded is of the text that was
really shown), and a hidden honeypot. No third-party script: the one optional script comes
from this tidings and only fills in the timezone.
"""

from __future__ import annotations

from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from tidings.config import Settings
from tidings.subscribers.forms import EMAIL_MAX_CHARS, TIMEZONE_MAX_CHARS
from tidings.subscribers.validation import NAME_MAX_CHARS
from tidings.web.app import consent_text_for, consent_version_of

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"


def render_snippet(settings: Settings) -> str:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    text = consent_text_for(settings)
    return env.get_template("web/snippet.html").render(
        action=f"{settings.public_base_url}/subscribe",
        script=f"{settings.public_base_url}/static/timezone.js",
        organization=settings.organization,
        consent_text=text,
        consent_version=consent_version_of(text),
        limits={"email": EMAIL_MAX_CHARS, "name": NAME_MAX_CHARS, "timezone": TIMEZONE_MAX_CHARS},
    )
