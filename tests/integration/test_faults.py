"""Fault tolerance under stress: a backfill that outlives repeated worker crashes and a Redis restart, and a
real-time lane that, offered far more than it can serve, stays bounded and says so.

The backfill test runs on a private redis-server with AOF persistence, so that a restart keeps the queue,
kombu's ``unacked`` hash and the results. Workers are told apart by their logs: Celery logs
``Task sift.infer[<id>] received`` once a message is delivered (it is then in kombu's ``unacked`` hash
until the ack, which comes after the results are written) and ``... succeeded in ...: {'items': N, 'written': W}``.
"""

from __future__ import annotations

import math
import re
import statistics
import time
import uuid
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import kombu.exceptions
import pytest
import redis
import yaml
from sift_it_helpers import (
    UNACKED,
    WORKER_START_TIMEOUT_S,
    items_of_queued_messages,
    redis_url_of,
    start_worker,
    task_ids_in_broker,
    wait_until,
)

from producers.client import ItemRef, QueueFull, SiftClient
from sift.broker import make_celery_app
from sift.contract import ItemResult, Lane
from sift.keys import done_stream_key, errors_key, queue_name, results_key
from sift.local import EmbeddedRedis, WorkerProcess
from sift.settings import SiftSettings
from workers.engine.registry import load_registry

pytestmark = pytest.mark.integration


# --- backfill under faults ----------------------------------------------------------------------------------

N_ITEMS = 10_000
CHUNK = 50
MESSAGES = N_ITEMS // CHUNK
KILLS = 10
RESTART_AFTER_KILL = 4  # even: both workers of a generation are gone, the next two come up together
VISIBILITY_S = 3
WORKER_SLOTS = 2
RESTART_GRACE_S = 2.0

_TASK_LINE = re.compile(r"Task sift\.infer\[([0-9a-f-]+)\] (\w+)(?: in [^:]*: \{'items': (\d+), 'written': (\d+)\})?")


class LoggedWorker:
    """A worker process and what its log says it took (``received``) and finished (anything else)."""

    def __init__(self, number: int, settings: SiftSettings, log_path: Path, starter: ThreadPoolExecutor) -> None:
        self.number = number
        self.log_path = log_path
        self.worker = WorkerProcess(settings, threads=1, log_path=log_path, models="sentiment")
        self.starting = starter.submit(self._start)
        self.received: Counter[str] = Counter()
        self.finished: Counter[str] = Counter()
        self.received_at: dict[str, int] = {}  # task id -> event number of its latest delivery
        self.first_received_clock: dict[str, str] = {}  # task id -> log timestamp of its first delivery here
        self.succeeded_after: dict[str, int] = {}  # task id -> event number of its latest success
        self.written = 0
        self.events = 0
        self._offset = 0
        self._partial = b""

    def _start(self) -> None:
        try:
            self.worker.start(timeout_s=WORKER_START_TIMEOUT_S)
        except (RuntimeError, TimeoutError) as err:
            tail = self.log_path.read_text(errors="replace")[-4000:] if self.log_path.exists() else "(no log)"
            pytest.fail(f"worker {self.number} did not start ({err}); log tail:\n{tail}")
        except (redis.ConnectionError, kombu.exceptions.OperationalError) as err:
            pytest.fail(
                f"starting worker {self.number}: WorkerProcess.start() gave up on a broker connection error "
                f"({type(err).__name__}: {err}); see test_a_worker_starts_after_a_redis_restart"
            )

    @property
    def process(self) -> WorkerProcess | None:
        """The worker once it answers pings (raises what its start raised), else None."""
        if not self.starting.done():
            return None
        self.starting.result()
        return self.worker

    def refresh(self) -> LoggedWorker:
        """Read what the log gained since the last call."""
        if not self.log_path.exists():
            return self
        with self.log_path.open("rb") as log:
            log.seek(self._offset)
            data = log.read()
        self._offset += len(data)
        *lines, self._partial = (self._partial + data).split(b"\n")
        for line in lines:
            match = _TASK_LINE.search(line.decode(errors="replace"))
            if match is None:
                continue
            self.events += 1
            task_id, what, _items, written = match.groups()
            if what == "received":
                self.received[task_id] += 1
                self.received_at[task_id] = self.events
                self.first_received_clock.setdefault(task_id, line[:23].decode(errors="replace"))
            else:
                self.finished[task_id] += 1
                if what == "succeeded":
                    self.succeeded_after[task_id] = self.events
                    self.written += int(written or 0)
        return self

    def held(self) -> set[str]:
        """Task ids delivered to this worker and not finished by it: unacknowledged messages it holds."""
        return {task for task, n in self.received.items() if n > self.finished[task]}

    def took_and_finished_since(self, mark: int) -> bool:
        """Whether a message delivered after event ``mark`` has succeeded (the broker link and the store work)."""
        return any(at > mark and self.succeeded_after.get(task, 0) > at for task, at in self.received_at.items())


def fast_classify_registry(offline_registry: Path, directory: Path) -> Path:
    """A registry whose ``classify`` task runs on bert-tiny (the offline ``rerank`` model), 1-logit head."""
    rerank = load_registry(offline_registry).models["rerank"]  # its source resolved to an absolute path
    spec = {**rerank.model_dump(mode="json", exclude_none=True), "kind": "sequence_classification"}
    path = directory / "fast-registry.yaml"
    path.write_text(yaml.safe_dump({"models": {"sentiment": spec}, "tasks": {"classify": "sentiment"}}))
    return path


@pytest.mark.timeout(300)
def test_backfill_survives_ten_worker_kills_and_a_redis_restart(offline_registry: Path, tmp_path: Path) -> None:
    server = EmbeddedRedis(appendonly=True).start()
    settings = SiftSettings(
        redis_url=server.url,
        registry=fast_classify_registry(offline_registry, tmp_path),
        queue_prefix=f"faults-{uuid.uuid4().hex[:8]}",
        chunk_size=CHUNK,
        visibility_timeout_s=VISIBILITY_S,
    )
    broker = redis.Redis.from_url(server.url)
    starter = ThreadPoolExecutor(max_workers=WORKER_SLOTS, thread_name_prefix="worker-start")
    spawned: list[LoggedWorker] = []

    def spawn() -> LoggedWorker:
        number = len(spawned) + 1
        spawned.append(LoggedWorker(number, settings, tmp_path / f"worker-{number}.log", starter))
        return spawned[-1]

    job_id = f"faults-{uuid.uuid4().hex[:12]}"
    results = results_key(settings.queue_prefix, job_id)
    done = done_stream_key(settings.queue_prefix, job_id)
    try:
        assert broker.config_get("appendonly")["appendonly"] == "yes"
        appendfsync = broker.config_get("appendfsync")["appendfsync"]
        text = "review {}: " + "the food was fine, the staff were friendly enough and the room was clean. " * 4
        items = [{"id": f"item-{i:05d}", "text": text.format(i)} for i in range(N_ITEMS)]
        started = time.monotonic()
        with SiftClient(settings) as client:
            handle = client.submit_many("classify", items, job_id=job_id)
        assert handle.submitted == N_ITEMS and handle.messages == MESSAGES and not handle.rejected
        message_items = items_of_queued_messages(broker, settings)
        assert len(message_items) == MESSAGES

        # Kill a worker as soon as it has written results and holds a message; a replacement starts at once.
        # Killed workers live short lives, so most of the backlog is still there for the faults to come.
        slots = [spawn() for _ in range(WORKER_SLOTS)]
        kills = stranded_kills = stranded_messages = results_at_restart = 0
        killed_holding: dict[str, set[int]] = {}  # task id -> the workers killed while holding it
        restarted = False
        running_at_restart = 0
        first_ready_at: float | None = None
        deadline = time.monotonic() + 150
        while stranded_kills < KILLS or not restarted:
            assert time.monotonic() < deadline, (
                f"{stranded_kills} kills of workers holding messages, Redis restarted: {restarted}, "
                f"{broker.hlen(results)} results stored: did the backlog drain before the faults were done?"
            )
            ready = [(index, worker) for index, worker in enumerate(slots) if worker.process is not None]
            for _, worker in ready:
                assert_running(worker)
            # Once, while a worker holds a message: restart Redis under the workers. A replacement may still be
            # starting: wait for it a moment, not longer (the other worker would drain the backlog alone).
            if stranded_kills >= RESTART_AFTER_KILL and not restarted and ready:
                first_ready_at = first_ready_at or time.monotonic()
                all_up = len(ready) == WORKER_SLOTS or time.monotonic() - first_ready_at > RESTART_GRACE_S
                if not all_up or not any(worker.refresh().held() for _, worker in ready):
                    time.sleep(0.01)
                    continue
                results_at_restart = int(broker.hlen(results))
                running_at_restart = restart_redis_mid_run(server, broker, [w for _, w in ready], results, done)
                restarted = True
                continue
            eligible = [(i, w) for i, w in ready if w.refresh().written > 0 and w.held()]
            if stranded_kills >= KILLS or not eligible:
                time.sleep(0.01)
                continue
            index, worker = eligible[0]
            worker.worker.kill()
            kills += 1
            stranded = worker.refresh().held()  # the log is final now
            in_broker = task_ids_in_broker(broker, settings)
            assert stranded <= in_broker, f"worker {worker.number} was killed holding messages the broker lost"
            stranded_kills += bool(stranded)
            stranded_messages += len(stranded)
            for task in stranded:
                killed_holding.setdefault(task, set()).add(worker.number)
            slots[index] = spawn()

        results_after_faults = int(broker.hlen(results))
        for worker in slots:
            worker.starting.result(timeout=WORKER_START_TIMEOUT_S + 10)
        # Every message a worker took is finished, unless that worker was killed holding it. kombu's Redis
        # transport pops a message (BRPOP) before it records it as unacknowledged: a message popped in that gap
        # by a worker that then dies, or just as Redis shuts down, is gone from Redis (README, Known limits).
        # That holds for a redelivery too: a killed worker's message, back in the queue after the visibility
        # timeout, can be the one popped in the gap of the next kill. The backlog drains; then a re-run of the
        # backfill (what `sift backfill` does) resubmits what is missing.
        wait_until(
            lambda: not broker.llen(queue_name(settings.queue_prefix, Lane.BULK)) and not broker.hlen(UNACKED),
            timeout_s=120,
            interval_s=0.2,
            what="the backlog to drain",
        )
        received = {task for worker in spawned for task in worker.refresh().received}
        finished = {task for worker in spawned for task in worker.finished}
        unfinished = received - finished
        takers = {task: {w.number for w in spawned if task in w.received} for task in received}

        def excused(task: str) -> bool:
            # Only a killed worker logged it: its redelivery can have been lost in a later pop's gap. A worker that
            # took it and lived must have finished it.
            return takers[task] <= killed_holding.get(task, set())

        unexcused = {task: sorted(takers[task]) for task in unfinished if not excused(task)}
        assert not unexcused, f"messages (with the workers that took them) a live worker never finished: {unexcused}"
        stored_ids = {key.decode() for key in broker.hkeys(results)}
        lost = {task: ids for task, ids in message_items.items() if not ids <= stored_ids}
        taken_and_lost = {task: sorted(takers[task]) for task in set(lost) & received if not excused(task)}
        assert not taken_and_lost, f"messages a live worker took and whose items were lost: {taken_and_lost}"
        # At most one message in that gap per worker when it was killed, and per running worker at the restart.
        report = lost_report(lost, message_items, spawned)
        assert len(lost) <= KILLS + running_at_restart, f"{len(lost)} messages lost: {report}"
        resubmitted = [item for item in items if item["id"] not in stored_ids]
        if resubmitted:
            redeliveries = len(set(lost) & received)
            print(f"\n{len(lost)} messages lost in a pop's gap ({redeliveries} of them redeliveries): {report}")
            with SiftClient(settings) as client:
                again = client.submit_many("classify", resubmitted, job_id=job_id)
            assert again.submitted == len(resubmitted) and not again.rejected
        wait_until(lambda: broker.hlen(results) >= N_ITEMS, timeout_s=60, interval_s=0.2, what=f"{N_ITEMS} results")
        elapsed = time.monotonic() - started
        # Every message, redelivered ones included, is acknowledged in the end: nothing is left stranded.
        wait_until(
            lambda: broker.hlen(UNACKED) == 0 and broker.llen(queue_name(settings.queue_prefix, Lane.BULK)) == 0,
            timeout_s=45,
            interval_s=0.2,
            what="the broker to hold no message",
        )

        stored: dict[Any, Any] = broker.hgetall(results)
        parsed = [ItemResult.model_validate_json(body) for body in stored.values()]
        distinct = len(stored)
        entries = int(broker.xlen(done))
        redelivered = sum(sum(worker.refresh().received.values()) for worker in spawned) - MESSAGES
        print(
            f"\nbackfill under faults: {N_ITEMS} items sent in {MESSAGES} messages, {distinct} results, "
            f"{entries - distinct} duplicates, {stranded_kills} kills survived ({kills} SIGKILLs, "
            f"{stranded_messages} messages stranded), {int(restarted)} redis restarts (appendfsync {appendfsync}, "
            f"{running_at_restart} workers running across it, at {results_at_restart} results; "
            f"{results_after_faults} when the faults were over), "
            f"{len(spawned)} workers started, {redelivered} deliveries beyond one per message, "
            f"{len(lost)} messages lost before any worker took them ({len(resubmitted)} items resubmitted), "
            f"{elapsed:.1f} s elapsed"
        )
        assert sorted(r.id for r in parsed) == [item["id"] for item in items]
        assert all(r.ok and r.job_id == job_id for r in parsed)
        assert distinct == N_ITEMS
        assert entries == N_ITEMS, f"{entries - distinct} items were stored more than once"
        assert broker.scard(errors_key(settings.queue_prefix, job_id)) == 0
        assert stranded_kills == KILLS and restarted
    finally:
        starter.shutdown(wait=False, cancel_futures=True)
        for worker in spawned:
            worker.worker.kill()  # a start in progress then ends at once: its worker exited
        starter.shutdown(wait=True)
        for worker in spawned:
            worker.worker.kill()
        broker.close()
        server.close()


def lost_report(lost: dict[str, set[str]], messages: dict[str, set[str]], workers: list[LoggedWorker]) -> str:
    """For each lost message, when (and by which worker) the messages queued next to it were taken."""
    order = sorted(messages, key=lambda task: min(messages[task]))
    taken = {task: f"{clock} by worker {w.number}" for w in workers for task, clock in w.first_received_clock.items()}
    lines = []
    for task in lost:
        at = order.index(task)
        before = taken.get(order[at - 1], "-") if at > 0 else "-"
        after = taken.get(order[at + 1], "-") if at + 1 < len(order) else "-"
        lines.append(f"{task} (items {min(lost[task])}..): the one before taken at {before}, the one after at {after}")
    return "; ".join(lines)


def restart_redis_mid_run(
    server: EmbeddedRedis, broker: redis.Redis, running: list[LoggedWorker], results: str, done: str
) -> int:
    """Stop and start Redis (same port, same AOF) under running workers; they must reconnect by themselves.

    Returns how many workers were running.
    """
    marks = {worker.number: worker.refresh().events for worker in running}
    before = (broker.hlen(results), broker.xlen(done))
    port = server.port
    server.stop()  # SIGTERM: Redis writes and fsyncs its AOF before it exits
    server.start()
    assert server.port == port
    after = (broker.hlen(results), broker.xlen(done))
    assert after[0] >= before[0] and after[1] >= before[1], f"Redis lost data over a restart: {before} -> {after}"
    assert after[0] > 0
    # The same worker processes take new messages and store their results: they reconnected on their own.
    wait_until(
        lambda: all(w.refresh().took_and_finished_since(marks[w.number]) for w in running),
        timeout_s=90,
        interval_s=0.1,
        what="every running worker to take and finish a message after the Redis restart",
    )
    for worker in running:
        assert_running(worker)
    return len(running)


def assert_running(worker: LoggedWorker) -> None:
    process = worker.process
    assert process is not None and process.process is not None
    assert process.process.poll() is None, (
        f"worker {worker.number} exited by itself; log tail:\n{worker.log_path.read_text(errors='replace')[-3000:]}"
    )


@pytest.mark.timeout(120)
def test_a_worker_starts_after_a_redis_restart(offline_registry: Path, tmp_path: Path) -> None:
    """Starting a replacement worker after a broker restart must wait through stale connections, not fail.

    Every Celery app of a process shares kombu's connection pool for a broker URL (``kombu.pools``); a Redis
    restart leaves it holding closed connections, and the first ``control.ping`` after it reads one.
    """
    with EmbeddedRedis(appendonly=True) as server:
        settings = SiftSettings(
            redis_url=server.url,
            registry=fast_classify_registry(offline_registry, tmp_path),
            queue_prefix=f"restart-start-{uuid.uuid4().hex[:8]}",
        )
        app = make_celery_app(settings)
        assert app.control.ping(timeout=0.2) == []  # the process now holds a pooled broker connection
        app.close()
        server.stop()
        server.start()
        worker = WorkerProcess(settings, threads=1, log_path=tmp_path / "worker.log", models="sentiment")
        try:
            worker.start(timeout_s=120)
        except redis.ConnectionError as err:
            pytest.fail(
                "WorkerProcess.start() gave up on a broker connection the Redis restart closed: "
                f"{type(err).__name__}: {err}"
            )
        finally:
            worker.kill()


# --- real-time overload -------------------------------------------------------------------------------------

OVERLOAD = 10
OFFER_S = 4.0
REALTIME_BOUND = 10


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


@pytest.mark.timeout(180)
def test_realtime_overload_is_bounded_and_rejected_clearly(
    redis_server: Any, offline_registry: Path, tmp_path: Path
) -> None:
    settings = SiftSettings(
        redis_url=redis_url_of(redis_server),
        registry=offline_registry,
        queue_prefix=f"overload-{uuid.uuid4().hex[:8]}",
        max_queued_realtime=REALTIME_BOUND,
    )
    text = "order {}: the delivery was late, but the support team sorted it out quickly and politely"
    worker = start_worker(settings, tmp_path / "worker.log", models="sentiment")
    waiters = ThreadPoolExecutor(max_workers=REALTIME_BOUND + 24, thread_name_prefix="result-waiter")
    try:
        with SiftClient(settings) as client:

            def job_of(n: int) -> str:
                return f"{settings.queue_prefix}-{n}"

            def submit(n: int) -> tuple[ItemRef, float]:
                enqueued = time.monotonic()
                item = {"id": f"o-{n}", "text": text.format(n)}
                return client.submit("classify", item, job_id=job_of(n), on_full="fail"), enqueued

            def latency_of(ref: ItemRef, enqueued: float) -> tuple[ItemResult, float]:
                result = client.result(ref, timeout_s=90)
                return result, time.monotonic() - enqueued

            # Service time at low load: one item at a time, after a warm-up.
            singles = []
            for n in range(23):
                _, seconds = latency_of(*submit(n))
                singles.append(seconds)
            single = statistics.median(singles[3:])
            capacity = 1 / single

            # Offer OVERLOAD x that for OFFER_S seconds, failing fast at the bound.
            interval = single / OVERLOAD
            admitted: list[tuple[ItemRef, Future[tuple[ItemResult, float]]]] = []
            rejected: list[tuple[str, str]] = []  # job id, QueueFull message
            max_depth = offered = 0
            reject_s = 0.0
            start = next_at = time.monotonic()
            while (now := time.monotonic()) < start + OFFER_S:
                if now < next_at:
                    time.sleep(next_at - now)  # pacing the offered rate, not waiting for a condition
                    continue
                next_at += interval
                n = 1000 + offered
                offered += 1
                try:
                    ref, enqueued = submit(n)
                except QueueFull as full:
                    rejected.append((job_of(n), str(full)))
                    reject_s = max(reject_s, time.monotonic() - now)
                else:
                    admitted.append((ref, waiters.submit(latency_of, ref, enqueued)))
                max_depth = max(max_depth, client.queue_depth(Lane.REALTIME))
            offered_rate = offered / (time.monotonic() - start)

            outcomes = [future.result(timeout=120) for _, future in admitted]
            latencies = [seconds for _, seconds in outcomes]
            p50, p99 = percentile(latencies, 0.5), percentile(latencies, 0.99)
            prefetch = settings.prefetch_multiplier
            # An admitted item finds at most `bound` messages queued and `prefetch` held by the worker ahead of it.
            expected_worst = (REALTIME_BOUND + prefetch + 3) * single
            allowed = 2 * expected_worst + 1.0  # slack: the producer and the waiters share the CPU with the worker
            print(
                f"\nrealtime overload: single-item latency {single * 1000:.0f} ms (capacity {capacity:.1f}/s), "
                f"offered {offered_rate:.0f}/s ({offered_rate / capacity:.1f}x) for {OFFER_S:.0f} s: "
                f"{offered} offered, "
                f"{len(admitted)} admitted, {len(rejected)} rejected (slowest rejection {reject_s * 1000:.0f} ms), "
                f"max queue depth {max_depth}/{REALTIME_BOUND}; "
                f"admitted latency p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms (allowed {allowed * 1000:.0f} ms)"
            )

            assert rejected, "10x the capacity was offered, yet nothing was rejected: the queue is not bounded"
            for _, message in rejected:
                assert f"at its bound of {REALTIME_BOUND}" in message and "realtime queue" in message, message
            assert reject_s < 1.0, "on_full='fail' must fail at once, not wait for room"
            assert max_depth <= REALTIME_BOUND
            assert admitted
            for (ref, _), (result, _) in zip(admitted, outcomes, strict=True):
                assert result.ok and result.id == ref.item_id and result.job_id == ref.job_id, result
            pipe = client.redis.pipeline()
            for ref, _ in admitted:
                pipe.hlen(results_key(settings.queue_prefix, ref.job_id))
                pipe.xlen(done_stream_key(settings.queue_prefix, ref.job_id))
            counts = pipe.execute()
            assert counts == [1] * len(counts), "an admitted item has no result or more than one"
            pipe = client.redis.pipeline()
            for job_id, _ in rejected:
                pipe.exists(results_key(settings.queue_prefix, job_id))
            assert not any(pipe.execute()), "a rejected item was computed anyway"
            assert p99 <= allowed, f"admitted p99 {p99:.2f} s is above the bound-derived {allowed:.2f} s"
    finally:
        waiters.shutdown(wait=False, cancel_futures=True)
        worker.stop()
