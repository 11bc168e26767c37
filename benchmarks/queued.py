"""Measurements through Redis and a Celery worker: bulk enqueue, end-to-end backfill, real-time latency."""

from __future__ import annotations

import base64
import json
import math
import os
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.paths import PathResult
from benchmarks.stats import percentile


@dataclass
class EnqueueResult:
    """How fast one producer puts items on the bulk queue (no worker consuming)."""

    items: int
    messages: int
    seconds: float

    @property
    def items_per_s(self) -> float:
        """Items enqueued per second, validation and serialization included."""
        return self.items / self.seconds if self.seconds > 0 else 0.0


@dataclass
class RealtimeResult:
    """Sequential real-time items (submit, then wait for the result), one after another."""

    model: str
    condition: str
    latencies_ms: list[float] = field(default_factory=list)
    note: str = ""

    @property
    def p50_ms(self) -> float | None:
        """Median submit-to-result latency."""
        return percentile(self.latencies_ms, 50) if self.latencies_ms else None

    @property
    def p99_ms(self) -> float | None:
        """99th percentile submit-to-result latency (the maximum for fewer than 100 samples)."""
        return percentile(self.latencies_ms, 99) if self.latencies_ms else None

    def as_json(self) -> dict[str, Any]:
        """Every figure, samples included."""
        return {
            "model": self.model,
            "condition": self.condition,
            "samples": len(self.latencies_ms),
            "p50_ms": self.p50_ms,
            "p99_ms": self.p99_ms,
            "latencies_ms": [round(x, 3) for x in self.latencies_ms],
            "note": self.note,
        }


def process_memory_kb(pid: int) -> dict[str, int]:
    """``VmRSS`` and ``VmHWM`` (peak resident set) of a process, in kB, from ``/proc/<pid>/status``."""
    found: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            found[name] = int(value.split()[0])
    return found


def process_cpu_s(pid: int) -> float:
    """CPU seconds (user + system, all threads) a process has used, from ``/proc/<pid>/stat``."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat.rsplit(")", 1)[1].split()  # after "pid (comm)": field 3 is fields[0]
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure_enqueue(redis_url: str, items: int) -> EnqueueResult:
    """``submit_many`` of ``items`` tiny classify items on a fresh queue prefix that no worker reads."""
    from producers.client import SiftClient
    from sift.settings import SiftSettings

    prefix = f"bench-enqueue-{uuid.uuid4().hex[:8]}"
    settings = SiftSettings(redis_url=redis_url, queue_prefix=prefix)
    tiny = ({"id": str(i), "text": "ok"} for i in range(items))
    with SiftClient(settings) as client:
        start = time.perf_counter()
        handle = client.submit_many("classify", tiny)
        seconds = time.perf_counter() - start
        for key in client.redis.scan_iter(match=f"{prefix}*"):
            client.redis.delete(key)
    return EnqueueResult(handle.submitted, handle.messages, seconds)


def wait_for_results(client: Any, job_id: str, expected: int, timeout_s: float = 600.0) -> None:
    """Block until ``job_id`` has ``expected`` results stored."""
    deadline = time.monotonic() + timeout_s
    while client.store.count(job_id) < expected:
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id}: {client.store.count(job_id)} of {expected} results after {timeout_s} s")
        time.sleep(0.02)


def warm_up(client: Any, task: str, model: str, items: Sequence[dict[str, Any]]) -> None:
    """One small untimed job through the queue, as every in-process path gets a warm-up."""
    handle = client.submit_many(task, items, model=model)
    wait_for_results(client, handle.job_id, handle.expected)


def end_to_end(
    client: Any,
    model: str,
    task: str,
    items: Sequence[dict[str, Any]],
    tokens: int,
    chunk_size: int,
    worker_pid: int,
) -> PathResult:
    """Bulk backfill through Redis and the worker: first submit to last result, one producer.

    ``cpu_s`` of the result is the worker's; the producer's own CPU time is in ``extra``.
    """
    arrivals: dict[str, float] = {}
    inference_ms: dict[int, float] = {}
    index_of = {item["id"]: i for i, item in enumerate(items)}
    worker_cpu = process_cpu_s(worker_pid)
    producer_cpu = time.process_time()
    start = time.perf_counter()
    handle = client.submit_many(task, items, model=model, chunk_size=chunk_size)
    submitted_s = time.perf_counter() - start
    errors = 0
    for result in client.iter_results(handle.job_id, expected=handle.expected, idle_timeout_s=600.0):
        arrivals[result.id] = time.perf_counter()
        errors += result.error is not None
        if result.timings is not None:
            inference_ms.setdefault(index_of[result.id] // chunk_size, result.timings.inference_ms)
    seconds = time.perf_counter() - start
    worker_cpu_s = process_cpu_s(worker_pid) - worker_cpu
    producer_cpu_s = time.process_time() - producer_cpu
    if errors or len(arrivals) != len(items):
        raise RuntimeError(f"end-to-end run: {errors} errors, {len(arrivals)} of {len(items)} results")
    # A message is done when its last item's result arrives; the time between completions is what one
    # message costs in the pipeline (worker engine + Redis + the producer and reader sharing the machine).
    done: dict[int, float] = {}
    for item_id, arrived in arrivals.items():
        message = index_of[item_id] // chunk_size
        done[message] = max(done.get(message, 0.0), arrived)
    completions = sorted(done.values())
    intervals = [(b - a) * 1000.0 for a, b in zip([start, *completions[:-1]], completions, strict=True)]
    worker_ms = sum(inference_ms.values())
    extra = {
        "messages": handle.messages,
        "submit_many_s": submitted_s,
        "worker_engine_ms_total": worker_ms,
        "worker_engine_ms_per_message_p50": percentile(list(inference_ms.values()), 50) if inference_ms else None,
        "overhead_ms_per_message": (seconds * 1000.0 - worker_ms) / max(1, handle.messages),
        "producer_cpu_s": producer_cpu_s,
    }
    return PathResult(
        model,
        "sift end to end: Redis + worker",
        len(items),
        tokens,
        seconds,
        f"job of {chunk_size} (interval)",
        intervals,
        extra,
        cpu_s=worker_cpu_s,
    )


def realtime(
    client: Any,
    model: str,
    task: str,
    items: Sequence[dict[str, Any]],
    condition: str,
    keep_going: Callable[[], bool] = lambda: True,
    time_cap_s: float = math.inf,
) -> RealtimeResult:
    """Submit items one at a time on the real-time lane, each after the previous result came back."""
    outcome = RealtimeResult(model, condition)
    started = time.monotonic()
    for item in items:
        if not keep_going():
            outcome.note = "stopped: the backfill finished"
            break
        if time.monotonic() - started > time_cap_s:
            outcome.note = f"stopped at the {time_cap_s:.0f} s time cap"
            break
        began = time.perf_counter()
        ref = client.submit(task, {**item, "id": f"rt-{uuid.uuid4().hex[:12]}"}, model=model)
        result = client.result(ref, timeout_s=600.0)
        outcome.latencies_ms.append((time.perf_counter() - began) * 1000.0)
        if result.error is not None:
            raise RuntimeError(f"real-time item failed: {result.error}")
    return outcome


def realtime_during_backfill(
    client: Any,
    model: str,
    task: str,
    rt_items: Sequence[dict[str, Any]],
    bulk_items: Sequence[dict[str, Any]],
    time_cap_s: float,
    chunk_size: int,
    drain: bool = True,
    condition: str = "during a bulk backfill",
) -> RealtimeResult:
    """Real-time items while a backfill of ``bulk_items`` runs on the bulk lane of the same worker.

    Stops when the real-time items are done, the backfill finishes, or ``time_cap_s`` passes; then
    drops the backfill's messages still queued and, with ``drain``, waits for the ones the worker holds
    (without it, the caller stops the worker next: SIGTERM finishes the message in hand only).
    """
    from sift.contract import Lane
    from sift.keys import queue_name

    handle = client.submit_many(task, bulk_items, model=model, chunk_size=chunk_size)
    # Measured once a worker has taken the backfill's first messages, so every real-time item meets it running.
    bulk_queue = queue_name(client.settings.queue_prefix, Lane.BULK)
    deadline = time.monotonic() + time_cap_s
    while client.redis.llen(bulk_queue) >= handle.messages and time.monotonic() < deadline:
        time.sleep(0.005)

    def backfill_running() -> bool:
        return bool(client.store.count(handle.job_id) < handle.expected)

    outcome = realtime(client, model, task, rt_items, condition, backfill_running, time_cap_s)
    removed = purge_queue(client.redis, bulk_queue, chunk_size)
    if drain:
        wait_for_results(client, handle.job_id, handle.expected - removed)
    outcome.note = (outcome.note + f"; {handle.expected} bulk items sent, {removed} dropped unprocessed").lstrip("; ")
    return outcome


def purge_queue(redis: Any, queue: str, default_items: int) -> int:
    """Delete every message still in ``queue`` (and its priority sub-lists); returns the items they held."""
    keys = [k for k in redis.scan_iter(match=f"{queue}*") if redis.type(k) in (b"list", "list")]
    if not keys:
        return 0
    pipe = redis.pipeline(transaction=True)
    for key in keys:
        pipe.lrange(key, 0, -1)
        pipe.delete(key)
    replies = pipe.execute()
    messages = [m for reply in replies[0::2] for m in reply]
    return sum(_items_in_message(m, default_items) for m in messages)


def _items_in_message(raw: bytes, default_items: int) -> int:
    """Items of the job inside one kombu message (Celery protocol 2: body = [args, kwargs, embed])."""
    try:
        envelope = json.loads(raw)
        body = envelope["body"]
        if envelope.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        _args, kwargs, _embed = json.loads(body)
        return len(kwargs["job"]["items"])
    except (ValueError, KeyError, TypeError):
        return default_items
