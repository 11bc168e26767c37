"""Prometheus metrics of sift workers: what they answered, how fast, and what waits for them in Redis.

Throughput has no metric of its own: items/s is ``rate()`` of the items counter, e.g.
``sum by (task) (rate(sift_worker_items_total[1m]))``.

The hot loop records once per forward batch (:meth:`WorkerMetrics.record_batch`) and once per broker
message (:meth:`WorkerMetrics.record_results`), never per item. Labels take only bounded values (task
names, lanes, error codes, registry roles): anything else is folded into ``invalid``/``other``/``unknown``
so a malformed message cannot blow up the number of series.

torch is imported only by :meth:`WorkerMetrics.watch_gpu_memory`, on CUDA devices, so producers and
``sift health`` load this module without it.
"""

from __future__ import annotations

import logging
from collections import Counter as Tally
from collections.abc import Iterable, Iterator, Mapping
from wsgiref.simple_server import WSGIServer

import redis
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from sift.contract import ErrorCode, Lane, TaskName
from sift.keys import queue_name
from sift.settings import SettingsError, SiftSettings

log = logging.getLogger(__name__)

OK = "ok"
"""The ``outcome`` label of an item answered with a prediction."""

BATCH_ITEMS_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
PADDED_TOKENS_BUCKETS = (64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536)
INFERENCE_SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# Real-time items take milliseconds; a backfill's bulk items may wait hours behind each other.
END_TO_END_SECONDS_BUCKETS = (
    *(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
    *(60.0, 300.0, 900.0, 3600.0, 4 * 3600.0, 24 * 3600.0),
)

_TASKS = frozenset(task.value for task in TaskName)
_LANES = frozenset(lane.value for lane in Lane)
_OUTCOMES = frozenset(code.value for code in ErrorCode) | {OK}


def task_label(task: str) -> str:
    """``task`` when it is one of sift's tasks, else ``invalid``."""
    return task if task in _TASKS else "invalid"


def lane_label(lane: str) -> str:
    """``lane`` when it is one of sift's lanes, else ``unknown``."""
    return lane if lane in _LANES else "unknown"


def outcome_label(error_code: str | None) -> str:
    """``ok`` for a prediction, the error code's string for an error, ``other`` for an unknown code."""
    if error_code is None:
        return OK
    return error_code if error_code in _OUTCOMES else "other"


class WorkerMetrics:
    """The metric objects of one worker process, registered in ``registry``."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.registry = registry
        self.items = Counter(
            "sift_worker_items",
            "Items answered, by task and outcome (ok, or the error code).",
            ["task", "outcome"],
            registry=registry,
        )
        self.errors = Counter(
            "sift_worker_errors", "Items answered with an error, by error code.", ["code"], registry=registry
        )
        self.batch_items = Histogram(
            "sift_worker_batch_items",
            "Sequences per forward batch, by model role.",
            ["role"],
            buckets=BATCH_ITEMS_BUCKETS,
            registry=registry,
        )
        self.batch_padded_tokens = Histogram(
            "sift_worker_batch_padded_tokens",
            "Tokens per forward batch after padding (sequences x longest), by model role.",
            ["role"],
            buckets=PADDED_TOKENS_BUCKETS,
            registry=registry,
        )
        self.inference_seconds = Histogram(
            "sift_worker_inference_seconds",
            "Wall time of one forward batch, by model role.",
            ["role"],
            buckets=INFERENCE_SECONDS_BUCKETS,
            registry=registry,
        )
        self.end_to_end_seconds = Histogram(
            "sift_worker_end_to_end_seconds",
            "From a message's enqueue to its results written, by lane (one observation per message).",
            ["lane"],
            buckets=END_TO_END_SECONDS_BUCKETS,
            registry=registry,
        )
        self.cache_hits = Counter(
            "sift_worker_cache_hits",
            "Distinct sequences whose logits came from the cache, by model role.",
            ["role"],
            registry=registry,
        )
        self.cache_misses = Counter(
            "sift_worker_cache_misses",
            "Distinct sequences looked up in the cache and scored, by model role.",
            ["role"],
            registry=registry,
        )
        self.cache_duplicates = Counter(
            "sift_worker_cache_duplicates",
            "Sequences that repeated another of the same batch and were scored once, by model role.",
            ["role"],
            registry=registry,
        )
        self.cascade_items = Counter(
            "sift_worker_cascade_items",
            "Moderation items of a cascade policy answered by its small model (kept) or sent on to the policy's "
            "model (escalated), by policy.",
            ["policy", "outcome"],
            registry=registry,
        )
        self.gpu_memory_allocated = Gauge(
            "sift_worker_gpu_memory_allocated_bytes",
            "GPU memory held by tensors (torch.cuda.memory_allocated), read at scrape time.",
            ["device"],
            registry=registry,
        )
        self.gpu_memory_reserved = Gauge(
            "sift_worker_gpu_memory_reserved_bytes",
            "GPU memory held by torch's caching allocator (torch.cuda.memory_reserved), read at scrape time.",
            ["device"],
            registry=registry,
        )

    def record_batch(self, role: str, items: int, padded_tokens: int, seconds: float) -> None:
        """One forward batch of ``items`` sequences, ``padded_tokens`` tokens in all, that took ``seconds``."""
        self.batch_items.labels(role).observe(items)
        self.batch_padded_tokens.labels(role).observe(padded_tokens)
        self.inference_seconds.labels(role).observe(seconds)

    def record_results(
        self, task: str, lane: str, error_codes: Iterable[str | None], e2e_seconds: float | None
    ) -> None:
        """The results of one message, once written: each item's error code (None when ok).

        ``e2e_seconds`` is now minus the job's ``enqueued_at``; None when the message had none (an
        invalid envelope), which then counts items only.
        """
        task = task_label(task)
        for outcome, count in Tally(outcome_label(code) for code in error_codes).items():
            self.items.labels(task, outcome).inc(count)
            if outcome != OK:
                self.errors.labels(outcome).inc(count)
        if e2e_seconds is not None:
            self.end_to_end_seconds.labels(lane_label(lane)).observe(max(0.0, e2e_seconds))

    def record_cache(self, role: str, hits: int, misses: int, duplicates: int = 0) -> None:
        """The cache's answer for one batch of ``role``'s sequences."""
        self.cache_hits.labels(role).inc(hits)
        self.cache_misses.labels(role).inc(misses)
        self.cache_duplicates.labels(role).inc(duplicates)

    def record_cascade(self, policy: str, escalated: bool) -> None:
        """One item of a cascade policy: answered by the small model, or escalated to the policy's model."""
        self.cascade_items.labels(policy, "escalated" if escalated else "kept").inc()

    def watch_gpu_memory(self, device: str) -> bool:
        """Report ``device``'s memory at each scrape when it is a CUDA device; False (and nothing) on CPU."""
        if not device.startswith("cuda"):
            return False
        import torch  # only workers on a GPU get here

        index = torch.device(device).index or 0
        label = f"cuda:{index}"
        self.gpu_memory_allocated.labels(label).set_function(lambda: float(torch.cuda.memory_allocated(index)))
        self.gpu_memory_reserved.labels(label).set_function(lambda: float(torch.cuda.memory_reserved(index)))
        return True


class QueueDepthCollector(Collector):
    """Each lane's queue length in Redis (LLEN of its Celery list), read at scrape time.

    Every worker exports the same figures (one Redis): aggregate with ``max by (lane)``, not ``sum``.
    When Redis does not answer, the scrape still succeeds with ``sift_queue_redis_up 0`` and no depths.
    """

    def __init__(self, client: redis.Redis, prefix: str, bounds: Mapping[Lane, int]) -> None:
        self._redis = client
        self._queues = {lane: queue_name(prefix, lane) for lane in Lane}
        self._bounds = dict(bounds)

    @classmethod
    def from_settings(cls, settings: SiftSettings, client: redis.Redis) -> QueueDepthCollector:
        """The collector of ``settings``' deployment (queue prefix and per-lane bounds)."""
        return cls(client, settings.queue_prefix, {lane: settings.queue_bound(lane) for lane in Lane})

    def describe(self) -> Iterable[GaugeMetricFamily]:
        """The families, without touching Redis (the registry asks when the collector is registered)."""
        return list(self._families())

    def collect(self) -> Iterable[GaugeMetricFamily]:
        """LLEN of every lane's queue, in one pipelined round trip."""
        depth, bound, up = self._families()
        try:
            pipe = self._redis.pipeline(transaction=False)
            for queue in self._queues.values():
                pipe.llen(queue)
            lengths = pipe.execute()
        except redis.RedisError as err:
            log.debug("queue depth scrape failed: %r", err)
            up.add_metric([], 0.0)
            return [bound, up]
        for (lane, queue), length in zip(self._queues.items(), lengths, strict=True):
            depth.add_metric([lane.value, queue], float(length))
        up.add_metric([], 1.0)
        return [depth, bound, up]

    def _families(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily("sift_queue_depth", "Messages waiting in a lane's queue.", labels=["lane", "queue"])
        bound = GaugeMetricFamily(
            "sift_queue_bound", "Messages a lane's queue may hold before producers block or fail.", labels=["lane"]
        )
        for lane, value in self._bounds.items():
            bound.add_metric([lane.value], float(value))
        yield bound
        yield GaugeMetricFamily("sift_queue_redis_up", "1 when the last queue-depth read reached Redis, else 0.")


def serve_metrics(port: int, registry: CollectorRegistry = REGISTRY, addr: str = "0.0.0.0") -> WSGIServer:
    """Serve ``registry`` at ``http://addr:port/metrics`` from a daemon thread; port 0 picks a free one.

    The server answers during a long batch too: it runs beside Celery's solo pool, not in it.
    """
    try:
        server, _thread = start_http_server(port, addr=addr, registry=registry)
    except OSError as err:
        raise SettingsError(
            f"cannot serve metrics on {addr}:{port} ({err}): set SIFT_METRICS_PORT to a free port"
        ) from err
    log.info("metrics at http://%s:%d/metrics", addr, server.server_port)
    return server
