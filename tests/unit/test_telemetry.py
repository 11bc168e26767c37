"""The worker metrics' recording helpers, read back from a private registry as Prometheus would see them."""

from __future__ import annotations

import socket

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from sift.settings import SettingsError
from sift.telemetry import WorkerMetrics, serve_metrics


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def metrics(registry: CollectorRegistry) -> WorkerMetrics:
    return WorkerMetrics(registry)


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    found = registry.get_sample_value(name, labels)
    return 0.0 if found is None else found


def test_a_batch_records_its_size_padding_and_latency(registry: CollectorRegistry, metrics: WorkerMetrics) -> None:
    metrics.record_batch("classify", items=12, padded_tokens=12 * 40, seconds=0.030)
    metrics.record_batch("classify", items=200, padded_tokens=200 * 128, seconds=0.4)
    assert value(registry, "sift_worker_batch_items_count", role="classify") == 2
    assert value(registry, "sift_worker_batch_items_sum", role="classify") == 212
    assert value(registry, "sift_worker_batch_items_bucket", role="classify", le="16.0") == 1
    assert value(registry, "sift_worker_batch_padded_tokens_sum", role="classify") == 480 + 25_600
    assert value(registry, "sift_worker_inference_seconds_sum", role="classify") == pytest.approx(0.43)
    assert value(registry, "sift_worker_inference_seconds_bucket", role="classify", le="0.05") == 1
    assert value(registry, "sift_worker_batch_items_count", role="zero_shot") == 0


def test_results_count_items_by_task_and_outcome(registry: CollectorRegistry, metrics: WorkerMetrics) -> None:
    metrics.record_results("moderate", "realtime", [None, "too_large", None, "inference_failed", None], 0.2)
    metrics.record_results("moderate", "realtime", [None], 0.05)
    assert value(registry, "sift_worker_items_total", task="moderate", outcome="ok") == 4
    assert value(registry, "sift_worker_items_total", task="moderate", outcome="too_large") == 1
    assert value(registry, "sift_worker_errors_total", code="too_large") == 1
    assert value(registry, "sift_worker_errors_total", code="inference_failed") == 1
    assert value(registry, "sift_worker_errors_total", code="ok") == 0
    # One end-to-end observation per message, not per item.
    assert value(registry, "sift_worker_end_to_end_seconds_count", lane="realtime") == 2
    assert value(registry, "sift_worker_end_to_end_seconds_sum", lane="realtime") == pytest.approx(0.25)


def test_untrusted_label_values_are_folded_so_series_stay_bounded(
    registry: CollectorRegistry, metrics: WorkerMetrics
) -> None:
    # A malformed message's task, lane and codes come from outside: they must not become label values.
    metrics.record_results("<script>", "express", ["no_such_code"], 1.0)
    assert value(registry, "sift_worker_items_total", task="invalid", outcome="other") == 1
    assert value(registry, "sift_worker_errors_total", code="other") == 1
    assert value(registry, "sift_worker_end_to_end_seconds_count", lane="unknown") == 1
    assert b"<script>" not in generate_latest(registry)


def test_a_message_without_an_enqueue_time_counts_items_only(
    registry: CollectorRegistry, metrics: WorkerMetrics
) -> None:
    metrics.record_results("classify", "bulk", ["invalid_input", "invalid_input"], None)
    assert value(registry, "sift_worker_items_total", task="classify", outcome="invalid_input") == 2
    assert value(registry, "sift_worker_end_to_end_seconds_count", lane="bulk") == 0


def test_a_clock_skewed_negative_latency_is_recorded_as_zero(
    registry: CollectorRegistry, metrics: WorkerMetrics
) -> None:
    metrics.record_results("classify", "bulk", [None], -0.5)
    assert value(registry, "sift_worker_end_to_end_seconds_sum", lane="bulk") == 0
    assert value(registry, "sift_worker_end_to_end_seconds_bucket", lane="bulk", le="0.01") == 1


def test_cache_answers_are_counted_per_role(registry: CollectorRegistry, metrics: WorkerMetrics) -> None:
    metrics.record_cache("moderation", hits=7, misses=3, duplicates=2)
    metrics.record_cache("moderation", hits=1, misses=0)
    assert value(registry, "sift_worker_cache_hits_total", role="moderation") == 8
    assert value(registry, "sift_worker_cache_misses_total", role="moderation") == 3
    assert value(registry, "sift_worker_cache_duplicates_total", role="moderation") == 2


def test_gpu_memory_is_not_watched_on_a_cpu_worker(registry: CollectorRegistry, metrics: WorkerMetrics) -> None:
    assert metrics.watch_gpu_memory("cpu") is False
    assert b"sift_worker_gpu_memory_allocated_bytes{" not in generate_latest(registry)


def test_two_workers_metrics_in_one_registry_is_refused(registry: CollectorRegistry, metrics: WorkerMetrics) -> None:
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        WorkerMetrics(registry)


def test_serving_on_a_port_in_use_fails_clearly(registry: CollectorRegistry) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(SettingsError, match=f"cannot serve metrics on 127.0.0.1:{port}.*SIFT_METRICS_PORT"):
            serve_metrics(port, registry, addr="127.0.0.1")
