"""The JSON Lines sink: one line per result, flushed per batch, an earlier file kept until results arrive."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from producers.sinks import SinkError
from producers.sinks.jsonl import JsonlSink
from sift.contract import ErrorCode, ErrorInfo, ItemResult

RESULTS = [
    ItemResult(job_id="j", id="1", task="classify", label="POSITIVE"),
    ItemResult(job_id="j", id="2", task="classify", error=ErrorInfo(code=ErrorCode.INVALID_INPUT, message="empty")),
]


def lines(path: Path) -> list[ItemResult]:
    return [ItemResult.model_validate_json(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_each_batch_is_on_disk_as_soon_as_it_is_written(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "out.jsonl"
    sink = JsonlSink(path)

    sink.write(RESULTS[:1])
    assert lines(path) == RESULTS[:1], "flushed before close"
    sink.write(RESULTS[1:])
    sink.close()

    assert lines(path) == RESULTS
    assert "null" not in path.read_text(), "absent fields are left out, as the store writes them"


def test_a_new_run_replaces_the_earlier_file_once_results_arrive(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    path.write_text("earlier\n")

    with JsonlSink(path) as sink:
        assert path.read_text() == "earlier\n", "opening empties nothing"
        sink.write(RESULTS[1:])

    assert lines(path) == RESULTS[1:]


def test_a_run_that_fails_before_its_first_result_keeps_the_earlier_file(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    path.write_text(RESULTS[0].model_dump_json() + "\n")

    with pytest.raises(ConnectionError), JsonlSink(path):
        raise ConnectionError("Redis went away")

    assert lines(path) == RESULTS[:1]


def test_a_run_interrupted_after_some_results_keeps_them(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"

    with pytest.raises(KeyboardInterrupt), JsonlSink(path) as sink:
        sink.write(RESULTS[:1])
        raise KeyboardInterrupt

    assert lines(path) == RESULTS[:1]


def test_a_completed_run_without_results_leaves_an_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    path.write_text("earlier\n")

    JsonlSink(path).close()

    assert path.read_text() == ""


def test_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    with JsonlSink(None) as sink:
        sink.write(RESULTS)

    assert [json.loads(line)["id"] for line in capsys.readouterr().out.splitlines()] == ["1", "2"]
    assert sink.description == "stdout"


def test_a_path_that_cannot_be_written_fails_when_opened(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")

    with pytest.raises(SinkError, match="cannot write"):
        JsonlSink(tmp_path / "a-file" / "out.jsonl")
    with pytest.raises(SinkError, match="cannot write"):
        JsonlSink(tmp_path)
