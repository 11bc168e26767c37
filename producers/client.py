"""The Python producer client: submit one item or millions, get results back by id."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel

from sift.broker import make_celery_app
from sift.contract import (
    ErrorCode,
    ErrorInfo,
    ItemRejected,
    ItemResult,
    Job,
    Lane,
    TaskName,
    parse_item,
    parse_task,
)
from sift.contract.items import item_key
from sift.dead_letters import DeadLetter, DeadLetters
from sift.keys import INFER_TASK, queue_name
from sift.results_store import ResultStore
from sift.settings import SiftSettings

RawItem = Mapping[str, Any] | BaseModel
QueueFullPolicy = Literal["block", "fail"]


class QueueFull(Exception):
    """A lane's queue is at its bound (``SIFT_MAX_QUEUED_*``): nothing more was sent."""


@dataclass(frozen=True)
class ItemRef:
    """Where one submitted item's result will be: job id and item id."""

    job_id: str
    item_id: str


@dataclass
class JobHandle:
    """What :meth:`SiftClient.submit_many` sent: counts, and items rejected before sending."""

    job_id: str
    submitted: int = 0
    messages: int = 0
    rejected: list[ItemResult] = field(default_factory=list)
    """Items that failed validation here; their error results are also in the store (except duplicates)."""

    @property
    def expected(self) -> int:
        """How many results the store will hold for this job once workers are done."""
        return self.submitted + sum(1 for r in self.rejected if r.error and r.error.code != ErrorCode.DUPLICATE_ID)


ROOM_RECHECK_S = 0.1
"""Longest a producer goes on sending to a lane without looking at its depth again."""


@dataclass
class _Room:
    """What this producer last saw of a lane's queue: how many sends it may make before looking again."""

    sends_left: int = 0
    until: float = 0.0


class SiftClient:
    """Submit jobs to sift's queues and read results from its store.

    >>> client = SiftClient(SiftSettings(redis_url="redis://localhost:6379/0"))  # doctest: +SKIP
    >>> ref = client.submit("classify", {"id": "1", "text": "great product"})  # doctest: +SKIP
    >>> client.result(ref, timeout_s=10).label  # doctest: +SKIP
    """

    def __init__(self, settings: SiftSettings | None = None) -> None:
        self.settings = settings or SiftSettings()
        self.app = make_celery_app(self.settings)
        self.redis = self.settings.redis_client()
        self.store = ResultStore(
            self.redis,
            prefix=self.settings.queue_prefix,
            ttl_s=self.settings.result_ttl_s,
            stream_maxlen=self.settings.results_stream_maxlen,
        )
        self._limits = self.settings.limits()
        self._room = {lane: _Room() for lane in Lane}

    def close(self) -> None:
        """Release broker and Redis connections."""
        self.redis.close()
        self.app.close()

    def __enter__(self) -> SiftClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def submit(
        self,
        task: TaskName | str,
        item: RawItem,
        *,
        model: str | None = None,
        lane: Lane = Lane.REALTIME,
        job_id: str | None = None,
        deadline_s: float | None = None,
        on_full: QueueFullPolicy | None = None,
    ) -> ItemRef:
        """Validate and enqueue one item (real-time lane by default).

        ``deadline_s``: if no worker has taken the item this many seconds from now, it is
        answered with an ``expired`` error instead of being computed. ``on_full`` overrides
        ``SIFT_ON_QUEUE_FULL`` for this call.
        Raises :class:`~sift.contract.ItemRejected` with the item's error when it is invalid, and
        :class:`QueueFull` when the lane is at its bound.
        """
        task_name = parse_task(task)
        raw = _as_dict(item)
        _give_an_id(raw)
        parse_item(task_name, raw, self._limits)
        job = _job(job_id or _new_job_id(), task_name, model, [raw], lane, deadline_s)
        self._send(job, on_full=on_full)
        return ItemRef(job.job_id, raw["id"])

    def submit_many(
        self,
        task: TaskName | str,
        items: Iterable[RawItem],
        *,
        model: str | None = None,
        lane: Lane = Lane.BULK,
        job_id: str | None = None,
        chunk_size: int | None = None,
        deadline_s: float | None = None,
    ) -> JobHandle:
        """Validate and enqueue many items as one job, ``chunk_size`` items per message.

        Invalid items do not stop the others: each gets an error result (stored, so that
        ``iter_results`` sees one result per item) and is listed in ``JobHandle.rejected``.
        ``deadline_s``: items no worker has taken this many seconds from now are answered ``expired``.
        """
        task_name = parse_task(task)
        handle = JobHandle(job_id or _new_job_id())
        size = chunk_size or self.settings.chunk_size
        chunk: list[dict[str, Any]] = []
        seen: set[str] = set()
        with self.app.producer_or_acquire() as producer:
            for index, item in enumerate(items):
                accepted = self._accept(task_name, item, index, seen, handle)
                if accepted is not None:
                    chunk.append(accepted)
                if len(chunk) >= size:
                    self._send(_job(handle.job_id, task_name, model, chunk, lane, deadline_s), producer)
                    handle.submitted += len(chunk)
                    handle.messages += 1
                    chunk = []
            if chunk:
                self._send(_job(handle.job_id, task_name, model, chunk, lane, deadline_s), producer)
                handle.submitted += len(chunk)
                handle.messages += 1
        stored = [r for r in handle.rejected if r.error and r.error.code != ErrorCode.DUPLICATE_ID]
        self.store.write(handle.job_id, stored)
        return handle

    def _accept(
        self, task: TaskName, item: RawItem, index: int, seen: set[str], handle: JobHandle
    ) -> dict[str, Any] | None:
        """The item as a dict ready to send, or None after recording why it was rejected."""
        try:
            raw = _as_dict(item)
        except TypeError as err:
            error = ErrorInfo(code=ErrorCode.INVALID_INPUT, message=str(err))
            handle.rejected.append(ItemResult(job_id=handle.job_id, id=f"#{index}", task=task.value, error=error))
            return None
        _give_an_id(raw)
        item_id = item_key(raw, index)
        try:
            if item_id in seen:
                raise ItemRejected(ErrorInfo(code=ErrorCode.DUPLICATE_ID, message=f"id {item_id!r} appears twice"))
            parse_item(task, raw, self._limits)
        except ItemRejected as rejected:
            handle.rejected.append(ItemResult(job_id=handle.job_id, id=item_id, task=task.value, error=rejected.error))
            return None
        seen.add(item_id)
        return raw

    def _send(self, job: Job, producer: Any = None, on_full: QueueFullPolicy | None = None) -> None:
        self._wait_for_room(job.lane, on_full or self.settings.on_queue_full)
        self.app.send_task(
            INFER_TASK,
            kwargs={"job": job.model_dump(mode="json")},
            queue=queue_name(self.settings.queue_prefix, job.lane),
            producer=producer,
            # Celery would otherwise put a saferepr of the whole job (the users' texts) in the message headers,
            # which Flower and `celery events` show: a summary keeps the texts out and saves the repr's CPU time.
            argsrepr="()",
            kwargsrepr=job_summary(job),
        )

    def queue_depth(self, lane: Lane) -> int:
        """Messages waiting in ``lane``'s queue (not counting those workers hold)."""
        return int(self.redis.llen(queue_name(self.settings.queue_prefix, lane)))

    def _wait_for_room(self, lane: Lane, on_full: QueueFullPolicy) -> None:
        """Return once ``lane`` is below its bound; raise :class:`QueueFull` per ``on_full``.

        The depth costs a round trip to Redis, so it is not read before every send: after a look that finds
        ``h`` free places, the next ``(h - 1) // 2`` sends (within :data:`ROOM_RECHECK_S`) go without one. This
        producer alone never passes the bound that way; several sharing a lane may pass it by a little, as they
        could already between one's look and its send.
        """
        room = self._room[lane]
        now = time.monotonic()
        if room.sends_left > 0 and now < room.until:
            room.sends_left -= 1
            return
        bound = self.settings.queue_bound(lane)
        depth = self.queue_depth(lane)
        if depth < bound:
            room.sends_left, room.until = (bound - depth - 1) // 2, now + ROOM_RECHECK_S
            return
        room.sends_left = 0
        if on_full == "fail":
            raise QueueFull(f"the {lane.value} queue holds {depth} messages, at its bound of {bound}: retry later")
        deadline = time.monotonic() + self.settings.queue_full_timeout_s
        pause = 0.01
        while depth >= bound:
            if time.monotonic() > deadline:
                raise QueueFull(
                    f"the {lane.value} queue stayed at its bound of {bound} messages for "
                    f"{self.settings.queue_full_timeout_s:.0f} s: are workers consuming it?"
                )
            time.sleep(pause)
            pause = min(pause * 2, 0.5)
            depth = self.queue_depth(lane)

    @property
    def dead_letters(self) -> DeadLetters:
        """Items that failed alone after their retries."""
        return DeadLetters(self.redis, prefix=self.settings.queue_prefix, max_len=self.settings.dead_letter_max)

    def requeue_dead_letters(self, limit: int = 1000) -> int:
        """Send up to ``limit`` dead letters again under their job and item ids; returns how many.

        A success replaces the stored error result; a letter whose resend fails goes back.
        """
        letters = self.dead_letters.take(limit)
        sent: list[DeadLetter] = []
        try:
            for letter in letters:
                task = parse_task(letter.task)
                job = _job(letter.job_id, task, letter.model, [letter.item], letter.lane)
                self._send(job)
                sent.append(letter)
        finally:
            self.dead_letters.push([letter for letter in letters if letter not in sent])
        return len(sent)

    def result(self, ref: ItemRef, *, timeout_s: float = 30.0) -> ItemResult:
        """Wait for one item's result; raises :class:`TimeoutError` after ``timeout_s``."""
        found = self.store.get(ref.job_id, ref.item_id)
        if found is not None:
            return found
        deadline = time.monotonic() + timeout_s
        for result in self.store.follow(ref.job_id, timeout_s=timeout_s):
            if result.id == ref.item_id:
                return result
            if time.monotonic() > deadline:
                break
        raise TimeoutError(f"no result for item {ref.item_id!r} of job {ref.job_id!r} within {timeout_s} s")

    def iter_results(
        self, job_id: str, *, expected: int, timeout_s: float | None = None, idle_timeout_s: float | None = 300.0
    ) -> Iterator[ItemResult]:
        """Yield the job's results as they complete, each item once, until ``expected`` have come.

        Raises :class:`TimeoutError` after ``timeout_s`` in all or ``idle_timeout_s`` without progress.
        """
        if expected <= 0:
            return
        results = self.store.follow(job_id, timeout_s=timeout_s, idle_s=idle_timeout_s)
        for count, result in enumerate(results, start=1):
            yield result
            if count >= expected:
                return

    def wait(self, handle: JobHandle, *, timeout_s: float | None = None) -> dict[str, ItemResult]:
        """Block until every result of ``handle``'s job is stored; returns them by item id."""
        return {r.id: r for r in self.iter_results(handle.job_id, expected=handle.expected, timeout_s=timeout_s)}


def job_summary(job: Job) -> str:
    """What a message's headers say of its job: ids, task, model, lane and item count, never the items' texts."""
    model = f", model {job.model}" if job.model else ""
    return f"{{'job': <{job.job_id}: {len(job.items)} {job.task} items{model}, {job.lane.value} lane>}}"


def _give_an_id(raw: dict[str, Any]) -> None:
    """A random id for an item that has none (not ``setdefault``: a uuid4 per item costs more than validating it)."""
    if "id" not in raw:
        raw["id"] = uuid.uuid4().hex


def _as_dict(item: RawItem) -> dict[str, Any]:
    if isinstance(item, BaseModel):
        return item.model_dump(mode="json", exclude_none=True)
    if isinstance(item, Mapping):
        return dict(item)
    raise TypeError(f"an item must be a mapping or a sift.contract item model, not {type(item).__name__}")


def _new_job_id() -> str:
    return uuid.uuid4().hex


def _job(
    job_id: str,
    task: TaskName,
    model: str | None,
    items: list[dict[str, Any]],
    lane: Lane,
    deadline_s: float | None = None,
) -> Job:
    now = time.time()
    deadline = None if deadline_s is None else now + deadline_s
    return Job(job_id=job_id, task=task.value, model=model, items=items, lane=lane, enqueued_at=now, deadline=deadline)
