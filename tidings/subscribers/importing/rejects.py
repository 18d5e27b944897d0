"""The reject file of an import: every row that was not imported, with its line number, the
column and the reason, and the row as it was. Created only when a row is rejected; it holds
addresses, so only its owner may read it (tidings.files)."""

from __future__ import annotations

import contextlib
import csv
from typing import Any

from tidings.files import open_private
from tidings.subscribers.importing.rows import Reject
from tidings.subscribers.validation import csv_cell

COLUMNS = ["line", "field", "reason", "data"]


class RejectFile:
    """`with RejectFile(path) as rejects: importer(on_reject=rejects.write)`."""

    def __init__(self, path: str):
        self.path = path
        self.written: str | None = None  # the path, once a row was written
        self._stack = contextlib.ExitStack()
        self._writer: Any = None

    def write(self, reject: Reject) -> None:
        if self._writer is None:
            out = self._stack.enter_context(open_private(self.path))
            self._writer = csv.writer(out, lineterminator="\n")
            self._writer.writerow(COLUMNS)
            self.written = self.path
        # Cells as every CSV of tidings: a row's =HYPERLINK(...) must not run when opened.
        row = [reject.line, reject.field, reject.reason, reject.data]
        self._writer.writerow([csv_cell(cell) for cell in row])

    def __enter__(self) -> RejectFile:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._stack.close()
