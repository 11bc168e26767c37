"""Real workers with the logit cache and Prometheus metrics: what a user sees at /metrics and in the results.

Two workers of this module's own (the shared one is left alone), on queue prefixes of their own:
one with the cache, one without. Both consume only the real-time lane, so what is sent to the bulk
lane stays queued and shows in the queue-depth gauges.
"""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families
from sift_it_helpers import assert_same_answer, cli_env, new_job_id, run_sift, start_worker, wait_until

from producers.client import SiftClient
from sift.contract import ErrorCode, ItemResult, Lane
from sift.keys import queue_name
from sift.local import WorkerProcess, free_port
from sift.settings import SiftSettings

pytestmark = pytest.mark.integration

RESULT_TIMEOUT_S = 60
MODELS = "sentiment,zero_shot"
"""classify, zero_shot and moderate; nli's model is left out, so an nli job is answered model_not_loaded."""
CACHE_TTL_S = 600

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def worker_settings(base: SiftSettings, label: str, **changes: Any) -> SiftSettings:
    return base.model_copy(
        update={
            "queue_prefix": f"{label}-{uuid.uuid4().hex[:8]}",
            "metrics_port": free_port(),
            "metrics_addr": "127.0.0.1",
            **changes,
        }
    )


@pytest.fixture(scope="module")
def cached_settings(settings: SiftSettings) -> SiftSettings:
    return worker_settings(settings, "wcache", cache_ttl_s=CACHE_TTL_S)


@pytest.fixture(scope="module")
def uncached_settings(settings: SiftSettings) -> SiftSettings:
    return worker_settings(settings, "wnocache", cache_enabled=False)


def _worker(settings: SiftSettings, log: Path) -> Iterator[WorkerProcess]:
    process = start_worker(settings, log, models=MODELS, queues="realtime")
    yield process
    process.stop()


@pytest.fixture(scope="module")
def cached_worker(cached_settings: SiftSettings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    yield from _worker(cached_settings, tmp_path_factory.mktemp("cached-worker") / "worker.log")


@pytest.fixture(scope="module")
def uncached_worker(
    uncached_settings: SiftSettings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    yield from _worker(uncached_settings, tmp_path_factory.mktemp("uncached-worker") / "worker.log")


@pytest.fixture(scope="module")
def cached_client(cached_settings: SiftSettings, cached_worker: WorkerProcess) -> Iterator[SiftClient]:
    with SiftClient(cached_settings) as client:
        yield client


@pytest.fixture(scope="module")
def uncached_client(uncached_settings: SiftSettings, uncached_worker: WorkerProcess) -> Iterator[SiftClient]:
    with SiftClient(uncached_settings) as client:
        yield client


def scrape(settings: SiftSettings) -> Samples:
    """Every sample the worker serves, as Prometheus reads it."""
    response = httpx.get(f"http://127.0.0.1:{settings.metrics_port}/metrics", timeout=10)
    response.raise_for_status()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """A sample's value; 0 when the worker has not created that series yet."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def delta(after: Samples, before: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def answers(client: SiftClient, task: str, items: list[dict[str, Any]], model: str | None = None) -> list[ItemResult]:
    """Submit ``items`` as one real-time job (a new job id each time) and wait for all of its results."""
    handle = client.submit_many(task, items, model=model, lane=Lane.REALTIME, job_id=new_job_id(f"wcm-{task}"))
    assert handle.rejected == [] and handle.submitted == len(items)
    results = client.wait(handle, timeout_s=RESULT_TIMEOUT_S)
    return [results[item["id"]] for item in items]


def fresh_texts(count: int) -> list[str]:
    """Texts no earlier test (or earlier run) scored, so every one is a cache miss at first."""
    tag = uuid.uuid4().hex[:8]
    return [f"Order {tag}-{i} arrived {i + 2} days late and the box was crushed." for i in range(count)]


@pytest.mark.timeout(180)
def test_the_same_texts_again_are_served_from_the_cache_with_identical_scores(
    cached_client: SiftClient, cached_settings: SiftSettings, raw_redis: redis.Redis
) -> None:
    items = [{"id": f"t{i}", "text": text} for i, text in enumerate(fresh_texts(5))]
    before = scrape(cached_settings)
    first = answers(cached_client, "classify", items)
    middle = scrape(cached_settings)
    second = answers(cached_client, "classify", items)
    after = scrape(cached_settings)

    assert all(r.ok for r in first + second)
    for again, once in zip(second, first, strict=True):
        assert again.job_id != once.job_id
        assert_same_answer(again, once, tol=0.0)  # the very logits of the first job
    hits, misses = "sift_worker_cache_hits_total", "sift_worker_cache_misses_total"
    assert (delta(middle, before, misses, role="sentiment"), delta(middle, before, hits, role="sentiment")) == (5, 0)
    assert (delta(after, middle, hits, role="sentiment"), delta(after, middle, misses, role="sentiment")) == (5, 0)
    # The entries live in Redis under the worker's prefix, for SIFT_CACHE_TTL_S at most.
    keys = list(raw_redis.scan_iter(f"{cached_settings.queue_prefix}:logits:*"))
    assert len(keys) >= 5
    assert all(0 < raw_redis.ttl(key) <= CACHE_TTL_S for key in keys)


@pytest.mark.timeout(180)
def test_other_labels_and_policies_on_cached_texts_get_their_own_heads(
    cached_client: SiftClient, uncached_client: SiftClient, cached_settings: SiftSettings
) -> None:
    text = fresh_texts(1)[0]
    answers(cached_client, "zero_shot", [{"id": "z", "text": text, "labels": ["shipping", "food"]}])
    answers(cached_client, "moderate", [{"id": "m", "text": text}])  # the default policy
    before = scrape(cached_settings)

    # "shipping" and every policy hypothesis are cached now; "refund" is new. multi_label and the
    # strict policy's thresholds must still be applied: heads run after the cache.
    changed_zero_shot = [{"id": "z2", "text": text, "labels": ["refund", "shipping"], "multi_label": True}]
    strict = [{"id": "m2", "text": text, "policy": "strict"}]
    got = answers(cached_client, "zero_shot", changed_zero_shot) + answers(cached_client, "moderate", strict)
    after = scrape(cached_settings)
    want = answers(uncached_client, "zero_shot", changed_zero_shot) + answers(uncached_client, "moderate", strict)

    for g, w in zip(got, want, strict=True):
        assert g.ok, g.error
        assert_same_answer(g, w)
    assert got[1].moderation is not None
    assert {c.threshold for c in got[1].moderation.categories} <= {0.5, 0.6, 0.7}, "strict's, not default's"
    assert delta(after, before, "sift_worker_cache_hits_total", role="zero_shot") == 1 + 6
    assert delta(after, before, "sift_worker_cache_misses_total", role="zero_shot") == 1


@pytest.mark.timeout(180)
def test_metrics_count_batches_items_errors_latency_and_queue_depths(
    cached_client: SiftClient, cached_settings: SiftSettings, raw_redis: redis.Redis
) -> None:
    before = scrape(cached_settings)
    classified = answers(cached_client, "classify", [{"id": str(i), "text": t} for i, t in enumerate(fresh_texts(4))])
    [not_loaded] = answers(cached_client, "nli", [{"id": "n", "premise": "p", "hypothesis": "h"}])
    # Nothing here consumes the bulk lane: these wait in its queue.
    bulk = cached_client.submit_many(
        "classify", [{"id": str(i), "text": "queued"} for i in range(3)], lane=Lane.BULK, chunk_size=1
    )
    assert bulk.messages == 3

    def counted() -> Samples | None:
        # The results are readable a moment before the worker counts them: poll.
        now = scrape(cached_settings)
        done = delta(now, before, "sift_worker_end_to_end_seconds_count", lane="realtime") >= 2
        return now if done else None

    after = wait_until(counted, timeout_s=10, what="the two real-time messages to be counted")
    try:
        assert all(r.ok for r in classified)
        assert not_loaded.error is not None and not_loaded.error.code == ErrorCode.MODEL_NOT_LOADED
        assert delta(after, before, "sift_worker_items_total", task="classify", outcome="ok") == 4
        assert delta(after, before, "sift_worker_items_total", task="nli", outcome="model_not_loaded") == 1
        assert delta(after, before, "sift_worker_errors_total", code="model_not_loaded") == 1
        assert delta(after, before, "sift_worker_end_to_end_seconds_count", lane="realtime") == 2
        assert delta(after, before, "sift_worker_end_to_end_seconds_sum", lane="realtime") > 0
        assert delta(after, before, "sift_worker_end_to_end_seconds_count", lane="bulk") == 0
        # Four fresh texts went through the model in one or more batches, and nothing else did.
        assert delta(after, before, "sift_worker_batch_items_sum", role="sentiment") == 4
        batches = delta(after, before, "sift_worker_batch_items_count", role="sentiment")
        assert batches >= 1
        assert delta(after, before, "sift_worker_inference_seconds_count", role="sentiment") == batches
        assert delta(after, before, "sift_worker_inference_seconds_sum", role="sentiment") > 0
        assert delta(after, before, "sift_worker_batch_padded_tokens_sum", role="sentiment") >= 4 * 10
        prefix = cached_settings.queue_prefix
        assert value(after, "sift_queue_depth", lane="bulk", queue=queue_name(prefix, Lane.BULK)) == 3
        assert value(after, "sift_queue_depth", lane="realtime", queue=queue_name(prefix, Lane.REALTIME)) == 0
        for lane in Lane:
            assert value(after, "sift_queue_bound", lane=lane.value) == cached_settings.queue_bound(lane)
        assert value(after, "sift_queue_redis_up") == 1
        assert value(after, "process_resident_memory_bytes") > 0  # prometheus_client's defaults ride along
    finally:
        raw_redis.delete(queue_name(cached_settings.queue_prefix, Lane.BULK))


@pytest.mark.timeout(180)
def test_a_worker_with_the_cache_off_neither_hits_nor_stores(
    uncached_client: SiftClient, uncached_settings: SiftSettings, raw_redis: redis.Redis
) -> None:
    items = [{"id": str(i), "text": t} for i, t in enumerate(fresh_texts(3))]
    before = scrape(uncached_settings)
    first = answers(uncached_client, "classify", items)
    second = answers(uncached_client, "classify", items)
    after = scrape(uncached_settings)

    for again, once in zip(second, first, strict=True):
        assert again.ok
        assert_same_answer(again, once)
    assert delta(after, before, "sift_worker_cache_hits_total", role="sentiment") == 0
    assert delta(after, before, "sift_worker_cache_misses_total", role="sentiment") == 0
    assert delta(after, before, "sift_worker_batch_items_sum", role="sentiment") == 6, "scored both times"
    assert list(raw_redis.scan_iter(f"{uncached_settings.queue_prefix}:logits:*")) == []


@pytest.mark.timeout(120)
def test_a_taken_metrics_port_stops_the_worker_at_once_with_a_clear_error(settings: SiftSettings) -> None:
    port = free_port()
    env = cli_env(
        redis_url=settings.require_redis_url(),
        registry=str(settings.registry),
        queue_prefix=f"wport-{uuid.uuid4().hex[:8]}",
        metrics_port=str(port),
    )
    with socket.create_server(("0.0.0.0", port)):  # someone else listens there
        began = time.monotonic()
        done = run_sift(["worker", "--models", "nli"], env, timeout_s=90)
        took = time.monotonic() - began
    assert done.returncode == 2, done.stderr[-2000:]
    assert "SIFT_METRICS_PORT" in done.stderr and str(port) in done.stderr
    assert took < 60, "it failed before loading models, not after"
