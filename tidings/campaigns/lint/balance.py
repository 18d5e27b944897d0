"""Claims that need their balance in the same email (CONTENT.md "Words to flag"): efficacy
stated as fact needs a named source, a safety promise a statement of the risks, a mention of
needing less medication the sentence about the prescriber. A claim is flagged wherever the
email makes it (subject, preheader, body, research paragraph, next step); the balance must be
in the email's own text: a fine-print footer cannot fix a misleading claim (FTC). As with the
wording rules, softening verbs ("may", "can") do not excuse a claim.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from tidings.campaigns.lint.checks import StepCheck
from tidings.campaigns.lint.findings import ERROR, WARNING, Finding
from tidings.campaigns.lint.words import (
    EFFICACY,
    MEDICATION_CHANGE,
    PRESCRIBER,
    RISK_STATEMENT,
    SAFETY_PROMISE,
    SOURCE_NAMED,
)


def _claims(s: StepCheck, pattern: re.Pattern[str]) -> Iterator[tuple[str, str, int]]:
    """(words, file, line) of each match in the email's text, less what [lint] allow covers."""
    for chunk in s.every_chunk:
        for match in pattern.finditer(chunk.text):
            if not s.campaign.allow.covers(chunk.text, match.start(), match.end()):
                yield match.group(), chunk.file, chunk.line_at(match.start())


def efficacy_unsourced(s: StepCheck) -> Iterator[Finding]:
    """'has been shown to be effective', 'life-saving', 'significantly reduces', 'proven to',
    'highly effective' in an email whose body and research paragraph name no source (a year
    in parentheses, "(Zarate and others, 2006)", or "et al.")."""
    if any(SOURCE_NAMED.search(c.text) for c in s.chunks + s.research_chunks):
        return
    for words, file, line in _claims(s, EFFICACY):
        yield Finding(
            WARNING,
            "efficacy-unsourced",
            file,
            line,
            f"{words!r} states efficacy as fact and this email names no source: name the "
            'study in its research paragraph (research = """...""", e.g. "(Zarate and '
            'others, 2006)") and say what it did and did not show, or write what studies '
            "found instead of the claim",
        )


def safety_promise(s: StepCheck) -> Iterator[Finding]:
    """'safe', 'safely', 'ensure(s)', 'ensuring', 'risk-free', 'harmless' in an email whose own
    text (body, research, next step) says nothing of risks ('risk', 'side effect', 'not for
    everyone', 'screening'); the footer's risk note does not count."""
    own = " ".join(SAFETY_PROMISE.sub(" ", c.text) for c in s.own_chunks)  # not "risk-free"
    if RISK_STATEMENT.search(own):
        return
    for words, file, line in _claims(s, SAFETY_PROMISE):
        yield Finding(
            WARNING,
            "safety-promise",
            file,
            line,
            f"{words!r} promises safety and this email says nothing of the risks in its own "
            "text (the footer's risk note does not count): say in the body or the research "
            "paragraph that treatment has risks and needs screening, or describe what is "
            "done (monitoring, follow-up) instead of promising",
        )


def medication_prescriber(s: StepCheck) -> Iterator[Finding]:
    """Reducing, stopping, tapering or needing less medication ('reduce the need for ...
    medications', 'stop your medication', 'come off', 'taper') in an email without a
    sentence naming the prescriber ('prescriber' or 'prescribing clinician') in its own
    text."""
    if any(PRESCRIBER.search(c.text) for c in s.own_chunks):
        return
    for words, file, line in _claims(s, MEDICATION_CHANGE):
        yield Finding(
            ERROR,
            "medication-prescriber",
            file,
            line,
            f"{words!r} speaks of needing less medication or stopping it, and this email does "
            'not say to ask the prescriber: add to its body or research paragraph "Do not '
            'stop or change a medication without talking with your prescriber." (stopping '
            "some medications suddenly can cause withdrawal or relapse)",
        )
