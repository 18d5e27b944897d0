"""The shipped KAP campaign through the real SpamAssassin (Debian's package, network tests
off): every email scores at most 0.5 (spam is 5.0), the confirmation and come-back emails
too, and the command shows each score and the rules that fired. `.ci/run` installs
spamassassin."""

from __future__ import annotations

import re
import shutil
from datetime import UTC, datetime

import pytest
from cli_helpers import Tidings, sqlite_with_kap

from tidings.config import Settings
from tidings.db.models import message_id
from tidings.ops.spamcheck import score_messages
from tidings.rendering.message import Addressee, MessageBuilder
from tidings.subscribers.tokens import Links

# Real processes, browsers or external programs, seconds each: the full suite, not the fast tier.
pytestmark = pytest.mark.slow


def test_every_kap_email_scores_at_most_half_a_point(sqlite_template, tmp_path):
    assert shutil.which("spamassassin"), "apt-get install spamassassin (.ci/run does it)"
    t = Tidings(f"sqlite:///{sqlite_with_kap(sqlite_template, tmp_path)}", "smtp://127.0.0.1:25")
    output = t.ok("campaigns", "spamcheck", "kap-benefits", "--max", "0.5").output
    scores = re.findall(r"^\s*(-?\d+\.\d)  (\d\d-[a-z-]+)  ", output, re.MULTILINE)
    assert len(scores) == 17, output
    assert all(float(score) <= 0.5 for score, _ in scores), output
    assert "highest score" in output


def test_a_spammy_email_scores_high_and_fails_the_check(sqlite_template, tmp_path):
    db = tmp_path / "t.db"
    shutil.copy(sqlite_template, db)
    t = Tidings(f"sqlite:///{db}", "smtp://127.0.0.1:25")
    folder = tmp_path / "spammy"
    folder.mkdir()
    (folder / "campaign.toml").write_text(
        'slug = "spammy"\nkind = "broadcast"\n[footer]\nreason = "You signed up."\n',
        encoding="utf-8",
    )
    (folder / "01-offer.md").write_text(
        '+++\nsubject = "FREE!!! ACT NOW!!! LIMITED TIME OFFER $$$"\npreheader = "x"\n+++\n'
        + "CLICK HERE NOW!!! Buy cheap meds online, no prescription needed! Viagra, Cialis!\n\n"
        "Double your income! Risk free! Act now! Winner! You have been selected!\n\n"
        "Dear friend, totally FREE, MILLIONS OF DOLLARS, lose weight fast, cash bonus,"
        " amazing stock pick, work from home, no credit check, apply now, order today!\n",
        encoding="utf-8",
    )
    t.ok("campaigns", "load", str(folder))
    output = t.fails("campaigns", "spamcheck", "spammy", "--max", "3")
    score = float(re.search(r"^\s*(-?\d+\.\d)  01-offer", output, re.MULTILINE).group(1))
    assert score >= 5.0, output  # spam by SpamAssassin's own threshold
    assert "+1.8 DRUGS_ERECTILE: Refers to an erectile drug" in output
    assert "above --max 3.0" in output


def test_the_confirmation_and_come_back_emails_score_at_most_half_a_point():
    """The two emails tidings itself sends to an address before it is confirmed, built as the
    worker builds them (MessageBuilder), scored by the real SpamAssassin."""
    settings = Settings(
        base_url="https://news.example.org",
        secret_key="s" * 32,
        from_address="kap@center.example.org",
        organization="Center for Counseling and Conscious Healing",
        postal_address="100 Example Street, Springfield, MA 01101",
    )
    builder = MessageBuilder(settings, Links(settings.base_url, settings.secret_key))
    to = Addressee("ann.reader@example.org", "Ann Reader", "k" * 22)
    now = datetime(2026, 12, 7, 15, 0, tzinfo=UTC)
    messages = [
        ("confirm", builder.confirmation_message(to, message_id("center.example.org"), now)),
        ("comeback", builder.comeback_message(to, message_id("center.example.org"), now)),
    ]
    for result in score_messages(messages):
        hits = ", ".join(f"{r.name} {r.points}" for r in result.rules)
        assert result.score <= 0.5, f"{result.key}: {result.score} ({hits})"
