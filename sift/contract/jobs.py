"""The message a producer puts on the queue: one job chunk of many items."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

SCHEMA_VERSION = 1

# Job ids become part of Redis keys: keep them to a safe alphabet.
JobId = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:-]+$")]


class Lane(StrEnum):
    """Which queue a job travels on. Real-time moderation is kept apart from backfills."""

    REALTIME = "realtime"
    BULK = "bulk"


class Job(BaseModel):
    """One broker message: a chunk of items of one task, for one model.

    ``task`` is a plain string and ``items`` are raw dicts on purpose: the worker
    validates each item on its own, so one bad item (or an unknown task from a
    foreign producer) becomes per-item error results instead of a lost message.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = 1
    job_id: JobId
    task: Annotated[str, StringConstraints(max_length=64)]
    model: Annotated[str, StringConstraints(min_length=1, max_length=128)] | None = None
    """Registry role to use; ``None`` means the task's default model."""
    items: list[Any] = Field(min_length=1)
    lane: Lane = Lane.BULK
    enqueued_at: float
    """Producer's wall clock (seconds since the epoch), for queue-time reporting."""
    deadline: float | None = None
    """Wall-clock time (seconds since the epoch) after which the items are not worth computing:
    a worker that takes the job later answers every item with ``expired`` instead."""
