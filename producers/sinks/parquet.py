"""Parquet output: a typed column per result field, written a row group at a time.

Rows are buffered until a row group is full (``row_group_size``) and then written, so memory
stays flat however many results stream through. The file is written as ``<name>.partial``
and renamed to ``<name>`` only when the backfill completes: an interrupted or failed run
leaves an earlier complete file untouched, next to a readable ``.partial`` holding what the
interrupted run had received (unless the process was killed outright: then the ``.partial``
lacks its footer and is unreadable; the earlier file is still intact). Running the backfill
again writes the whole job anew, from the results Redis still holds and those it computes.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from producers.sinks.base import ResultSink, SinkError
from sift.contract import ErrorInfo, ItemResult
from sift.contract.results import CategoryScore, LabelScore, Moderation, RankedDocument, Timings

DEFAULT_ROW_GROUP_SIZE = 50_000
"""Rows per row group: large enough for fast scans, small enough to hold in memory (about 15 MB of Arrow)."""

PARTIAL_SUFFIX = ".partial"

SCHEMA = pa.schema(
    [
        pa.field("schema_version", pa.int16(), nullable=False),
        pa.field("job_id", pa.string(), nullable=False),
        pa.field("id", pa.string(), nullable=False),
        pa.field("task", pa.string(), nullable=False),
        pa.field("model", pa.string()),
        pa.field("model_source", pa.string()),
        pa.field("revision", pa.string()),
        pa.field("label", pa.string()),
        pa.field("score", pa.float64()),  # the top label's score, for filtering without unnesting
        pa.field("labels", pa.list_(pa.string()), nullable=False),
        pa.field("scores", pa.list_(pa.float64()), nullable=False),
        pa.field("ranking", pa.list_(pa.struct([("index", pa.int32()), ("score", pa.float64())]))),
        pa.field("verdict", pa.string()),
        pa.field("moderation_policy", pa.string()),
        pa.field("moderation_policy_version", pa.int32()),
        pa.field("flagged", pa.list_(pa.string())),
        pa.field(
            "categories",
            pa.list_(
                pa.struct(
                    [
                        ("category", pa.string()),
                        ("score", pa.float64()),
                        ("threshold", pa.float64()),
                        ("flagged", pa.bool_()),
                    ]
                )
            ),
        ),
        pa.field("truncated", pa.bool_(), nullable=False),
        pa.field("queued_ms", pa.float64()),
        pa.field("inference_ms", pa.float64()),
        pa.field("worker", pa.string()),
        pa.field("error_code", pa.string()),
        pa.field("error_message", pa.string()),
    ]
)
"""One row per result. ``labels``/``scores`` are parallel lists, best first; a null ``inference_ms``
means the result has no timings, a null ``verdict`` no moderation, a null ``error_code`` a success."""


class ParquetSink(ResultSink):
    """Writes results to a Parquet file of :data:`SCHEMA`, one row group per ``row_group_size`` rows."""

    def __init__(self, path: Path, *, row_group_size: int = DEFAULT_ROW_GROUP_SIZE) -> None:
        if row_group_size < 1:
            raise ValueError("row_group_size must be at least 1")
        if path.is_dir():
            raise SinkError(f"cannot write {path}: it is a directory")
        self.path = path
        self.partial = partial_path(path)
        self.description = str(path)
        self.row_group_size = row_group_size
        self.rows = 0
        """Results received so far."""
        # Batches are converted to Arrow as they come (columnar: a few hundred bytes a row) and
        # written out a row group at a time.
        self._pending: list[pa.RecordBatch] = []
        self._pending_rows = 0
        self._closed = False
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._writer = pq.ParquetWriter(str(self.partial), SCHEMA)
        except (OSError, pa.ArrowException) as err:
            raise SinkError(f"cannot write {self.partial}: {err}") from err

    def write(self, results: Sequence[ItemResult]) -> None:
        """Add the batch; write out every row group that is full."""
        if not results:
            return
        self._pending.append(pa.RecordBatch.from_pylist([to_row(result) for result in results], schema=SCHEMA))
        self._pending_rows += len(results)
        self.rows += len(results)
        if self._pending_rows >= self.row_group_size:
            self._write_pending(whole_groups_only=True)

    def close(self) -> None:
        """Write the last row group, finish the file and put it in place of any earlier one."""
        if self._finish():
            os.replace(self.partial, self.path)

    def abort(self) -> None:
        """Finish the ``.partial`` file with what was received (or remove it: nothing was); leave the target."""
        if self._finish() and self.rows == 0:
            self.partial.unlink(missing_ok=True)

    def _finish(self) -> bool:
        """Write what is pending and close the writer; False when that was done before."""
        if self._closed:
            return False
        self._closed = True
        try:
            self._write_pending(whole_groups_only=False)
        finally:
            self._writer.close()
        return True

    def _write_pending(self, *, whole_groups_only: bool) -> None:
        pending = pa.Table.from_batches(self._pending, schema=SCHEMA)
        size = self.row_group_size
        count = pending.num_rows // size * size if whole_groups_only else pending.num_rows
        try:
            if count:
                self._writer.write_table(pending.slice(0, count), row_group_size=size)
        except (OSError, pa.ArrowException) as err:
            raise SinkError(f"cannot write {self.partial}: {err}") from err
        rest = pending.slice(count)
        self._pending, self._pending_rows = rest.to_batches(), rest.num_rows


def partial_path(path: Path) -> Path:
    """Where a Parquet file is written until it is complete."""
    return path.with_name(path.name + PARTIAL_SUFFIX)


def read_results(path: Path, *, batch_size: int = 10_000) -> Iterator[ItemResult]:
    """The results of a Parquet file written by :class:`ParquetSink`, read a batch at a time."""
    for batch in pq.ParquetFile(str(path)).iter_batches(batch_size=batch_size):
        for row in batch.to_pylist():
            yield from_row(row)


def to_row(result: ItemResult) -> dict[str, Any]:
    """A result as a row of :data:`SCHEMA`."""
    moderation, timings, error = result.moderation, result.timings, result.error
    return {
        "schema_version": result.schema_version,
        "job_id": result.job_id,
        "id": result.id,
        "task": result.task,
        "model": result.model,
        "model_source": result.model_source,
        "revision": result.revision,
        "label": result.label,
        "score": result.scores[0].score if result.scores else None,
        "labels": [entry.label for entry in result.scores],
        "scores": [entry.score for entry in result.scores],
        "ranking": None if result.ranking is None else [doc.model_dump() for doc in result.ranking],
        "verdict": None if moderation is None else moderation.verdict,
        "moderation_policy": None if moderation is None else moderation.policy,
        "moderation_policy_version": None if moderation is None else moderation.policy_version,
        "flagged": None if moderation is None else moderation.flagged,
        "categories": None if moderation is None else [c.model_dump() for c in moderation.categories],
        "truncated": result.truncated,
        "queued_ms": None if timings is None else timings.queued_ms,
        "inference_ms": None if timings is None else timings.inference_ms,
        "worker": result.worker,
        "error_code": None if error is None else error.code.value,
        "error_message": None if error is None else error.message,
    }


def from_row(row: dict[str, Any]) -> ItemResult:
    """The result a row of :data:`SCHEMA` was made from."""
    moderation = None
    if row["verdict"] is not None:
        moderation = Moderation(
            policy=row["moderation_policy"],
            policy_version=row["moderation_policy_version"],
            categories=[CategoryScore(**c) for c in row["categories"]],
            flagged=row["flagged"],
            verdict=row["verdict"],
        )
    return ItemResult(
        schema_version=row["schema_version"],
        job_id=row["job_id"],
        id=row["id"],
        task=row["task"],
        model=row["model"],
        model_source=row["model_source"],
        revision=row["revision"],
        label=row["label"],
        scores=[LabelScore(label=name, score=score) for name, score in zip(row["labels"], row["scores"], strict=True)],
        ranking=None if row["ranking"] is None else [RankedDocument(**doc) for doc in row["ranking"]],
        moderation=moderation,
        truncated=row["truncated"],
        timings=None
        if row["inference_ms"] is None
        else Timings(queued_ms=row["queued_ms"], inference_ms=row["inference_ms"]),
        worker=row["worker"],
        error=None if row["error_code"] is None else ErrorInfo(code=row["error_code"], message=row["error_message"]),
    )
