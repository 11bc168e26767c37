"""Per-item results in Redis, keyed by job and item id, with a TTL on every key.

Writes are idempotent: a result already stored is never replaced, except an error
result by a success. So a redelivered message or a producer's resubmission cannot
produce a second, different answer for the same item.

Every newly stored result is also appended, in the same script, to the job's "done" stream
and to one global results stream that consumer groups read (``sift.delivery``). A write
that stores nothing publishes nothing, so duplicates never reach consumers twice.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import Any

import redis

from sift.contract.results import ItemResult
from sift.keys import done_stream_key, errors_key, results_key, results_stream_key

DEFAULT_RESULTS_STREAM_MAXLEN = 1_000_000
"""Entries the global results stream keeps (about; trimmed in whole nodes). Lagging consumers lose older ones."""

# KEYS: results hash, errors set, done stream, global results stream.
# ARGV: ttl, results stream max length, job id, then (id, json, is_error) triples.
# The global stream is outside the job's hash tag: like Celery's Redis transport, this needs one Redis node.
_WRITE_SCRIPT = """
local written = 0
for i = 4, #ARGV, 3 do
  local id, body, is_error = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local exists = redis.call('HEXISTS', KEYS[1], id)
  local replace = exists == 1 and is_error == '0' and redis.call('SISMEMBER', KEYS[2], id) == 1
  if exists == 0 or replace then
    redis.call('HSET', KEYS[1], id, body)
    if is_error == '1' then redis.call('SADD', KEYS[2], id) else redis.call('SREM', KEYS[2], id) end
    redis.call('XADD', KEYS[3], '*', 'id', id)
    redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[2], '*', 'job_id', ARGV[3], 'id', id, 'result', body)
    written = written + 1
  end
end
for k = 1, 3 do redis.call('EXPIRE', KEYS[k], ARGV[1]) end
return written
"""


class ResultStore:
    """Read and write item results of jobs in one Redis database."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        prefix: str = "sift",
        ttl_s: int = 7 * 24 * 3600,
        stream_maxlen: int = DEFAULT_RESULTS_STREAM_MAXLEN,
    ) -> None:
        """``stream_maxlen``: about how many entries the global results stream keeps (at least 1)."""
        if stream_maxlen < 1:
            raise ValueError(f"stream_maxlen must be at least 1, got {stream_maxlen}")
        self._redis = client
        self._prefix = prefix
        self._ttl_s = ttl_s
        self._stream_maxlen = stream_maxlen
        self._write = client.register_script(_WRITE_SCRIPT)

    def write(self, job_id: str, results: Sequence[ItemResult]) -> int:
        """Store results of one job; returns how many were new (the rest were already there)."""
        if not results:
            return 0
        argv: list[str | int] = [self._ttl_s, self._stream_maxlen, job_id]
        for result in results:
            argv += [result.id, result.model_dump_json(exclude_none=True), "1" if result.error else "0"]
        keys = [
            results_key(self._prefix, job_id),
            errors_key(self._prefix, job_id),
            done_stream_key(self._prefix, job_id),
            results_stream_key(self._prefix),
        ]
        return int(self._write(keys=keys, args=argv))

    def get(self, job_id: str, item_id: str) -> ItemResult | None:
        """The stored result of one item, or ``None`` if it has none yet."""
        body = self._redis.hget(results_key(self._prefix, job_id), item_id)
        return None if body is None else ItemResult.model_validate_json(body)

    def get_many(self, job_id: str, item_ids: Sequence[str]) -> dict[str, ItemResult]:
        """Stored results among ``item_ids`` (missing ones are left out)."""
        if not item_ids:
            return {}
        bodies = self._redis.hmget(results_key(self._prefix, job_id), list(item_ids))
        return {i: ItemResult.model_validate_json(b) for i, b in zip(item_ids, bodies, strict=True) if b is not None}

    def count(self, job_id: str) -> int:
        """How many items of the job have a result."""
        return int(self._redis.hlen(results_key(self._prefix, job_id)))

    def stored_ids(self, job_id: str) -> Iterator[str]:
        """Ids of every item of the job that has a result (scans; fine for millions)."""
        # HSCAN NOVALUES needs Redis 7.4; plain HSCAN works everywhere and never blocks the server.
        for key, _value in self._redis.hscan_iter(results_key(self._prefix, job_id), count=1000):
            yield _text(key)

    def follow(self, job_id: str, *, timeout_s: float | None, idle_s: float | None = None) -> Iterator[ItemResult]:
        """Yield each result of the job as it is stored, from the first; each id once.

        Stops with :class:`TimeoutError` after ``timeout_s`` in all, or after ``idle_s``
        without a new result; the caller stops iterating when it has what it expects.
        """
        stream = done_stream_key(self._prefix, job_id)
        last_id = "0-0"
        seen: set[str] = set()
        start = last_progress = time.monotonic()
        while True:
            now = time.monotonic()
            block_s = _remaining(now, start, timeout_s, last_progress, idle_s)
            reply: Any = self._redis.xread({stream: last_id}, count=1000, block=max(1, int(block_s * 1000)))
            ids: list[str] = []
            for _name, entries in reply or []:
                for entry_id, fields in entries:
                    last_id = _text(entry_id)
                    item_id = _text(fields[b"id"] if b"id" in fields else fields["id"])
                    if item_id not in seen:
                        seen.add(item_id)
                        ids.append(item_id)
            if ids:
                last_progress = time.monotonic()
                yield from self.get_many(job_id, ids).values()

    def delete(self, job_id: str) -> None:
        """Remove every key of the job (its entries already in the global results stream stay)."""
        self._redis.delete(
            results_key(self._prefix, job_id), errors_key(self._prefix, job_id), done_stream_key(self._prefix, job_id)
        )


def _remaining(now: float, start: float, timeout_s: float | None, last_progress: float, idle_s: float | None) -> float:
    """Seconds to block for, or raise TimeoutError when a deadline has passed."""
    limits = [1.0]
    if timeout_s is not None:
        left = start + timeout_s - now
        if left <= 0:
            raise TimeoutError(f"no complete result set within {timeout_s:.0f} s")
        limits.append(left)
    if idle_s is not None:
        left = last_progress + idle_s - now
        if left <= 0:
            raise TimeoutError(f"no new result for {idle_s:.0f} s: is a worker consuming this queue?")
        limits.append(left)
    return min(limits)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else value
