"""``sift backfill``: a JSONL file in, one result per input line out, to JSONL, Parquet or PostgreSQL.

Bad lines (not JSON, not an object, duplicate or unusable id) get an error result
like any other item, so the output always has exactly one result per input line
(in PostgreSQL, one row per item id: a repeated id's error does not replace its result).
The job id is derived from the file, task and model: running the same command
again skips items whose results are already stored in Redis, and writes every
result of the job to the output again (files are rewritten, database rows upserted).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from producers.client import SiftClient
from producers.sinks import ResultSink, open_sink
from sift.contract import ErrorCode, ErrorInfo, ItemResult, TaskName, parse_task
from sift.contract.items import usable_id


@dataclass
class BackfillSummary:
    """What a backfill did, for the closing table."""

    job_id: str
    task: str
    lines: int = 0
    submitted: int = 0
    already_done: int = 0
    seconds: float = 0.0
    labels: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    models: Counter[str] = field(default_factory=Counter)

    @property
    def results(self) -> int:
        """Output lines written."""
        return sum(self.labels.values()) + sum(self.errors.values())

    @property
    def items_per_s(self) -> float:
        """Results per second of wall time, submission included."""
        return self.results / self.seconds if self.seconds > 0 else 0.0


def backfill_job_id(path: Path, task: TaskName, model: str | None) -> str:
    """Stable id for (file, size, task, model), so a re-run resumes the same job."""
    resolved = path.resolve()
    key = f"{resolved}|{resolved.stat().st_size}|{task.value}|{model or ''}"
    return "bf-" + hashlib.sha256(key.encode()).hexdigest()[:24]


DEFAULT_BATCH_SIZE = 1000
"""Results handed to the sink at once, at most."""
DEFAULT_FLUSH_INTERVAL_S = 1.0
"""Longest a received result waits before it is handed to the sink (checked as results arrive)."""


def run_backfill(
    client: SiftClient,
    in_path: Path,
    out: ResultSink | Path | str,
    task: str,
    *,
    model: str | None = None,
    job_id: str | None = None,
    idle_timeout_s: float = 300.0,
    show_progress: bool = True,
    console: Console | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> BackfillSummary:
    """Submit every line of ``in_path`` and write each result to ``out`` as it completes.

    ``out``: an open :class:`~producers.sinks.ResultSink`, which the caller closes (so it can be
    opened, and checked, before anything is submitted), or a target for
    :func:`~producers.sinks.open_sink`, opened and closed here. ``console``: where the progress
    bars go (default: standard output).
    """
    task_name = parse_task(task)
    job = job_id or backfill_job_id(in_path, task_name, model)
    summary = BackfillSummary(job_id=job, task=task_name.value)
    started = time.perf_counter()
    with ExitStack() as stack:
        # A sink opened here is closed here: completed when the run completes, aborted when it fails.
        sink = out if isinstance(out, ResultSink) else stack.enter_context(open_sink(out))
        progress = stack.enter_context(_progress(show_progress, console))
        done = set(client.store.stored_ids(job))
        summary.already_done = len(done)
        lines = _LineReader(in_path, job, task_name, done)
        submitting = progress.add_task("submitting", total=None)
        handle = client.submit_many(task_name, lines.items(progress, submitting), model=model, job_id=job)
        client.store.write(job, lines.bad_lines)
        summary.lines, summary.submitted = lines.count, handle.submitted
        expected = lines.unique_ids
        collecting = progress.add_task("results", total=expected)
        batches = _Batches(sink, summary, batch_size)
        try:
            for result in client.iter_results(job, expected=expected, idle_timeout_s=idle_timeout_s):
                batches.add(result)
                progress.advance(collecting)
            # Repeated ids last: a sink keyed by item id then keeps the item's own result, not this error.
            rejected = (r for r in handle.rejected if r.error and r.error.code == ErrorCode.DUPLICATE_ID)
            for result in [*lines.duplicates, *rejected]:
                batches.add(result)
        finally:
            batches.flush()  # what arrived before a failure or an interruption still reaches the sink
    summary.seconds = time.perf_counter() - started
    return summary


class _Batches:
    """Results on their way to the sink: handed over ``size`` at a time, or after a second at most."""

    def __init__(self, sink: ResultSink, summary: BackfillSummary, size: int) -> None:
        if size < 1:
            raise ValueError("batch_size must be at least 1")
        self.sink, self.summary, self.size = sink, summary, size
        self.pending: list[ItemResult] = []
        self.last_flush = time.monotonic()

    def add(self, result: ItemResult) -> None:
        self.pending.append(result)
        _count(result, self.summary)
        if len(self.pending) >= self.size or time.monotonic() - self.last_flush >= DEFAULT_FLUSH_INTERVAL_S:
            self.flush()

    def flush(self) -> None:
        # Taken before writing, so a batch the sink refused is not offered to it a second time.
        batch, self.pending = self.pending, []
        self.last_flush = time.monotonic()
        if batch:
            self.sink.write(batch)


class _LineReader:
    """Streams items from a JSONL file, setting aside lines that cannot become items."""

    def __init__(self, path: Path, job_id: str, task: TaskName, done: set[str]) -> None:
        self.path, self.job_id, self.task, self.done = path, job_id, task, done
        self.count = 0
        self.unique_ids = 0
        self.seen: set[str] = set()
        self.bad_lines: list[ItemResult] = []
        self.duplicates: list[ItemResult] = []

    def items(self, progress: Progress, task_id: Any) -> Iterator[dict[str, Any]]:
        with self.path.open("rb") as lines:
            for number, raw_line in enumerate(lines, start=1):
                self.count = number
                progress.advance(task_id)
                item = self._item(number, raw_line)
                if item is not None:
                    yield item

    def _item(self, number: int, raw_line: bytes) -> dict[str, Any] | None:
        fallback_id = f"line-{number}"
        try:
            value = json.loads(raw_line.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
            return self._bad(fallback_id, ErrorCode.INVALID_JSON, f"line {number} is not valid JSON: {err}")
        if not isinstance(value, dict):
            return self._bad(
                fallback_id,
                ErrorCode.INVALID_JSON,
                f"line {number} is a JSON {type(value).__name__}, expected an object",
            )
        # Integer ids (common in exports) become strings, as the wire contract wants.
        item_id = usable_id(value.get("id", fallback_id))
        if item_id is None:
            return self._bad(
                fallback_id,
                ErrorCode.INVALID_INPUT,
                f"line {number}: id must be an integer or a string of 1-256 characters of valid UTF-8",
            )
        if item_id in self.seen:
            error = ErrorInfo(code=ErrorCode.DUPLICATE_ID, message=f"line {number}: id {item_id!r} was used earlier")
            self.duplicates.append(ItemResult(job_id=self.job_id, id=item_id, task=self.task.value, error=error))
            return None
        self.seen.add(item_id)
        self.unique_ids += 1
        if item_id in self.done:
            return None
        return {**value, "id": item_id}

    def _bad(self, item_id: str, code: ErrorCode, message: str) -> dict[str, Any] | None:
        """Record an error result for a line that cannot become an item; it yields no item."""
        if item_id not in self.seen:
            self.seen.add(item_id)
            self.unique_ids += 1
            if item_id not in self.done:
                error = ErrorInfo(code=code, message=message)
                self.bad_lines.append(ItemResult(job_id=self.job_id, id=item_id, task=self.task.value, error=error))
        return None


def _count(result: ItemResult, summary: BackfillSummary) -> None:
    if result.error is not None:
        summary.errors[result.error.code] += 1
    else:
        summary.labels[result.label or "(ranked)"] += 1
        summary.models[f"{result.model} ({result.model_source})"] += 1


def _progress(enabled: bool, console: Console | None) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not enabled,
        transient=False,
    )
