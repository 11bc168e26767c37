"""The ``sift`` command as a user runs it: a subprocess, settings from SIFT_* environment variables."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis
from sift_it_helpers import EXAMPLES, cli_env, run_sift, squash

from producers.backfill import backfill_job_id
from sift.contract import ErrorCode, TaskName
from sift.keys import done_stream_key, results_key
from sift.local import WorkerProcess
from sift.settings import SiftSettings

pytestmark = pytest.mark.integration

BAD_INPUT = EXAMPLES / "bad_input.jsonl"


@pytest.fixture(scope="module")
def env(settings: SiftSettings, worker: WorkerProcess) -> dict[str, str]:
    assert settings.redis_url and settings.registry
    return cli_env(redis_url=settings.redis_url, registry=str(settings.registry), queue_prefix=settings.queue_prefix)


@pytest.mark.timeout(90)
def test_submit_prints_the_result_as_json(env: dict[str, str], worker: WorkerProcess, id2label) -> None:
    done = run_sift(["submit", "--task", "classify", "--text", "hello"], env)

    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["task"] == "classify"
    assert result["label"] in id2label("sentiment")
    assert result["worker"] == worker.hostname
    assert "error" not in result


@pytest.mark.timeout(60)
def test_submit_with_empty_text_fails_clearly(env: dict[str, str]) -> None:
    done = run_sift(["submit", "--task", "classify", "--text", ""], env)

    assert done.returncode != 0
    assert done.stdout == ""
    message = squash(done.stderr)
    assert message.startswith("error:"), done.stderr
    assert "text" in message and "empty" in message
    assert "Traceback" not in done.stderr


@pytest.mark.timeout(60)
def test_submit_without_redis_url_fails_clearly() -> None:
    done = run_sift(["submit", "--task", "classify", "--text", "hello"], cli_env())

    assert done.returncode == 2
    assert "SIFT_REDIS_URL" in done.stderr
    assert "Traceback" not in done.stderr


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.mark.timeout(150)
def test_backfill_bad_input_then_resume(
    env: dict[str, str], settings: SiftSettings, raw_redis: redis.Redis, tmp_path: Path, id2label
) -> None:
    input_lines = BAD_INPUT.read_bytes().splitlines()
    assert len(input_lines) == 20
    out = tmp_path / "bad_input.results.jsonl"
    args = ["backfill", str(BAD_INPUT.relative_to(BAD_INPUT.parents[1])), "--task", "classify"]
    args += ["--out", str(out), "--no-progress"]
    job_id = backfill_job_id(BAD_INPUT, TaskName.CLASSIFY, None)
    assert raw_redis.hlen(results_key(settings.queue_prefix, job_id)) == 0, "a fresh job"

    first = run_sift(args, env)

    assert first.returncode == 0, first.stderr
    results = read_lines(out)
    assert len(results) == len(input_lines)
    assert all(r.get("id") and r["job_id"] == job_id for r in results)
    by_id: dict[str, list[dict]] = {}
    for r in results:
        by_id.setdefault(r["id"], []).append(r)

    def code(item_id: str) -> str | None:
        [result] = by_id[item_id]
        return result.get("error", {}).get("code")

    assert code("line-10") == ErrorCode.INVALID_JSON  # "this is not json"
    assert code("line-11") == ErrorCode.INVALID_JSON  # a JSON array
    assert sorted(r.get("error", {}).get("code", "ok") for r in by_id["b-0001"]) == [ErrorCode.DUPLICATE_ID, "ok"]
    assert code("b-0017") == ErrorCode.TOO_LARGE  # 20,000 bytes
    for empty_or_wrong in ("b-0002", "b-0004", "b-0005", "b-0006", "b-0008", "b-0009", "b-0016"):
        assert code(empty_or_wrong) == ErrorCode.INVALID_INPUT, empty_or_wrong
    valid = ["b-0003", "b-0007", "b-0012", "17", "line-15", "b-0018", "b-0019", "b-0020"]
    labels = set(id2label("sentiment"))
    for item_id in valid:
        [result] = by_id[item_id]
        assert "error" not in result and result["label"] in labels, result
    assert len(by_id) == 19  # b-0001 twice

    summary = squash(first.stdout)
    assert "label / error" in summary
    assert "error: invalid_json" in summary and "error: too_large" in summary and "error: duplicate_id" in summary
    assert "20 lines, 9 submitted;" in summary
    assert "already done" not in summary

    store_key = results_key(settings.queue_prefix, job_id)
    stored_before = raw_redis.hgetall(store_key)
    done_before = raw_redis.xlen(done_stream_key(settings.queue_prefix, job_id))
    assert len(stored_before) == 19 and done_before == 19

    second = run_sift(args, env)

    assert second.returncode == 0, second.stderr
    resumed = read_lines(out)
    assert len(resumed) == len(input_lines)
    assert sorted(json.dumps(r, sort_keys=True) for r in resumed) == sorted(
        json.dumps(r, sort_keys=True) for r in results
    )
    summary = squash(second.stdout)
    assert "20 lines, 0 submitted, 19 already done before this run" in summary
    assert raw_redis.hgetall(store_key) == stored_before
    assert raw_redis.xlen(done_stream_key(settings.queue_prefix, job_id)) == done_before, "nothing was recomputed"


@pytest.mark.timeout(60)
def test_backfill_of_a_missing_file_fails_clearly(env: dict[str, str], tmp_path: Path) -> None:
    done = run_sift(["backfill", str(tmp_path / "nope.jsonl"), "--task", "classify", "--out", str(tmp_path)], env)

    assert done.returncode == 2
    assert "does not exist" in squash(done.stderr)
