"""One place that writes what commands print: rows as a table, JSON or CSV, streaming; an
object (a `show`) as an indented tree, JSON, or CSV of field,value lines (sqlite-utils'
lesson: one option bundle, one writer).

    @output_options                       # --format table|json|csv, or --table/--json/--csv
    def list_cmd(..., fmt: str): write_rows(rows, COLUMNS, fmt)

What is printed cannot act on the terminal or the spreadsheet it lands in: control and
text-direction characters of stored values are shown escaped (`\u202e`; JSON escapes them
its own way), and a CSV cell that a spreadsheet would run as a formula starts with a '.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import io
import json
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime
from typing import IO, Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])
FORMATS = ("table", "json", "csv")


def output_options(func: F | None = None, *, default: str = "table") -> Any:
    """Adds --format table|json|csv and its shorthands --table, --json, --csv, which the
    command receives as one `fmt`. Two different choices at once are a usage error."""

    def decorate(command: F) -> F:
        @functools.wraps(command)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            chosen = {kwargs.pop(f"as_{name}") and name for name in FORMATS} - {False}
            given = kwargs.pop("fmt")
            if given is not None:
                chosen.add(given)
            if len(chosen) > 1:
                raise click.UsageError(
                    "choose one output format: " + " or ".join(f"--{c}" for c in sorted(chosen))
                )
            kwargs["fmt"] = chosen.pop() if chosen else default
            return command(*args, **kwargs)

        for name in reversed(FORMATS):
            wrapper = click.option(
                f"--{name}", f"as_{name}", is_flag=True, help=f"Same as --format {name}."
            )(wrapper)
        wrapper = click.option(
            "--format",
            "fmt",
            type=click.Choice(FORMATS),
            default=None,
            help=f"How to print the result (default: {default}).",
        )(wrapper)
        return wrapper  # type: ignore[return-value]

    return decorate(func) if func is not None else decorate


def plain(value: Any) -> Any:
    """A value as JSON and CSV write it."""
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds")
    return value


class CsvWriter:
    """csv.writer with every cell through validation.csv_cell: no cell runs as a formula,
    none holds a control character."""

    def __init__(self, out: IO[str]):
        # Imported here: `tidings --help` does not load the subscribers package.
        from tidings.subscribers.validation import csv_cell

        self._writer = csv.writer(out, lineterminator="\n")
        self._cell = csv_cell

    def writerow(self, row: Iterable[Any]) -> None:
        self._writer.writerow([self._cell(plain(value)) for value in row])


_JSON_UNSAFE = re.compile("[\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def json_text(value: Any, indent: int | None = None) -> str:
    """JSON with non-ASCII text kept readable, but with the characters that act on a
    terminal written as \\u escapes (json.dumps escapes the others): the same data."""
    text = json.dumps(value, default=plain, indent=indent, ensure_ascii=False)
    return _JSON_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def write_rows(
    rows: Iterable[dict[str, Any]],
    columns: Sequence[str],
    fmt: str,
    out: IO[str] | None = None,
    page: bool = False,
) -> None:
    """Rows as the format says. JSON and CSV stream row by row; a table needs every row for
    its widths, and goes through $PAGER when `page` and stdout is a terminal."""
    out = out or sys.stdout
    if fmt == "json":
        out.write("[")
        for i, row in enumerate(rows):
            body = json_text({k: row.get(k) for k in columns})
            out.write(("," if i else "") + "\n  " + body)
        out.write("\n]\n")
    elif fmt == "csv":
        writer = CsvWriter(out)
        writer.writerow(columns)
        for row in rows:
            writer.writerow([row.get(k) for k in columns])
    elif page and out is sys.stdout and sys.stdout.isatty():
        buffer = io.StringIO()
        _table(rows, columns, buffer)
        click.echo_via_pager(buffer.getvalue())
    else:
        _table(rows, columns, out)


def _table(rows: Iterable[dict[str, Any]], columns: Sequence[str], out: IO[str]) -> None:
    cells = [[_cell(row.get(k)) for k in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)).rstrip() + "\n"

    out.write(line(columns))
    out.write("  ".join("-" * w for w in widths) + "\n")
    for row in cells:
        out.write(line(row))
    if not cells:
        click.echo("(none)", err=True)


def write_object(
    obj: dict[str, Any], fmt: str, out: IO[str] | None = None, rows: str | None = None
) -> None:
    """One record (a `show`): an indented tree, JSON, or CSV. CSV is the record's list
    `rows` as a table when given (a campaign's steps), else a field,value line per value
    (nested fields as dotted paths: deliveries.0.status)."""
    out = out or sys.stdout
    if fmt == "csv" and rows is not None:
        items = obj.get(rows) or []
        write_rows(items, list(items[0]) if items else [], "csv", out)
    elif fmt == "json":
        out.write(json_text(obj, indent=2) + "\n")
    elif fmt == "csv":
        writer = CsvWriter(out)
        writer.writerow(["field", "value"])
        for path, value in _flatten(obj, ""):
            writer.writerow([path, value])
    else:
        _tree(obj, 0, out)


def _flatten(value: Any, prefix: str) -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _flatten(item, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _flatten(item, f"{prefix}.{i}")
    else:
        yield prefix, value


def _tree(obj: Any, depth: int, out: IO[str]) -> None:
    pad = "  " * depth
    if isinstance(obj, dict):
        for key, value in obj.items():
            if isinstance(value, dict | list) and value:
                out.write(f"{pad}{_cell(key)}:\n")
                _tree(value, depth + 1, out)
            else:
                out.write(f"{pad}{_cell(key)}: {_cell(value)}\n")
    elif isinstance(obj, list):
        for item in obj:
            if isinstance(item, dict):
                pairs = ", ".join(f"{_cell(k)}={_cell(v)}" for k, v in item.items())
                out.write(f"{pad}- {pairs}\n")
            else:
                out.write(f"{pad}- {_cell(item)}\n")


def _cell(value: Any) -> str:
    """A value as a table or tree shows it: one line, nothing that acts on the terminal."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M UTC")
    from tidings.subscribers.validation import printable

    return printable(str(value))


def say(text: str, err: bool = False) -> None:
    """click.echo for a line that carries text from outside (a server's reply, a message's
    subject, a stored value): control and text-direction characters shown escaped."""
    from tidings.subscribers.validation import printable

    click.echo(printable(text), err=err)


@contextlib.contextmanager
def output_file(path: str | None) -> Iterator[IO[str]]:
    """stdout, or a new file at `path` that only its owner can read (what tidings writes
    holds addresses)."""
    if path is None:
        yield sys.stdout
        return
    from tidings.files import open_private

    with open_private(path) as out:
        yield out
