"""Previews for people: `campaigns preview --dir` writes every email and an index page;
`campaigns screenshot` renders each email in headless Debian Chromium at 1280 px and 375 px
and writes non-empty PNGs of exactly those widths."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from cli_helpers import Tidings, sqlite_with_kap

# Real processes, browsers or external programs, seconds each: the full suite, not the fast tier.
pytestmark = pytest.mark.slow


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path
    return struct.unpack(">II", data[16:24])


def kap_cli(sqlite_template: Path, tmp_path: Path) -> Tidings:
    return Tidings(f"sqlite:///{sqlite_with_kap(sqlite_template, tmp_path)}", "smtp://127.0.0.1:25")


def test_preview_writes_every_email_and_an_index(sqlite_template, tmp_path):
    t = kap_cli(sqlite_template, tmp_path)
    out = tmp_path / "preview"
    t.ok("campaigns", "preview", "kap-benefits", "--dir", str(out))
    pages = sorted(p.name for p in out.glob("*.html") if p.name != "index.html")
    assert len(pages) == 17 and pages[0] == "01-welcome.html"
    index = (out / "index.html").read_text(encoding="utf-8")
    for page in pages:
        assert f'href="{page}"' in index
    assert "A note on hope and safety" in index
    # The sample reader's own links, and the crisis block, as readers will see them.
    welcome = (out / "01-welcome.html").read_text(encoding="utf-8")
    assert "https://news.example.org/unsubscribe/sample-key." in welcome
    assert "988lifeline.org" in welcome
    assert "Next steps" in (out / "17-closing.txt").read_text(encoding="utf-8")


def test_screenshots_at_desktop_and_phone_width(sqlite_template, tmp_path):
    t = kap_cli(sqlite_template, tmp_path)
    out = tmp_path / "shots"
    result = t.ok("campaigns", "screenshot", "kap-benefits", "--out", str(out))
    shots = sorted(out.glob("*.png"))
    assert len(shots) == 34, result.output
    for shot in shots:
        width, height = png_size(shot)
        assert width == (1280 if shot.name.endswith("-desktop.png") else 375), shot.name
        assert height > 600 and shot.stat().st_size > 10_000, shot.name
    # On a phone the same email is narrower, so taller.
    assert (
        png_size(out / "06-reduction-in-suicidal-ideation-phone.png")[1]
        > png_size(out / "06-reduction-in-suicidal-ideation-desktop.png")[1]
    )


def test_screenshot_says_what_is_missing(sqlite_template, tmp_path):
    t = kap_cli(sqlite_template, tmp_path)
    output = t.fails(
        "campaigns",
        "screenshot",
        "kap-benefits",
        "--out",
        str(tmp_path / "s"),
        "--chromium",
        "/nonexistent/chromium",
    )
    assert "no Chromium at /nonexistent/chromium" in output
