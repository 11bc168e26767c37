"""Read the global results stream with a Redis consumer group.

Every group sees every result; within a group each result goes to one consumer, which confirms
it with XACK once handled. Results a consumer read but never confirmed (it crashed) stay pending:
the same consumer name re-reads them when it restarts, and any other consumer of the group takes
them over with XAUTOCLAIM once they have been idle for ``claim_idle_s``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import redis
from pydantic import ValidationError
from redis.typing import StreamIdT

from sift.contract.results import ItemResult
from sift.keys import results_stream_key

log = logging.getLogger(__name__)

StartAt = Literal["earliest", "latest"]
"""Where a newly created group starts: every result the stream still holds, or only new ones."""

_RECLAIM_EVERY_MAX_S = 5.0


@dataclass(frozen=True)
class StreamEntry:
    """One result read from the stream, with the entry id to acknowledge it by."""

    entry_id: str
    result: ItemResult

    @property
    def job_id(self) -> str:
        """The job the result belongs to."""
        return self.result.job_id


class ResultStreamConsumer:
    """One consumer of a consumer group over ``{prefix}:results``.

    Call :meth:`read` in a loop and :meth:`ack` each entry once it is handled: nothing is
    confirmed on its own, so a crash between the two redelivers (at least once, never lost).
    """

    def __init__(
        self,
        client: redis.Redis,
        *,
        prefix: str,
        group: str,
        consumer: str,
        claim_idle_s: float = 60.0,
        count: int = 100,
        start: StartAt = "earliest",
    ) -> None:
        """``claim_idle_s``: take over another consumer's unconfirmed results after this long."""
        if not group or not consumer:
            raise ValueError("a stream consumer needs a non-empty group and consumer name")
        if claim_idle_s <= 0 or count < 1:
            raise ValueError(f"claim_idle_s must be > 0 and count >= 1, got {claim_idle_s} and {count}")
        self._redis = client
        self.stream = results_stream_key(prefix)
        self.group = group
        self.consumer = consumer
        self._claim_idle_ms = max(1, int(claim_idle_s * 1000))
        self._reclaim_every_s = min(claim_idle_s / 2, _RECLAIM_EVERY_MAX_S)
        self._count = count
        self._start_id = "0" if start == "earliest" else "$"
        self._group_ready = False
        # This consumer's own unconfirmed entries (from before a restart) are read before new ones.
        self._backlog_from: str | None = "0"
        self._claim_cursor = "0-0"
        self._next_reclaim_at = 0.0

    def ensure_group(self) -> bool:
        """Create the group (and the stream) unless it exists; True when this call created it."""
        try:
            self._redis.xgroup_create(self.stream, self.group, id=self._start_id, mkstream=True)
            created = True
        except redis.ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise
            created = False
        self._group_ready = True
        return created

    def read(self, *, block_s: float | None = 1.0) -> list[StreamEntry]:
        """The next results for this consumer: its own backlog, then others' stale ones, then new ones.

        Blocks up to ``block_s`` for new results (``None``: does not block). Entries that cannot be
        parsed, or that the stream's length cap dropped before they were handled, are logged and
        acknowledged so they do not come back forever.
        """
        if not self._group_ready:
            self.ensure_group()
        try:
            return self._read(block_s)
        except redis.ResponseError as error:
            if "NOGROUP" not in str(error):
                raise
            # The stream key was deleted (e.g. FLUSHDB): recreate the group and go on.
            log.warning("consumer group %s on %s vanished; recreating it", self.group, self.stream)
            self.ensure_group()
            return []

    def ack(self, entry_ids: Iterable[str]) -> int:
        """Confirm entries as handled; returns how many were still pending."""
        ids = list(entry_ids)
        return int(self._redis.xack(self.stream, self.group, *ids)) if ids else 0

    def touch(self, entry_ids: Iterable[str]) -> None:
        """Reset the idle time of entries this consumer still works on, so that no peer takes them over."""
        ids: list[StreamIdT] = list(entry_ids)
        if ids:
            self._redis.xclaim(self.stream, self.group, self.consumer, 0, ids, justid=True)

    def pending(self) -> int:
        """Entries of the group read by some consumer and not yet confirmed (0 before the group exists)."""
        try:
            summary: Any = self._redis.xpending(self.stream, self.group)
        except redis.ResponseError as error:
            if "NOGROUP" not in str(error):
                raise
            return 0
        return int(summary["pending"])

    def _read(self, block_s: float | None) -> list[StreamEntry]:
        if self._backlog_from is not None:
            reply: Any = self._redis.xreadgroup(
                self.group, self.consumer, {self.stream: self._backlog_from}, count=self._count
            )
            raw = _entries_of(reply)
            if raw:
                self._backlog_from = _text(raw[-1][0])
                return self._parse(raw)
            self._backlog_from = None
        claimed = self._reclaim()
        if claimed is not None:
            return claimed
        block_ms = None if block_s is None else max(1, int(block_s * 1000))
        reply = self._redis.xreadgroup(self.group, self.consumer, {self.stream: ">"}, count=self._count, block=block_ms)
        return self._parse(_entries_of(reply))

    def _reclaim(self) -> list[StreamEntry] | None:
        """Entries of dead consumers (idle past ``claim_idle_s``), now this consumer's; None when there are none."""
        now = time.monotonic()
        if self._claim_cursor == "0-0" and now < self._next_reclaim_at:
            return None
        reply: Any = self._redis.xautoclaim(
            self.stream,
            self.group,
            self.consumer,
            min_idle_time=self._claim_idle_ms,
            start_id=self._claim_cursor,
            count=self._count,
        )
        self._claim_cursor = _text(reply[0])
        if self._claim_cursor == "0-0":
            self._next_reclaim_at = now + self._reclaim_every_s
        # Redis >= 7 lists pending entries that no longer exist (trimmed) and drops them from the group.
        deleted = reply[2] if len(reply) > 2 else []
        if deleted:
            log.warning(
                "%d pending results of group %s were trimmed from %s before being handled: "
                "raise SIFT_RESULTS_STREAM_MAXLEN or add consumers",
                len(deleted),
                self.group,
                self.stream,
            )
        if reply[1]:
            log.info("consumer %s took over %d stale results in group %s", self.consumer, len(reply[1]), self.group)
            return self._parse(reply[1])
        return None

    def _parse(self, raw: Sequence[Any]) -> list[StreamEntry]:
        entries: list[StreamEntry] = []
        bad: list[str] = []
        for raw_id, fields in raw:
            entry_id = _text(raw_id)
            if not fields:
                log.warning("result %s of %s was trimmed before group %s handled it", entry_id, self.stream, self.group)
                bad.append(entry_id)
                continue
            try:
                entries.append(StreamEntry(entry_id, ItemResult.model_validate_json(_field(fields, "result"))))
            except (KeyError, ValidationError, UnicodeDecodeError) as error:
                log.error("skipping malformed entry %s of %s: %s", entry_id, self.stream, str(error)[:300])
                bad.append(entry_id)
        self.ack(bad)
        return entries


def _entries_of(reply: Any) -> list[Any]:
    """The entries of a one-stream XREADGROUP reply."""
    return [entry for _name, entries in reply or [] for entry in entries]


def _field(fields: dict[Any, Any], name: str) -> Any:
    return fields[name.encode()] if name.encode() in fields else fields[name]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
