"""Writing a message's results: ride out short Redis outages, then dead-letter the items the model raised on."""

from __future__ import annotations

import logging
import time

import redis
from celery.exceptions import Reject

from sift.contract import ErrorCode, ItemResult, Job
from sift.dead_letters import DeadLetter
from sift.results_store import ResultStore

log = logging.getLogger(__name__)

WRITE_ATTEMPTS = 8


def write_with_retry(store: ResultStore, job_id: str, results: list[ItemResult]) -> int:
    """Write results, riding out a short Redis outage; raise :class:`Reject` (requeue) if it lasts."""
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


def dead_letters_of(job: Job, results: list[ItemResult]) -> list[DeadLetter]:
    """Letters for the items the model raised on (results are in item order)."""
    now = time.time()
    return [
        DeadLetter(
            job_id=job.job_id,
            task=job.task,
            model=job.model,
            lane=job.lane,
            item=job.items[i],
            error=result.error,
            worker=result.worker,
            failed_at=now,
        )
        for i, result in enumerate(results)
        if result.error is not None and result.error.code == ErrorCode.INFERENCE_FAILED
    ]
