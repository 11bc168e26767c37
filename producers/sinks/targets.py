"""From an output target, as a user writes it, to the sink that writes there."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from urllib.parse import urlsplit

from producers.sinks.base import INSTALL_HINT, ResultSink, SinkError
from producers.sinks.dsn import SCHEMES, redact_postgres_url

STDOUT = "-"


class SinkKind(StrEnum):
    """The output formats a backfill writes."""

    JSONL = "jsonl"
    PARQUET = "parquet"
    POSTGRES = "postgres"


@dataclass(frozen=True)
class Target:
    """A parsed output target: its kind and where (a path, ``-``, or a URL)."""

    kind: SinkKind
    location: str


def parse_target(target: str) -> Target:
    """``postgresql://``/``postgres://`` URL, ``*.parquet``, ``*.jsonl`` or ``-`` (JSON lines to stdout)."""
    text = target.strip()
    if text == STDOUT:
        return Target(SinkKind.JSONL, STDOUT)
    scheme = urlsplit(text).scheme.lower() if "://" in text else ""
    if scheme in SCHEMES:
        return Target(SinkKind.POSTGRES, text)
    if scheme:
        raise SinkError(
            f"cannot write results to a {scheme}:// URL ({redact_postgres_url(text)}): "
            "use postgresql://, a .jsonl or .parquet file, or '-'"
        )
    suffix = Path(text).suffix.lower()
    if suffix == ".jsonl":
        return Target(SinkKind.JSONL, text)
    if suffix == ".parquet":
        return Target(SinkKind.PARQUET, text)
    shown = repr(target) if text else "an empty target"
    raise SinkError(
        f"cannot tell the output format of {shown}: name a .jsonl or .parquet file, "
        "give '-' for JSON lines on standard output, or a postgresql:// URL"
    )


def open_sink(target: str | Path) -> ResultSink:
    """The sink for ``target`` (see :func:`parse_target`), opened: files created, the database reached.

    Raises :class:`SinkError` with a sentence to act on when the target cannot be used.
    """
    parsed = parse_target(str(target))
    if parsed.kind is SinkKind.JSONL:
        from producers.sinks.jsonl import JsonlSink

        return JsonlSink(None if parsed.location == STDOUT else Path(parsed.location))
    if parsed.kind is SinkKind.PARQUET:
        try:
            from producers.sinks.parquet import ParquetSink
        except ImportError as missing:
            raise _missing("Parquet", "pyarrow", missing) from missing
        return ParquetSink(Path(parsed.location))
    try:
        from producers.sinks.postgres import PostgresSink
    except ImportError as missing:
        raise _missing("PostgreSQL", "psycopg", missing) from missing
    return PostgresSink(parsed.location)


def _missing(output: str, library: str, err: ImportError) -> Exception:
    """The error for a sink whose library is not installed; other import failures pass through."""
    if (err.name or "").split(".")[0] != library:
        return err
    return SinkError(f"{output} output needs {library}, which is not installed: {INSTALL_HINT}")
