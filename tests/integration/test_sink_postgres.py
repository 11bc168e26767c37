"""The PostgreSQL sink against a real, private PostgreSQL the tests start (pytest-postgresql, random port).

Direct writes check the upsert rule; ``sift backfill`` runs, through the shared worker, check that a
backfill (fresh, repeated, interrupted and resumed) leaves exactly one row per item.
"""

from __future__ import annotations

import json
import secrets
import shutil
from datetime import datetime
from pathlib import Path
from typing import Any

import port_for
import psycopg
import pytest
import redis
from pytest_postgresql import factories
from sift_it_helpers import EXAMPLES, cli_env, run_sift, squash
from sift_sink_helpers import Interrupted, InterruptingSink, find_pg_ctl

from producers.backfill import backfill_job_id, run_backfill
from producers.client import SiftClient
from producers.sinks import SinkError, open_sink
from producers.sinks.postgres import PostgresSink
from sift.contract import ErrorCode, ErrorInfo, ItemResult, TaskName
from sift.contract.results import LabelScore, Timings
from sift.keys import results_key
from sift.local import WorkerProcess
from sift.settings import SiftSettings

PG_CTL, NO_PG = find_pg_ctl()
PG_PASSWORD = "pg-" + secrets.token_hex(12)
"""The private server's password: a fresh random one each session, which no output may show."""

pytestmark = pytest.mark.skipif(PG_CTL is None, reason=f"PostgreSQL sink tests skipped: {NO_PG}")

sink_pg_proc = factories.postgresql_proc(executable=PG_CTL or "pg_ctl", port=None, password=PG_PASSWORD)
"""The session's private PostgreSQL server, on a random port (never the machine's 5432)."""
sink_pg = factories.postgresql("sink_pg_proc")
"""A fresh database on it for each test."""


@pytest.fixture
def db(sink_pg: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    """The test's database, each statement seeing what others committed."""
    sink_pg.autocommit = True
    return sink_pg


@pytest.fixture
def url(db: psycopg.Connection[Any], sink_pg_proc: Any) -> str:
    """The test database's URL, with the password, as a user passes it to ``--out``."""
    proc = sink_pg_proc
    return f"postgresql://{proc.user}:{PG_PASSWORD}@{proc.host}:{proc.port}/{db.info.dbname}"


def rows(db: psycopg.Connection[Any], table: str = "sift_results") -> dict[str, dict[str, Any]]:
    """Every row of the results table by item id."""
    with db.cursor(row_factory=psycopg.rows.dict_row) as cursor:
        cursor.execute(f"SELECT * FROM {table} ORDER BY job_id, item_id")
        found = cursor.fetchall()
    by_id = {row["item_id"]: row for row in found}
    assert len(by_id) == len(found)
    return by_id


def ok(item_id: str, label: str = "POSITIVE", job_id: str = "job-1") -> ItemResult:
    scores = [LabelScore(label=label, score=0.75), LabelScore(label="OTHER", score=0.25)]
    return ItemResult(job_id=job_id, id=item_id, task="classify", label=label, scores=scores, model="sentiment")


def failed(item_id: str, code: ErrorCode = ErrorCode.INFERENCE_FAILED, job_id: str = "job-1") -> ItemResult:
    return ItemResult(job_id=job_id, id=item_id, task="classify", error=ErrorInfo(code=code, message=f"{code} here"))


# --- the upsert rule, written directly ----------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_the_table_is_created_and_holds_each_result_whole(db: psycopg.Connection[Any], url: str) -> None:
    result = ok("a").model_copy(update={"truncated": True, "revision": "abc123", "timings": Timings(inference_ms=2.5)})

    with open_sink(url) as sink:
        assert isinstance(sink, PostgresSink)
        sink.write([result, failed("b", ErrorCode.TOO_LARGE)])

    stored = rows(db)
    assert set(stored) == {"a", "b"}
    a, b = stored["a"], stored["b"]
    assert (a["job_id"], a["task"], a["label"], a["score"], a["model"], a["revision"], a["truncated"]) == (
        "job-1",
        "classify",
        "POSITIVE",
        0.75,
        "sentiment",
        "abc123",
        True,
    )
    assert a["error_code"] is None and a["error_message"] is None
    assert ItemResult.model_validate(a["result"]) == result
    assert (b["error_code"], b["error_message"], b["label"], b["score"]) == ("too_large", "too_large here", None, None)
    assert isinstance(a["stored_at"], datetime)


@pytest.mark.timeout(60)
def test_writing_the_same_results_twice_leaves_the_same_rows(db: psycopg.Connection[Any], url: str) -> None:
    batch = [ok("a"), failed("b"), ok("c", "NEGATIVE")]
    with open_sink(url) as sink:
        sink.write(batch)
    before = rows(db)

    with open_sink(url) as again:
        again.write(batch)
        again.write(batch)

    assert rows(db) == before, "same rows, not even stored_at changed"


@pytest.mark.timeout(60)
def test_an_error_is_replaced_by_a_later_success(db: psycopg.Connection[Any], url: str) -> None:
    with open_sink(url) as sink:
        sink.write([failed("a", ErrorCode.EXPIRED)])
        first = rows(db)["a"]
        sink.write([ok("a", "NEGATIVE")])

    row = rows(db)["a"]
    assert (row["error_code"], row["label"]) == (None, "NEGATIVE")
    assert ItemResult.model_validate(row["result"]) == ok("a", "NEGATIVE")
    assert row["stored_at"] >= first["stored_at"]


@pytest.mark.timeout(60)
def test_a_success_is_never_replaced(db: psycopg.Connection[Any], url: str) -> None:
    with open_sink(url) as sink:
        sink.write([ok("a", "POSITIVE")])
        before = rows(db)
        sink.write([failed("a")])
        sink.write([ok("a", "NEGATIVE")])

    assert rows(db) == before


@pytest.mark.timeout(60)
def test_an_error_is_not_replaced_by_another_error(db: psycopg.Connection[Any], url: str) -> None:
    with open_sink(url) as sink:
        sink.write([failed("a", ErrorCode.EXPIRED)])
        sink.write([failed("a", ErrorCode.DUPLICATE_ID)])

    assert rows(db)["a"]["error_code"] == "expired"


@pytest.mark.timeout(60)
def test_an_item_twice_in_one_batch_ends_as_if_written_one_by_one(db: psycopg.Connection[Any], url: str) -> None:
    with open_sink(url) as sink:
        sink.write(
            [
                failed("a"),
                ok("a", "NEGATIVE"),
                failed("a"),
                ok("a", "POSITIVE"),
                failed("b"),
                failed("b", ErrorCode.EXPIRED),
            ]
        )

    stored = rows(db)
    assert (stored["a"]["label"], stored["a"]["error_code"]) == ("NEGATIVE", None)
    assert stored["b"]["error_code"] == "inference_failed"


@pytest.mark.timeout(60)
def test_the_same_item_id_in_two_jobs_is_two_rows(db: psycopg.Connection[Any], url: str) -> None:
    with open_sink(url) as sink:
        sink.write([ok("1", job_id="j1"), failed("1", job_id="j2")])

    with db.cursor() as cursor:
        cursor.execute("SELECT job_id, error_code FROM sift_results ORDER BY job_id")
        assert cursor.fetchall() == [("j1", None), ("j2", "inference_failed")]


@pytest.mark.timeout(60)
def test_each_batch_is_committed_as_it_is_written(db: psycopg.Connection[Any], url: str) -> None:
    sink = open_sink(url)
    try:
        sink.write([ok("a")])
        assert set(rows(db)) == {"a"}, "visible to another connection before the sink is closed"
    finally:
        sink.abort()
    assert set(rows(db)) == {"a"}, "an aborted run keeps its batches"


@pytest.mark.timeout(60)
def test_text_postgresql_cannot_hold_is_stored_readably(db: psycopg.Connection[Any], url: str) -> None:
    """PostgreSQL text and jsonb hold no NUL character: it becomes U+FFFD rather than failing the batch."""
    weird = failed("id\x00with nul").model_copy(
        update={"error": ErrorInfo(code=ErrorCode.INVALID_INPUT, message="text was 'a\x00b' ünïcode ✓")}
    )

    with open_sink(url) as sink:
        sink.write([weird, ok("plain")])

    stored = rows(db)
    assert set(stored) == {"id\ufffdwith nul", "plain"}
    row = stored["id\ufffdwith nul"]
    assert row["error_message"] == "text was 'a\ufffdb' ünïcode ✓"
    assert row["result"]["id"] == "id\ufffdwith nul"


@pytest.mark.timeout(60)
def test_a_table_of_its_own_in_a_schema_of_its_own(db: psycopg.Connection[Any], url: str) -> None:
    db.execute("CREATE SCHEMA archive")

    with open_sink(f"{url}?table=archive.backfill_2024") as sink:
        assert "table archive.backfill_2024" in sink.description
        sink.write([ok("a")])

    assert set(rows(db, "archive.backfill_2024")) == {"a"}
    assert db.execute("SELECT to_regclass('sift_results')").fetchone() == (None,), "the default table was not made"


@pytest.mark.timeout(60)
def test_an_existing_table_of_another_shape_is_refused_before_any_write(db: psycopg.Connection[Any], url: str) -> None:
    db.execute("CREATE TABLE sift_results (id integer PRIMARY KEY, note text)")

    with pytest.raises(SinkError) as wrong_columns:
        open_sink(url)
    db.execute("DROP TABLE sift_results")
    db.execute(
        "CREATE TABLE sift_results (job_id text, item_id text, task text, label text, score float8, model text,"
        " revision text, truncated bool, error_code text, error_message text, result jsonb, stored_at timestamptz)"
    )
    with pytest.raises(SinkError) as no_key:
        open_sink(url)

    assert "cannot use table sift_results at postgresql://" in str(wrong_columns.value)
    assert 'column "job_id" of relation "sift_results" does not exist' in str(wrong_columns.value)
    assert "no unique or exclusion constraint" in str(no_key.value)
    for refused in (wrong_columns, no_key):
        assert PG_PASSWORD not in str(refused.value) and ":***@" in str(refused.value)
    assert db.execute("SELECT count(*) FROM sift_results").fetchone() == (0,)


@pytest.mark.timeout(60)
def test_unreachable_server_wrong_password_and_bad_url_fail_clearly(url: str, sink_pg_proc: Any) -> None:
    proc = sink_pg_proc
    closed = port_for.select_random()
    cases = {
        "unreachable": (f"postgresql://sift:{PG_PASSWORD}@127.0.0.1:{closed}/sift", "Connection refused"),
        "wrong password": (url.replace(PG_PASSWORD, PG_PASSWORD[::-1]), "password authentication failed"),
        "no such database": (url.rsplit("/", 1)[0] + "/nope", 'database "nope" does not exist'),
        "bad port": (f"postgresql://sift:{PG_PASSWORD}@{proc.host}:port/sift", "invalid"),
        "bad parameter": (f"{url}?sslmode=sometimes", "sslmode"),
    }
    for name, (target, says) in cases.items():
        with pytest.raises(SinkError) as refused:
            open_sink(target)
        message = str(refused.value)
        assert message.startswith("cannot connect to PostgreSQL at postgresql://"), (name, message)
        assert says in message, (name, message)
        assert PG_PASSWORD not in message and PG_PASSWORD[::-1] not in message, (name, message)


# --- sift backfill into PostgreSQL, through the shared worker ----------------------------------------------


@pytest.fixture(scope="module")
def env(settings: SiftSettings, worker: WorkerProcess) -> dict[str, str]:
    assert settings.redis_url and settings.registry
    return cli_env(redis_url=settings.redis_url, registry=str(settings.registry), queue_prefix=settings.queue_prefix)


def write_items(path: Path, count: int, bad_lines: tuple[bytes, ...] = ()) -> Path:
    """``count`` valid classify items, then ``bad_lines`` as they are."""
    items = [json.dumps({"id": f"it-{n:04d}", "text": f"item {n} is rather fine"}).encode() for n in range(count)]
    path.write_bytes(b"\n".join([*items, *bad_lines]) + b"\n")
    return path


def backfill(env: dict[str, str], source: Path, out: str, *extra: str) -> Any:
    return run_sift(["backfill", str(source), "--task", "classify", "--out", out, "--no-progress", *extra], env)


@pytest.mark.timeout(180)
def test_backfill_into_postgres_gives_one_row_per_line_and_a_rerun_changes_nothing(
    env: dict[str, str], db: psycopg.Connection[Any], url: str, tmp_path: Path, id2label
) -> None:
    source = write_items(tmp_path / "items.jsonl", 40, (b"not json", b'{"id": "empty", "text": ""}'))
    job_id = backfill_job_id(source, TaskName.CLASSIFY, None)

    first = backfill(env, source, url)

    assert first.returncode == 0, first.stderr
    stored = rows(db)
    assert len(stored) == 42 == len(source.read_bytes().splitlines())
    assert {row["job_id"] for row in stored.values()} == {job_id}
    labels = set(id2label("sentiment"))
    for n in range(40):
        row = stored[f"it-{n:04d}"]
        assert row["error_code"] is None and row["label"] in labels, row
        assert ItemResult.model_validate(row["result"]).scores[0].score == row["score"]
    assert stored["line-41"]["error_code"] == ErrorCode.INVALID_JSON
    assert stored["empty"]["error_code"] == ErrorCode.INVALID_INPUT
    summary = squash(first.stdout)
    assert "42 lines, 40 submitted;" in summary
    assert f"results: {url.replace(PG_PASSWORD, '***')} (table sift_results)" in summary
    assert PG_PASSWORD not in first.stdout + first.stderr

    second = backfill(env, source, url)

    assert second.returncode == 0, second.stderr
    assert "42 lines, 0 submitted, 42 already done before this run" in squash(second.stdout)
    assert rows(db) == stored, "the same rows, none rewritten"


@pytest.mark.timeout(180)
def test_a_repeated_id_keeps_the_items_own_result(
    env: dict[str, str], db: psycopg.Connection[Any], url: str, tmp_path: Path
) -> None:
    """examples/bad_input.jsonl: 20 lines, b-0001 twice. One row per item id: 19, b-0001 its prediction."""
    source = tmp_path / "bad_input.jsonl"  # a copy: its own job id, apart from the CLI tests' runs
    shutil.copy(EXAMPLES / "bad_input.jsonl", source)

    done = backfill(env, source, url)

    assert done.returncode == 0, done.stderr
    stored = rows(db)
    assert len(stored) == 19
    assert stored["b-0001"]["error_code"] is None and stored["b-0001"]["label"], stored["b-0001"]
    assert "error: duplicate_id" in squash(done.stdout), "the repeat is still reported"


@pytest.mark.timeout(180)
def test_an_interrupted_backfill_resumes_to_exactly_one_row_per_item(
    env: dict[str, str],
    client: SiftClient,
    db: psycopg.Connection[Any],
    url: str,
    tmp_path: Path,
) -> None:
    source = write_items(tmp_path / "items.jsonl", 60, (b"[1, 2]",))

    # Ctrl-C when the backfill hands over its third batch (of 10 at most): two batches are in PostgreSQL.
    with pytest.raises(Interrupted), InterruptingSink(PostgresSink(url), at=3) as sink:
        run_backfill(client, source, sink, "classify", show_progress=False, batch_size=10, idle_timeout_s=60)
    kept = rows(db)
    assert sorted(kept) == sorted(r.id for r in sink.written) and 2 <= len(kept) <= 20

    resumed = backfill(env, source, url)

    assert resumed.returncode == 0, resumed.stderr
    assert "61 lines," in squash(resumed.stdout) and "already done before this run" in squash(resumed.stdout)
    stored = rows(db)
    assert len(stored) == 61
    assert {item_id: stored[item_id] for item_id in kept} == kept, "rows written before Ctrl-C are untouched"
    assert stored["line-61"]["error_code"] == ErrorCode.INVALID_JSON
    assert sum(row["error_code"] is None for row in stored.values()) == 60


@pytest.mark.timeout(120)
def test_a_bad_database_url_fails_clearly_before_anything_is_submitted(
    env: dict[str, str], raw_redis: redis.Redis, settings: SiftSettings, url: str, tmp_path: Path
) -> None:
    source = write_items(tmp_path / "items.jsonl", 5)
    job_id = backfill_job_id(source, TaskName.CLASSIFY, None)
    closed = port_for.select_random()
    targets = {
        f"postgresql://sift:{PG_PASSWORD}@127.0.0.1:{closed}/sift": "Connection refused",
        url.replace(PG_PASSWORD, "wrong-" + PG_PASSWORD): "password authentication failed",
        f"{url}?table=results;drop": "give a name like sift_results",
    }
    for target, says in targets.items():
        done = backfill(env, source, target)

        message = squash(done.stderr)
        assert done.returncode == 2, (target, done.stdout, done.stderr)
        assert message.startswith("error:") and says in message, message
        assert "Traceback" not in done.stderr
        assert PG_PASSWORD not in done.stdout + done.stderr
    assert raw_redis.hlen(results_key(settings.queue_prefix, job_id)) == 0, "nothing was submitted"
