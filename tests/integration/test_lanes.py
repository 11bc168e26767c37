"""Priority lanes: on the same worker, real-time items are served before the bulk backlog."""

from __future__ import annotations

import os
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from sift_it_helpers import new_job_id, redis_url_of, start_worker, wait_until

from producers.client import SiftClient
from sift.contract import ErrorCode, Lane
from sift.settings import SiftSettings

pytestmark = pytest.mark.integration


def niceness_of_threads(pid: int) -> list[int]:
    """The nice value of each thread of process ``pid`` (Linux), leaving out threads that end meanwhile."""
    values = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            values.append(os.getpriority(os.PRIO_PROCESS, int(task.name)))
        except ProcessLookupError:
            continue
    return values


BULK_MESSAGES = 30
CHUNK = 20


@pytest.mark.timeout(240)
def test_realtime_items_jump_the_bulk_backlog(redis_server: Any, offline_registry: Path, tmp_path: Path) -> None:
    settings = SiftSettings(
        redis_url=redis_url_of(redis_server), registry=offline_registry, queue_prefix=f"lanes-{uuid.uuid4().hex[:8]}"
    )
    text = "bulk row {}: the parcel arrived two days late but the support team was helpful and kind"
    with SiftClient(settings) as client:
        backlog = client.submit_many(
            "classify",
            [{"id": str(i), "text": text.format(i)} for i in range(BULK_MESSAGES * CHUNK)],
            job_id=new_job_id("bulk"),
            chunk_size=CHUNK,
        )
        first = client.submit("classify", {"id": "rt-1", "text": "is this comment ok?"})
        expired = client.submit("classify", {"id": "rt-late", "text": "too late"}, deadline_s=0.0)
        assert client.queue_depth(Lane.BULK) == BULK_MESSAGES and client.queue_depth(Lane.REALTIME) == 2

        worker = start_worker(settings, tmp_path / "worker.log", models="sentiment")
        try:
            # Queued before the worker started: the real-time items come first, ahead of 30 bulk messages.
            assert client.result(first, timeout_s=60).ok
            assert client.store.count(backlog.job_id) < BULK_MESSAGES * CHUNK
            late = client.result(expired, timeout_s=60)
            assert late.error is not None and late.error.code == ErrorCode.EXPIRED

            # Sent while the worker is busy with the backlog: served after at most the message in hand
            # and the prefetched ones, not after the whole backlog.
            wait_until(lambda: client.store.count(backlog.job_id) >= 2 * CHUNK, timeout_s=60, what="bulk progress")
            done_before = client.store.count(backlog.job_id)
            sent = time.monotonic()
            second = client.submit("classify", {"id": "rt-2", "text": "and this one?"})
            assert client.result(second, timeout_s=60).ok
            latency = time.monotonic() - sent
            done_after = client.store.count(backlog.job_id)
            ahead = (done_after - done_before) // CHUNK
            print(f"\nreal-time item during backfill: {latency * 1000:.0f} ms, {ahead} bulk message(s) ahead of it")
            assert ahead <= 1 + settings.prefetch_multiplier, "only the messages already held may go first"
            assert done_after < BULK_MESSAGES * CHUNK, "the real-time item did not wait for the backlog"
            assert len(list(client.iter_results(backlog.job_id, expected=BULK_MESSAGES * CHUNK, timeout_s=180))) == (
                BULK_MESSAGES * CHUNK
            )
            # Bulk passes ran on the forward thread at a lower CPU priority (SIFT_BULK_NICENESS); the rest of the
            # worker (its event loop, the real-time thread) kept the priority it started with. The worker runs one
            # thread per pass, so no session has a pool of its own: the forward thread is the only one lowered.
            assert worker.process is not None
            pid = worker.process.pid
            started_with = os.getpriority(os.PRIO_PROCESS, pid)
            if sys.platform == "linux" and started_with + settings.bulk_niceness <= 19:
                niceness = Counter(niceness_of_threads(pid))
                lowered = started_with + settings.bulk_niceness
                assert set(niceness) == {started_with, lowered} and niceness[lowered] == 1, niceness
        finally:
            worker.stop()
