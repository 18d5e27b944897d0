"""Score rendered emails with SpamAssassin before they are sent (`tidings campaigns spamcheck`).

Runs Debian's `spamassassin` once over all the emails (an mbox on stdin: its start-up, a
couple of seconds, is paid once), with network tests off (-L: this machine has no DNS, and
results must not depend on blocklists of the day), no Bayes database and no user
preferences, so the same email always gets the same score.
"""

from __future__ import annotations

import mailbox
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from email import message_from_bytes
from email.policy import compat32
from pathlib import Path

from tidings.errors import TidingsError
from tidings.ops.previews import PreviewEmail, preview_step, render_campaign
from tidings.runtime import Runtime

THRESHOLD = 5.0  # SpamAssassin's default: at or above, an email is spam
_KEY_HEADER = "X-Tidings-Spamcheck-Key"
_RULE_LINE = re.compile(r"^\*\s+(-?\d+(?:\.\d+)?)\s+(\S+)\s*(.*)$")


class SpamCheckUnavailable(TidingsError):
    """spamassassin is not installed, or did not run."""


@dataclass(frozen=True)
class RuleHit:
    name: str
    points: float
    description: str


@dataclass
class SpamScore:
    key: str
    score: float
    rules: list[RuleHit] = field(default_factory=list)


def find_spamassassin() -> str:
    path = shutil.which("spamassassin")
    if path is None:
        raise SpamCheckUnavailable(
            "spamassassin is not installed: on Debian or Ubuntu, "
            "`apt-get install spamassassin` (no daemon is needed)"
        )
    return path


def score_messages(messages: Sequence[tuple[str, bytes]], timeout: float = 300) -> list[SpamScore]:
    """Score each (key, message bytes); the results come back in the same order."""
    if not messages:
        return []
    program = find_spamassassin()
    with tempfile.TemporaryDirectory(prefix="tidings-spamcheck-") as tmp:
        folder = Path(tmp)
        source = mailbox.mbox(folder / "in.mbox", create=True)
        for key, data in messages:
            # The key rides along in a header of our own, to match results to emails.
            source.add(f"{_KEY_HEADER}: {key}\r\n".encode() + data)
        source.close()
        command = [
            program,
            "--local",  # no network tests
            "--nocreate-prefs",
            "--mbox",
            "--cf=report_safe 0",
            "--cf=use_bayes 0",
            "--cf=add_header all Report _REPORT_",
            "--cf=add_header all Tidings-Score _SCORE_",
        ]
        # HOME points at the temporary folder: nothing is written to the operator's home.
        env = {**os.environ, "HOME": tmp}
        with open(folder / "in.mbox", "rb") as stdin:
            try:
                done = subprocess.run(
                    command, stdin=stdin, capture_output=True, timeout=timeout, env=env
                )
            except subprocess.TimeoutExpired as exc:
                raise SpamCheckUnavailable(f"spamassassin took over {timeout:.0f}s") from exc
        if done.returncode not in (0, 1):
            raise SpamCheckUnavailable(
                f"spamassassin failed (exit {done.returncode}): "
                + done.stderr.decode(errors="replace").strip()[-500:]
            )
        (folder / "out.mbox").write_bytes(done.stdout)
        results = [_parse(message) for message in mailbox.mbox(folder / "out.mbox")]
    by_key = {r.key: r for r in results}
    missing = [key for key, _ in messages if key not in by_key]
    if missing:
        raise SpamCheckUnavailable(f"spamassassin returned no result for {', '.join(missing)}")
    return [by_key[key] for key, _ in messages]


def _parse(message: mailbox.mboxMessage) -> SpamScore:
    parsed = message_from_bytes(message.as_bytes(), policy=compat32)
    key = str(parsed.get(_KEY_HEADER, "")).strip()
    try:
        score = float(str(parsed.get("X-Spam-Tidings-Score", "")).strip())
    except ValueError as exc:
        raise SpamCheckUnavailable(f"spamassassin gave no score for {key}") from exc
    rules: list[RuleHit] = []
    for raw in str(parsed.get("X-Spam-Report", "")).splitlines():
        line = raw.strip()
        match = _RULE_LINE.match(line)
        if match:
            rules.append(RuleHit(match.group(2), float(match.group(1)), match.group(3)))
        elif line.startswith("*") and rules:  # a description's continuation line
            last = rules[-1]
            rules[-1] = RuleHit(last.name, last.points, f"{last.description} {line[1:].strip()}")
    return SpamScore(key, score, rules)


def score_campaign(runtime: Runtime, slug: str) -> list[tuple[PreviewEmail, SpamScore]]:
    """Every email of a loaded campaign, as the sample reader gets it (DKIM-signed when
    configured), with its score."""
    _, emails = render_campaign(runtime, slug)
    scores = score_messages([(e.stem, e.message) for e in emails])
    return list(zip(emails, scores, strict=True))


def score_step(runtime: Runtime, slug: str, step_key: str | None) -> tuple[PreviewEmail, SpamScore]:
    """One email of a loaded campaign (a step key or position), scored as `score_campaign`
    scores each: for the console's Spam score button."""
    email = preview_step(runtime, slug, step_key)
    (score,) = score_messages([(email.stem, email.message)])
    return email, score
