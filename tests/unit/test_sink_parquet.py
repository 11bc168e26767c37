"""The Parquet sink: a typed, lossless schema, row groups as results stream in, and a safe resume."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from producers.sinks import SinkError
from producers.sinks.parquet import SCHEMA, ParquetSink, partial_path, read_results, to_row
from sift.contract import ErrorCode, ErrorInfo, ItemResult
from sift.contract.results import CategoryScore, LabelScore, Moderation, RankedDocument, Timings

CLASSIFIED = ItemResult(
    job_id="bf-1",
    id="a-1",
    task="classify",
    model="sentiment",
    model_source="distilbert/distilbert-base-uncased-finetuned-sst-2-english",
    revision="714eb0f",
    label="NEGATIVE",
    scores=[LabelScore(label="NEGATIVE", score=0.875), LabelScore(label="POSITIVE", score=0.125)],
    truncated=True,
    timings=Timings(queued_ms=12.5, inference_ms=3.25),
    worker="sift-cpu-1@host",
)
RERANKED = ItemResult(
    job_id="bf-1",
    id="ünïcode ✓ \x00 id",
    task="rerank",
    model="reranker",
    ranking=[RankedDocument(index=2, score=7.5), RankedDocument(index=0, score=-1.0)],
    timings=Timings(inference_ms=0.0),
)
NOTHING_TO_RANK = ItemResult(job_id="bf-1", id="r-0", task="rerank", ranking=[])
MODERATED = ItemResult(
    job_id="bf-1",
    id="m-1",
    task="moderate",
    label="flag",
    scores=[LabelScore(label="harassment", score=0.93)],
    moderation=Moderation(
        policy="default",
        policy_version=3,
        categories=[
            CategoryScore(category="harassment", score=0.93, threshold=0.5, flagged=True),
            CategoryScore(category="spam", score=0.01, threshold=0.7, flagged=False),
        ],
        flagged=["harassment"],
        verdict="flag",
    ),
)
FAILED = ItemResult(
    job_id="bf-1",
    id="line-7",
    task="classify",
    error=ErrorInfo(code=ErrorCode.INVALID_JSON, message="line 7 is not valid JSON: Expecting value"),
)
EVERY_SHAPE = [CLASSIFIED, RERANKED, NOTHING_TO_RANK, MODERATED, FAILED]


def test_every_field_of_a_result_has_a_column() -> None:
    columns = set(SCHEMA.names)
    # A new ItemResult field must get a column (and a line in to_row/from_row), or Parquet would drop it.
    flattened = {"scores": "labels", "moderation": "verdict", "timings": "inference_ms", "error": "error_code"}
    for field in ItemResult.model_fields:
        assert flattened.get(field, field) in columns, f"ItemResult.{field} has no Parquet column"
    assert set(to_row(CLASSIFIED)) == columns


def test_every_kind_of_result_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "out.parquet"

    with ParquetSink(path) as sink:
        sink.write(EVERY_SHAPE)

    assert list(read_results(path)) == EVERY_SHAPE
    assert pq.read_schema(path).equals(SCHEMA)


def test_columns_are_typed_for_queries_without_unnesting(tmp_path: Path) -> None:
    path = tmp_path / "out.parquet"
    with ParquetSink(path) as sink:
        sink.write(EVERY_SHAPE)

    table = pq.read_table(path)

    assert table.schema.field("score").type == pa.float64()
    assert table.column("score").to_pylist() == [0.875, None, None, 0.93, None]
    assert table.column("labels").to_pylist()[0] == ["NEGATIVE", "POSITIVE"]
    assert table.column("verdict").to_pylist() == [None, None, None, "flag", None]
    assert table.column("error_code").to_pylist() == [None, None, None, None, "invalid_json"]
    assert table.column("truncated").to_pylist() == [True, False, False, False, False]
    assert table.column("inference_ms").to_pylist() == [3.25, 0.0, None, None, None]


def test_results_are_written_in_row_groups_as_they_stream_in(tmp_path: Path) -> None:
    path = tmp_path / "out.parquet"
    sink = ParquetSink(path, row_group_size=10)

    for start in range(0, 25, 3):  # batches of 3 do not line up with groups of 10
        sink.write([CLASSIFIED.model_copy(update={"id": str(n)}) for n in range(start, min(start + 3, 25))])
    sink.close()

    meta = pq.ParquetFile(path).metadata
    assert [meta.row_group(g).num_rows for g in range(meta.num_row_groups)] == [10, 10, 5]
    assert [r.id for r in read_results(path)] == [str(n) for n in range(25)]


def test_memory_stays_flat_however_many_rows_go_through(tmp_path: Path) -> None:
    path = tmp_path / "big.parquet"
    batch = [CLASSIFIED.model_copy(update={"id": f"item-{n}"}) for n in range(500)]
    python_bytes: list[int] = []
    arrow_bytes: list[int] = []

    tracemalloc.start()
    try:
        with ParquetSink(path, row_group_size=2_000) as sink:
            for _ in range(120):  # 60,000 rows in 30 row groups
                sink.write(batch)
                python_bytes.append(tracemalloc.get_traced_memory()[0])
                arrow_bytes.append(pa.total_allocated_bytes())
    finally:
        tracemalloc.stop()

    assert pq.ParquetFile(path).metadata.num_rows == 60_000
    for name, sizes in (("Python", python_bytes), ("Arrow", arrow_bytes)):
        early, late = max(sizes[:12]), max(sizes[-12:])
        assert late <= early * 1.5 + 1_000_000, f"{name} memory grew from {early:,} to {late:,} bytes"


def test_the_file_appears_only_when_the_run_completes(tmp_path: Path) -> None:
    path = tmp_path / "out.parquet"

    sink = ParquetSink(path)
    sink.write(EVERY_SHAPE)
    assert not path.exists() and partial_path(path).exists()
    sink.close()

    assert path.exists() and not partial_path(path).exists()
    assert pq.ParquetFile(path).metadata.num_rows == len(EVERY_SHAPE)


def test_an_interrupted_run_leaves_the_earlier_file_and_a_readable_partial(tmp_path: Path) -> None:
    path = tmp_path / "out.parquet"
    with ParquetSink(path) as first:
        first.write(EVERY_SHAPE)

    with pytest.raises(KeyboardInterrupt), ParquetSink(path) as second:
        second.write([FAILED])
        raise KeyboardInterrupt

    assert list(read_results(path)) == EVERY_SHAPE, "the earlier file is untouched"
    assert list(read_results(partial_path(path))) == [FAILED], "the interrupted run's rows, readable"


def test_a_run_that_fails_before_any_result_leaves_no_partial(tmp_path: Path) -> None:
    path = tmp_path / "out.parquet"

    with pytest.raises(TimeoutError), ParquetSink(path):
        raise TimeoutError("no worker")

    assert not path.exists() and not partial_path(path).exists()


def test_a_completed_run_without_results_writes_an_empty_file_of_the_schema(tmp_path: Path) -> None:
    path = tmp_path / "out.parquet"

    ParquetSink(path).close()

    assert pq.read_table(path).num_rows == 0
    assert pq.read_schema(path).equals(SCHEMA)


def test_a_path_that_cannot_be_written_fails_when_opened(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    (tmp_path / "dir.parquet").mkdir()

    with pytest.raises(SinkError, match="cannot write"):
        ParquetSink(tmp_path / "a-file" / "out.parquet")
    with pytest.raises(SinkError, match="is a directory"):
        ParquetSink(tmp_path / "dir.parquet")
