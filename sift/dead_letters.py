"""Dead letters: items the model raised on even alone and after retries, kept for a person to look at.

Redis has no dead-letter exchange, so sift keeps its own list. A dead letter holds the raw
item, so it can be requeued under its original job and item id once the cause is fixed:
the store lets the new success replace the stored error result.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis
from pydantic import BaseModel, ConfigDict

from sift.contract import ErrorInfo, Lane
from sift.keys import dead_letters_key


class DeadLetter(BaseModel):
    """One failed item and everything needed to run it again."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    job_id: str
    task: str
    model: str | None = None
    lane: Lane = Lane.BULK
    item: Any
    error: ErrorInfo
    worker: str | None = None
    failed_at: float


class DeadLetters:
    """The dead-letter list of one deployment (queue prefix)."""

    def __init__(self, client: redis.Redis, *, prefix: str = "sift", max_len: int = 100_000) -> None:
        self._redis = client
        self._key = dead_letters_key(prefix)
        self._max_len = max_len

    def push(self, letters: Sequence[DeadLetter]) -> None:
        """Append letters, dropping the oldest beyond the bound."""
        if not letters:
            return
        pipe = self._redis.pipeline()
        pipe.rpush(self._key, *(letter.model_dump_json() for letter in letters))
        pipe.ltrim(self._key, -self._max_len, -1)
        pipe.execute()

    def count(self) -> int:
        """How many letters are waiting."""
        return int(self._redis.llen(self._key))

    def peek(self, limit: int = 100) -> list[DeadLetter]:
        """The oldest ``limit`` letters, left in place."""
        raw: Any = self._redis.lrange(self._key, 0, limit - 1)
        return [DeadLetter.model_validate_json(body) for body in raw]

    def take(self, limit: int) -> list[DeadLetter]:
        """Remove and return the oldest ``limit`` letters (put them back with :meth:`push` on failure)."""
        raw: Any = self._redis.lpop(self._key, limit)
        return [DeadLetter.model_validate_json(body) for body in raw or []]

    def purge(self) -> int:
        """Delete every letter; returns how many there were."""
        pipe = self._redis.pipeline()
        pipe.llen(self._key)
        pipe.delete(self._key)
        count, _ = pipe.execute()
        return int(count)
