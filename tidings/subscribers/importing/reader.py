"""Reading a CSV stream: bytes -> physical lines (each capped in size, decoded one by one so
that an encoding error names its line) -> CSV records with their line numbers (a quoted
field may span lines; one that never closes is cut off so that it cannot swallow the file).

Nothing here knows what the columns mean: `rows` checks them, `writer` stores them.
"""

from __future__ import annotations

import codecs
import csv
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO

from tidings.errors import InvalidInput

# One CSV line may hold at most this many bytes; a longer one is rejected without being held
# in memory (a file with no line breaks at all cannot exhaust memory).
MAX_LINE_BYTES = 64 * 1024
# A quoted field may run over this many lines before the import calls its quote unclosed
# and reads the following lines as rows of their own again.
MAX_RECORD_LINES = 20
_OPEN_QUOTE = "unexpected end of data"  # what the csv module says about an unclosed quote


def check_encoding(name: str) -> str:
    try:
        info = codecs.lookup(name)
    except LookupError as exc:
        raise InvalidInput("--encoding", f"unknown encoding {name!r}") from exc
    # Lines are split on b"\n" before decoding, so the encoding must write ASCII as ASCII.
    try:
        ascii_compatible = "email,\r\n".encode(info.name) == b"email,\r\n"
    except UnicodeError:
        ascii_compatible = False
    if not ascii_compatible:
        raise InvalidInput(
            "--encoding",
            f"{name} is not supported: use an encoding that extends ASCII "
            "(utf-8, latin-1, cp1252...); convert UTF-16 files to UTF-8 first",
        )
    return info.name


@dataclass(slots=True)  # one per line: slots, not frozen (frozen is slower to build)
class _Line:
    number: int
    text: str | None  # decoded, line ending included; None when it could not be read
    problem: str = ""
    preview: str = ""  # what the reject file shows of an unreadable line


def _physical_lines(
    stream: IO[bytes], encoding: str, progress: Callable[[int], None]
) -> Iterator[_Line]:
    """The file's lines, decoded one at a time, so a bad byte costs one line, not the file."""
    codec = codecs.lookup(encoding).name
    number = 0
    while True:
        raw = stream.readline(MAX_LINE_BYTES + 1)
        if not raw:
            return
        number += 1
        if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
            head, consumed = raw[:120], len(raw)
            while raw and not raw.endswith(b"\n"):  # skip the rest of it, never holding it
                raw = stream.readline(MAX_LINE_BYTES + 1)
                consumed += len(raw)
            progress(consumed)
            yield _Line(
                number,
                None,
                f"the line is longer than {MAX_LINE_BYTES} bytes",
                head.decode(codec, errors="backslashreplace") + "...",
            )
            continue
        progress(len(raw))
        if number == 1 and codec == "utf-8" and raw.startswith(codecs.BOM_UTF8):
            raw = raw[len(codecs.BOM_UTF8) :]  # spreadsheets write one; it is not data
        try:
            yield _Line(number, raw.decode(codec))
        except UnicodeDecodeError as exc:
            column = len(raw[: exc.start].decode(codec, errors="replace")) + 1
            hint = " (if it comes from Excel, try --encoding cp1252)" if codec == "utf-8" else ""
            yield _Line(
                number,
                None,
                f"not valid {codec}: byte 0x{raw[exc.start]:02x} at column {column}{hint}",
                raw.decode(codec, errors="backslashreplace").rstrip("\r\n"),
            )


@dataclass(slots=True)
class Record:
    first_line: int
    last_line: int
    fields: list[str] | None
    problem: str  # "" when the record could be parsed
    data: str  # the record's text, for the reject file


def _parse(text: str) -> tuple[list[str] | None, str]:
    """One CSV record from its text, or why it is not one."""
    try:
        return next(csv.reader([text], strict=True)), ""
    except StopIteration:
        return [], ""
    except csv.Error as exc:
        message = str(exc)
        if message == _OPEN_QUOTE:
            return None, _OPEN_QUOTE
        if "new-line character" in message:
            return None, "a carriage return (CR) in the middle of the line"
        if "expected after" in message:
            return None, 'malformed quoting: a closing " must be followed by a comma'
        return None, f"malformed CSV: {message}"


class Records:
    """CSV records from physical lines, with line numbers. A record whose quoted field does
    not close within MAX_RECORD_LINES lines is reported alone and the lines after it are read
    again as records of their own, so one stray quote cannot swallow the rest of the file."""

    def __init__(self, lines: Iterator[_Line]):
        self._lines = lines
        self._pushed: deque[_Line] = deque()

    def _next_line(self) -> _Line | None:
        if self._pushed:
            return self._pushed.popleft()
        return next(self._lines, None)

    def __iter__(self) -> Iterator[Record]:
        while (line := self._next_line()) is not None:
            if line.text is None:
                yield Record(line.number, line.number, None, line.problem, line.preview)
                continue
            text = line.text
            if not text.strip():
                continue  # blank lines are not rows
            body = text[:-2] if text.endswith("\r\n") else text.rstrip("\n")
            if '"' not in body and "\r" not in body:
                # No quoting and no stray CR: what the csv module would do, faster.
                yield Record(line.number, line.number, body.split(","), "", body)
                continue
            fields, problem = _parse(text)
            if problem == _OPEN_QUOTE:
                yield self._spanning(line)
            else:
                yield Record(line.number, line.number, fields, problem, line.text.rstrip("\r\n"))

    def _spanning(self, first: _Line) -> Record:
        assert first.text is not None
        taken = [first]
        text = first.text
        while len(taken) < MAX_RECORD_LINES and len(text) <= MAX_LINE_BYTES:
            line = self._next_line()
            if line is None:
                break
            if line.text is None:
                self._pushed.appendleft(line)
                break
            taken.append(line)
            text += line.text
            fields, problem = _parse(text)
            if problem != _OPEN_QUOTE:
                return Record(first.number, line.number, fields, problem, text.rstrip("\r\n"))
        for line in reversed(taken[1:]):
            self._pushed.appendleft(line)
        return Record(
            first.number,
            first.number,
            None,
            'a quoted field is never closed (a " without its closing ")',
            first.text.rstrip("\r\n"),
        )


def read_records(
    stream: IO[bytes], encoding: str = "utf-8", progress: Callable[[int], None] | None = None
) -> Iterator[Record]:
    """The CSV records of a byte stream, with their line numbers; unreadable lines come as
    records with a `problem`. `progress` is told how many bytes each line took."""
    return iter(Records(_physical_lines(stream, encoding, progress or (lambda _n: None))))
