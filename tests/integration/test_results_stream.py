"""The global results stream on a real redis-server: publishing from the store, and consumer groups."""

from __future__ import annotations

import json
import time
import uuid

import pytest
import redis
from sift_it_helpers import cli_env, new_job_id, run_sift

from sift.contract import ErrorCode, ErrorInfo, ItemResult
from sift.delivery.stream import ResultStreamConsumer
from sift.keys import results_stream_key
from sift.results_store import ResultStore

pytestmark = pytest.mark.integration


@pytest.fixture
def prefix() -> str:
    """A key prefix of this test's own, so that its stream holds only its results."""
    return f"stream-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def store(raw_redis: redis.Redis, prefix: str) -> ResultStore:
    return ResultStore(raw_redis, prefix=prefix, ttl_s=60)


def results(job_id: str, n: int, label: str = "POSITIVE") -> list[ItemResult]:
    return [ItemResult(job_id=job_id, id=f"i-{k}", task="classify", label=label) for k in range(n)]


def consumer(client: redis.Redis, prefix: str, group: str, name: str, **kwargs: object) -> ResultStreamConsumer:
    return ResultStreamConsumer(client, prefix=prefix, group=group, consumer=name, **kwargs)  # type: ignore[arg-type]


def read_all(reader: ResultStreamConsumer, *, ack: bool = True) -> list[ItemResult]:
    """Everything the reader gets until a read comes back empty."""
    seen: list[ItemResult] = []
    while entries := reader.read(block_s=0.05):
        seen += [entry.result for entry in entries]
        if ack:
            reader.ack(entry.entry_id for entry in entries)
    return seen


def test_each_new_result_is_published_with_job_id_id_and_json(
    store: ResultStore, raw_redis: redis.Redis, prefix: str
) -> None:
    job_id = new_job_id("publish")
    written = results(job_id, 3)
    assert store.write(job_id, written) == 3

    entries = raw_redis.xrange(results_stream_key(prefix))
    assert [(f[b"job_id"].decode(), f[b"id"].decode()) for _, f in entries] == [(job_id, r.id) for r in written]
    assert [ItemResult.model_validate_json(f[b"result"]) for _, f in entries] == written


def test_a_duplicate_write_publishes_nothing_but_a_success_replacing_an_error_does(
    store: ResultStore, raw_redis: redis.Redis, prefix: str
) -> None:
    job_id = new_job_id("dup")
    failed = ItemResult(
        job_id=job_id, id="x", task="classify", error=ErrorInfo(code=ErrorCode.INFERENCE_FAILED, message="boom")
    )
    success = ItemResult(job_id=job_id, id="x", task="classify", label="POSITIVE")
    assert store.write(job_id, results(job_id, 2)) == 2
    assert store.write(job_id, results(job_id, 2)) == 0  # a redelivered message
    assert store.write(job_id, results(job_id, 2, label="NEGATIVE")) == 0  # never a second answer
    assert raw_redis.xlen(results_stream_key(prefix)) == 2

    assert store.write(job_id, [failed]) == 1
    assert store.write(job_id, [failed]) == 0
    assert store.write(job_id, [success]) == 1  # the only case a second entry appears for an item
    stream = [ItemResult.model_validate_json(f[b"result"]) for _, f in raw_redis.xrange(results_stream_key(prefix))]
    assert stream == [*results(job_id, 2), failed, success]


def test_the_stream_is_capped_near_its_max_length(raw_redis: redis.Redis, prefix: str) -> None:
    capped = ResultStore(raw_redis, prefix=prefix, ttl_s=60, stream_maxlen=50)
    job_id = new_job_id("cap")
    for start in range(0, 1000, 10):
        batch = [ItemResult(job_id=job_id, id=f"i-{k}", task="classify", label="A") for k in range(start, start + 10)]
        assert capped.write(job_id, batch) == 10
    length = raw_redis.xlen(results_stream_key(prefix))
    # MAXLEN ~ trims whole radix-tree nodes (100 entries by default): at least 50 are kept, far fewer than 1000.
    assert 50 <= length <= 250
    assert capped.count(job_id) == 1000  # the cap never touches the results themselves
    with pytest.raises(ValueError, match="stream_maxlen"):
        ResultStore(raw_redis, prefix=prefix, stream_maxlen=0)


def test_two_consumer_groups_each_see_every_result(store: ResultStore, raw_redis: redis.Redis, prefix: str) -> None:
    first = consumer(raw_redis, prefix, "billing", "b-1")
    second = consumer(raw_redis, prefix, "archive", "a-1")
    first.ensure_group()
    second.ensure_group()
    job_a, job_b = new_job_id("a"), new_job_id("b")
    store.write(job_a, results(job_a, 4))
    store.write(job_b, results(job_b, 3))

    for reader in (first, second):
        seen = read_all(reader)
        assert sorted((r.job_id, r.id) for r in seen) == sorted(
            [(job_a, f"i-{k}") for k in range(4)] + [(job_b, f"i-{k}") for k in range(3)]
        )
        assert reader.pending() == 0


def test_consumers_of_one_group_share_the_results_without_overlap(
    store: ResultStore, raw_redis: redis.Redis, prefix: str
) -> None:
    one = consumer(raw_redis, prefix, "workers", "w-1", count=5)
    two = consumer(raw_redis, prefix, "workers", "w-2", count=5)
    job_id = new_job_id("share")
    store.write(job_id, results(job_id, 20))

    got_one = [e.result.id for e in one.read(block_s=0.05)]
    got_two = read_all(two)
    got_one += [r.id for r in read_all(one)]
    assert len(got_one) >= 5 and len(got_two) >= 5
    assert sorted(got_one + [r.id for r in got_two]) == sorted(f"i-{k}" for k in range(20))


def test_a_group_created_at_latest_skips_results_already_in_the_stream(
    store: ResultStore, raw_redis: redis.Redis, prefix: str
) -> None:
    job_id = new_job_id("latest")
    store.write(job_id, results(job_id, 3))
    late = consumer(raw_redis, prefix, "late", "l-1", start="latest")
    early = consumer(raw_redis, prefix, "early", "e-1")
    assert late.ensure_group() is True
    assert late.ensure_group() is False  # idempotent
    store.write(job_id, [ItemResult(job_id=job_id, id="new", task="classify", label="A")])

    assert [r.id for r in read_all(late)] == ["new"]
    assert [r.id for r in read_all(early)] == ["i-0", "i-1", "i-2", "new"]


def test_results_a_dead_consumer_read_but_never_confirmed_are_taken_over(
    store: ResultStore, raw_redis: redis.Redis, prefix: str
) -> None:
    job_id = new_job_id("dead")
    store.write(job_id, results(job_id, 5))
    dead = consumer(raw_redis, prefix, "g", "dead", claim_idle_s=0.3)
    assert len(dead.read(block_s=0.05)) == 5  # ... and then it crashes: no ack
    survivor = consumer(raw_redis, prefix, "g", "survivor", claim_idle_s=0.3)

    assert survivor.read(block_s=0.05) == []  # not idle long enough yet: the owner may still be at work
    time.sleep(0.4)
    taken = survivor.read(block_s=0.05)
    assert sorted(e.result.id for e in taken) == [f"i-{k}" for k in range(5)]
    summary = raw_redis.xpending(results_stream_key(prefix), "g")
    assert [(c["name"], c["pending"]) for c in summary["consumers"]] == [(b"survivor", 5)]
    survivor.ack(e.entry_id for e in taken)
    assert survivor.pending() == 0
    assert read_all(survivor) == []


def test_touch_keeps_peers_from_taking_over_results_still_being_worked_on(
    store: ResultStore, raw_redis: redis.Redis, prefix: str
) -> None:
    job_id = new_job_id("touch")
    store.write(job_id, results(job_id, 2))
    slow = consumer(raw_redis, prefix, "g", "slow", claim_idle_s=0.5)
    peer = consumer(raw_redis, prefix, "g", "peer", claim_idle_s=0.5)
    held = [e.entry_id for e in slow.read(block_s=0.05)]
    for _ in range(4):  # 0.8 s of work in all, past claim_idle_s, touched every 0.2 s
        time.sleep(0.2)
        slow.touch(held)
        assert peer.read(block_s=0.01) == []
    assert slow.ack(held) == 2


def test_a_restarted_consumer_reads_its_own_unconfirmed_results_first(
    store: ResultStore, raw_redis: redis.Redis, prefix: str
) -> None:
    job_id = new_job_id("restart")
    store.write(job_id, results(job_id, 3))
    before = consumer(raw_redis, prefix, "g", "c-1")
    first = before.read(block_s=0.05)
    before.ack([first[0].entry_id])  # handled one, then crashed
    store.write(job_id, [ItemResult(job_id=job_id, id="later", task="classify", label="A")])

    after = consumer(raw_redis, prefix, "g", "c-1")
    assert [r.id for r in read_all(after)] == ["i-1", "i-2", "later"]
    assert after.pending() == 0


def test_malformed_and_trimmed_entries_are_skipped_and_the_rest_delivered(
    store: ResultStore, raw_redis: redis.Redis, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    stream = results_stream_key(prefix)
    reader = consumer(raw_redis, prefix, "g", "c-1", claim_idle_s=0.2)
    reader.ensure_group()
    job_id = new_job_id("bad")
    raw_redis.xadd(stream, {"job_id": job_id, "id": "1", "result": "{not json"})  # a foreign writer
    raw_redis.xadd(stream, {"job_id": job_id, "id": "2"})
    raw_redis.xadd(stream, {"job_id": job_id, "id": "3", "result": json.dumps({"id": "3"})})
    store.write(job_id, results(job_id, 2))

    assert [r.id for r in read_all(reader)] == ["i-0", "i-1"]
    assert reader.pending() == 0  # the bad entries were confirmed, so they do not come back forever
    assert "skipping malformed entry" in caplog.text

    # Pending entries deleted from the stream (the length cap) before being handled, seen two ways:
    store.write(job_id, results(job_id, 4)[2:])
    crashed = consumer(raw_redis, prefix, "g", "crashed")
    read = crashed.read(block_s=0.05)
    assert [e.result.id for e in read] == ["i-2", "i-3"]
    raw_redis.xdel(stream, read[0].entry_id)
    restarted = consumer(raw_redis, prefix, "g", "crashed")  # its own backlog
    assert [e.result.id for e in restarted.read(block_s=0.05)] == ["i-3"]
    time.sleep(0.3)
    taken = reader.read(block_s=0.05)  # a peer's XAUTOCLAIM
    assert [e.result.id for e in taken] == ["i-3"]
    reader.ack(e.entry_id for e in taken)
    assert reader.pending() == 0


def test_reading_survives_the_stream_being_deleted(store: ResultStore, raw_redis: redis.Redis, prefix: str) -> None:
    reader = consumer(raw_redis, prefix, "g", "c-1")
    reader.ensure_group()
    raw_redis.delete(results_stream_key(prefix))  # e.g. an operator's cleanup
    assert reader.read(block_s=0.05) == []
    job_id = new_job_id("gone")
    store.write(job_id, results(job_id, 1))
    assert [r.id for r in read_all(reader)] == ["i-0"]


def test_sift_results_tail_prints_json_lines_and_confirms_them(
    store: ResultStore, raw_redis: redis.Redis, prefix: str, settings
) -> None:
    job_id = new_job_id("tail")
    written = results(job_id, 3)
    store.write(job_id, written)
    env = cli_env(redis_url=settings.redis_url, queue_prefix=prefix)
    args = ["results", "tail", "--group", "cli", "--consumer", "t-1"]

    first = run_sift([*args, "--limit", "2"], env, timeout_s=60)
    assert first.returncode == 0, first.stderr
    assert [ItemResult.model_validate_json(line) for line in first.stdout.splitlines()] == written[:2]

    second = run_sift([*args, "--idle-timeout", "1"], env, timeout_s=60)
    assert second.returncode == 3, second.stderr
    assert [ItemResult.model_validate_json(line) for line in second.stdout.splitlines()] == written[2:]
    assert "no new result" in second.stderr

    bad = run_sift([*args, "--limit", "0"], env, timeout_s=60)
    assert bad.returncode == 2 and "--limit must be at least 1" in bad.stderr
