"""Webhook batches the dispatcher gave up on, kept in a capped Redis stream for operators."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis
from redis.typing import EncodableT, FieldT

from sift.keys import webhook_failures_key


@dataclass(frozen=True)
class WebhookFailure:
    """One batch of a job's results that did not reach its callback URL."""

    job_id: str
    url: str
    """The callback URL without credentials or query (they may hold tokens)."""
    item_ids: tuple[str, ...]
    """Items whose results the batch carried; they are still in the results store until its TTL."""
    attempts: int
    status: int | None
    """The receiver's last HTTP status; None when it never answered (timeouts, refused connections)."""
    reason: str
    failed_at: float = field(default_factory=time.time)


def redact_url(url: str) -> str:
    """``url`` without user info, query or fragment, for logs and failure records."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        netloc = f"{host}:{parts.port}" if parts.port is not None else host
    except ValueError:
        return "<malformed URL>"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def record_failure(client: redis.Redis, prefix: str, failure: WebhookFailure, *, max_len: int) -> str:
    """Append ``failure`` to ``{prefix}:webhooks:failed`` (about ``max_len`` kept); returns its entry id."""
    fields: dict[FieldT, EncodableT] = {
        "job_id": failure.job_id,
        "url": redact_url(failure.url),
        "item_ids": json.dumps(list(failure.item_ids)),
        "attempts": str(failure.attempts),
        "status": "" if failure.status is None else str(failure.status),
        "reason": failure.reason,
        "failed_at": repr(failure.failed_at),
    }
    entry_id: Any = client.xadd(webhook_failures_key(prefix), fields, maxlen=max_len, approximate=True)
    return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)


def recent_failures(client: redis.Redis, prefix: str, count: int = 100) -> list[WebhookFailure]:
    """The latest ``count`` recorded failures, newest first."""
    entries: Any = client.xrevrange(webhook_failures_key(prefix), count=count)
    return [_failure(fields) for _entry_id, fields in entries]


def _failure(raw: dict[Any, Any]) -> WebhookFailure:
    fields = {_text(k): _text(v) for k, v in raw.items()}
    return WebhookFailure(
        job_id=fields["job_id"],
        url=fields["url"],
        item_ids=tuple(json.loads(fields["item_ids"])),
        attempts=int(fields["attempts"]),
        status=int(fields["status"]) if fields["status"] else None,
        reason=fields["reason"],
        failed_at=float(fields["failed_at"]),
    )


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
