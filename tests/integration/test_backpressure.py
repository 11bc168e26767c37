"""Queue bounds: at the bound a producer fails clearly or waits for room, and never overfills Redis."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import pytest
import redis
from sift_it_helpers import redis_url_of

from producers.client import ROOM_RECHECK_S, QueueFull, SiftClient
from sift.contract import Lane
from sift.keys import queue_name
from sift.settings import SiftSettings

pytestmark = pytest.mark.integration


def bounded(redis_server: Any, **changes: Any) -> SiftSettings:
    # A prefix no worker consumes: the queue only grows unless the test drains it.
    return SiftSettings(
        redis_url=redis_url_of(redis_server),
        queue_prefix=f"bp-{uuid.uuid4().hex[:8]}",
        **{"max_queued_realtime": 5, "max_queued_bulk": 3, **changes},
    )


def test_fail_mode_rejects_past_the_bound_and_sends_nothing(redis_server: Any) -> None:
    settings = bounded(redis_server, on_queue_full="fail")
    with SiftClient(settings) as client:
        for i in range(5):
            client.submit("classify", {"id": str(i), "text": "hi"})
        with pytest.raises(QueueFull, match="realtime queue holds 5 messages, at its bound of 5"):
            client.submit("classify", {"id": "6", "text": "hi"})
        assert client.queue_depth(Lane.REALTIME) == 5
        # The bulk lane has its own bound: 3 messages of 2 items, then a clear failure.
        with pytest.raises(QueueFull, match="bulk queue"):
            client.submit_many("classify", [{"id": str(i), "text": "x"} for i in range(10)], chunk_size=2)
        assert client.queue_depth(Lane.BULK) == 3


def test_block_mode_waits_for_room_then_sends(redis_server: Any) -> None:
    settings = bounded(redis_server, on_queue_full="block", queue_full_timeout_s=30)
    queue = queue_name(settings.queue_prefix, Lane.BULK)
    drainer = redis.Redis.from_url(settings.require_redis_url())
    drained: list[float] = []

    def drain_later() -> None:
        time.sleep(0.5)
        while len(drained) < 7:  # 10 messages in all, room for 3: the consumer must take 7
            if drainer.lpop(queue) is not None:
                drained.append(time.monotonic())
            time.sleep(0.05)

    thread = threading.Thread(target=drain_later, daemon=True)
    with SiftClient(settings) as client:
        started = time.monotonic()
        thread.start()
        handle = client.submit_many("classify", [{"id": str(i), "text": "x"} for i in range(20)], chunk_size=2)
        elapsed = time.monotonic() - started
    thread.join(10)
    assert handle.submitted == 20 and handle.messages == 10
    assert elapsed >= 0.5, "the producer waited for the consumer instead of overfilling the queue"
    assert drainer.llen(queue) <= 3
    drainer.close()


def test_block_mode_gives_up_with_a_clear_error_when_nothing_consumes(redis_server: Any) -> None:
    settings = bounded(redis_server, on_queue_full="block", queue_full_timeout_s=0.3)
    with SiftClient(settings) as client:
        with pytest.raises(QueueFull, match="are workers consuming it"):
            client.submit_many("classify", [{"id": str(i), "text": "x"} for i in range(10)], chunk_size=2)
        assert client.queue_depth(Lane.BULK) == 3


def test_far_below_the_bound_a_producer_reads_the_depth_rarely(redis_server: Any) -> None:
    settings = bounded(redis_server, max_queued_realtime=10_000)
    with SiftClient(settings) as client:
        looks = 0
        read_depth = client.queue_depth

        def counted(lane: Lane) -> int:
            nonlocal looks
            looks += 1
            return read_depth(lane)

        client.queue_depth = counted  # type: ignore[method-assign]
        started = time.monotonic()
        for i in range(200):
            client.submit("classify", {"id": str(i), "text": "hi"})
        elapsed = time.monotonic() - started
        assert read_depth(Lane.REALTIME) == 200
    # One look, then one more per ROOM_RECHECK_S at most: a round trip saved on nearly every real-time submit.
    assert looks <= 1 + elapsed / ROOM_RECHECK_S + 1, (looks, elapsed)
    assert looks < 200
