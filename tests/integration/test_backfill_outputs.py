"""``sift backfill`` into Parquet and onto standard output, through the shared worker; bad targets.

(PostgreSQL outputs are in test_sink_postgres.py, next to the private server they need.)
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import redis
from sift_it_helpers import EXAMPLES, cli_env, new_job_id, run_sift, sift_executable, squash, wait_until
from sift_sink_helpers import Interrupted, InterruptingSink

from producers.backfill import backfill_job_id, run_backfill
from producers.client import SiftClient
from producers.sinks.parquet import ParquetSink, partial_path, read_results
from sift.contract import ErrorCode, ItemResult, Lane, TaskName
from sift.keys import queue_name, results_key
from sift.local import WorkerProcess
from sift.settings import SiftSettings


@pytest.fixture(scope="module")
def env(settings: SiftSettings, worker: WorkerProcess) -> dict[str, str]:
    assert settings.redis_url and settings.registry
    return cli_env(redis_url=settings.redis_url, registry=str(settings.registry), queue_prefix=settings.queue_prefix)


def backfill(env: dict[str, str], source: Path, out: str) -> Any:
    return run_sift(["backfill", str(source), "--task", "classify", "--out", out, "--no-progress"], env)


def as_json(results: list[ItemResult]) -> list[str]:
    """Results in a comparable form, in id order (output order is completion order)."""
    return sorted(r.model_dump_json(exclude_none=True) for r in results)


def jsonl(path: Path) -> list[ItemResult]:
    return [ItemResult.model_validate_json(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.mark.timeout(180)
def test_backfill_into_parquet_has_one_row_per_line_and_matches_the_jsonl_output(
    env: dict[str, str], tmp_path: Path, id2label
) -> None:
    """examples/bad_input.jsonl: 20 lines (bad JSON, empty texts, a repeated id, too long)."""
    source = tmp_path / "bad_input.jsonl"  # a copy: its own job id, apart from the CLI tests' runs
    shutil.copy(EXAMPLES / "bad_input.jsonl", source)
    out = tmp_path / "out" / "results.parquet"

    done = backfill(env, source, str(out))

    assert done.returncode == 0, done.stderr
    table = pq.read_table(out)
    assert table.num_rows == len(source.read_bytes().splitlines()) == 20
    assert not partial_path(out).exists()
    results = list(read_results(out))
    assert {r.job_id for r in results} == {backfill_job_id(source, TaskName.CLASSIFY, None)}
    ok = [r for r in results if r.ok]
    assert len(ok) == 9 and all(r.label in id2label("sentiment") and r.timings for r in ok)
    assert table.column("score").to_pylist() == [r.scores[0].score if r.scores else None for r in results]
    codes = sorted(code for code in table.column("error_code").to_pylist() if code)
    assert codes.count(ErrorCode.DUPLICATE_ID) == 1 and codes.count(ErrorCode.INVALID_JSON) == 2
    assert f"results: {out}" in squash(done.stdout)

    again_as_jsonl = backfill(env, source, str(tmp_path / "results.jsonl"))

    assert again_as_jsonl.returncode == 0, again_as_jsonl.stderr
    assert as_json(jsonl(tmp_path / "results.jsonl")) == as_json(results), "the same results in either format"


@pytest.mark.timeout(240)
def test_an_interrupted_parquet_backfill_keeps_the_earlier_file_and_resumes(
    env: dict[str, str], client: SiftClient, tmp_path: Path
) -> None:
    source = tmp_path / "items.jsonl"
    source.write_text("".join(json.dumps({"id": f"p-{n}", "text": f"row {n}"}) + "\n" for n in range(50)) + "{oops\n")
    out = tmp_path / "results.parquet"
    first = backfill(env, source, str(out))
    assert first.returncode == 0, first.stderr
    complete = list(read_results(out))
    assert len(complete) == 51

    # The same backfill again, Ctrl-C when its second batch (of 10 at most) arrives.
    with pytest.raises(Interrupted), InterruptingSink(ParquetSink(out), at=2) as sink:
        run_backfill(client, source, sink, "classify", show_progress=False, batch_size=10, idle_timeout_s=60)

    assert as_json(list(read_results(out))) == as_json(complete), "the earlier file is untouched"
    assert as_json(list(read_results(partial_path(out)))) == as_json(sink.written), "what the run received"
    assert 1 <= len(sink.written) <= 10

    resumed = backfill(env, source, str(out))

    assert resumed.returncode == 0, resumed.stderr
    assert "51 lines, 0 submitted, 51 already done before this run" in squash(resumed.stdout)
    assert as_json(list(read_results(out))) == as_json(complete), "one row per line, the same results"
    assert not partial_path(out).exists()


@pytest.mark.timeout(180)
def test_backfill_to_stdout_keeps_the_summary_off_it(env: dict[str, str], tmp_path: Path) -> None:
    source = tmp_path / "items.jsonl"
    source.write_text("".join(json.dumps({"id": n, "text": f"line {n}"}) + "\n" for n in range(7)))

    done = backfill(env, source, "-")

    assert done.returncode == 0, done.stderr
    results = [ItemResult.model_validate_json(line) for line in done.stdout.splitlines()]
    assert sorted(int(r.id) for r in results) == list(range(7))
    assert "label / error" in done.stderr and "results: stdout" in squash(done.stderr)


@pytest.mark.timeout(120)
def test_a_bad_target_fails_clearly_before_anything_is_submitted(
    env: dict[str, str], raw_redis: redis.Redis, settings: SiftSettings, tmp_path: Path
) -> None:
    source = tmp_path / "items.jsonl"
    source.write_text(json.dumps({"id": "1", "text": "never sent"}) + "\n")
    (tmp_path / "taken.parquet").mkdir()
    targets = {
        str(tmp_path / "results.csv"): "cannot tell the output format of",
        str(tmp_path / "results"): "name a .jsonl or .parquet file",
        "mysql://root:hunter2@db/sift": "cannot write results to a mysql:// URL (mysql://root:***@db/sift)",
        str(tmp_path / "taken.parquet"): "is a directory",
    }
    for target, says in targets.items():
        done = backfill(env, source, target)

        assert done.returncode == 2, (target, done.stdout, done.stderr)
        message = squash(done.stderr)
        assert message.startswith("error:") and says in message, message
        assert "Traceback" not in done.stderr and "hunter2" not in done.stderr
    job_id = backfill_job_id(source, TaskName.CLASSIFY, None)
    assert raw_redis.hlen(results_key(settings.queue_prefix, job_id)) == 0, "nothing was submitted"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["items.jsonl", "taken.parquet"], "no file left behind"


@pytest.mark.timeout(120)
def test_ctrl_c_keeps_what_arrived_and_says_how_to_resume(
    settings: SiftSettings, raw_redis: redis.Redis, tmp_path: Path
) -> None:
    """No worker serves this queue prefix, so the backfill waits; Ctrl-C arrives while it waits."""
    prefix = new_job_id("no-worker")
    assert settings.redis_url
    source = tmp_path / "items.jsonl"
    source.write_text(json.dumps({"id": "waits", "text": "no worker takes me"}) + "\nnot json\n")
    out = tmp_path / "results.parquet"
    args = ["backfill", str(source), "--task", "classify", "--out", str(out), "--no-progress"]
    # faulthandler: if the interrupted CLI hangs, SIGABRT makes it print where every thread is.
    env = {**cli_env(redis_url=settings.redis_url, queue_prefix=prefix), "PYTHONFAULTHANDLER": "1"}
    process = subprocess.Popen(
        [sift_executable(), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # As from a terminal. A test run started in the background (`pytest &`, as some CI runners do) ignores
        # SIGINT, the child inherits that, and Python then never raises KeyboardInterrupt.
        preexec_fn=_default_sigint,
    )
    try:
        store = results_key(prefix, backfill_job_id(source, TaskName.CLASSIFY, None))
        wait_until(lambda: raw_redis.hlen(store) == 1, timeout_s=60, what="the bad line's result in Redis")
        time.sleep(1.0)  # into the wait for results
        process.send_signal(signal.SIGINT)
        try:
            _, stderr = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGABRT)
            _, stderr = process.communicate(timeout=10)
            pytest.fail(f"sift backfill did not exit within 30 s of Ctrl-C; its threads:\n{stderr[-6000:]}")
    finally:
        process.kill()
        raw_redis.delete(queue_name(prefix, Lane.BULK), store)

    assert process.returncode == 130, stderr
    assert "interrupted: run the same command again to resume" in squash(stderr)
    assert "Traceback" not in stderr
    assert not out.exists()
    [kept] = read_results(partial_path(out))
    assert kept.id == "line-2" and kept.error and kept.error.code == ErrorCode.INVALID_JSON


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)
