"""Statements for many rows at once, on the paths that run per message or per imported row.

The ORM's per-row bookkeeping (and even Core's per-row parameter processing) costs more than
SQLite does on these paths: sending records an outcome per message, an import writes a few
rows per line of the file. These helpers keep SQL's meaning and drop that overhead.
"""

from __future__ import annotations

import functools
import json
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from operator import itemgetter
from typing import Any

from sqlalchemy import JSON, Column, Dialect, Table, bindparam, insert, update
from sqlalchemy import column as sql_column
from sqlalchemy import table as sql_table
from sqlalchemy.orm import Session


def affected(result: Any) -> int:
    """How many rows an UPDATE or DELETE changed (the driver's rowcount; 0 if unknown)."""
    return int(getattr(result, "rowcount", 0) or 0)


def table_of(model: type) -> Table:
    """A model's Table, typed as one (for Core statements on the hot paths)."""
    table: Table = model.__table__  # type: ignore[attr-defined]
    return table


def update_by_id(session: Session, model: type, rows: Sequence[Mapping[str, Any]]) -> None:
    """UPDATE ... WHERE id = ... for many rows: one executemany per set of changed columns,
    through the driver, each value converted by its column's own type (as bulk_insert)."""
    table = table_of(model)
    dialect = session.get_bind().dialect
    groups: dict[tuple[str, ...], list[Mapping[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[tuple(sorted(k for k in row if k != "id"))].append(row)
    for columns, group in groups.items():
        if dialect.paramstyle not in ("qmark", "format", "pyformat"):
            statement = (
                update(table)
                .where(table.c.id == bindparam("row_id"))
                .values({c: bindparam(f"new_{c}", type_=table.c[c].type) for c in columns})
            )
            session.execute(
                statement,
                [{"row_id": r["id"], **{f"new_{c}": r[c] for c in columns}} for r in group],
            )
            continue
        processors = [(c, _processor(table.c[c], dialect)) for c in columns]
        params = [
            (*(r[c] if p is None else p(r[c]) for c, p in processors), r["id"]) for r in group
        ]
        mark = "?" if dialect.paramstyle == "qmark" else "%s"
        quote = dialect.identifier_preparer.quote
        assignments = ", ".join(f"{quote(c)} = {mark}" for c in columns)
        sql = f"UPDATE {quote(table.name)} SET {assignments} WHERE id = {mark}"
        session.connection().exec_driver_sql(sql, params)


def insert_ignore(session: Session, model: type, values: dict[str, Any], keys: list[str]) -> None:
    """INSERT ... ON CONFLICT (keys) DO NOTHING, on SQLite and PostgreSQL."""
    from sqlalchemy.dialects import postgresql, sqlite  # only the sending path needs them

    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    session.execute(
        dialect.insert(model).values(**values).on_conflict_do_nothing(index_elements=keys)
    )


def bulk_insert(
    session: Session, table: Table, rows: list[dict[str, Any]], constants: dict[str, Any]
) -> None:
    """INSERT many rows, fast: what session.execute(insert(table), rows) does, with
    `constants` merged into every row, minus SQLAlchemy's per-row work.

    On SQLite most of the cost of an ORM or Core executemany is SQLAlchemy preparing each
    row's parameters. Here each column's own type converts the values up front (a constant
    once per batch), and the driver's executemany runs one plain INSERT.
    """
    if not rows:
        return
    dialect = session.get_bind().dialect
    given = set(rows[0]) | set(constants)
    fixed = dict(constants)
    for col in table.columns:  # Python-side defaults of columns not given (e.g. counters)
        if col.name not in given and col.default is not None and col.default.is_scalar:
            fixed[col.name] = col.default.arg  # type: ignore[attr-defined]
    names = list(rows[0])
    for name in names:  # convert in place (the rows are built for this call)
        process = _processor(table.c[name], dialect)
        if process is not None:
            memo: dict[Any, Any] = {}
            for row in rows:
                value = row[name]
                if isinstance(value, dict | list):
                    row[name] = process(value)
                elif value in memo:
                    row[name] = memo[value]
                else:
                    row[name] = memo[value] = process(value)
    tail = tuple(
        value if (p := _processor(table.c[name], dialect)) is None else p(value)
        for name, value in fixed.items()
    )
    getter = itemgetter(*names)
    if len(names) == 1:
        params = [(getter(row), *tail) for row in rows]
    else:
        params = [getter(row) + tail for row in rows]
    names += list(fixed)
    if dialect.paramstyle not in ("qmark", "format", "pyformat"):
        untyped = sql_table(table.name, *(sql_column(name) for name in names))
        session.execute(insert(untyped), [dict(zip(names, p, strict=True)) for p in params])
        return
    mark = "?" if dialect.paramstyle == "qmark" else "%s"
    quote = dialect.identifier_preparer.quote
    statement = (
        f"INSERT INTO {quote(table.name)} ({', '.join(quote(n) for n in names)}) "
        f"VALUES ({', '.join(mark for _ in names)})"
    )
    session.connection().exec_driver_sql(statement, params)


@functools.lru_cache(maxsize=4096)
def _json_of(items: tuple[tuple[str, Any], ...]) -> str:
    return json.dumps(dict(items))


def _json(value: Any) -> str:
    # Attribute dicts repeat a lot in a list (same city, same source): serialize each once.
    if isinstance(value, dict) and all(isinstance(v, str) for v in value.values()):
        return _json_of(tuple(value.items()))
    return json.dumps(value)


def select_in(session: Session, statement: str, values: list[Any]) -> list[tuple[Any, ...]]:
    """Rows of a SELECT whose one `{}` is filled with a placeholder per value, through the
    driver (SQLite's "?" or psycopg's "%s"). Values must be plain strings or numbers."""
    if not values:
        return []
    dialect = session.get_bind().dialect
    if dialect.paramstyle not in ("qmark", "format", "pyformat"):  # pragma: no cover
        raise NotImplementedError(f"paramstyle {dialect.paramstyle}")
    mark = "?" if dialect.paramstyle == "qmark" else "%s"
    sql = statement.format(", ".join(mark for _ in values))
    cursor = session.connection().connection.cursor()  # the driver's own, inside our transaction
    try:
        cursor.execute(sql, tuple(values))
        return [tuple(row) for row in cursor.fetchall()]
    finally:
        cursor.close()


def _processor(col: Column[Any], dialect: Dialect) -> Callable[[Any], Any] | None:
    if isinstance(col.type, JSON):
        return _json  # what SQLAlchemy's JSON type stores, without its wrapping
    # dialect_impl: on SQLite the string format of DATETIME comes from the dialect's type.
    return col.type.dialect_impl(dialect).bind_processor(dialect)
