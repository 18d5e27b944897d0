"""The shipped KAP campaign through the real SpamAssassin (Debian's package, network tests
off): every email scores at most 1.0 (spam is 5.0), and the command shows each score and the
rules that fired. `.ci/run` installs spamassassin."""

from __future__ import annotations

import re
import shutil

import pytest
from cli_helpers import Tidings, sqlite_with_kap

# Real processes, browsers or external programs, seconds each: the full suite, not the fast tier.
pytestmark = pytest.mark.slow


def test_every_kap_email_scores_at_most_1(sqlite_template, tmp_path):
    assert shutil.which("spamassassin"), "apt-get install spamassassin (.ci/run does it)"
    t = Tidings(f"sqlite:///{sqlite_with_kap(sqlite_template, tmp_path)}", "smtp://127.0.0.1:25")
    output = t.ok("campaigns", "spamcheck", "kap-benefits", "--max", "1.0").output
    scores = re.findall(r"^\s*(-?\d+\.\d)  (\d\d-[a-z-]+)  ", output, re.MULTILINE)
    assert len(scores) == 17, output
    assert all(float(score) <= 1.0 for score, _ in scores), output
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
