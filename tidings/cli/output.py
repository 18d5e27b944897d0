"""One place that writes rows as a table, JSON or CSV, streaming (sqlite-utils' lesson)."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


def output_options(func: F) -> F:
    """Adds --table (default on a terminal), --json and --csv: one choice, `fmt`."""
    func = click.option("--csv", "fmt", flag_value="csv", help="Output CSV with a header row.")(
        func
    )
    func = click.option("--json", "fmt", flag_value="json", help="Output JSON.")(func)
    func = click.option(
        "--table",
        "fmt",
        flag_value="table",
        default=True,
        help="Output an aligned table (the default).",
    )(func)
    return func


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds")
    return value


def emit_rows(rows: Iterable[dict[str, Any]], columns: Sequence[str], fmt: str) -> None:
    out = sys.stdout
    if fmt == "json":
        out.write("[")
        for i, row in enumerate(rows):
            out.write(
                ("," if i else "")
                + "\n  "
                + json.dumps({k: _plain(row.get(k)) for k in columns}, ensure_ascii=False)
            )
        out.write("\n]\n")
    elif fmt == "csv":
        writer = csv.DictWriter(
            out, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n"
        )
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _plain(row.get(k)) for k in columns})
    else:
        materialized = [[_cell(row.get(k)) for k in columns] for row in rows]
        widths = [max([len(c)] + [len(r[i]) for r in materialized]) for i, c in enumerate(columns)]
        out.write(
            "  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip() + "\n"
        )
        out.write("  ".join("-" * w for w in widths) + "\n")
        for r in materialized:
            out.write("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() + "\n")
        if not materialized:
            click.echo("(none)", err=True)


def emit_object(obj: dict[str, Any], fmt: str) -> None:
    if fmt == "json":
        click.echo(json.dumps(obj, default=_plain, indent=2, ensure_ascii=False))
        return
    _print_tree(obj, 0)


def _print_tree(obj: Any, depth: int) -> None:
    pad = "  " * depth
    if isinstance(obj, dict):
        for key, value in obj.items():
            if isinstance(value, dict | list) and value:
                click.echo(f"{pad}{key}:")
                _print_tree(value, depth + 1)
            else:
                click.echo(f"{pad}{key}: {_cell(value)}")
    elif isinstance(obj, list):
        for item in obj:
            if isinstance(item, dict):
                click.echo(f"{pad}- " + ", ".join(f"{k}={_cell(v)}" for k, v in item.items()))
            else:
                click.echo(f"{pad}- {_cell(item)}")


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M UTC")
    return str(value)


def is_terminal() -> bool:
    return sys.stdout.isatty()
