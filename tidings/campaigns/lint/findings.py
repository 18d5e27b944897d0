"""A lint finding: where (file and line), how bad, which rule, and what to do."""

from __future__ import annotations

from dataclasses import dataclass

ERROR = "error"
WARNING = "warning"


@dataclass(frozen=True)
class Finding:
    severity: str  # ERROR blocks a load; WARNING is reported
    rule: str
    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.severity} [{self.rule}]: {self.message}"
