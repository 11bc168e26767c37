"""PostgreSQL URLs as backfill targets: sift's ``table`` parameter, and the password kept out of messages."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from producers.sinks.base import SinkError

SCHEMES = ("postgresql", "postgres")
DEFAULT_TABLE = "sift_results"
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


@dataclass(frozen=True)
class PostgresTarget:
    """A parsed ``postgresql://`` target."""

    conninfo: str
    """The URL as handed to libpq: sift's ``table`` parameter taken out."""
    table: tuple[str, ...]
    """The results table: ``(name,)`` or ``(schema, name)``."""
    redacted: str
    """The URL with its password replaced by ``***``, for messages."""
    secrets: tuple[str, ...]
    """Password spellings (as written and percent-decoded) to blank out of any message."""

    @property
    def table_name(self) -> str:
        """The table as SQL names it, e.g. ``sift_results`` or ``archive.sift_results``."""
        return ".".join(self.table)


def parse_postgres_url(url: str) -> PostgresTarget:
    """Split ``postgresql://user:password@host:port/db?table=schema.name`` into what the sink needs."""
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES:
        raise SinkError(f"not a PostgreSQL URL (postgresql://...): {redact_postgres_url(url)}")
    query = parse_qsl(parts.query, keep_blank_values=True)
    tables = [value for key, value in query if key == "table"]
    if len(tables) > 1:
        raise SinkError("give the table parameter once")
    table = _table(tables[0] if tables else DEFAULT_TABLE)
    conninfo = url if not tables else urlunsplit(parts._replace(query=urlencode([q for q in query if q[0] != "table"])))
    return PostgresTarget(conninfo=conninfo, table=table, redacted=redact_postgres_url(url), secrets=_secrets(url))


def redact_postgres_url(url: str) -> str:
    """``url`` with the password (in the user part or a ``password=`` parameter) replaced by ``***``."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        userinfo, _, hosts = netloc.rpartition("@")
        netloc = f"{userinfo.split(':', 1)[0]}:***@{hosts}"
    pairs = [pair.split("=", 1) for pair in parts.query.split("&")] if parts.query else []
    query = "&".join(f"{kv[0]}=***" if unquote(kv[0]) == "password" else "=".join(kv) for kv in pairs)
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def scrub(message: str, secrets: tuple[str, ...]) -> str:
    """``message`` with every secret replaced by ``***`` (libpq may echo pieces of a malformed URL)."""
    for secret in sorted(secrets, key=len, reverse=True):
        message = message.replace(secret, "***")
    return message


def _secrets(url: str) -> tuple[str, ...]:
    parts = urlsplit(url)
    found = [value for key, value in parse_qsl(parts.query, keep_blank_values=True) if key == "password"]
    # The raw (percent-encoded) spellings too: a parse error may quote the URL as written.
    found += [pair.split("=", 1)[1] for pair in parts.query.split("&") if pair.startswith("password=")]
    if parts.password is not None:
        found += [parts.password, unquote(parts.password)]
    return tuple(sorted({secret for secret in found if secret}))


def _table(value: str) -> tuple[str, ...]:
    names = tuple(value.split("."))
    if not 1 <= len(names) <= 2 or not all(_IDENTIFIER.fullmatch(name) for name in names):
        raise SinkError(f"table={value!r}: give a name like {DEFAULT_TABLE} or myschema.{DEFAULT_TABLE}")
    return names
