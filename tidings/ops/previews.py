"""Previews for people: every email of a campaign as a sample reader gets it, written to a
folder with an index page (`campaigns preview --open`), screenshotted in headless Chromium at a
desktop and a phone width (`campaigns screenshot`), or scored by SpamAssassin (`spamcheck`).

Screenshots need Playwright's Python package (`pip install -e '.[screenshots]'`) and the
system's Chromium (Debian: `apt-get install chromium`); Playwright never downloads a browser
here. The page gets no network: an email that loads something from elsewhere shows it broken,
and nobody's server learns that a preview was opened.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from email import message_from_bytes, policy
from functools import lru_cache
from pathlib import Path

from tidings.campaigns.lint import Finding, lint_folder
from tidings.campaigns.sequencing import active_steps
from tidings.campaigns.store import find_step, get_campaign
from tidings.config import Settings
from tidings.db.models import Campaign, Step, message_id
from tidings.errors import TidingsError
from tidings.files import write_private
from tidings.rendering.compile import CompiledStep
from tidings.rendering.message import Addressee, MessageBuilder
from tidings.rendering.mime import Recipient, personalize_html, personalize_text
from tidings.runtime import Runtime

SAMPLE = Addressee(email="alex.sample@example.org", name="Alex Sample", key="sample-key")
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
DESKTOP_WIDTH = 1280
PHONE_WIDTH = 375


@dataclass(frozen=True)
class PreviewEmail:
    position: int
    key: str
    subject: str
    preheader: str
    html: str
    text: str
    message: bytes  # the whole message, as the dispatcher would send it

    @property
    def stem(self) -> str:
        return f"{self.position:02d}-{self.key}"


def _sample(builder: MessageBuilder) -> Recipient:
    return Recipient(
        SAMPLE.email,
        SAMPLE.name,
        builder.links.unsubscribe(SAMPLE.key),
        builder.links.preferences(SAMPLE.key),
    )


def _preview(
    builder: MessageBuilder, campaign: Campaign, step: Step, domain: str, now: datetime
) -> PreviewEmail:
    compiled = CompiledStep.from_stored(step.compiled)
    recipient = _sample(builder)
    return PreviewEmail(
        position=step.position or 0,
        key=step.key,
        subject=compiled.subject,
        preheader=compiled.preheader,
        html=personalize_html(compiled, recipient),
        text=personalize_text(compiled, recipient),
        message=builder.step_message(campaign, compiled, SAMPLE, message_id(domain), now),
    )


def preview_step(runtime: Runtime, slug: str, step_key: str | None = None) -> PreviewEmail:
    """One email (a step key or position; default the first) as the sample reader gets it."""
    builder = MessageBuilder(runtime.settings, runtime.links())
    with runtime.read_sessions.begin() as session:
        campaign = get_campaign(session, slug)
        step = find_step(session, campaign, step_key)
        return _preview(
            builder, campaign, step, runtime.settings.sender_domain, runtime.clock.now()
        )


@dataclass(frozen=True)
class EmailView:
    """One email for the console's page: as the sample reader gets it, its headers, and what
    the lint says of it."""

    campaign_name: str
    kind: str
    email: PreviewEmail
    headers: list[tuple[str, str]]  # the message's own headers, in order, unfolded
    lint: list[Finding] | None  # this email's findings and campaign.toml's; None: no folder
    lint_folder: str  # the folder the lint read (or had to read)
    lint_stale: bool  # the email's file has changed since the campaign was loaded


def email_view(runtime: Runtime, slug: str, step_key: str | None) -> EmailView:
    """One email as `campaigns preview` renders it, with its headers and the findings of
    `campaigns lint` for it (read from the campaign's folder as it is now)."""
    builder = MessageBuilder(runtime.settings, runtime.links())
    with runtime.read_sessions.begin() as session:
        campaign = get_campaign(session, slug)
        step = find_step(session, campaign, step_key)
        email = _preview(
            builder, campaign, step, runtime.settings.sender_domain, runtime.clock.now()
        )
        name, kind, source = campaign.name, str(campaign.kind), step.source
        folder, file = campaign.source_path or "", step.source_file
    parsed = message_from_bytes(email.message, policy=policy.default)
    headers = [(k, " ".join(str(v).split())) for k, v in parsed.items()]
    findings, stale = None, False
    path = Path(folder) if folder else None
    if path is not None and path.is_dir():
        findings = [f for f in _lint(path, runtime.settings) if f.file in (file, "campaign.toml")]
        written = path / file
        stale = not written.is_file() or written.read_text(encoding="utf-8") != source
    return EmailView(name, kind, email, headers, findings, folder, stale)


def _lint(folder: Path, settings: Settings) -> tuple[Finding, ...]:
    """The lint of a folder, kept while none of its files changes (it takes a second or two:
    every email is compiled)."""
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    signature = tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in files)
    return _lint_of(folder, signature, settings)


@lru_cache(maxsize=8)
def _lint_of(
    folder: Path, signature: tuple[tuple[str, int, int], ...], settings: Settings
) -> tuple[Finding, ...]:
    return tuple(lint_folder(folder, settings))


def render_campaign(runtime: Runtime, slug: str) -> tuple[Campaign, list[PreviewEmail]]:
    """Every active step of a campaign, for the sample reader."""
    builder = MessageBuilder(runtime.settings, runtime.links())
    domain, now = runtime.settings.sender_domain, runtime.clock.now()
    with runtime.read_sessions.begin() as session:
        campaign = get_campaign(session, slug)
        emails = [
            _preview(builder, campaign, step, domain, now)
            for step in active_steps(session, campaign.id)
        ]
    return campaign, emails


def write_folder(campaign: Campaign, emails: Sequence[PreviewEmail], folder: Path) -> Path:
    """<stem>.html and <stem>.txt per email, and index.html listing them. Returns the index."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for email in emails:
        write_private(folder / f"{email.stem}.html", email.html)
        write_private(folder / f"{email.stem}.txt", email.text)
        rows.append(
            f'<li><a href="{email.stem}.html">{html.escape(email.subject)}</a> '
            f'<small>(<a href="{email.stem}.txt">text</a>)</small>'
            f"<br><span>{html.escape(email.preheader)}</span></li>"
        )
    index = folder / "index.html"
    write_private(
        index,
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(campaign.name)}: preview</title>"
        "<style>body{font-family:sans-serif;max-width:50em;margin:2em auto;line-height:1.5}"
        "li{margin:0 0 1em 0}span{color:#555}</style></head><body>"
        f"<h1>{html.escape(campaign.name)}</h1>"
        f"<p>{len(emails)} email(s) of <code>{html.escape(campaign.slug)}</code> as "
        f"{html.escape(SAMPLE.name)} would receive them.</p>"
        f"<ol>{''.join(rows)}</ol></body></html>\n",
    )
    return index


class ScreenshotsUnavailable(TidingsError):
    """Playwright or Chromium is missing."""


def screenshot(
    emails: Sequence[PreviewEmail],
    folder: Path,
    widths: Sequence[tuple[str, int]] = (("desktop", DESKTOP_WIDTH), ("phone", PHONE_WIDTH)),
    chromium: str = CHROMIUM,
) -> list[Path]:
    """A full-page PNG of each email at each width: <stem>-<name>.png."""
    try:
        from playwright.sync_api import Error as PlaywrightError
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        raise ScreenshotsUnavailable(
            "screenshots need Playwright: pip install 'tidings[screenshots]' "
            "(or pip install -e '.[screenshots]' in a checkout)"
        ) from exc
    if not Path(chromium).exists():
        raise ScreenshotsUnavailable(
            f"no Chromium at {chromium}: apt-get install chromium, or give --chromium PATH"
        )
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=chromium, headless=True, args=list(CHROMIUM_ARGS)
            )
            try:
                for name, width in widths:
                    phone = width < 600
                    context = browser.new_context(
                        viewport={"width": width, "height": 800},
                        device_scale_factor=1,
                        is_mobile=phone,
                        has_touch=phone,
                        java_script_enabled=False,
                        offline=True,
                    )
                    # Nothing leaves the machine: a remote image is shown as missing.
                    context.route("**/*", lambda route: route.abort())
                    page = context.new_page()
                    for email in emails:
                        page.set_content(email.html, wait_until="load")
                        path = folder / f"{email.stem}-{name}.png"
                        write_private(path, page.screenshot(full_page=True))
                        written.append(path)
                    context.close()
            finally:
                browser.close()
    except PlaywrightError as exc:
        raise ScreenshotsUnavailable(f"Chromium failed: {str(exc).splitlines()[0]}") from exc
    return written


def preview_folder(runtime: Runtime, slug: str, folder: Path) -> tuple[int, Path]:
    """Every email of a campaign (html and text) written to `folder`, with an index page.
    Returns how many, and the index."""
    campaign, emails = render_campaign(runtime, slug)
    return len(emails), write_folder(campaign, emails, folder)


def screenshot_campaign(
    runtime: Runtime, slug: str, folder: Path, chromium: str = CHROMIUM
) -> list[Path]:
    _, emails = render_campaign(runtime, slug)
    return screenshot(emails, folder, chromium=chromium)
