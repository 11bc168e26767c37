"""Worker metrics as Prometheus scrapes them: queue depths read from a real Redis, over real HTTP."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis
from prometheus_client import CollectorRegistry
from sift_it_helpers import redis_url_of

from producers.client import SiftClient
from sift.contract import Lane
from sift.keys import queue_name
from sift.local import EmbeddedRedis
from sift.settings import SiftSettings
from sift.telemetry import QueueDepthCollector, WorkerMetrics, serve_metrics


@pytest.fixture
def quiet_settings(redis_server: Any) -> SiftSettings:
    """A prefix no worker consumes: what is sent stays queued."""
    return SiftSettings(
        redis_url=redis_url_of(redis_server),
        queue_prefix=f"tm-{uuid.uuid4().hex[:8]}",
        max_queued_realtime=50,
        max_queued_bulk=20,
    )


@pytest.fixture
def redis_client(quiet_settings: SiftSettings) -> Iterator[redis.Redis]:
    client = quiet_settings.redis_client()
    yield client
    client.delete(*(queue_name(quiet_settings.queue_prefix, lane) for lane in Lane))
    client.close()


def scrape(port: int) -> str:
    response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
    assert response.status_code == 200
    return response.text


def test_queue_depth_follows_what_producers_send(quiet_settings: SiftSettings, redis_client: redis.Redis) -> None:
    registry = CollectorRegistry()
    registry.register(QueueDepthCollector.from_settings(quiet_settings, redis_client))
    realtime = {"lane": "realtime", "queue": queue_name(quiet_settings.queue_prefix, Lane.REALTIME)}
    bulk = {"lane": "bulk", "queue": queue_name(quiet_settings.queue_prefix, Lane.BULK)}
    assert registry.get_sample_value("sift_queue_depth", realtime) == 0
    assert registry.get_sample_value("sift_queue_redis_up") == 1

    with SiftClient(quiet_settings) as client:
        for i in range(3):
            client.submit("classify", {"id": str(i), "text": "hello"}, lane=Lane.REALTIME)
        client.submit_many("classify", [{"id": str(i), "text": "x"} for i in range(10)], chunk_size=2)

    assert registry.get_sample_value("sift_queue_depth", realtime) == 3
    assert registry.get_sample_value("sift_queue_depth", bulk) == 5, "bulk depth counts messages, not items"
    assert registry.get_sample_value("sift_queue_bound", {"lane": "realtime"}) == 50
    assert registry.get_sample_value("sift_queue_bound", {"lane": "bulk"}) == 20

    redis_client.lpop(bulk["queue"])  # a worker takes one
    assert registry.get_sample_value("sift_queue_depth", bulk) == 4


def test_a_scrape_while_redis_is_down_still_answers_and_says_so() -> None:
    with EmbeddedRedis() as server:
        settings = SiftSettings(redis_url=server.url, queue_prefix="down")
        client = redis.Redis.from_url(server.url, socket_timeout=1, socket_connect_timeout=1)
        registry = CollectorRegistry()
        WorkerMetrics(registry).record_results("classify", "bulk", [None], 0.1)
        registry.register(QueueDepthCollector.from_settings(settings, client))
        http = serve_metrics(0, registry, addr="127.0.0.1")
        try:
            assert "sift_queue_redis_up 1.0" in scrape(http.server_port)
            server.stop()
            text = scrape(http.server_port)
            # The worker's own metrics are still served: a Redis outage must not blind the dashboards.
            assert "sift_queue_redis_up 0.0" in text
            assert "sift_queue_depth{" not in text
            assert 'sift_worker_items_total{outcome="ok",task="classify"} 1.0' in text
        finally:
            http.shutdown()
            http.server_close()
            client.close()


def test_worker_metrics_are_served_over_http(quiet_settings: SiftSettings, redis_client: redis.Redis) -> None:
    registry = CollectorRegistry()
    metrics = WorkerMetrics(registry)
    registry.register(QueueDepthCollector.from_settings(quiet_settings, redis_client))
    http = serve_metrics(0, registry, addr="127.0.0.1")
    try:
        metrics.record_batch("sentiment", items=4, padded_tokens=64, seconds=0.02)
        metrics.record_results("classify", "realtime", [None, None, "too_large"], 0.3)
        metrics.record_cache("sentiment", hits=3, misses=1)
        text = scrape(http.server_port)
    finally:
        http.shutdown()
        http.server_close()
    assert 'sift_worker_items_total{outcome="ok",task="classify"} 2.0' in text
    assert 'sift_worker_errors_total{code="too_large"} 1.0' in text
    assert 'sift_worker_batch_items_count{role="sentiment"} 1.0' in text
    assert 'sift_worker_cache_hits_total{role="sentiment"} 3.0' in text
    assert f'sift_queue_depth{{lane="bulk",queue="{quiet_settings.queue_prefix}.bulk"}} 0.0' in text
