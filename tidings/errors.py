"""Errors the domain raises; the CLI and the web turn them into messages and exit codes."""

from __future__ import annotations


class TidingsError(Exception):
    """Base class: a problem the user can fix, with a message that says how."""


class ConfigError(TidingsError):
    """A setting is missing or malformed."""


class NotFound(TidingsError):
    """A subscriber, campaign or step named by the user does not exist."""


class InvalidInput(TidingsError):
    """A value given by the user is malformed. `field` names it."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.reason = message


class Conflict(TidingsError):
    """The request contradicts what is stored (a duplicate, a suppressed address...)."""


class CampaignError(TidingsError):
    """A campaign folder is invalid. `problems` lists each one as 'file:line: message'."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("campaign is invalid:\n  " + "\n  ".join(problems))
