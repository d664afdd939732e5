"""SQL for the ingest hot path: quoted table names, `VALUES` lists with typed columns, and
`Statements`, several statements in one round trip. Raw SQL with parameters only (no values
in the text), inside the active tenant's schema like every ORM query."""

from collections.abc import Sequence
from typing import Any

from django.db import connection


def table(model: Any) -> str:
    return connection.ops.quote_name(model._meta.db_table)


def values_sql(rows: Sequence[Sequence[Any]], casts: Sequence[str]) -> tuple[str, list[Any]]:
    """`VALUES`-list SQL for `rows`, every column cast (so NULLs and arrays keep their type)."""
    row = "(" + ", ".join(f"%s::{cast}" for cast in casts) + ")"
    return ", ".join([row] * len(rows)), [value for values in rows for value in values]


def execute(sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall() if cursor.description else []


class Statements:
    """Statements sent to PostgreSQL in one round trip, their results read back in order.

    Django's psycopg cursors bind parameters on the client, so one `execute` may carry
    several statements. A batch's reads and its writes go as one message each: profiled on
    single-instance batches (a modality sending one C-STORE at a time), the round trips of
    a dozen separate statements cost more than the SQL itself."""

    def __init__(self) -> None:
        self._sql: list[str] = []
        self._params: list[Any] = []

    def add(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Queue a statement; returns the position of its result in `run()`'s list."""
        self._sql.append(sql)
        self._params.extend(params)
        return len(self._sql) - 1

    def run(self) -> list[list[tuple[Any, ...]]]:
        if not self._sql:
            return []
        results: list[list[tuple[Any, ...]]] = []
        with connection.cursor() as cursor:
            cursor.execute(";\n".join(self._sql), self._params)
            while True:
                results.append(cursor.fetchall() if cursor.description else [])
                if not cursor.nextset():
                    break
        return results
