"""Screenshots of the staff console for the README, from the demo's database.

    python docs/console_screenshots.py [--out docs/console] [--subscribers 6] [--day-seconds 0.3]

Runs `tidings demo` (tidings.ops.demo.run_demo: the KAP series for a few demo readers on a
scaled clock, delivered to a local SMTP server) from a fixed first day, so each run shows the
same weeks; then, through its `serve` hook, opens the console on a free loopback port with a
demo admin, signs in with Debian's Chromium (/usr/bin/chromium, never a downloaded browser),
sends one test of an email and pauses and resumes the campaign (so the audit log shows staff
at work), and saves full-page PNGs:

    dashboard.png, campaign.png, email.png, subscribers.png, subscriber.png, audit.png  (1280 px)
    dashboard-phone.png, email-phone.png                                                (375 px)

Needs the `test` or `screenshots` extra (Playwright's Python package) and Chromium; with
pngquant installed (Debian: apt-get install pngquant) the pictures are about 3 times smaller.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tidings.ops.demo import DEMO_CAMPAIGN, DEMO_START_HOUR, open_demo_console, run_demo
from tidings.runtime import Runtime
from tidings.sending.devsmtp import free_port

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync"]
# The demo's first day: always the same, so the pictures change only when the console does.
START = datetime(2025, 12, 1, DEMO_START_HOUR, tzinfo=UTC)
EMAIL_STEP = "rapid-relief-of-symptoms"  # the first benefit: a typical email of the series
TIMEOUT_MS = 20_000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "console")
    parser.add_argument("--subscribers", type=int, default=6)
    parser.add_argument("--day-seconds", type=float, default=0.3)
    parser.add_argument("--chromium", default=CHROMIUM)
    args = parser.parse_args(argv)
    if not Path(args.chromium).exists():
        print(f"{args.chromium} is missing: apt-get install chromium", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    saved: list[Path] = []
    with tempfile.TemporaryDirectory(prefix="tidings-shots-") as directory:
        summary = run_demo(
            Path(directory),
            args.subscribers,
            args.day_seconds,
            echo=lambda line: print(line, file=sys.stderr),
            start=START,
            serve=lambda runtime: saved.extend(shoot(runtime, port, args.out, args.chromium)),
            base_url=f"http://127.0.0.1:{port}",
        )
    if not summary.finished:
        print(summary.message, file=sys.stderr)
        return 1
    squeezed = squeeze(saved)
    for path in saved:
        print(f"{path}  {path.stat().st_size // 1024} KB")
    if not squeezed:
        print("(pngquant is not installed: apt-get install pngquant makes them 3 times smaller)")
    return 0


def squeeze(paths: list[Path]) -> bool:
    """Fewer colours (pngquant, when installed): a page of text looks the same in a third of
    the bytes. False when pngquant is not there (the pictures stay as Chromium saved them)."""
    pngquant = shutil.which("pngquant")
    if pngquant is None:
        return False
    for path in paths:
        # Exit 98/99: smaller or good enough was not possible; the file is left as it was.
        options = ["--quality=80-100", "--speed=1", "--strip", "--skip-if-larger", "--force"]
        subprocess.run([pngquant, *options, "--output", str(path), str(path)], check=False)
    return True


def shoot(runtime: Runtime, port: int, out: Path, chromium: str) -> list[Path]:
    """Sign in to the demo's console and save the pictures; returns their paths."""
    from playwright.sync_api import expect, sync_playwright

    server, login, password = open_demo_console(runtime, port)
    base = f"{server.url}/staff"
    saved: list[Path] = []
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=chromium, headless=True, args=CHROMIUM_ARGS
            )
            context = browser.new_context(
                viewport={"width": 1280, "height": 800}, locale="en-US", timezone_id="UTC"
            )
            context.set_default_timeout(TIMEOUT_MS)
            page = context.new_page()
            page.goto(f"{base}/login")
            page.get_by_label("Email address").fill(login)
            page.get_by_label("Password").fill(password)
            page.get_by_role("button", name="Sign in").click()
            expect(page.get_by_role("heading", level=1)).to_have_text("Dashboard")

            # A member of staff at work, for the audit log: a test send, a pause and a resume.
            page.goto(f"{base}/campaigns/{DEMO_CAMPAIGN}/steps/{EMAIL_STEP}")
            page.get_by_role("button", name="Send a test").click()
            expect(page.get_by_role("status")).to_contain_text("Test sent")
            page.goto(f"{base}/campaigns/{DEMO_CAMPAIGN}")
            page.get_by_label("Why pause it?").fill("checking the links of email 3")
            page.get_by_role("button", name="Pause").click()
            page.get_by_role("button", name="Resume").click()
            expect(page.get_by_role("button", name="Pause")).to_be_visible()

            def save(name: str, path: str, ready: Callable[[Any], None] | None = None) -> None:
                page.goto(f"{base}{path}")
                expect(page.get_by_role("heading", level=1)).to_be_visible()
                if ready is not None:
                    ready(page)
                # The whole page inside the viewport: Chromium paints the email's frames (other
                # processes, as sandboxed frames are) only where the viewport reaches, and a
                # full-page picture of a short viewport shows them blank.
                width = page.viewport_size["width"] if page.viewport_size else 1280
                height = page.evaluate("document.documentElement.scrollHeight")
                page.set_viewport_size({"width": width, "height": height})
                if ready is not None:
                    ready(page)
                page.wait_for_timeout(300)  # one more paint of the frames at the new size
                target = out / f"{name}.png"
                page.screenshot(path=str(target), full_page=True, animations="disabled")
                page.set_viewport_size({"width": width, "height": 800})
                saved.append(target)

            def frames_loaded(page: Any) -> None:
                for title in ("The email at phone width", "The email at desktop width"):
                    frame = page.frame_locator(f'iframe[title="{title}"]')
                    expect(frame.get_by_role("heading", level=1)).to_be_visible()

            email_path = f"/campaigns/{DEMO_CAMPAIGN}/steps/{EMAIL_STEP}"
            save("dashboard", "/")
            save("campaign", f"/campaigns/{DEMO_CAMPAIGN}")
            save("email", email_path, frames_loaded)
            save("subscribers", "/subscribers")
            page.goto(f"{base}/subscribers")
            oldest = page.get_by_role("table").get_by_role("link").last  # reader1
            href = oldest.get_attribute("href")
            assert href is not None and href.startswith("/staff/subscribers/"), href
            save("subscriber", href.removeprefix("/staff"))
            save("audit", "/audit")

            page.set_viewport_size({"width": 375, "height": 740})
            save("dashboard-phone", "/")
            save("email-phone", email_path, frames_loaded)
            browser.close()
    finally:
        server.stop()
    return saved


if __name__ == "__main__":
    sys.exit(main())
