"""Which item ids were submitted to each job through the ingress.

The results store knows only finished items; this record lets a read tell "no result yet" from
"no such item", and a job's page say how many results are still to come. It is a Redis set per
job (a retry adds nothing, a job sent over several requests adds up), with the results' TTL.
"""

from __future__ import annotations

from collections.abc import Sequence

import redis

_BATCH = 1000


def submitted_key(prefix: str, job_id: str) -> str:
    """Set: ids of the items submitted to the job through the ingress (same hash tag as the job's results)."""
    return f"{prefix}:job:{{{job_id}}}:submitted"


class SubmissionLedger:
    """Record and look up the item ids submitted to jobs."""

    def __init__(self, client: redis.Redis, *, prefix: str, ttl_s: int) -> None:
        self._redis = client
        self._prefix = prefix
        self._ttl_s = ttl_s

    def record(self, job_id: str, item_ids: Sequence[str]) -> None:
        """Add ``item_ids`` to the job's set and restart its TTL."""
        key = submitted_key(self._prefix, job_id)
        with self._redis.pipeline(transaction=False) as pipe:
            for start in range(0, len(item_ids), _BATCH):
                pipe.sadd(key, *item_ids[start : start + _BATCH])
            pipe.expire(key, self._ttl_s)
            pipe.execute()

    def expected(self, job_id: str) -> int | None:
        """How many distinct items were submitted to the job here; None when none were (or the record expired)."""
        count = int(self._redis.scard(submitted_key(self._prefix, job_id)))
        return count or None

    def knows(self, job_id: str, item_id: str) -> bool:
        """True when ``item_id`` was submitted to the job here."""
        return bool(self._redis.sismember(submitted_key(self._prefix, job_id), item_id))
