"""The Celery task: decode a job message, run the engine, write results, then ack."""

from __future__ import annotations

import logging
import time
from typing import Any

import redis
from celery import Celery, Task
from celery.exceptions import Reject
from pydantic import ValidationError

from sift.contract import ErrorCode, ErrorInfo, ItemResult, Job
from sift.contract.items import describe_validation_error, item_key, printable
from sift.dead_letters import DeadLetter, DeadLetters
from sift.keys import INFER_TASK
from sift.results_store import ResultStore
from workers.engine.engine import Engine

log = logging.getLogger(__name__)

WRITE_ATTEMPTS = 8


class InferenceTask(Task):  # type: ignore[misc]
    """Task base holding this worker's preloaded engine, its results store and dead letters."""

    engine: Engine | None = None
    store: ResultStore | None = None
    dead_letters: DeadLetters | None = None


def register_tasks(app: Celery, engine: Engine, store: ResultStore, dead_letters: DeadLetters) -> Task:
    """Register ``sift.infer`` on ``app``, bound to a loaded engine, a store and a dead-letter list."""

    @app.task(  # type: ignore[untyped-decorator]  # celery ships no type hints
        name=INFER_TASK, bind=True, base=InferenceTask, acks_late=True, reject_on_worker_lost=True
    )
    def infer(self: InferenceTask, job: Any = None, **unexpected: Any) -> dict[str, int]:
        assert self.engine is not None and self.store is not None and self.dead_letters is not None
        results = _results_for(self.engine, job, unexpected)
        if not results:
            return {"items": 0, "written": 0}
        written = write_with_retry(self.store, results[0].job_id, results)
        # After the results: a letter without its error result would be worse than none.
        self.dead_letters.push(dead_letters_of(job, results))
        return {"items": len(results), "written": written}

    infer.engine = engine
    infer.store = store
    infer.dead_letters = dead_letters
    return infer


def dead_letters_of(payload: Any, results: list[ItemResult]) -> list[DeadLetter]:
    """Letters for the items the model raised on (results are in item order)."""
    failed = [i for i, r in enumerate(results) if r.error is not None and r.error.code == ErrorCode.INFERENCE_FAILED]
    if not failed:
        return []
    job = Job.model_validate(payload)
    now = time.time()
    return [
        DeadLetter(
            job_id=job.job_id,
            task=job.task,
            model=job.model,
            lane=job.lane,
            item=job.items[i],
            error=results[i].error,
            worker=results[i].worker,
            failed_at=now,
        )
        for i in failed
        if results[i].error is not None
    ]


def _results_for(engine: Engine, payload: Any, unexpected: dict[str, Any]) -> list[ItemResult]:
    """Run a valid job; turn an invalid envelope into per-item errors where items can be keyed."""
    try:
        if unexpected:
            raise ValueError(f"unexpected task arguments {sorted(unexpected)}")
        job = Job.model_validate(payload)
    except (ValidationError, ValueError) as err:
        return _envelope_errors(payload, err)
    return engine.run(job)


def _envelope_errors(payload: Any, err: Exception) -> list[ItemResult]:
    message = describe_validation_error(err).message if isinstance(err, ValidationError) else str(err)
    job_id = payload.get("job_id") if isinstance(payload, dict) else None
    items = payload.get("items") if isinstance(payload, dict) else None
    if not isinstance(job_id, str) or not isinstance(items, list) or not _safe_job_id(job_id):
        log.error("dropping a message with no usable job_id or items: %s", message)
        return []
    error = ErrorInfo(code=ErrorCode.INVALID_INPUT, message=f"invalid job message: {message}")
    task = printable(payload["task"]) if isinstance(payload.get("task"), str) else "unknown"
    return [ItemResult(job_id=job_id, id=item_key(raw, i), task=task, error=error) for i, raw in enumerate(items)]


def _safe_job_id(job_id: str) -> bool:
    return 0 < len(job_id) <= 128 and all(c.isalnum() or c in "._:-" for c in job_id)


def write_with_retry(store: ResultStore, job_id: str, results: list[ItemResult]) -> int:
    """Write results, riding out a short Redis outage; requeue the message if it lasts."""
    delay = 0.25
    for attempt in range(1, WRITE_ATTEMPTS + 1):
        try:
            return store.write(job_id, results)
        except (redis.ConnectionError, redis.TimeoutError) as err:
            if attempt == WRITE_ATTEMPTS:
                # Not acked: the message goes back to the queue and its items are computed again.
                raise Reject(err, requeue=True) from err
            log.warning("results write failed (%s), retry %d in %.1f s", err, attempt, delay)
            time.sleep(delay)
            delay = min(delay * 2, 8.0)
    raise AssertionError("unreachable")
