"""The Celery side of cross-message batching: messages in, gathered batches, results written, acks out.

``sift.infer`` gets a custom ``Task.Strategy`` (the hook Celery calls for each message it
receives; celery-batches uses the same hook). Instead of running one message at a time, the
strategy admits each message into the worker's :class:`~workers.gather.Gatherer` and lets
the event loop's timer run one forward batch at a time. Why not celery-batches itself: it
flushes on a message count rather than a token budget, and acknowledges every message of a
flush together even when the flush fails; sift needs per-message acks after each message's
results are written, and lane priority inside a batch.

Flow control uses Celery's own consumer features: ``worker_prefetch_multiplier`` caps the
messages held (the worker runs with concurrency 1), and while the worker holds enough bulk
work to keep the device busy it stops consuming the bulk queue (``cancel_task_queue``, as the
``cancel_consumer`` remote control does), so a free slot is always there for real-time messages.

Passes run off the event loop: bulk ones on the forward thread (two handed over at a time), real-time ones on a
real-time thread beside it (``realtime_thread``), so a real-time item never waits for a bulk pass to finish. The
forward thread then runs at a lower CPU priority (``bulk_niceness``, :mod:`workers.priority`), so while both passes
want the cores the kernel gives them to the real-time pass first.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from celery import Celery, Task
from celery.exceptions import Reject
from celery.worker import state as worker_state
from kombu.asynchronous.timer import Entry
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from sift.contract import ErrorCode, ErrorInfo, ItemResult, Job, Lane
from sift.contract.items import describe_validation_error, item_key, printable
from sift.dead_letters import DeadLetters
from sift.results_store import ResultStore
from sift.telemetry import WorkerMetrics
from workers.gather import Gatherer, Held, Step, StepReport
from workers.priority import lower_this_thread
from workers.reconnect import give_back
from workers.results import dead_letters_of, write_with_retry

log = logging.getLogger(__name__)

MIN_STEP_GAP_S = 0.0005
"""Least wait before the next step run on the loop's thread, so that the event loop reads its sockets in between."""
PASSES_AHEAD = 2
"""Forward passes handed to the forward thread at once: the one running, and the next, which starts the moment the
first ends even while the event loop is busy tokenizing a message. A real-time arrival takes the place of a next
bulk pass that has not started."""


@dataclass
class MessageHandle:
    """How to answer one broker message: ack it, or give it back to the queue."""

    message: Any
    ack: Any
    task_id: str
    received: float


class GatheringTask(Task):  # type: ignore[misc]  # celery ships no type hints
    """``sift.infer``: each message is admitted into the worker's gatherer instead of run on its own."""

    gatherer: Gatherer | None = None
    store: ResultStore | None = None
    dead_letters: DeadLetters | None = None
    bulk_queue: str | None = None
    """The bulk lane's queue name, paused and resumed for flow control."""
    paused_queue: str | None = None
    """Set while this worker has stopped consuming the bulk queue; survives a consumer restart."""
    metrics: WorkerMetrics | None = None
    """Where batches and answered messages are counted; None: a private registry nobody serves."""
    forward_thread: bool = False
    """Run forward passes on a thread of their own while the event loop takes in and tokenizes the
    next messages (and writes results); off: everything on the event loop's thread."""
    executor: ThreadPoolExecutor | None = None
    """The one forward thread, shared by every consumer restart so two passes never overlap."""
    realtime_thread: bool = False
    """Run real-time passes on a second thread, beside the bulk pass in flight, instead of after it (needs
    ``forward_thread``). A CPU cannot preempt a pass: without it a real-time item waits for the bulk pass in
    flight (up to a second for DistilBERT on 2 cores); with it the two share the cores while both run."""
    realtime_executor: ThreadPoolExecutor | None = None
    """The real-time thread, shared by every consumer restart like ``executor``."""
    bulk_niceness: int = 0
    """With ``realtime_thread``: how much the forward thread (bulk passes only) lowers its CPU priority when it
    starts, so that the real-time thread and the event loop run first while they want the cores."""
    pump: MessagePump | None = None
    """The current consumer's pump; a restart retires the previous one."""

    def Strategy(self, task: GatheringTask, app: Celery, consumer: Any) -> Any:  # noqa: N802 - Celery's name
        """Called by Celery at each consumer (re)start; returns the per-message handler."""
        return MessagePump(task, app, consumer).on_message

    def run(self, job: Any = None, **unexpected: Any) -> dict[str, int]:
        """Run one job in the calling process (``apply()``, tests); workers go through the strategy."""
        assert self.gatherer is not None and self.store is not None
        results = _results_now(self.gatherer, job, unexpected)
        if not results:
            return {"items": 0, "written": 0}
        return {"items": len(results), "written": write_with_retry(self.store, results[0].job_id, results)}


class MessagePump:
    """Admits messages, schedules gathered forward batches on the event loop, writes and acks."""

    def __init__(self, task: GatheringTask, app: Celery, consumer: Any) -> None:
        assert task.gatherer is not None and task.store is not None and task.dead_letters is not None
        self.task = task
        self.gatherer = task.gatherer
        self.store = task.store
        self.dead_letters = task.dead_letters
        self.metrics = task.metrics if task.metrics is not None else WorkerMetrics(CollectorRegistry())
        self.app = app
        self.consumer = consumer
        self.timer = consumer.timer
        self.eventer = consumer.event_dispatcher
        self._next: Entry | None = None
        self._next_at = 0.0
        self._inflight: deque[tuple[Step, Future[float]]] = deque()
        """Passes handed to the forward thread, in the order it runs them (the first may be running)."""
        self._realtime: deque[tuple[Step, Future[float]]] = deque()
        """The real-time pass handed to the real-time thread (at most one), with ``realtime_thread``."""
        self._wake_read = self._wake_write = -1
        # Held while the forward thread writes to the pipe and while retire() closes it: a closed pipe's
        # descriptor number may be reused at once (by a new broker socket), which must never get that byte.
        self._wake_lock = threading.Lock()
        hub = self._hub = getattr(consumer, "hub", None)
        if task.forward_thread and hub is not None:
            if task.executor is None:
                niceness = task.bulk_niceness if task.realtime_thread else 0
                task.executor = ThreadPoolExecutor(
                    max_workers=1,
                    thread_name_prefix="sift-forward",
                    initializer=lower_this_thread,  # torch's OpenMP team of this thread starts lowered too
                    initargs=(niceness,),
                )
            if task.realtime_thread and task.realtime_executor is None:
                task.realtime_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sift-realtime")
            # The forward thread wakes the event loop through a pipe the hub watches: no polling.
            self._wake_read, self._wake_write = os.pipe()
            os.set_blocking(self._wake_read, False)
            hub.add_reader(self._wake_read, self._on_forward_done)
        if task.pump is not None:
            task.pump.retire()
        task.pump = self
        # A consumer restart (lost broker connection) strands the messages held: their delivery
        # tags died with the channel, and Redis redelivers them. Forget them, and consume every lane again.
        stranded = self.gatherer.drain()
        if stranded:
            log.warning("broker connection restarted: %d held messages will be redelivered", len(stranded))
        for held in stranded:
            # Celery's wording, so a log reader sees this worker let go of each of them.
            log.warning("Task %s[%s] rejected: broker connection lost, redelivered", task.name, held.handle.task_id)
        take_left_behind = getattr(consumer, "take_unacked_left_behind", None)
        if stranded and take_left_behind is not None and take_left_behind():
            give_back(consumer, [held.handle.message.delivery_tag for held in stranded])
        if task.paused_queue is not None:
            app.amqp.queues.select_add(app.amqp.queues[task.paused_queue])
            task.paused_queue = None

    def on_message(self, message: Any, body: Any, ack: Any, reject: Any, callbacks: Any, **_: Any) -> None:
        """Celery's strategy callback for one ``sift.infer`` message."""
        # Undecodable bodies raise DecodeError here; Celery logs and acks them (nothing is keyed to answer).
        args, kwargs, _embed = message.decode() if body is None else (body.get("args"), body.get("kwargs"), None)
        handle = MessageHandle(message, ack, str(message.headers.get("id", "")), time.monotonic())
        # Celery's own log lines for a task, so logs read (and are parsed) as with the default strategy.
        log.info("Task %s[%s] received", self.task.name, handle.task_id)
        try:
            payload, unexpected = _call_arguments(args, kwargs)
            if unexpected:
                raise ValueError(f"unexpected task arguments {unexpected}")
            job = Job.model_validate(payload)
        except (ValidationError, ValueError) as err:
            self._event("task-received", handle, name=self.task.name)
            self._answer_now(handle, _envelope_errors(args, kwargs, err))
            return
        try:
            admission, units = self.gatherer.engine.admit(job)
        except Exception as err:
            log.exception("admitting job %s failed", job.job_id)
            self._event("task-received", handle, name=self.task.name)
            self._answer_now(handle, _error_results(job.job_id, job.items, job.task, ErrorCode.INFERENCE_FAILED, err))
            return
        ready = self.gatherer.add(admission, units, handle)
        if ready is None:
            self._regulate()  # starts the pass at once when the forward thread is free
        # Sent after that (a round trip to Redis): monitoring never delays a real-time item's forward pass.
        self._event("task-received", handle, name=self.task.name)
        if ready is not None:
            self._complete(ready)
            self._regulate()

    def _tick(self) -> None:
        """Timer callback: start the next forward batch (on the forward thread, or run it here)."""
        self._next = None
        report = None
        try:
            if self._threaded:
                if self._realtime_beside:
                    self._launch_realtime()
                if not self._inflight:
                    self._launch()
                if self._inflight or self._realtime:
                    self._flow_control()  # a pass in flight plans the next when it is done
                    return
            else:
                step = self.gatherer.begin_step()
                if step is not None:
                    began = time.perf_counter()
                    self.gatherer.engine.forward(step.role, step.rows)
                    report = self.gatherer.finish_step(step, time.perf_counter() - began)
        except Exception:  # noqa: BLE001 - logged with its traceback by _requeue_all
            self._requeue_all("a gathered batch failed")
        self._answer_step(report)
        self._regulate()

    @property
    def _threaded(self) -> bool:
        """Forward passes run on the forward thread (the event loop only plans them and answers)."""
        return self._wake_write >= 0 and self.task.executor is not None

    @property
    def _realtime_beside(self) -> bool:
        """Real-time passes run on the real-time thread, bulk passes on the forward thread."""
        # The real-time executor exists only where realtime_thread asked for it (see __init__).
        return self._threaded and self.task.realtime_executor is not None

    def _launch(self) -> bool:
        """Hand the next forward batch to the forward thread; False when no row is left to plan."""
        assert self.task.executor is not None
        step = self.gatherer.begin_step(Lane.BULK if self._realtime_beside else None)
        if step is None:
            return False
        self._submit(self.task.executor, self._inflight, step)
        return True

    def _launch_realtime(self) -> bool:
        """Hand waiting real-time rows to the real-time thread when it is free; True when a pass was handed over."""
        if self._realtime or self.task.realtime_executor is None:
            return False
        step = self.gatherer.begin_step(Lane.REALTIME)
        if step is None:
            return False
        self._submit(self.task.realtime_executor, self._realtime, step)
        return True

    def _submit(self, executor: ThreadPoolExecutor, passes: deque[tuple[Step, Future[float]]], step: Step) -> None:
        future = executor.submit(self._timed_forward, step)
        passes.append((step, future))
        future.add_done_callback(self._wake)

    def _timed_forward(self, step: Step) -> float:
        """On a forward thread: one pass; returns its seconds (from its start, not from when it was queued)."""
        began = time.perf_counter()
        self.gatherer.engine.forward(step.role, step.rows, realtime=step.realtime)
        return time.perf_counter() - began

    def _launch_if_due(self) -> bool:
        """Keep :data:`PASSES_AHEAD` passes with the forward thread (and, with ``realtime_thread``, waiting real-time
        rows with the real-time thread) while batches are due; True when any pass is in flight."""
        if not self._threaded or _stopping():
            return bool(self._inflight or self._realtime)
        try:
            if not self._realtime_beside:
                self._let_realtime_ahead()
            elif self.gatherer.due_in(time.monotonic()) == 0.0:
                self._launch_realtime()
            while len(self._inflight) < PASSES_AHEAD and self.gatherer.due_in(time.monotonic()) == 0.0:
                if not self._launch():
                    break
        except Exception:  # noqa: BLE001 - logged with its traceback by _requeue_all
            self._requeue_all("planning a gathered batch failed")
        return bool(self._inflight or self._realtime)

    def _let_realtime_ahead(self) -> None:
        """Take back a bulk pass that has not started when real-time rows wait: they go next instead."""
        while len(self._inflight) > 1 and not self._inflight[-1][0].realtime and self.gatherer.realtime_waiting():
            step, future = self._inflight[-1]
            if not future.cancel():  # it started meanwhile
                return
            self._inflight.pop()
            self.gatherer.cancel_step(step)

    def _wake(self, _future: Future[Any]) -> None:
        # On the forward thread: one byte makes the hub call _on_forward_done on the loop's thread.
        with self._wake_lock, contextlib.suppress(OSError):
            if self._wake_write >= 0:
                os.write(self._wake_write, b"x")

    def _on_forward_done(self) -> None:
        """Event-loop callback: the forward thread finished a pass; answer what it completed."""
        with contextlib.suppress(BlockingIOError, OSError):
            while os.read(self._wake_read, 64):
                pass
        reports: list[StepReport] = []
        for passes in (self._realtime, self._inflight):
            while passes and passes[0][1].done():
                step, future = passes.popleft()
                if future.cancelled():
                    continue
                try:
                    reports.append(self.gatherer.finish_step(step, future.result()))
                except Exception:  # noqa: BLE001 - logged with its traceback by _requeue_all
                    self._requeue_all("a gathered batch failed")
        # The next passes are handed over before these messages are written and acked: the device computes while
        # the loop serializes results and talks to Redis, instead of waiting for it.
        self._launch_if_due()
        for report in reports:
            self._answer_step(report)
        self._regulate()

    def _answer_step(self, report: StepReport | None) -> None:
        """Count a finished pass, and write and ack the messages it completed."""
        if report is not None:
            log.debug(
                "batch %s: %d items, %d rows, %d padded tokens, %.1f ms",
                report.role,
                report.items,
                report.rows,
                report.padded_tokens,
                report.seconds * 1000,
            )
            self.metrics.record_batch(report.role, report.rows, report.padded_tokens, report.seconds)
            for held in report.completed:
                self._complete(held)

    def _requeue_all(self, why: str) -> None:
        # forward() isolates model errors per item; anything reaching here is a bug. Requeue rather than lose.
        log.exception("%s; requeueing the messages held", why)
        self._cancel_queued_passes()
        for held in self.gatherer.drain():
            self._requeue(held.handle)

    def retire(self) -> None:
        """Stop listening for the forward thread (a consumer restart replaced this pump)."""
        if self._wake_read >= 0:
            with contextlib.suppress(Exception):
                if self._hub is not None:
                    self._hub.remove_reader(self._wake_read)
            with self._wake_lock:
                for fd in (self._wake_read, self._wake_write):
                    with contextlib.suppress(OSError):
                        os.close(fd)
                self._wake_read = self._wake_write = -1
        self._cancel_next()
        self._cancel_queued_passes()

    def _cancel_queued_passes(self) -> None:
        """Take back the passes handed over that have not started (the one running finishes, then is ignored)."""
        for step, future in list(self._inflight)[1:]:
            if future.cancel():
                self._inflight.remove((step, future))
        for step, future in list(self._realtime):
            if future.cancel():
                self._realtime.remove((step, future))

    def _regulate(self) -> None:
        """Schedule the next step when it is due, and pause or resume the bulk lane."""
        if _stopping():
            # Shutting down: start nothing new; kombu gives the held messages back to their queues.
            self._cancel_next()
            return
        if self._launch_if_due():
            # Passes are with the forward thread (the first of them plans the next when done): no timer, so an
            # item that finds the device idle starts its pass at once.
            self._cancel_next()
            self._flow_control()
            return
        due = self.gatherer.due_in(time.monotonic())
        if due is None:
            self._cancel_next()
        else:
            # Never 0 (passes on the loop's thread): kombu's hub fires every timer already due (up to 20) before
            # it polls the sockets again, so back-to-back steps would keep new (real-time) messages unread.
            due = max(due, MIN_STEP_GAP_S)
            at = time.monotonic() + due
            if self._next is None or at < self._next_at - 0.0005:
                self._cancel_next()
                self._next = self.timer.call_after(due, self._tick)
                self._next_at = at
        self._flow_control()

    def _flow_control(self) -> None:
        queue = self.task.bulk_queue
        if queue is None:
            return
        enough = self.gatherer.holds_enough_bulk()
        if enough and self.task.paused_queue is None:
            self.consumer.cancel_task_queue(queue)
            self.task.paused_queue = queue
        elif not enough and self.task.paused_queue is not None:
            self.task.paused_queue = None
            self.consumer.add_task_queue(queue)

    def _cancel_next(self) -> None:
        if self._next is not None:
            self._next.cancel()  # type: ignore[no-untyped-call]
            self._next = None

    def _complete(self, held: Held) -> None:
        self._answer_now(held.handle, self.gatherer.engine.results(held.admission), held.admission.job)

    def _answer_now(self, handle: MessageHandle, results: list[ItemResult], job: Job | None = None) -> None:
        """Write ``results`` (and dead letters), then ack; if the store stays down, requeue."""
        written = 0
        if results:
            try:
                written = write_with_retry(self.store, results[0].job_id, results)
            except Reject:
                self._requeue(handle)
                return
            self._record(results, job)
            if job is not None:
                # After the results: a letter without its error result would be worse than none.
                self.dead_letters.push(dead_letters_of(job, results))
        runtime = time.monotonic() - handle.received
        summary = {"items": len(results), "written": written}
        # Logged before the ack, as Celery does (its pool logs success, then the consumer acks): a log that
        # ends without this line means the message was never acked, so the broker still holds it.
        log.info("Task %s[%s] succeeded in %.3fs: %r", self.task.name, handle.task_id, runtime, summary)
        # Ack now, not through Celery's call_soon promise: a warm shutdown may stop the loop before
        # a deferred ack runs, and a message whose results are written would be delivered again.
        handle.message.ack_log_error(log, self.consumer.connection_errors)
        self._event("task-succeeded", handle, result=f"{len(results)} items", runtime=runtime)

    def _record(self, results: list[ItemResult], job: Job | None) -> None:
        """Count a message's written results; its end-to-end time runs from its enqueue to now."""
        codes = [result.error.code.value if result.error is not None else None for result in results]
        if job is not None:
            self.metrics.record_results(job.task, job.lane.value, codes, time.time() - job.enqueued_at)
        else:  # an invalid envelope: its items count, but it has no trustworthy enqueue time or lane
            self.metrics.record_results(results[0].task, "unknown", codes, None)

    def _requeue(self, handle: MessageHandle) -> None:
        log.warning("Task %s[%s] rejected: requeued, its items will be computed again", self.task.name, handle.task_id)
        try:
            handle.message.reject(requeue=True)
        except Exception:  # noqa: BLE001 - the broker is gone: Redis redelivers unacked messages anyway
            log.warning("could not requeue message %s; Redis will redeliver it", handle.task_id)

    def _event(self, kind: str, handle: MessageHandle, **fields: Any) -> None:
        # Flower and `celery events` follow tasks through these events.
        if self.eventer is None or not self.eventer.enabled:
            return
        try:
            self.eventer.send(kind, uuid=handle.task_id, **fields)
        except Exception:  # monitoring must never cost a message
            log.debug("could not send %s event", kind, exc_info=True)


def _stopping() -> bool:
    """Celery is shutting this worker down (its own test: the exit code 0 counts, None and False do not)."""
    flags = (worker_state.should_stop, worker_state.should_terminate)
    return any(flag is not None and flag is not False for flag in flags)


def _call_arguments(args: Any, kwargs: Any) -> tuple[Any, list[str]]:
    """The ``job`` argument of ``sift.infer(job)``, and the names of any other arguments given."""
    args = list(args) if isinstance(args, list | tuple) else []
    kwargs = dict(kwargs) if isinstance(kwargs, dict) else {}
    job = args[0] if args else kwargs.pop("job", None)
    unexpected = [f"positional #{i}" for i in range(1, len(args))] + sorted(str(k) for k in kwargs)
    return job, unexpected


def _results_now(gatherer: Gatherer, payload: Any, unexpected: dict[str, Any]) -> list[ItemResult]:
    """A job run start to finish outside the event loop."""
    try:
        if unexpected:
            raise ValueError(f"unexpected task arguments {sorted(unexpected)}")
        job = Job.model_validate(payload)
    except (ValidationError, ValueError) as err:
        return _envelope_errors([payload], {}, err)
    return gatherer.engine.run(job)


def _envelope_errors(args: Any, kwargs: Any, err: Exception) -> list[ItemResult]:
    """Per-item errors for a message whose envelope is wrong, where its items can be keyed; else none."""
    payload, _ = _call_arguments(args, kwargs)
    message = describe_validation_error(err).message if isinstance(err, ValidationError) else str(err)
    job_id = payload.get("job_id") if isinstance(payload, dict) else None
    items = payload.get("items") if isinstance(payload, dict) else None
    if not isinstance(job_id, str) or not isinstance(items, list) or not _safe_job_id(job_id):
        log.error("dropping a message with no usable job_id or items: %s", message)
        return []
    task = printable(payload["task"]) if isinstance(payload.get("task"), str) else "unknown"
    return _error_results(job_id, items, task, ErrorCode.INVALID_INPUT, f"invalid job message: {message}")


def _error_results(job_id: str, items: list[Any], task: str, code: ErrorCode, err: Any) -> list[ItemResult]:
    error = ErrorInfo(code=code, message=str(err))
    return [
        ItemResult(job_id=job_id, id=item_key(raw, i), task=printable(task), error=error) for i, raw in enumerate(items)
    ]


def _safe_job_id(job_id: str) -> bool:
    return 0 < len(job_id) <= 128 and all(c.isalnum() or c in "._:-" for c in job_id)
