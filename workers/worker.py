"""Start one Celery worker pinned to one device, with its models loaded and warmed first."""

from __future__ import annotations

import gc
import logging
import os
import socket
from dataclasses import dataclass

import torch
from prometheus_client import REGISTRY

from sift.broker import make_celery_app
from sift.contract import Lane
from sift.dead_letters import DeadLetters
from sift.keys import queue_name
from sift.results_store import ResultStore
from sift.settings import SettingsError, SiftSettings
from sift.telemetry import QueueDepthCollector, WorkerMetrics, serve_metrics
from workers.cpus import allowed_cpus, format_cpu_list, pin_to
from workers.engine.engine import Engine
from workers.engine.forward import RetryPolicy
from workers.engine.logit_cache import LogitCache, cache_client
from workers.engine.policy import load_policies
from workers.engine.registry import Registry, load_registry
from workers.tasks import register_tasks

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerOptions:
    """How one worker process is pinned and what it serves."""

    device: str = "cpu"
    queues: tuple[str, ...] = ("realtime", "bulk")
    """Lanes (``realtime``, ``bulk``) or full queue names, consumed in this order."""
    models: tuple[str, ...] = ()
    """Registry roles to preload; empty means every role the registry's tasks use."""
    hostname: str | None = None
    threads: int | None = None
    """Intra-op threads; default: the CPU slice's size when ``cpus`` is set, else torch's default (all cores)."""
    cpus: tuple[int, ...] = ()
    """The CPU slice the worker's threads run on (``sched_setaffinity``); empty: wherever the OS puts them."""
    loglevel: str = "INFO"


def parse_device(name: str) -> torch.device:
    """``cpu``, ``cuda`` or ``cuda:N``; a CUDA device must exist."""
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise SettingsError(f"unknown device {name!r}: use cpu or cuda:N") from err
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SettingsError(f"device {name} asked for, but CUDA is not available here")
        index = device.index or 0
        if index >= torch.cuda.device_count():
            raise SettingsError(f"device {name} asked for, but only {torch.cuda.device_count()} GPU(s) are visible")
        device = torch.device("cuda", index)
    elif device.type != "cpu":
        raise SettingsError(f"unsupported device {name!r}: use cpu or cuda:N")
    return device


def resolve_queues(prefix: str, names: tuple[str, ...]) -> list[str]:
    """Map lane names to queue names; full queue names pass through."""
    lanes = {lane.value: lane for lane in Lane}
    return [queue_name(prefix, lanes[n]) if n in lanes else n for n in names]


def realtime_thread_wanted(settings: SiftSettings, consumed: list[str]) -> bool:
    """Whether real-time passes get a thread of their own: only where both lanes share this worker (a worker of
    one lane never has a bulk pass for a real-time item to wait for) and passes run off the event loop."""
    lanes = {queue_name(settings.queue_prefix, lane) for lane in Lane}
    return settings.forward_thread and settings.realtime_thread and lanes <= set(consumed)


def roles_to_load(registry: Registry, requested: tuple[str, ...]) -> list[str]:
    """The roles named, or every role a task defaults to (the policy's model included)."""
    if requested:
        unknown = [r for r in requested if r not in registry.models]
        if unknown:
            raise SettingsError(f"unknown model role(s) {unknown}; registry has {sorted(registry.models)}")
        return list(dict.fromkeys(requested))
    return list(dict.fromkeys(registry.tasks.values()))


def freeze_startup_heap() -> int:
    """Move every object alive now (models, tokenizers, modules: about 400k) out of the garbage collector's reach.

    They live as long as the worker. Left tracked, each full collection walks all of them again, and the garbage
    of every batch triggers collections: freezing them made bert-tiny's engine 8% faster on a CPU (``gc.freeze``, as
    forking servers use it). Returns how many objects were frozen.
    """
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


def run_worker(settings: SiftSettings, options: WorkerOptions) -> int:
    """Load models on the pinned device, then consume until stopped; returns the exit code."""
    device = parse_device(options.device)
    if options.cpus:
        pin_to(options.cpus)  # before any thread pool starts: their threads inherit the slice
    threads = options.threads or len(options.cpus)
    if threads:
        torch.set_num_threads(threads)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    # Before the models load: a taken metrics port fails the start in a second, not after minutes of loading.
    metrics = start_metrics(settings)
    cache = LogitCache(
        # Short socket timeouts (cache_client's default): a stalled Redis never stalls inference.
        cache_client(settings, url=settings.cache_redis_url),
        prefix=settings.queue_prefix,
        ttl_s=settings.cache_ttl_s,
        enabled=settings.cache_enabled,
    )
    registry = load_registry(settings.registry)
    policies = load_policies(settings.policy)
    hostname = options.hostname or f"sift-{device.type}{device.index or 0}-{os.getpid()}@{socket.gethostname()}"
    retry = RetryPolicy(attempts=settings.item_retries, backoff_s=settings.retry_backoff_s)
    engine = Engine.load(
        registry,
        roles_to_load(registry, options.models),
        device,
        policies,
        settings.limits(),
        hostname,
        retry,
        cache=cache,
        metrics=metrics,
    )
    metrics.watch_gpu_memory(str(device))  # read at scrape time; nothing on a CPU worker
    consumed = resolve_queues(settings.queue_prefix, options.queues)
    bulk = queue_name(settings.queue_prefix, Lane.BULK)
    realtime_beside = realtime_thread_wanted(settings, consumed)
    if realtime_beside:
        second = engine.open_realtime_sessions(settings.bulk_niceness)
        log.info(
            "real-time passes run beside bulk passes%s; bulk passes lowered by %d (SIFT_BULK_NICENESS)",
            f" (second ORT session: {second})" if second else "",
            settings.bulk_niceness,
        )
    freeze_startup_heap()
    log.info(
        "worker %s ready on %s with %s (torch threads %d on CPUs %s; logit cache %s)",
        hostname,
        device,
        sorted(engine.models),
        torch.get_num_threads(),
        format_cpu_list(allowed_cpus()),
        f"on, {settings.cache_ttl_s} s" if cache.active else "off",
    )
    app = make_celery_app(settings)
    app.conf.worker_consumer = "workers.reconnect:ReconnectingConsumer"
    connection = settings.redis_client()
    store = ResultStore(
        connection,
        prefix=settings.queue_prefix,
        ttl_s=settings.result_ttl_s,
        stream_maxlen=settings.results_stream_maxlen,
    )
    dead_letters = DeadLetters(connection, prefix=settings.queue_prefix, max_len=settings.dead_letter_max)
    infer = register_tasks(app, engine, store, dead_letters, bulk_queue=bulk if bulk in consumed else None)
    infer.metrics = metrics
    infer.forward_thread = settings.forward_thread
    infer.realtime_thread = realtime_beside
    infer.bulk_niceness = settings.bulk_niceness
    queues = ",".join(consumed)
    argv = [
        "worker",
        # solo: tasks run in this process, which owns the models and the device; nothing forks after CUDA is up.
        "--pool=solo",
        # Celery reports the CPU count as a solo worker's concurrency, and prefetches multiplier x that:
        # with 1, SIFT_PREFETCH_MULTIPLIER is the number of messages the worker gathers batches from.
        "--concurrency=1",
        f"--queues={queues}",
        f"--hostname={hostname}",
        f"--loglevel={options.loglevel}",
        "--without-mingle",
        "--without-gossip",
    ]
    try:
        app.worker_main(argv=argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    finally:
        if cache.active:
            log.info(
                "logit cache: %d hits, %d misses (hit rate %.1f%%)", cache.hits, cache.misses, 100 * cache.hit_rate
            )
    return 0


def start_metrics(settings: SiftSettings) -> WorkerMetrics:
    """This process's metrics; served with the queue depths on ``SIFT_METRICS_PORT`` when it is set.

    Raises :class:`SettingsError` when the port is taken. The metrics live in prometheus_client's
    default registry, which also carries its ``process_*`` and ``python_*`` metrics.
    """
    metrics = WorkerMetrics()
    if settings.metrics_port is not None:
        # A client with short timeouts of its own: a scrape never hangs on a stalled Redis.
        depths = QueueDepthCollector.from_settings(settings, cache_client(settings, timeout_s=1.0))
        REGISTRY.register(depths)
        serve_metrics(settings.metrics_port, addr=settings.metrics_addr)
    return metrics
