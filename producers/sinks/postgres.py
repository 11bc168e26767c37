"""PostgreSQL output: one row per item, upserted in batches, kept for as long as the database keeps it.

Each batch is copied into a temporary table and merged with ``INSERT ... ON CONFLICT`` under the
rule of the Redis store (:mod:`producers.sinks.conflict`): a stored row is replaced only when it is
an error and the new result a success. So writing the same results again, or resuming a backfill,
leaves exactly one row per (job id, item id). Each batch commits on its own: an interrupted
backfill keeps every batch written before the interruption.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import sql

from producers.sinks.base import ResultSink, SinkError
from producers.sinks.conflict import collapse
from producers.sinks.dsn import PostgresTarget, parse_postgres_url, scrub
from sift.contract import ItemResult

CONNECT_TIMEOUT_S = 10
COLUMNS = (
    "job_id",
    "item_id",
    "task",
    "label",
    "score",
    "model",
    "revision",
    "truncated",
    "error_code",
    "error_message",
    "result",
)
"""Columns a batch writes; ``stored_at`` takes its default."""

_CREATE = """
CREATE TABLE IF NOT EXISTS {table} (
    job_id        text             NOT NULL,
    item_id       text             NOT NULL,
    task          text             NOT NULL,
    label         text,
    score         double precision,
    model         text,
    revision      text,
    truncated     boolean          NOT NULL,
    error_code    text,
    error_message text,
    result        jsonb            NOT NULL,
    stored_at     timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, item_id)
)
"""
# Temporary, so concurrent backfills never see each other's batches; emptied at each commit.
_STAGING = "CREATE TEMPORARY TABLE {staging} (LIKE {table} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
_UPSERT = """
INSERT INTO {table} AS stored ({columns}) SELECT {columns} FROM {staging}
ON CONFLICT (job_id, item_id) DO UPDATE SET {updates}, stored_at = now()
WHERE stored.error_code IS NOT NULL AND excluded.error_code IS NULL
"""


class PostgresSink(ResultSink):
    """Upserts results into a table (created if missing) of the database ``url`` names.

    ``url``: ``postgresql://user:password@host:port/dbname``, any libpq URL parameter allowed,
    plus sift's ``table=name`` or ``table=schema.name`` (default ``sift_results``).
    """

    def __init__(self, url: str) -> None:
        self.target = parse_postgres_url(url)
        self.description = f"{self.target.redacted} (table {self.target.table_name})"
        self._conn = _connect(self.target)
        table = sql.Identifier(*self.target.table)
        staging = sql.Identifier("sift_staging")
        columns = sql.SQL(", ").join(sql.Identifier(c) for c in COLUMNS)
        updates = sql.SQL(", ").join(
            sql.SQL("{0} = excluded.{0}").format(sql.Identifier(c)) for c in COLUMNS if c not in ("job_id", "item_id")
        )
        self._copy = sql.SQL("COPY {} ({}) FROM STDIN").format(staging, columns)
        self._upsert = sql.SQL(_UPSERT).format(table=table, columns=columns, staging=staging, updates=updates)
        try:
            with self._conn.transaction():
                # Two backfills creating the table at once would collide in the catalog: take turns.
                self._conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [self.target.table_name])
                self._conn.execute(sql.SQL(_CREATE).format(table=table))
                self._conn.execute(sql.SQL(_STAGING).format(staging=staging, table=table))
                # An empty merge checks now, before any work is queued, that an existing table has
                # the columns and the (job_id, item_id) key the upsert needs.
                self._conn.execute(self._upsert)
        except psycopg.Error as err:
            self._conn.close()
            raise SinkError(
                f"cannot use table {self.target.table_name} at {self.target.redacted}: {self._message(err)}"
            ) from err

    def write(self, results: Sequence[ItemResult]) -> None:
        """Upsert the batch in one transaction."""
        rows = [_row(result) for result in collapse(results)]
        if not rows:
            return
        try:
            with self._conn.transaction(), self._conn.cursor() as cursor:
                with cursor.copy(self._copy) as copy:
                    for row in rows:
                        copy.write_row(row)
                cursor.execute(self._upsert)
        except psycopg.Error as err:
            raise SinkError(
                f"writing results to PostgreSQL at {self.target.redacted} failed: {self._message(err)} "
                "(the results are still in Redis: run the same command again to resume)"
            ) from err

    def close(self) -> None:
        """Close the connection; every batch is already committed."""
        self._conn.close()

    def _message(self, err: psycopg.Error) -> str:
        return _message(err, self.target)


def _connect(target: PostgresTarget) -> psycopg.Connection[Any]:
    options: dict[str, Any] = {"autocommit": True, "application_name": "sift backfill"}
    if "connect_timeout=" not in target.conninfo:
        options["connect_timeout"] = CONNECT_TIMEOUT_S
    try:
        return psycopg.connect(target.conninfo, **options)
    except psycopg.Error as err:
        raise SinkError(f"cannot connect to PostgreSQL at {target.redacted}: {_message(err, target)}") from err


def _message(err: psycopg.Error, target: PostgresTarget) -> str:
    """The server's sentence (without the quoted SQL), on one line, without the password."""
    text = err.diag.message_primary or str(err)
    return scrub(" ".join(text.split()), target.secrets)


def _row(result: ItemResult) -> tuple[Any, ...]:
    error = result.error
    document = _storable(result.model_dump(mode="json", exclude_none=True))
    return (
        _text(result.job_id),
        _text(result.id),
        _text(result.task),
        None if result.label is None else _text(result.label),
        result.scores[0].score if result.scores else None,
        None if result.model is None else _text(result.model),
        None if result.revision is None else _text(result.revision),
        result.truncated,
        None if error is None else error.code.value,
        None if error is None else _text(error.message),
        json.dumps(document, ensure_ascii=False),
    )


def _text(value: str) -> str:
    """``value`` as PostgreSQL can store it: text and jsonb hold no NUL, and only valid UTF-8."""
    return value.replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")


def _storable(value: Any) -> Any:
    """A JSON document with every string made storable by :func:`_text`."""
    if isinstance(value, str):
        return _text(value)
    if isinstance(value, dict):
        return {_text(key): _storable(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_storable(item) for item in value]
    return value
