"""The results store against the real redis-server the tests run (the one ``apt-get install redis-server`` gives)."""

from __future__ import annotations

import pytest
import redis
from sift_it_helpers import new_job_id

from sift.contract import ErrorCode, ErrorInfo, ItemResult
from sift.keys import results_key
from sift.results_store import ResultStore
from sift.settings import SiftSettings

pytestmark = pytest.mark.integration


@pytest.fixture
def store(raw_redis: redis.Redis, settings: SiftSettings) -> ResultStore:
    return ResultStore(raw_redis, prefix=settings.queue_prefix, ttl_s=60)


def test_stored_ids_of_a_job_without_results_is_empty(store: ResultStore) -> None:
    assert list(store.stored_ids(new_job_id("empty"))) == []


def test_stored_ids_lists_every_stored_item(store: ResultStore, raw_redis: redis.Redis) -> None:
    """What `sift backfill` calls first on a re-run, to skip items already done."""
    job_id = new_job_id("ids")
    error = ErrorInfo(code=ErrorCode.INVALID_INPUT, message="bad")
    results = [ItemResult(job_id=job_id, id=f"i-{n}", task="classify", label="POSITIVE") for n in range(3)]
    results.append(ItemResult(job_id=job_id, id="e-1", task="classify", error=error))
    assert store.write(job_id, results) == 4

    try:
        ids = sorted(store.stored_ids(job_id))
    except redis.ResponseError as err:
        version = raw_redis.info("server")["redis_version"]
        pytest.fail(f"stored_ids failed on redis-server {version}: '{err}' (HSCAN ... NOVALUES needs Redis >= 7.4)")
    assert ids == ["e-1", "i-0", "i-1", "i-2"]


def test_writes_are_idempotent_and_a_success_replaces_an_error(
    store: ResultStore, raw_redis: redis.Redis, settings: SiftSettings
) -> None:
    job_id = new_job_id("idem")
    error = ErrorInfo(code=ErrorCode.INFERENCE_FAILED, message="boom")
    failed = ItemResult(job_id=job_id, id="x", task="classify", error=error)
    first = ItemResult(job_id=job_id, id="x", task="classify", label="POSITIVE")
    second = ItemResult(job_id=job_id, id="x", task="classify", label="NEGATIVE")

    assert store.write(job_id, [failed]) == 1
    assert store.write(job_id, [failed]) == 0
    assert store.write(job_id, [first]) == 1  # a success replaces an error
    assert store.write(job_id, [second]) == 0  # but never another success
    assert store.write(job_id, [failed]) == 0  # nor an error a success
    assert store.get(job_id, "x") == first
    assert store.count(job_id) == 1
    assert next(iter(store.follow(job_id, timeout_s=5))) == first
    ttl = raw_redis.ttl(results_key(settings.queue_prefix, job_id))
    assert 0 < ttl <= 60
