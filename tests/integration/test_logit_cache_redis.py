"""The logit cache against a real redis-server: exact round trips, expiry, sharing, and Redis going away."""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

import numpy as np
import pytest
import redis
import torch
from sift_it_helpers import redis_url_of

from sift.contract import TaskName
from sift.local import EmbeddedRedis, free_port
from sift.settings import SiftSettings
from workers.engine.forward import encode, score
from workers.engine.loading import load_model
from workers.engine.logit_cache import LogitCache, cache_client, model_key_for, sequence_key
from workers.engine.registry import Registry

MODEL_KEY = "test-model"


@pytest.fixture
def prefix() -> str:
    return f"lc-{uuid.uuid4().hex[:8]}"


def test_logits_come_back_bit_for_bit_with_their_truncation_flags(raw_redis: redis.Redis, prefix: str) -> None:
    cache = LogitCache(raw_redis, prefix, ttl_s=600)
    sequences = [("first", None), ("second", "a hypothesis"), ("third", None)]
    logits = np.array([[0.1, -2.5e-40, 7.0], [3.4028235e38, -0.0, 1e-7], [1 / 3, 2 / 3, -1.0]], dtype=np.float32)
    assert cache.store(MODEL_KEY, sequences, logits, [False, True, False]) == 3
    found = cache.lookup(MODEL_KEY, sequences, num_labels=3)
    assert all(entry is not None for entry in found)
    assert [entry.truncated for entry in found if entry is not None] == [False, True, False]
    assert np.stack([entry.logits for entry in found if entry is not None]).tobytes() == logits.tobytes()
    assert (cache.hits, cache.misses, cache.hit_rate) == (3, 0, 1.0)


def test_only_sequences_already_scored_hit(raw_redis: redis.Redis, prefix: str) -> None:
    cache = LogitCache(raw_redis, prefix, ttl_s=600)
    cache.store(MODEL_KEY, [("seen", None)], np.ones((1, 2), np.float32), [False])
    found = cache.lookup(MODEL_KEY, [("seen", None), ("unseen", None), ("seen", "as a pair")])
    assert [entry is not None for entry in found] == [True, False, False]
    assert cache.lookup("another-model", [("seen", None)]) == [None]
    assert (cache.hits, cache.misses) == (1, 3)
    assert cache.hit_rate == pytest.approx(0.25)


def test_entries_carry_the_ttl_and_expire_after_it(raw_redis: redis.Redis, prefix: str) -> None:
    cache = LogitCache(raw_redis, prefix, ttl_s=600)
    cache.store(MODEL_KEY, [("kept", None)], np.zeros((1, 2), np.float32), [False])
    assert 595 <= raw_redis.ttl(sequence_key(prefix, MODEL_KEY, ("kept", None))) <= 600

    short = LogitCache(raw_redis, prefix, ttl_s=1)
    short.store(MODEL_KEY, [("fleeting", None)], np.zeros((1, 2), np.float32), [False])
    assert short.lookup(MODEL_KEY, [("fleeting", None)]) != [None]
    time.sleep(1.2)
    assert short.lookup(MODEL_KEY, [("fleeting", None)]) == [None]


def test_failed_rows_are_not_cached(raw_redis: redis.Redis, prefix: str) -> None:
    cache = LogitCache(raw_redis, prefix, ttl_s=600)
    logits = np.array([[1.0, 2.0], [np.nan, np.nan], [np.inf, 0.0]], dtype=np.float32)
    sequences = [("fine", None), ("raised", None), ("overflowed", None)]
    assert cache.store(MODEL_KEY, sequences, logits, [False] * 3) == 1
    assert [entry is not None for entry in cache.lookup(MODEL_KEY, sequences)] == [True, False, False]


def test_a_disabled_cache_neither_reads_nor_writes(raw_redis: redis.Redis, prefix: str) -> None:
    LogitCache(raw_redis, prefix, ttl_s=600).store(MODEL_KEY, [("x", None)], np.zeros((1, 2), np.float32), [False])
    disabled = LogitCache(raw_redis, prefix, ttl_s=600, enabled=False)
    assert disabled.lookup(MODEL_KEY, [("x", None)]) == [None]
    assert disabled.store(MODEL_KEY, [("y", None)], np.zeros((1, 2), np.float32), [False]) == 0
    assert raw_redis.exists(sequence_key(prefix, MODEL_KEY, ("y", None))) == 0


def test_workers_share_entries_and_zero_shot_jobs_share_hypotheses(redis_server: Any, prefix: str) -> None:
    # Two workers: two connections. A zero-shot job and a moderation job whose hypotheses coincide.
    settings = SiftSettings(redis_url=redis_url_of(redis_server))
    first, second = cache_client(settings), cache_client(settings)
    try:
        worker_a = LogitCache(first, prefix, ttl_s=600)
        worker_b = LogitCache(second, prefix, ttl_s=600)
        zero_shot = [("buy now!!!", "This example is spam."), ("buy now!!!", "This example is ham.")]
        plan = worker_a.plan(MODEL_KEY, zero_shot, num_labels=3)
        assert plan.missing == zero_shot
        scored = np.array([[0.1, 0.2, 0.7], [0.6, 0.3, 0.1]], dtype=np.float32)
        worker_a.store(MODEL_KEY, plan.missing, scored, [False, False])

        moderation = [("buy now!!!", "This example is ham."), ("buy now!!!", "This example is abuse.")]
        plan = worker_b.plan(MODEL_KEY, moderation, num_labels=3)
        assert plan.missing == [("buy now!!!", "This example is abuse.")]
        merged = plan.merge(np.array([[5, 5, 5]], np.float32), [False], {})
        assert merged.logits.tolist() == [scored[1].tolist(), [5, 5, 5]]
        assert (worker_b.hits, worker_b.misses) == (1, 1)
        assert (plan.hits, plan.misses) == (1, 1)
    finally:
        first.close()
        second.close()


def test_callers_that_keep_keys_instead_of_texts_see_the_same_entries(raw_redis: redis.Redis, prefix: str) -> None:
    # A gathering engine keeps each row's key (44 bytes) from admission to its forward pass, not the text.
    cache = LogitCache(raw_redis, prefix, ttl_s=600)
    keys = cache.keys(MODEL_KEY, [("by key", None), ("by text", None)])
    assert cache.store_keys(keys[:1], np.array([[1.0, 2.0]], np.float32), [True]) == 1
    cache.store(MODEL_KEY, [("by text", None)], np.array([[3.0, 4.0]], np.float32), [False])
    found = cache.lookup_keys(keys, num_labels=2)
    assert [(e.logits.tolist(), e.truncated) for e in found if e is not None] == [
        ([1.0, 2.0], True),
        ([3.0, 4.0], False),
    ]
    assert cache.lookup(MODEL_KEY, [("by key", None)])[0] is not None


def test_the_cache_can_live_in_a_redis_of_its_own(redis_server: Any, raw_redis: redis.Redis, prefix: str) -> None:
    with EmbeddedRedis() as own:
        settings = SiftSettings(redis_url=redis_url_of(redis_server))
        cache = LogitCache(cache_client(settings, url=own.url), prefix, ttl_s=600)
        cache.store(MODEL_KEY, [("x", None)], np.zeros((1, 2), np.float32), [False])
        key = sequence_key(prefix, MODEL_KEY, ("x", None))
        with redis.Redis.from_url(own.url) as own_client:
            assert own_client.exists(key) == 1
        assert raw_redis.exists(key) == 0, "nothing of the cache lands in the broker's Redis"


def test_nothing_listening_is_a_miss_never_an_error(caplog: pytest.LogCaptureFixture) -> None:
    settings = SiftSettings(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    cache = LogitCache(cache_client(settings), "sift", ttl_s=600, retry_after_s=0.0)
    caplog.set_level(logging.WARNING, logger="workers.engine.logit_cache")
    for _ in range(3):
        assert cache.lookup(MODEL_KEY, [("a", None), ("b", None)]) == [None, None]
        assert cache.store(MODEL_KEY, [("a", None)], np.zeros((1, 2), np.float32), [False]) == 0
    assert cache.errors == 6
    assert (cache.hits, cache.misses) == (0, 6)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, "the outage is logged once a minute, not once a batch"
    assert "scoring without it" in warnings[0].getMessage()


def test_a_redis_restart_costs_misses_then_the_cache_recovers() -> None:
    with EmbeddedRedis() as server:
        settings = SiftSettings(redis_url=server.url)
        clock = [0.0]
        cache = LogitCache(cache_client(settings), "sift", ttl_s=600, retry_after_s=5.0, clock=lambda: clock[0])
        row = np.array([[1.0, 2.0]], np.float32)
        cache.store(MODEL_KEY, [("a", None)], row, [False])

        server.stop()
        assert cache.lookup(MODEL_KEY, [("a", None)]) == [None]
        assert cache.errors == 1
        server.start()
        clock[0] = 1.0  # within retry_after_s: Redis is not tried again yet
        assert cache.store(MODEL_KEY, [("a", None)], row, [False]) == 0
        assert cache.errors == 1
        clock[0] = 6.0
        assert cache.store(MODEL_KEY, [("a", None)], row, [False]) == 1
        found = cache.lookup(MODEL_KEY, [("a", None)])
        assert found[0] is not None and found[0].logits.tolist() == [1.0, 2.0]


def test_cached_logits_give_the_model_s_own_answers(raw_redis: redis.Redis, prefix: str, registry: Registry) -> None:
    """The wiring the engine uses: plan, score what is missing, store, merge; the same numbers either way."""
    role = registry.default_role(TaskName.CLASSIFY)
    assert role is not None
    loaded = load_model(role, registry.models[role], torch.device("cpu"))
    model_key = model_key_for(loaded)
    long_text = "word " * (loaded.max_length * 2)  # cut at max_length: the flag must survive the cache
    sequences = [("good movie", None), (long_text, None), ("good movie", None)]
    direct = score(loaded, encode(loaded, sequences))
    direct_truncated = encode(loaded, sequences).truncated
    assert direct_truncated == [False, True, False]

    cache = LogitCache(raw_redis, prefix, ttl_s=600)
    for _ in range(2):
        plan = cache.plan(model_key, sequences, loaded.info.num_labels)
        if plan.missing:
            encoded = encode(loaded, plan.missing)
            scored = score(loaded, encoded)
            cache.store(model_key, plan.missing, scored.logits, encoded.truncated)
            merged = plan.merge(scored.logits, encoded.truncated, scored.failures)
        else:
            merged = plan.cached_only()
        np.testing.assert_allclose(merged.logits, direct.logits, rtol=1e-5, atol=1e-6)
        assert merged.truncated == direct_truncated
    assert (cache.hits, cache.misses) == (2, 2), "first pass: two distinct misses; second: two hits"
