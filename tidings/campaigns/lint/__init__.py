"""The content lint: what every email must carry and which words it must not use, for an
audience that may be in crisis (../shared/CONTENT.md). Runs at `campaigns load` (errors
block the load) and as `tidings campaigns lint SLUG|DIR`.

Wording rules (`words`) read the sources as written (front matter, Markdown bodies, the
footer in campaign.toml), so every finding names the file and line; so do the claims that
need their balance in the same email (`balance`: a source, the risks, the prescriber) and the
readability of what the campaign adds to the client's copy (`readability`). Structure rules
(unsubscribe link, postal address, links, images, size, the two parts saying the same thing,
Markdown left in the text part) read the compiled email, which is what people receive. The
rules are a table (`rules`); what they look at is `checks`.

A campaign accepts a flagged phrase explicitly in campaign.toml:

    [lint]
    allow = ["window of relief"]     # a finding inside one of these phrases is not reported
    require = ["crisis", "disclaimer", "risk"]   # missing footer parts are errors, not warnings
    link_domains = ["988lifeline.org"]           # besides TIDINGS_BASE_URL's and the sender's
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tidings.campaigns.definition import CampaignDefinition
from tidings.campaigns.lint.findings import ERROR, WARNING, Finding
from tidings.campaigns.lint.rules import (
    CAMPAIGN_RULES,
    FINAL_RULES,
    SOURCE_RULES,
    STEP_RULES,
    CampaignCheck,
    StepCheck,
)
from tidings.config import Settings
from tidings.errors import CampaignError
from tidings.rendering.compile import CompiledStep, StepSource

__all__ = ["ERROR", "WARNING", "Finding", "errors", "lint_campaign", "lint_folder"]


def lint_campaign(
    definition: CampaignDefinition,
    settings: Settings,
    compiled: list[tuple[StepSource, CompiledStep]],
) -> list[Finding]:
    """Every finding for a campaign that read and compiled cleanly, in file order; a finding
    repeated by several emails (a footer link) is reported once."""
    check = CampaignCheck(definition, settings)
    findings: list[Finding] = []
    for campaign_rule in CAMPAIGN_RULES:
        findings += campaign_rule(check)
    for step, (_, email) in zip(definition.steps, compiled, strict=True):
        step_check = StepCheck(check, step, email)
        for step_rule in STEP_RULES:
            findings += step_rule(step_check)
    for final_rule in FINAL_RULES:
        findings += final_rule(check)
    return _in_file_order(findings)


def _in_file_order(findings: list[Finding]) -> list[Finding]:
    unique = list(dict.fromkeys(findings))
    return sorted(unique, key=lambda f: (f.file != "campaign.toml", f.file, f.line))


def lint_folder(folder: Path, settings: Settings) -> list[Finding]:
    """The lint of a campaign folder; a folder that cannot be read or compiled gives its
    problems as errors of rule `invalid`, except what a source rule (one that needs no
    compiled email, such as `template-private`) says itself."""
    from tidings.campaigns.definition import read_campaign
    from tidings.campaigns.loading import compile_campaign

    try:
        definition = read_campaign(folder)
    except CampaignError as exc:
        return [_invalid(problem) for problem in exc.problems]
    try:
        compiled = compile_campaign(definition, settings)
    except CampaignError as exc:
        # What the source rules find is said by them (with their rule); the rest as invalid.
        check = CampaignCheck(definition, settings)
        found = [f for source_rule in SOURCE_RULES for f in source_rule(check)]
        seen = {(f.file, f.line) for f in found}
        invalid = [_invalid(problem) for problem in exc.problems]
        return _in_file_order(found + [f for f in invalid if (f.file, f.line) not in seen])
    return lint_campaign(definition, settings, compiled)


def _invalid(problem: str) -> Finding:
    """A problem of read_campaign / compile ('file:line: message') as a lint error."""
    where, _, message = problem.partition(": ")
    file, _, line = where.rpartition(":")
    if not line.isdigit():
        file, line = where, "1"
    return Finding(ERROR, "invalid", file, int(line), message)


def errors(findings: Iterable[Finding]) -> list[Finding]:
    return [f for f in findings if f.severity == ERROR]
